"""kmodel v4 CPU opcodes that move or re-code data: concat, memory_copy, transpose, pad, strided_slice,
table_lookup1d, quantize, dequantize and resize_image."""
import numpy as np

from ..chip.cpu_math import roundf
from .ops_common import F32, elem_dtype, executes, prod, raw_dtype, to_uint8_saturating, wrap32


# ---- data movement -----------------------------------------------------------------------------------------------
@executes("concat")
def concat(m, node):
    b = node.body
    inner, outer = b.inner_size, b.outer_size
    dims = [int(d) for d in node.extra["dims"]]
    m.reserve(node.range("output"), outer * inner * sum(dims), "output")
    parts = [m.read(r, "u1", outer * inner * d, f"inputs[{i}]").reshape(outer, inner * d)
             for i, (r, d) in enumerate(zip(node.extra["inputs"], dims))]
    out = np.concatenate(parts, axis=1) if parts else np.zeros(0, np.uint8)
    return m.write(node.range("output"), out, "output")


@executes("memory_copy")
def memory_copy(m, node):
    src = node.range("input")
    data = m.read(src, "u1", src.size // 4 * 4, "input")
    return m.write(node.range("output"), data, "output")


@executes("transpose")
def transpose(m, node):
    src = node.range("input")
    shape, perm = node.shape("in_shape"), node.shape("perm")
    x = m.read(src, raw_dtype(src), prod(shape), "input").reshape(shape)
    return m.write(node.range("output"), np.ascontiguousarray(x.transpose(perm)), "output")


@executes("pad")
def pad(m, node):
    src = node.range("input")
    shape = node.shape("in_shape")
    pads = [(p.before, p.after) for p in node.body.paddings]
    out_shape = tuple(max(0, s + a + b) for s, (a, b) in zip(shape, pads))
    dtype = raw_dtype(src)
    m.reserve(node.range("output"), prod(out_shape) * np.dtype(dtype).itemsize, "output")
    x = m.read(src, dtype, prod(shape), "input").reshape(shape)
    value = np.frombuffer(bytes(node.body.pad_value.storage), dtype, 1)[0]
    src_idx = [np.arange(o) - a for o, (a, _) in zip(out_shape, pads)]
    valid = [(i >= 0) & (i < s) for i, s in zip(src_idx, shape)]
    if prod(out_shape) and not prod(shape) and any(v.any() for v in valid):
        m.fail("pad reads an empty input", "in_shape")
    if prod(shape):
        picked = x[np.ix_(*[np.clip(i, 0, s - 1) for i, s in zip(src_idx, shape)])]
    else:
        picked = np.zeros(out_shape, dtype)
    inside = np.ones(out_shape, bool)
    for axis, v in enumerate(valid):
        inside &= v.reshape([-1 if k == axis else 1 for k in range(4)])
    out = np.where(inside, picked, value).astype(dtype)
    return m.write(node.range("output"), out, "output")


@executes("strided_slice")
def strided_slice(m, node):
    src = node.range("input")
    b = node.body
    shape = node.shape("in_shape")
    ranges = [range(int(s), int(e), int(st)) for s, e, st in zip(b.begin, b.end, b.strides)]
    out_shape = tuple(len(r) for r in ranges)
    dtype = raw_dtype(src)
    m.reserve(node.range("output"), prod(out_shape) * np.dtype(dtype).itemsize, "output")
    if not prod(out_shape):
        return np.zeros(out_shape, dtype)
    for axis, (r, size) in enumerate(zip(ranges, shape)):
        if min(r[0], r[-1]) < 0 or max(r[0], r[-1]) >= size:
            m.fail(f"axis {axis} slice {r.start}:{r.stop}:{r.step} leaves its input dimension {size}", "begin")
    x = m.read(src, dtype, prod(shape), "input").reshape(shape)
    out = x[np.ix_(*[np.arange(r.start, r.stop, r.step) for r in ranges])]
    return m.write(node.range("output"), np.ascontiguousarray(out), "output")


@executes("table_lookup1d")
def table_lookup1d(m, node):
    src = node.range("input")
    x = m.read(src, "u1", src.size, "input")
    table = m.read(node.range("table"), "u1", 256, "table")
    return m.write(node.range("output"), table[x], "output")


# ---- quantization ------------------------------------------------------------------------------------------------
@executes("quantize")
def quantize(m, node):
    src = node.range("input")
    q = node.body.quant_param
    x = m.read(src, "<f4", src.size // 4, "input")
    with np.errstate(all="ignore"):
        v = (x * F32(q.scale)).astype(F32) + F32(q.zero_point)
    return m.write(node.range("output"), to_uint8_saturating(roundf(v.astype(F32))), "output")


@executes("dequantize")
def dequantize(m, node):
    src = node.range("input")
    q = node.body.quant_param
    x = m.read(src, "u1", src.size, "input")
    with np.errstate(all="ignore"):
        div = F32(1.0) / F32(q.scale)
        out = (wrap32(x.astype(np.int64) - q.zero_point).astype(F32) * div).astype(F32)
    return m.write(node.range("output"), out, "output")


# ---- resize ------------------------------------------------------------------------------------------------------
@executes("resize_image")
def resize_image(m, node):
    b = node.body
    src = node.range("input")
    n, c, h, w = node.shape("in_shape")
    oh, ow = b.out_h, b.out_w
    dtype = elem_dtype(src)
    if oh <= 0 or ow <= 0:
        return np.zeros(0, dtype)
    m.reserve(node.range("output"), n * c * oh * ow * np.dtype(dtype).itemsize, "output")
    if n * c and not h * w:
        m.fail("resize of an empty image", "in_shape")
    x = m.read(src, dtype, n * c * h * w, "input").reshape(n, c, h, w)
    with np.errstate(all="ignore"):
        sy, sx = F32(h) / F32(oh), F32(w) / F32(ow)
        if b.mode == 1:
            iy = np.minimum(np.floor(np.arange(oh, dtype=F32) * sy).astype(np.int64), h - 1)
            ix = np.minimum(np.floor(np.arange(ow, dtype=F32) * sx).astype(np.int64), w - 1)
            out = x[:, :, np.clip(iy, 0, h - 1)][:, :, :, np.clip(ix, 0, w - 1)]
        else:
            if b.align_corners and oh > 1:
                sy = F32(h - 1) / F32(oh - 1)
            if b.align_corners and ow > 1:
                sx = F32(w - 1) / F32(ow - 1)
            fy, fx = (np.arange(oh, dtype=F32) * sy).astype(F32), (np.arange(ow, dtype=F32) * sx).astype(F32)
            y0 = np.clip(np.floor(fy).astype(np.int64), 0, h - 1)
            x0 = np.clip(np.floor(fx).astype(np.int64), 0, w - 1)
            y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
            dy, dx = (fy - y0.astype(F32)).astype(F32)[:, None], (fx - x0.astype(F32)).astype(F32)[None, :]
            one = F32(1.0)
            a0, a1 = ((one - dy) * (one - dx)).astype(F32), (dy * (one - dx)).astype(F32)
            a2, a3 = ((one - dy) * dx).astype(F32), (dy * dx).astype(F32)
            v = x.astype(F32)
            pick = (lambda yy, xx: v[:, :, yy][:, :, :, xx])
            out = (pick(y0, x0) * a0).astype(F32)
            out = (out + (pick(y1, x0) * a1).astype(F32)).astype(F32)
            out = (out + (pick(y0, x1) * a2).astype(F32)).astype(F32)
            out = (out + (pick(y1, x1) * a3).astype(F32)).astype(F32)
            if dtype == "u1":
                out = np.clip(np.trunc(out), 0, 255).astype(np.uint8)
    return m.write(node.range("output"), np.ascontiguousarray(out), "output")
