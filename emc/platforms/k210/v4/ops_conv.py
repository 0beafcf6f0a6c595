"""kmodel v4 CPU opcodes with weights: matmul, quantized_matmul, the float and quantized convolutions and
conv2d_transpose."""
import numpy as np

from .describe import windowed
from .ops_common import (F32, FLT_MAX, clamp, executes, executes_batched, mul_and_carry_shift, prod,
                         window_geometry, wrap32)


# ---- matmul and convolutions -------------------------------------------------------------------------------------
@executes_batched("matmul")
def matmul(machines, node):
    """Float32 a @ b + bias, summed step by step (product and sum each rounded); the steps run once for every
    machine of a lockstep run."""
    b = node.body
    rows, cols, b_cols = b.a_rows, b.a_cols, b.b_cols
    for m in machines:
        m.reserve(node.range("output"), rows * b_cols * 4, "output")
    if not rows * b_cols:
        return [np.zeros((rows, b_cols), F32) for _ in machines]
    for m in machines:
        m.work(rows * cols * b_cols, "the matmul")
    a = np.stack([m.read(node.range("input_a"), "<f4", rows * cols, "input_a").reshape(rows, cols) for m in machines])
    w = np.stack([m.read(node.range("input_b"), "<f4", cols * b_cols, "input_b").reshape(cols, b_cols)
                  for m in machines])
    acc = np.broadcast_to(node.extra["bias"], (len(machines), rows, b_cols)).astype(F32)
    with np.errstate(all="ignore"):
        for i in range(cols):
            acc = (acc + (a[:, :, i:i + 1] * w[:, i:i + 1, :]).astype(F32)).astype(F32)
    act = b.fused_activation
    return [m.write(node.range("output"), clamp(out, act.min, act.max), "output") for m, out in zip(machines, acc)]


@executes("quantized_matmul")
def quantized_matmul(m, node):
    b = node.body
    rows, cols, b_cols = b.a_rows, b.a_cols, b.b_cols
    m.reserve(node.range("output"), rows * b_cols, "output")
    if not rows * b_cols:
        return np.zeros((rows, b_cols), np.uint8)
    m.work(rows * cols * b_cols, "the matmul")
    a = m.read(node.range("input_a"), "u1", rows * cols, "input_a").reshape(rows, cols).astype(np.int64)
    w = m.read(node.range("input_b"), "u1", cols * b_cols, "input_b").reshape(cols, b_cols).astype(np.int64)
    acc = wrap32((a + b.input_a_offset) @ (w + b.input_b_offset) + node.extra["bias"].astype(np.int64))
    r = mul_and_carry_shift(acc, b.output_mul, b.output_shift)
    return m.write(node.range("output"), np.clip(wrap32(r + b.output_offset), 0, 255).astype(np.uint8), "output")


def _conv_float(m, b, x, weights, bias, groups, ic_inner=False):
    """Grouped NCHW float32 convolution, accumulated tap by tap from the bias as nncase's loops do.

    x (N, C, H, W); weights (O, C/groups, fh, fw); ic_inner: the input channel is the innermost loop (cpu_conv2d)
    instead of the outermost (neutral conv2d)."""
    n, c, h, w = x.shape
    oc = weights.shape[0]
    g_ic, g_oc = c // groups, oc // groups
    oh, ow, ys, xs = window_geometry(m, b, h, w)
    m.work(n * oc * oh * ow * g_ic * max(1, len(ys) * len(xs)), "the convolution")
    xg = x.reshape(n, groups, g_ic, h, w)
    wg = weights.reshape(groups, g_oc, g_ic, b.filter_h, b.filter_w)
    acc = np.broadcast_to(bias.astype(F32).reshape(1, groups, g_oc, 1, 1), (n, groups, g_oc, oh, ow)).copy()
    order = [(ic, ty, tx) for ty in ys for tx in xs for ic in range(g_ic)] if ic_inner else \
        [(ic, ty, tx) for ic in range(g_ic) for ty in ys for tx in xs]
    with np.errstate(all="ignore"):
        for ic, (ky, iy, vy), (kx, ix, vx) in order:
            xin = xg[:, :, ic][:, :, iy][:, :, :, ix]                       # (N, G, oh, ow)
            prod_ = (xin[:, :, None] * wg[:, :, ic, ky, kx][None, :, :, None, None]).astype(F32)
            valid = vy[:, None] & vx[None, :]
            acc = np.where(valid, (acc + prod_).astype(F32), acc)
    act = b.fused_activation
    return clamp(acc.reshape(n, oc, oh, ow), act.min, act.max)


