"""What the portable conv / dense kernels need beyond the simulator's arrays: folded biases and a column buffer.

kbias = bias - in_zp * (sum of the channel's weights) lets the C accumulate sum(x * w) with no zero-point
subtraction per product and still reach bias + sum((x - in_zp) * w) exactly. The column buffer holds one
gathered kernel window (kernel_h * kernel_w * in_c bytes); it is static memory and counts in the reported RAM.
"""
import numpy as np

from ...errors import EmcError
from .fixedpoint import INT32_MAX, INT32_MIN

FOLDED_KINDS = ("conv2d", "depthwise_conv2d", "dense")


def weight_sums(step):
    """Sum of the int8 weights of each output channel, as int64."""
    return channel_weight_sums(step.kind, step.arrays["weights"])


def channel_weight_sums(kind, weights):
    """Sum of the int8 weights of each output channel of a conv (OHWI), depthwise ([kh][kw][C]) or dense layer."""
    w = np.asarray(weights).astype(np.int64)
    if kind == "depthwise_conv2d":
        return w.reshape(-1, w.shape[-1]).sum(axis=0)
    return w.reshape(w.shape[0], -1).sum(axis=1)


def foldable_bias(kind, bias, weights, in_zp):
    """The int32 bias clipped so that bias - in_zp * (weight sum) stays in int32. Only a bias already at the int32
    limit (a channel whose weights all but vanished) can move; the simulator and the C use the clipped value."""
    shift = int(in_zp) * channel_weight_sums(kind, weights)
    lo, hi = np.maximum(INT32_MIN, INT32_MIN + shift), np.minimum(INT32_MAX, INT32_MAX + shift)
    return np.clip(np.asarray(bias, np.int64), lo, hi).astype(np.int32)


def folded_bias(step):
    """int32 kbias of a conv / depthwise / dense step; EmcError when it leaves int32 (the C would overflow)."""
    kbias = step.arrays["bias"].astype(np.int64) - int(step.params["in_zp"]) * weight_sums(step)
    if kbias.min() < INT32_MIN or kbias.max() > INT32_MAX:
        raise EmcError(f"layer '{step.node}': its bias with the input zero point folded in leaves int32; the int8 "
                       f"C kernels cannot take this layer (use a narrower activation range before it)")
    return kbias.astype(np.int32)


def needs_column(step):
    """True when a conv step gathers windows: some window is not read in place (not contiguous or not inside)."""
    if step.kind != "conv2d":
        return False
    p = step.params
    (ih, iw, _), (oh, ow, _) = p["in_shape"], p["out_shape"]
    (kh, kw), (sh, sw), (dh, dw) = p["kernel"], p["stride"], p["dilation"]
    contiguous = kh == 1 and (kw == 1 or dw == 1)
    inside = (tuple(p["pad"]) == (0, 0) and (oh - 1) * sh + (kh - 1) * dh < ih
              and (ow - 1) * sw + (kw - 1) * dw < iw)
    return not (contiguous and inside)


def column_bytes(steps):
    """Bytes of the one column buffer the model's conv steps share: their largest gathered window, or 0."""
    sizes = [s.params["kernel"][0] * s.params["kernel"][1] * s.params["in_shape"][2] for s in steps
             if needs_column(s)]
    return max(sizes, default=0)
