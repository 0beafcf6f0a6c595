"""KPU convolution parameters: uint8 weights with per-channel scaling folded into the batch-norm table (nncase v0.2
recipe, spec 4.1), integer input/weight offsets, batch-norm multipliers and the activation table (spec 1.5).
"""
import math

import numpy as np

from ....errors import QuantizationError
from ....quant.params import affine_params
from .actfit import MAX_ACT_SHIFT, activation_fn, build_act_table
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


def choose_v_scale(a, slope, out_scale, v_absmax, act_shift=MAX_ACT_SHIFT):
    """Units of the batch-norm output per real pre-activation value (a power of two).

    Balances the precision of the batch-norm multipliers (a_o * K * 2**15 should reach 2**22) against the
    activation slopes (slope / (out_scale * K) * 2**act_shift should reach 2**14), keeps at least two v units
    per output code, and keeps v, the bias and the multipliers inside their fields.
    """
    a = a[a > 0]
    if len(a) == 0:
        return 1.0
    a_min, a_max = float(a.min()), float(a.max())
    codes_per_real = slope / out_scale
    bn_bits_at_0 = math.log2(a_min) + BN_MAX_SHIFT              # bn precision bits at K = 1
    act_bits_at_0 = math.log2(codes_per_real) + act_shift        # act precision bits at K = 1
    full_bn, full_act = 22 - bn_bits_at_0, act_bits_at_0 - 14
    level = full_act if full_bn <= full_act else (act_bits_at_0 - bn_bits_at_0) / 2.0
    level = max(level, math.log2(codes_per_real) + 1.0)           # >= 2 v units per output code
    level = min(level, math.log2(V_LIMIT / max(v_absmax, 1e-12)) - 1.0,
                BN_MUL_BITS - 1 - math.log2(a_max))
    return 2.0 ** math.floor(level)


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
    v_absmax = max(abs(lo), abs(hi), float(np.abs(bias).max(initial=0.0)), 1e-6) * 2.0
    k = choose_v_scale(a, slope, out_quant.scale, v_absmax)
    muls, shifts = zip(*(fixed_mul(ao * k, BN_MUL_BITS, BN_MAX_SHIFT) for ao in a))
    muls, shifts = np.array(muls, np.int64), np.array(shifts, np.int64)
    adds = np.round(bias * k + np.where(shifts > 0, 0.5, 0.0)).astype(np.int64)
    if np.any(np.abs(adds) > BN_ADD_LIMIT):
        raise QuantizationError("a bias is too large for the KPU batch-norm table (32-bit add)")
    table = build_act_table(activation, k, (lo, hi), (out_quant.scale, out_quant.zero_point))
    return KpuConvParams(
        weights=q, s_w=s_w, zp_w=zp_w, s_o=s_o, in_quant=in_quant, out_quant=out_quant, v_scale=k,
        arg_x=-zp_w, shr_x=0, arg_w=-in_quant.zero_point, shr_w=0, arg_add=taps * zp_w * in_quant.zero_point,
        pad_value=in_quant.zero_point, bn_mul=muls, bn_shift=shifts, bn_add=adds, act=table,
        kernel_size=w.shape[2], depthwise=depthwise, c_in=(w.shape[0] if depthwise else w.shape[1]), c_out=c_out)