def _conv_quantized(m, b, x, weights, bias, groups, in_offset, w_offset):
    """Grouped NCHW integer convolution: int32 bias + sum of (x + in_offset)(w + w_offset) over valid taps."""
    n, c, h, w = x.shape
    oc = weights.shape[0]
    g_ic, g_oc = c // groups, oc // groups
    oh, ow, ys, xs = window_geometry(m, b, h, w)
    m.work(n * oc * oh * ow * g_ic * max(1, len(ys) * len(xs)), "the convolution")
    xg = x.reshape(n, groups, g_ic, h, w).astype(np.int64) + in_offset
    wg = weights.reshape(groups, g_oc, g_ic, b.filter_h, b.filter_w).astype(np.int64) + w_offset
    acc = np.broadcast_to(bias.astype(np.int64).reshape(1, groups, g_oc, 1, 1), (n, groups, g_oc, oh, ow)).copy()
    for ky, iy, vy in ys:
        for kx, ix, vx in xs:
            valid = vy[:, None] & vx[None, :]
            xin = np.where(valid, xg[:, :, :, iy][:, :, :, :, ix], 0)          # (N, G, g_ic, oh, ow)
            acc += np.einsum("ngihw,goi->ngohw", xin, wg[:, :, :, ky, kx])
    acc = wrap32(acc.reshape(n, oc, oh, ow))
    r = mul_and_carry_shift(acc, b.output_mul, b.output_shift)
    return np.clip(wrap32(r + b.output_offset), 0, 255).astype(np.uint8)


def _conv_input(m, node, nhwc):
    shape = node.shape("in_shape")
    x = m.read(node.range("input"), "<f4" if "quantized" not in node.name else "u1", prod(shape), "input")
    x = x.reshape(shape)
    return x.transpose(0, 3, 1, 2) if nhwc else x


def _reserve_conv(m, node, n, oc, h, w, itemsize):
    b = node.body
    oh = windowed(h, b.filter_h, b.stride_h, b.dilation_h, b.padding_h.before, b.padding_h.after)
    ow = windowed(w, b.filter_w, b.stride_w, b.dilation_w, b.padding_w.before, b.padding_w.after)
    m.reserve(node.range("output"), n * oc * oh * ow * itemsize, "output")


