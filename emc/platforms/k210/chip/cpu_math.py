"""Float32 arithmetic as the K210's CPU layers compute it: single precision, fused multiply-add where GCC fuses.

A fused a*b+c is emulated by computing in float64 (the float32 product is exact there) and rounding once to
float32; this double rounding differs from a true FMA only when the float64 sum lands exactly on a float32 tie.
"""
import numpy as np


def fma32(a, b, c):
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)).astype(np.float32)


def exact_f32(fn, x):
    """A transcendental function of float32 values rounded from float64: what glibc's correctly rounded expf gives
    (numpy's own float32 exp is not correctly rounded on every CPU)."""
    with np.errstate(all="ignore"):
        return fn(np.asarray(x, np.float64)).astype(np.float32)


def roundf(x):
    """C roundf: half away from zero."""
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def dot_fma(x, w):
    """out[..., o] = sum over i, in order, of x[..., i] * w[o][i] with one rounding per step (FMA accumulation);
    x may carry leading batch axes (the steps run once for all of them)."""
    x = np.asarray(x, np.float32).astype(np.float64)
    columns = np.asarray(w, np.float32).T.astype(np.float64)           # columns[i] = w[:, i], contiguous
    acc = np.zeros(x.shape[:-1] + (columns.shape[1],), np.float32)
    for i in range(len(columns)):
        acc = (x[..., i, None] * columns[i] + acc).astype(np.float32)  # fma32, inlined: product and sum in float64
    return acc


def sequential_sum(values, init=0.0):
    """init + v0 + v1 + ... along the last axis in float32, one rounding per step, as a C loop accumulates."""
    values = np.asarray(values, np.float32)
    start = np.full(values.shape[:-1] + (1,), init, np.float32)
    return np.add.accumulate(np.concatenate([start, values], axis=-1), axis=-1, dtype=np.float32)[..., -1]


def carry_shift(v, shift):
    """The SDK's kpu_carry_shift, including its off-by-one for negative odd intermediates (spec 2.4)."""
    v = np.asarray(v, np.int64)
    if shift <= 0:
        return v
    t = v >> (shift - 1)
    odd = (t & 1) == 1
    return np.where(odd, np.where(v >= 0, (t >> 1) + 1, (t >> 1) - 1), t >> 1)


def pool_window_axis(size, out, kernel, stride, pad):
    """kpu.c's CPU pool windows along one axis: (origin, first tap, end tap) per output position.

    The SDK's QUANTIZED_MAX_POOL2D and AVERAGE_POOL2D compute `end = min(kernel, size - origin)` in uint32: for a
    window whose origin is 2 or more pixels past the edge (origin > size) the difference wraps to a huge value and
    the end is `kernel`, so the window reads on into the next row (the next channel, past the tensor for the last
    one) instead of being empty. `wraps(...)` tells whether any window does.
    """
    origin = (np.arange(out, dtype=np.int64) * stride - pad).astype(np.int32).astype(np.int64)
    start = np.maximum(0, -origin)
    end = np.where(origin > size, kernel, np.minimum(kernel, size - origin))
    return origin, start, end


def pool_wraps(in_hw, out_hw, kernel, strides, pads):
    """How many output positions (per channel) of a kpu.c CPU pool have a window that wraps (see pool_window_axis)."""
    rows = int(np.sum(pool_window_axis(in_hw[0], out_hw[0], kernel[0], strides[0], pads[0])[0] > in_hw[0]))
    cols = int(np.sum(pool_window_axis(in_hw[1], out_hw[1], kernel[1], strides[1], pads[1])[0] > in_hw[1]))
    return rows * out_hw[1] + cols * out_hw[0] - rows * cols
