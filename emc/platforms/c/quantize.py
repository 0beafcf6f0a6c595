"""Quantisation of weights and tables for the int8 C kernels (TF Lite Micro's int8 scheme).

Activations: asymmetric int8 per tensor. Weights: symmetric int8 per output channel in [-127, 127].
Biases: int32 in units of input_scale * weight_scale. Non-linear activations: 256-entry int8 tables.
"""
import numpy as np

from ...quant.params import affine_params
from .fixedpoint import INT32_MAX, INT32_MIN, quantize_multipliers

SOFTMAX_ZERO_POINT = -128       # softmax outputs: q = round(p * R) - 128, R from the calibrated range
SOFTMAX_EXP_BITS = 16            # exp table entries are round(exp(-scale * d) * 2**16)


def activation_params(lo, hi):
    """(scale, zero_point) of an int8 activation tensor covering [lo, hi] (widened to contain 0)."""
    return affine_params(lo, hi, bits=8, signed=True)


def per_channel_weights(w, axis=-1):
    """(int8 weights, float64 scales per channel): symmetric, scale = max|w| / 127 (1.0 for an all-zero channel)."""
    w = np.asarray(w, np.float64)
    axis = axis % w.ndim
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    absmax = np.abs(w).max(axis=reduce) if reduce else np.abs(w)
    scales = np.where(absmax > 0, absmax / 127.0, 1.0)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scales.reshape(shape)), -127, 127).astype(np.int8)
    return q, scales


def quantize_bias(bias, acc_scales, channels):
    """int32 bias in accumulator units (input scale * weight scale per channel); zeros when there is none."""
    if bias is None:
        return np.zeros(channels, np.int32)
    q = np.round(np.asarray(bias, np.float64) / acc_scales)
    return np.clip(q, INT32_MIN, INT32_MAX).astype(np.int32)


def requant_arrays(reals):
    """int32 multiplier and shift arrays for real-valued per-channel rescaling factors."""
    return quantize_multipliers(reals)


def clamp_bounds(act, scale, zero_point):
    """(act_min, act_max) in output codes for relu / relu6 / linear fused as a clamp."""
    lo, hi = -128, 127
    if act.name in ("relu", "relu6"):
        lo = max(lo, zero_point)
    if act.name == "relu6":
        hi = min(hi, zero_point + int(round(6.0 / scale)))
    return lo, max(lo, hi)


def activation_table(act, in_quant, out_quant):
    """256 int8 codes: table[q + 128] = quantize_out(act(dequantize_in(q))) -- exact for int8 inputs."""
    (s_in, z_in), (s_out, z_out) = in_quant, out_quant
    q = np.arange(-128, 128, dtype=np.float64)
    x = ((q - z_in) * s_in).astype(np.float32)
    y = np.asarray(act(x), np.float64)
    return np.clip(np.round(y / s_out) + z_out, -128, 127).astype(np.int8)


def softmax_exp_table(scale):
    """int32 table e[d] = round(exp(-scale * d) * 2**16) for d = max - x in 0..255 (e[0] = 65536)."""
    d = np.arange(256, dtype=np.float64)
    return np.round(np.exp(-float(scale) * d) * (1 << SOFTMAX_EXP_BITS)).astype(np.int32)


def symmetric_tensor(values):
    """(int8 codes, scale) of a symmetric per-tensor quantisation (PReLU slopes)."""
    values = np.asarray(values, np.float64)
    absmax = float(np.abs(values).max()) if values.size else 0.0
    scale = absmax / 127.0 if absmax > 0 else 1.0
    return np.clip(np.round(values / scale), -127, 127).astype(np.int8), scale