@executes("conv2d")
def conv2d(m, node):
    b = node.body
    n, c, h, w = node.shape("in_shape")
    _reserve_conv(m, node, n, b.out_channels, h, w, 4)
    x = _conv_input(m, node, False)
    weights = node.extra["weights"].reshape(b.out_channels, c // b.groups, b.filter_h, b.filter_w)
    out = _conv_float(m, b, x, weights, node.extra["bias"], b.groups)
    return m.write(node.range("output"), out, "output")


@executes("quantized_conv2d")
def quantized_conv2d(m, node):
    b = node.body
    n, c, h, w = node.shape("in_shape")
    _reserve_conv(m, node, n, b.out_channels, h, w, 1)
    x = _conv_input(m, node, False)
    weights = node.extra["weights"].reshape(b.out_channels, c // b.groups, b.filter_h, b.filter_w)
    out = _conv_quantized(m, b, x, weights, node.extra["bias"], b.groups, b.input_offset, b.filter_offset)
    return m.write(node.range("output"), out, "output")


@executes("cpu_conv2d", "cpu_depthwise_conv2d", "cpu_quantized_conv2d", "cpu_quantized_depthwise_conv2d")
def cpu_conv(m, node):
    b = node.body
    n, h, w, c = node.shape("in_shape")
    depthwise = "depthwise" in node.name
    quantized = "quantized" in node.name
    oc = c if depthwise else b.out_channels
    _reserve_conv(m, node, n, oc, h, w, 1 if quantized else 4)
    x = _conv_input(m, node, True)
    if depthwise:
        weights, groups = node.extra["weights"].reshape(c, 1, b.filter_h, b.filter_w), max(c, 1)
    else:
        weights, groups = node.extra["weights"].reshape(oc, b.filter_h, b.filter_w, c).transpose(0, 3, 1, 2), 1
    if quantized:       # the cpu kernels subtract the offsets where the neutral ones add them
        out = _conv_quantized(m, b, x, weights, node.extra["bias"], groups, -b.input_offset, -b.filter_offset)
    else:
        out = _conv_float(m, b, x, weights, node.extra["bias"], groups, ic_inner=not depthwise)
    return m.write(node.range("output"), np.ascontiguousarray(out.transpose(0, 2, 3, 1)), "output")


def _scatter_transposed(m, b, x, wg, out):
    """Add every input pixel times every tap into out (N, G, g_oc, oh, ow) in nncase's order, float32 steps."""
    n, groups, g_ic, h, w = x.shape
    g_oc, oh, ow = out.shape[2:]
    m.work(n * groups * g_oc * h * w * g_ic * b.filter_h * b.filter_w, "the transposed convolution")
    # input pixel (iy, ix) with tap (ky, kx) lands on output row iy*stride - pad + ky*dilation; per output pixel
    # the contributions arrive in (ic, iy, ix) order, i.e. with descending taps
    ys = [(k, np.arange(h) * b.stride_h - b.padding_h.before + k * b.dilation_h) for k in range(b.filter_h - 1, -1, -1)]
    xs = [(k, np.arange(w) * b.stride_w - b.padding_w.before + k * b.dilation_w) for k in range(b.filter_w - 1, -1, -1)]
    with np.errstate(all="ignore"):
        for ic in range(g_ic):
            for ky, oy in ys:
                vy = (oy >= 0) & (oy < oh)
                if not vy.any():
                    continue
                for kx, ox in xs:
                    vx = (ox >= 0) & (ox < ow)
                    if not vx.any():
                        continue
                    xin = x[:, :, ic][:, :, vy][:, :, :, vx]                         # (N, G, h', w')
                    contrib = (xin[:, :, None] * wg[:, :, ic, ky, kx][None, :, :, None, None]).astype(F32)
                    region = np.ix_(np.arange(n), np.arange(groups), np.arange(g_oc), oy[vy], ox[vx])
                    out[region] = (out[region] + contrib).astype(F32)


@executes("conv2d_transpose")
def conv2d_transpose(m, node):
    b = node.body
    n, c, h, w = node.shape("in_shape")
    on, oc, oh, ow = node.shape("out_shape")
    groups = b.groups
    g_ic, g_oc = c // groups, oc // groups
    m.reserve(node.range("output"), on * oc * oh * ow * 4, "output")
    if n > on and oc * oh * ow:
        m.fail(f"{n} input batches write past the {on} of out_shape", "out_shape")
    x = m.read(node.range("input"), "<f4", n * c * h * w, "input").reshape(n, groups, g_ic, h, w)
    out = np.zeros((on, groups, g_oc, oh, ow), F32)         # nncase reads the bias but never adds it
    if n * g_ic * h * w * oc:                               # else nothing to scatter (and fh, fw may be anything)
        _scatter_transposed(m, b, x, node.extra["weights"].reshape(groups, g_oc, g_ic, b.filter_h, b.filter_w),
                            out)
    act = b.fused_activation
    out = out.reshape(on, oc, oh, ow)
    if (F32(act.min), F32(act.max)) != (F32(-FLT_MAX), F32(FLT_MAX)):
        out = clamp(out, act.min, act.max)
    return m.write(node.range("output"), out, "output")
