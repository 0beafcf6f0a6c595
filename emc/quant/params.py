"""Affine quantisation parameters: real = (q - zero_point) * scale, with real 0 exactly representable."""
import numpy as np


def qrange(bits=8, signed=False):
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def affine_params(lo, hi, bits=8, signed=False):
    """(scale, zero_point) covering [lo, hi] widened to contain 0; zero point nudged to an integer (TF Lite)."""
    qmin, qmax = qrange(bits, signed)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-12:
        return 1.0, (qmin if not signed else 0)
    scale = (hi - lo) / (qmax - qmin)
    zero_point = int(np.clip(round(qmin - lo / scale), qmin, qmax))
    return float(scale), zero_point


def symmetric_params(absmax, bits=8):
    """Scale of a symmetric signed quantisation of [-absmax, absmax] (zero point 0)."""
    absmax = float(absmax)
    return (absmax / ((1 << (bits - 1)) - 1)) if absmax > 0 else 1.0


def per_channel_symmetric(w, axis=-1, bits=8):
    """Per-channel symmetric scales of weights along `axis` (the output channels)."""
    w = np.asarray(w, np.float64)
    axes = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    absmax = np.abs(w).max(axis=axes) if axes else np.abs(w)
    return np.where(absmax > 0, absmax / ((1 << (bits - 1)) - 1), 1.0)


def quantize(x, scale, zero_point, bits=8, signed=False):
    qmin, qmax = qrange(bits, signed)
    q = np.round(np.asarray(x, np.float64) / scale) + zero_point
    return np.clip(q, qmin, qmax).astype(np.int32)


def dequantize(q, scale, zero_point):
    return ((np.asarray(q, np.float64) - zero_point) * scale).astype(np.float32)
