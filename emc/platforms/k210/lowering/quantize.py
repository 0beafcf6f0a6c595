"""KPU convolution parameters: uint8 weights with per-channel scaling folded into the batch-norm table (nncase v0.2
recipe, spec 4.1), integer input/weight offsets, batch-norm multipliers and the activation table (spec 1.5).
"""
import math

import numpy as np

from ....errors import QuantizationError
from ....quant.params import affine_params
from .actfit import ActShape, activation_fn
from .fixedpoint import fixed_mul

BN_MUL_BITS = 23          # norm_mul is a signed 24-bit field
BN_MAX_SHIFT = 15         # norm_shift is 4 bits
BN_ADD_LIMIT = (1 << 31) - 1
V_LIMIT = 1 << 31         # keep the batch-norm output well inside the 36-bit ALU


class Quant:
    """uint8 affine quantisation of a tensor: real = (q - zero_point) * scale, zero_point an integer in 0..255."""

    __slots__ = ("scale", "zero_point")

    def __init__(self, scale, zero_point):
        self.scale = float(scale)
        self.zero_point = int(zero_point)

    @classmethod
    def from_range(cls, lo, hi):
        scale, zp = affine_params(lo, hi, bits=8)
        return cls(scale, zp)

    @property
    def lo(self):
        return (0 - self.zero_point) * self.scale

    @property
    def hi(self):
        return (255 - self.zero_point) * self.scale

    def quantize(self, x):
        q = np.round(np.asarray(x, np.float64) / self.scale) + self.zero_point
        return np.clip(q, 0, 255).astype(np.uint8)

    def dequantize(self, q):
        return ((np.asarray(q, np.float64) - self.zero_point) * self.scale).astype(np.float32)

    def __eq__(self, other):
        return isinstance(other, Quant) and (self.scale, self.zero_point) == (other.scale, other.zero_point)

    def __hash__(self):
        return hash((self.scale, self.zero_point))

    def __repr__(self):
        return f"Quant(scale={self.scale:.6g}, zp={self.zero_point})"


class KpuConvParams:
    """Everything the layer argument and the parameter blocks of one K210_CONV need, plus the scales behind it."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def effective_kernel(self):
        """The real weights the KPU multiplies with, in KPU order [oc][ic][ky][kx] (dw: [c][1][ky][kx])."""
        return (self.weights.astype(np.float64) - self.zp_w) * self.s_w / self.s_o.reshape(-1, 1, 1, 1)


def kpu_kernel(kernel, depthwise):
    """Graph kernel (HWIO, or (kh, kw, C, 1) depthwise) -> KPU order [oc][ic][ky][kx] (depthwise [c][1][ky][kx])."""
    kernel = np.asarray(kernel, np.float64)
    if depthwise:
        return kernel[:, :, :, 0].transpose(2, 0, 1)[:, None]
    return kernel.transpose(3, 2, 0, 1)


def quantize_weights(w):
    """Per-output-channel scale-up to the global range, then one uint8 (scale, zero point) for the tensor.

    Returns (q, s_w, zp_w, s_o) with real weight = (q - zp_w) * s_w / s_o[o].
    """
    flat = w.reshape(w.shape[0], -1)
    mn = np.minimum(flat.min(axis=1), 0.0)
    mx = np.maximum(flat.max(axis=1), 0.0)
    gmin, gmax = float(mn.min()), float(mx.max())
    s_o = np.ones(w.shape[0])
    for o in range(w.shape[0]):
        ratios = []
        if mx[o] > 0:
            ratios.append(gmax / mx[o])
        if mn[o] < 0:
            ratios.append(gmin / mn[o])
        if ratios:
            s_o[o] = min(ratios)
    s_w, zp_w = affine_params(gmin, gmax, bits=8)
    scaled = w * s_o.reshape((-1,) + (1,) * (w.ndim - 1))
    q = np.clip(np.round(scaled / s_w) + zp_w, 0, 255).astype(np.uint8)
    return q, s_w, zp_w, s_o


def max_slope(act, lo, hi, out_quant):
    """Largest |d act/dx| of the clipped activation over [lo, hi] (numerically)."""
    fn = activation_fn(act)
    if hi - lo < 1e-12:
        return 1.0
    x = np.linspace(lo, hi, 4097)
    y = np.clip(fn(x), out_quant.lo, out_quant.hi)
    slope = float(np.max(np.abs(np.diff(y) / np.diff(x))))
    return slope if slope > 0 else 1.0


def _bn_fields(av, bits=BN_MUL_BITS, max_shift=BN_MAX_SHIFT):
    """fixed_mul over an array of positive multipliers: (mul, shift) with the most bits the fields allow."""
    limit = (1 << bits) - 1
    safe = np.maximum(av, 1e-300)
    shift = np.clip(np.floor(np.log2(limit / safe)), 0, max_shift).astype(np.int64)
    mul = np.minimum(np.round(av * np.exp2(shift)), limit)
    return mul, shift


def bn_error(a, reach, k):
    """Per channel: the batch-norm stage's error in v units, at the largest pre-activation `reach` (real) the
    channel can produce -- the multiplier's rounding (or saturation) plus half a v unit of floor (centred)."""
    av = a * k
    mul, shift = _bn_fields(av)
    rel = np.abs(mul * np.exp2(-shift) - av) / np.maximum(av, 1e-300)
    return reach * k * np.where(av > 0, rel, 0.0) + 0.5


