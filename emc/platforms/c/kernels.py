"""The Python twin of the C kernel library: the same integer arithmetic, vectorised with numpy over a batch.

KERNELS[kind](step, inputs, out_shape) takes batched int8 arrays (batch axis first) and returns the batched
int8 output the C kernel writes. Integer sums that numpy does faster in float (convolutions, dense) stay exact:
float32 while every partial sum is below 2**24, else float64 (exact_matmul).
"""
import numpy as np

from ...layers.conv import tap_slice
from ..exact_matmul import exact_dtype, exact_matmul
from .fixedpoint import clamp8, requantize

KERNELS = {}
COLS_ELEMENTS = 1 << 22        # a convolution's im2col rows are built for this many values at a time (16-32 MB)


def kernel(*kinds):
    def wrap(fn):
        for kind in kinds:
            KERNELS[kind] = fn
        return fn
    return wrap


def _epilogue(acc, step):
    """int32 accumulators (channel last) -> int8: requantise per channel, add zero point, clamp, table."""
    p, a = step.params, step.arrays
    out = requantize(acc, a["mult"].astype(np.int64), a["shift"].astype(np.int64)) + p["out_zp"]
    out = np.clip(out, p["act_min"], p["act_max"])
    if "lut" in a:
        out = a["lut"][out + 128]
    return out.astype(np.int8)


def _centered_padded(x, zp, pad, out_hw, kernel_hw, stride, dilation, dtype=np.float64):
    """x - zero_point as float (exact: int8 differences), zero-padded so that every tap of the output grid is in
    range."""
    n, h, w, c = x.shape
    top, left = pad
    need_h = (out_hw[0] - 1) * stride[0] + (kernel_hw[0] - 1) * dilation[0] + 1
    need_w = (out_hw[1] - 1) * stride[1] + (kernel_hw[1] - 1) * dilation[1] + 1
    buf = np.zeros((n, max(need_h, top + h), max(need_w, left + w), c), dtype)
    buf[:, top:top + h, left:left + w] = x.astype(dtype) - dtype(zp)
    return buf


def _exact_for(weights, terms):
    """exact_dtype for sums of `terms` products of centred int8 inputs (|x - zp| <= 255) with these weights."""
    return exact_dtype(255 * int(np.abs(weights.astype(np.int64)).max(initial=0)), terms)


