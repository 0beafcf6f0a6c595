"""Affine quantisation parameters: real = (q - zero_point) * scale, with real 0 exactly representable."""
import numpy as np

from ..errors import QuantizationError


def _check_bits(bits):
    if isinstance(bits, bool) or int(bits) != bits or not 2 <= bits <= 32:
        raise QuantizationError(f"bits must be an integer from 2 to 32, not {bits!r}")
    return int(bits)


def qrange(bits=8, signed=False):
    """(qmin, qmax) of a bits-wide integer."""
    bits = _check_bits(bits)
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def round_half_away(x):
    """Round to nearest, ties away from zero (C's round(), as TF Lite uses)."""
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def affine_params(lo, hi, bits=8, signed=False):
    """(scale, zero_point) covering [lo, hi] widened to contain 0, the zero point nudged to an integer (TF Lite).

    A zero-width range (an all-zero tensor) gets scale 1 and a zero point that represents 0.
    """
    qmin, qmax = qrange(bits, signed)
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise QuantizationError(f"cannot quantise the range ({lo}, {hi}): it must be finite with lo <= hi")
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / (qmax - qmin)
    if not (np.isfinite(scale) and scale > 0):
        if hi - lo > 0:
            raise QuantizationError(f"the range ({lo}, {hi}) is too wide to quantise")
        return 1.0, (0 if signed else qmin)
    zero_point = int(np.clip(round_half_away(qmin - lo / scale), qmin, qmax))
    return float(scale), zero_point


def symmetric_params(absmax, bits=8):
    """Scale of a symmetric signed quantisation of [-absmax, absmax] (zero point 0)."""
    absmax = abs(float(absmax))
    if not np.isfinite(absmax):
        raise QuantizationError(f"cannot quantise a symmetric range of magnitude {absmax}")
    scale = absmax / ((1 << (_check_bits(bits) - 1)) - 1)
    return scale if scale > 0 else 1.0


def per_channel_symmetric(w, axis=-1, bits=8):
    """Per-channel symmetric scales of weights along `axis` (the output channels); all-zero channels get 1."""
    w = np.asarray(w, np.float64)
    if not np.all(np.isfinite(w)):
        raise QuantizationError("the weights hold NaN or inf values: they cannot be quantised")
    qmax = (1 << (_check_bits(bits) - 1)) - 1
    axes = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    absmax = np.abs(w).max(axis=axes) if axes else np.abs(w)
    scale = absmax / qmax
    return np.where(scale > 0, scale, 1.0)


def _check_scale(scale):
    scale = np.asarray(scale, np.float64)
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise QuantizationError(f"quantisation scales must be finite and positive, got {scale}")
    return scale


def quantize(x, scale, zero_point, bits=8, signed=False):
    """Integer codes of x: round(x / scale) + zero_point, saturated to the bits-wide range (int64)."""
    qmin, qmax = qrange(bits, signed)
    q = round_half_away(np.asarray(x, np.float64) / _check_scale(scale)) + np.asarray(zero_point)
    return np.clip(q, qmin, qmax).astype(np.int64)


def dequantize(q, scale, zero_point):
    """Real values of integer codes: (q - zero_point) * scale, as float32."""
    return ((np.asarray(q, np.float64) - zero_point) * _check_scale(scale)).astype(np.float32)