def choose_v_scale(a, reach, shape, out_scale, v_absmax, bias_absmax, slope):
    """(units of the batch-norm output per real pre-activation value, estimated max output error in LSB).

    Searches v scales in half-octave steps over every value the fields allow and takes the one whose batch-norm
    stage (per-channel multiplier rounding at each channel's reach, the floor) plus activation table (measured
    against the exact codes) miss the exact output code the least; ties go to the smaller scale.
    """
    codes_per_real = slope / out_scale
    top = min(math.log2(V_LIMIT / max(v_absmax, 1e-12)) - 1.0,
              math.log2(BN_ADD_LIMIT / max(bias_absmax, 1e-12)) - 1.0)
    bottom = math.log2(max(codes_per_real, 1e-12)) - 2.0
    best, last = None, int(math.floor(2 * top))
    for step in range(min(int(math.ceil(2 * bottom)), last), last + 1):     # a degenerate range: the top only
        k = 2.0 ** (step / 2.0)
        error = float(np.max(bn_error(a, reach, k))) * codes_per_real / k + shape.error(k)
        if best is None or error < best[1] - 1e-9:
            best = (k, error)
    if best is None:
        raise QuantizationError(f"no batch-norm scale fits the KPU's fields for outputs up to {v_absmax:g}; "
                                f"recalibrate (the range or the bias is too large)")
    return best


def kpu_conv_params(kernel, bias, depthwise, in_quant, pre_range, out_quant, activation):
    """Quantise one KPU convolution.

    kernel: graph layout (HWIO; depthwise (kh, kw, C, 1)); bias: real per output channel or None;
    in_quant: Quant of the input codes; pre_range: calibrated range of the pre-activation output;
    out_quant: Quant of the output codes; activation: emc Act fused into the layer.
    """
    w = kpu_kernel(kernel, depthwise)
    c_out, taps = w.shape[0], w.shape[2] * w.shape[3]
    bias = np.zeros(c_out) if bias is None else np.asarray(bias, np.float64).reshape(-1)
    if not 0 <= in_quant.zero_point <= 255:
        raise QuantizationError(f"input zero point {in_quant.zero_point} is outside 0..255")
    q, s_w, zp_w, s_o = quantize_weights(w)
    a = in_quant.scale * s_w / s_o                                 # real per accumulator unit, per channel
    lo, hi = float(min(pre_range)), float(max(pre_range))
    slope = max_slope(activation, lo, hi, out_quant)
    bias_absmax = float(np.abs(bias).max(initial=0.0))
    v_absmax = max(abs(lo), abs(hi), bias_absmax, 1e-6) * 2.0
    in_reach = max(in_quant.zero_point, 255 - in_quant.zero_point)
    acc_reach = np.abs(q.reshape(c_out, -1).astype(np.float64) - zp_w).sum(axis=1) * in_reach
    reach = np.minimum(a * acc_reach, max(abs(lo), abs(hi)))     # largest real pre-activation per channel
    shape = ActShape(activation, (lo, hi), (out_quant.scale, out_quant.zero_point))
    k, error = choose_v_scale(a, reach, shape, out_quant.scale, v_absmax, bias_absmax, slope)
    muls, shifts = zip(*(fixed_mul(ao * k, BN_MUL_BITS, BN_MAX_SHIFT) for ao in a))
    muls, shifts = np.array(muls, np.int64), np.array(shifts, np.int64)
    adds = np.round(bias * k + np.where(shifts > 0, 0.5, 0.0)).astype(np.int64)
    if np.any(np.abs(adds) > BN_ADD_LIMIT):
        raise QuantizationError("a bias is too large for the KPU batch-norm table (32-bit add)")
    table = shape.table(k)
    return KpuConvParams(
        weights=q, s_w=s_w, zp_w=zp_w, s_o=s_o, in_quant=in_quant, out_quant=out_quant, v_scale=k,
        arg_x=-zp_w, shr_x=0, arg_w=-in_quant.zero_point, shr_w=0, arg_add=taps * zp_w * in_quant.zero_point,
        est_error=error,
        pad_value=in_quant.zero_point, bn_mul=muls, bn_shift=shifts, bn_add=adds, act=table,
        kernel_size=w.shape[2], depthwise=depthwise, c_in=(w.shape[0] if depthwise else w.shape[1]), c_out=c_out)