@kernel("conv2d")
def conv2d(step, xs, out_shape):
    """One matmul per slice of the batch: the im2col rows (sample, y, x) times the (ky, kx, c) weight columns."""
    p, a = step.params, step.arrays
    x = xs[0]
    oh, ow, cout = out_shape
    kh, kw = p["kernel"]
    taps = kh * kw * x.shape[-1]
    dtype, chunk = _exact_for(a["weights"], taps)
    w = a["weights"].reshape(cout, taps).T.astype(dtype)              # OHWI -> (ky, kx, c) x O
    acc = np.empty((len(x), oh * ow, cout), np.int64)
    per = max(1, COLS_ELEMENTS // max(1, oh * ow * taps))
    for n0 in range(0, len(x), per):
        buf = _centered_padded(x[n0:n0 + per], p["in_zp"], p["pad"], (oh, ow), (kh, kw), p["stride"], p["dilation"],
                               dtype)
        cols = np.empty((len(buf), oh, ow, kh, kw, buf.shape[-1]), dtype)
        for ky in range(kh):
            for kx in range(kw):
                cols[:, :, :, ky, kx] = buf[:, tap_slice(ky * p["dilation"][0], oh, p["stride"][0]),
                                            tap_slice(kx * p["dilation"][1], ow, p["stride"][1]), :]
        acc[n0:n0 + per] = exact_matmul(cols.reshape(-1, taps), w, chunk).reshape(len(buf), oh * ow, cout)
    acc += a["bias"]
    return _epilogue(acc, step).reshape((len(x),) + tuple(out_shape))


@kernel("conv2d_transpose")
def conv2d_transpose(step, xs, out_shape):
    """Scatter every centred input pixel's kernel patch into the full output, then crop (pad) to the output."""
    p, a = step.params, step.arrays
    x = xs[0].astype(np.float64) - p["in_zp"]
    n, h, w, cin = x.shape
    oh, ow, cout = out_shape
    (kh, kw), (sh, sw), (top, left) = p["kernel"], p["stride"], p["pad"]
    rows, cols = max((h - 1) * sh + kh, top + oh) + max(-top, 0), max((w - 1) * sw + kw, left + ow) + max(-left, 0)
    full = np.zeros((n, rows, cols, cout), np.float64)
    y0, x0 = max(-top, 0), max(-left, 0)
    wt = a["weights"].astype(np.float64)                              # OHWI
    for ky in range(kh):
        for kx in range(kw):
            patch = (x.reshape(-1, cin) @ wt[:, ky, kx, :].T).reshape(n, h, w, cout)
            full[:, y0 + ky:y0 + ky + (h - 1) * sh + 1:sh, x0 + kx:x0 + kx + (w - 1) * sw + 1:sw] += patch
    acc = full[:, y0 + top:y0 + top + oh, x0 + left:x0 + left + ow].astype(np.int64) + a["bias"]
    return _epilogue(acc, step)


@kernel("depthwise_conv2d")
def depthwise_conv2d(step, xs, out_shape):
    p, a = step.params, step.arrays
    x = xs[0]
    oh, ow, cout = out_shape
    kh, kw = p["kernel"]
    mult = p["depth_mult"]
    dtype, chunk = _exact_for(a["weights"], kh * kw)
    if chunk < kh * kw:                                               # the taps are summed in place, not in slices
        dtype = np.float64
    buf = _centered_padded(x, p["in_zp"], p["pad"], (oh, ow), (kh, kw), p["stride"], p["dilation"], dtype)
    buf = np.repeat(buf, mult, axis=3)                                # input channel of output c*mult+m is c
    w = a["weights"].astype(dtype)                                    # [kh][kw][C*mult]
    acc = np.zeros((len(x), oh, ow, cout), dtype)
    for ky in range(kh):
        for kx in range(kw):
            acc += buf[:, tap_slice(ky * p["dilation"][0], oh, p["stride"][0]),
                       tap_slice(kx * p["dilation"][1], ow, p["stride"][1]), :] * w[ky, kx]
    acc = acc.astype(np.int64) + a["bias"]
    return _epilogue(acc, step)


@kernel("dense")
def dense(step, xs, out_shape):
    p, a = step.params, step.arrays
    dtype, chunk = _exact_for(a["weights"], p["in_features"])
    x = xs[0].reshape(len(xs[0]), p["rows"], p["in_features"]).astype(dtype) - dtype(p["in_zp"])
    acc = exact_matmul(x, a["weights"].astype(dtype).T, chunk).astype(np.int64) + a["bias"]
    return _epilogue(acc, step).reshape((len(xs[0]),) + tuple(out_shape))


@kernel("channel_scale")
def channel_scale(step, xs, out_shape):
    p, a = step.params, step.arrays
    x = xs[0].reshape(len(xs[0]), -1, p["channels"]).astype(np.int64) - p["in_zp"]
    acc = x * a["weights"].astype(np.int64) + a["bias"]
    out = requantize(acc, a["mult"], a["shift"]) + p["out_zp"]
    return clamp8(out).reshape((len(xs[0]),) + tuple(out_shape))


# ---- pooling ------------------------------------------------------------------------------------------------------
def _pool_windows(x, p, out_shape, fill, dtype=np.int64):
    """Yield (window values, in-map mask) for every tap of the pool over the output grid."""
    n, h, w, c = x.shape
    oh, ow = out_shape[:2]
    (ph, pw), (sh, sw), (top, left) = p["pool"], p["stride"], p["pad"]
    need_h = max((oh - 1) * sh + ph, top + h)
    need_w = max((ow - 1) * sw + pw, left + w)
    buf = np.full((n, need_h, need_w, c), fill, dtype)
    buf[:, top:top + h, left:left + w] = x
    valid = np.zeros((1, need_h, need_w, 1), bool)
    valid[:, top:top + h, left:left + w] = True
    for ky in range(ph):
        for kx in range(pw):
            rows, cols = tap_slice(ky, oh, sh), tap_slice(kx, ow, sw)
            yield buf[:, rows, cols, :], valid[:, rows, cols, :]


@kernel("max_pool")
def max_pool(step, xs, out_shape):
    out = None
    for win, _ in _pool_windows(xs[0], step.params, out_shape, -128, np.int8):
        out = win if out is None else np.maximum(out, win)
    return out.astype(np.int8)


def rounded_div(total, count):
    """TF Lite's average: (sum +- count/2) / count with C's truncating division."""
    half = count // 2
    pos = (total + half) // count
    neg = -((-total + half) // count)
    return np.where(total > 0, pos, neg)


@kernel("avg_pool")
def avg_pool(step, xs, out_shape):
    total, count = 0, 0
    for win, valid in _pool_windows(xs[0], step.params, out_shape, 0):
        total = total + win
        count = count + valid.astype(np.int64)
    return clamp8(rounded_div(total, count))


@kernel("global_max_pool")
def global_max_pool(step, xs, out_shape):
    return xs[0].max(axis=(1, 2)).reshape((len(xs[0]),) + tuple(out_shape))


@kernel("global_avg_pool")
def global_avg_pool(step, xs, out_shape):
    p = step.params
    acc = (xs[0].astype(np.int64) - p["in_zp"]).sum(axis=(1, 2))
    out = requantize(acc, p["mult"], p["shift"]) + p["out_zp"]
    return clamp8(out).reshape((len(xs[0]),) + tuple(out_shape))


# ---- element-wise --------------------------------------------------------------------------------------------------
def _broadcast(x, step, i):
    """Input i laid over the 4-D output dims through its strides (0 = broadcast)."""
    dims = step.params["dims"]
    strides = step.arrays["strides"][i]
    flat = x.reshape(len(x), -1).astype(np.int64)
    index = np.zeros(dims, np.int64)
    for axis in range(4):
        shape = [1, 1, 1, 1]
        shape[axis] = dims[axis]
        index = index + (np.arange(dims[axis]) * strides[axis]).reshape(shape)
    return flat[:, index.reshape(-1)]


@kernel("add")
def add(step, xs, out_shape):
    p, a = step.params, step.arrays
    total = 0
    for i, x in enumerate(xs):
        v = (_broadcast(x, step, i) - a["in_zp"][i]) << p["left_shift"]
        total = total + a["sign"][i] * requantize(v, a["in_mult"][i], a["in_shift"][i])
    out = requantize(total, p["out_mult"], p["out_shift"]) + p["out_zp"]
    return clamp8(out).reshape((len(xs[0]),) + tuple(out_shape))


@kernel("mul")
def mul(step, xs, out_shape):
    p, a = step.params, step.arrays
    prod = (_broadcast(xs[0], step, 0) - a["in_zp"][0]) * (_broadcast(xs[1], step, 1) - a["in_zp"][1])
    out = requantize(prod, p["out_mult"], p["out_shift"]) + p["out_zp"]
    return clamp8(out).reshape((len(xs[0]),) + tuple(out_shape))


@kernel("maxmin")
def maxmin(step, xs, out_shape):
    p, a = step.params, step.arrays
    pick = np.maximum if p["is_max"] else np.minimum
    out = None
    for i, x in enumerate(xs):
        v = requantize(_broadcast(x, step, i) - a["in_zp"][i], a["in_mult"][i], a["in_shift"][i]) + p["out_zp"]
        out = v if out is None else pick(out, v)
    return clamp8(out).reshape((len(xs[0]),) + tuple(out_shape))


@kernel("concat")
def concat(step, xs, out_shape):
    p, a = step.params, step.arrays
    parts = []
    for i, x in enumerate(xs):
        v = x.reshape(len(x), p["outer"], int(a["inner"][i])).astype(np.int64)
        if not a["same"][i]:
            v = clamp8(requantize(v - a["in_zp"][i], a["in_mult"][i], a["in_shift"][i]) + p["out_zp"])
        parts.append(v)
    return np.concatenate(parts, axis=2).astype(np.int8).reshape((len(xs[0]),) + tuple(out_shape))


# ---- activations ---------------------------------------------------------------------------------------------------
@kernel("requant_clamp")
def requant_clamp(step, xs, out_shape):
    p = step.params
    out = requantize(xs[0].astype(np.int64) - p["in_zp"], p["mult"], p["shift"]) + p["out_zp"]
    return np.clip(out, p["act_min"], p["act_max"]).astype(np.int8)


@kernel("leaky_relu")
def leaky_relu(step, xs, out_shape):
    p = step.params
    v = xs[0].astype(np.int64) - p["in_zp"]
    out = np.where(v >= 0, requantize(v, p["mult_pos"], p["shift_pos"]), requantize(v, p["mult_neg"], p["shift_neg"]))
    return clamp8(out + p["out_zp"])


@kernel("prelu")
def prelu(step, xs, out_shape):
    p, a = step.params, step.arrays
    v = xs[0].reshape(len(xs[0]), -1, p["period"]).astype(np.int64) - p["in_zp"]
    neg = requantize(v * a["alpha"].astype(np.int64), p["mult_neg"], p["shift_neg"])
    out = np.where(v >= 0, requantize(v, p["mult_pos"], p["shift_pos"]), neg) + p["out_zp"]
    return clamp8(out).reshape(xs[0].shape)


@kernel("lut")
def lut(step, xs, out_shape):
    return step.arrays["table"][xs[0].astype(np.int64) + 128]


@kernel("softmax")
def softmax(step, xs, out_shape):
    p = step.params
    x = xs[0].reshape(len(xs[0]), p["rows"], p["depth"]).astype(np.int64)
    e = step.arrays["table"].astype(np.int64)[x.max(axis=2, keepdims=True) - x]
    total = e.sum(axis=2, keepdims=True)
    out = (e * p["recip"] + total // 2) // total - 128
    return clamp8(out).reshape(xs[0].shape)


# ---- data movement ------------------------------------------------------------------------------------------------
@kernel("pad")
def pad(step, xs, out_shape):
    p = step.params
    x = xs[0]
    top, left = p["pad"]
    out = np.full((len(x),) + tuple(out_shape), p["value"], np.int8)
    out[:, top:top + x.shape[1], left:left + x.shape[2]] = x
    return out


@kernel("crop")
def crop(step, xs, out_shape):
    top, left = step.params["crop"]
    return np.ascontiguousarray(xs[0][:, top:top + out_shape[0], left:left + out_shape[1]])


@kernel("upsample")
def upsample(step, xs, out_shape):
    fh, fw = step.params["factor"]
    return np.repeat(np.repeat(xs[0], fh, axis=1), fw, axis=2)


@kernel("copy")
def copy(step, xs, out_shape):
    return xs[0].reshape((len(xs[0]),) + tuple(out_shape)).copy()

