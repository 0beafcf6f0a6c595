"""Lowering rows for merges: element-wise add / sub / average (QUANTIZED_ADD, float ADD, v4 binary with
broadcasting) and concatenation of CHW bytes.
"""
import math

import numpy as np

from ... import registrar
from .handlers_pointwise import BINARY_OPS, nchw, requantize
from .ir import F32, MAIN, U8

HANDLERS = {}
lowers = registrar(HANDLERS)


# ---- merging -----------------------------------------------------------------------------------------------------------
ELEMENTWISE_COEFFICIENTS = {
    "add": lambda n: [1.0] * n,
    "sub": lambda n: [1.0] + [-1.0] * (n - 1),
    "avg": lambda n: [1.0 / n] * n,
}


@lowers("elementwise")
def elementwise(ctx, node):
    op = node.op.op
    shapes = {ctx.graph[n].shape for n in node.inputs}
    if ctx.version == 4 and (op not in ELEMENTWISE_COEFFICIENTS or len(shapes) != 1):
        float_binary(ctx, node, op)
        return
    if op not in ELEMENTWISE_COEFFICIENTS:
        ctx.problem(node, f"element-wise '{op}' has no K210 v3 layer (it has add, sub and average); restructure "
                          f"the model or use kmodel v4")
        return
    if len(shapes) != 1:
        ctx.problem(node, f"element-wise '{op}' with broadcasting {sorted(shapes)}; kmodel v3 adds equal shapes "
                          f"only; use kmodel v4")
        return
    srcs = [ctx.values[n] for n in node.inputs]
    if op == "add" and all(s.raw is None and set(s.forms) == {F32} for s in srcs):
        acc = ctx.need(srcs[0], F32)
        for other in srcs[1:]:
            out = ctx.buffer(node.name, MAIN, F32, (srcs[0].count,))
            ctx.emit("ADD", node.name, [acc, ctx.need(other, F32)], [out], count=srcs[0].count)
            acc = out
        ctx.set_value(node.name, node.shape, F32, acc, ctx.quant_of(node.name))
        return
    coefficients = ELEMENTWISE_COEFFICIENTS[op](len(srcs))
    out_q = ctx.quant_of(node.name)
    a = ctx.natural(srcs[0]) if len({s.order for s in srcs}) > 1 else srcs[0]
    acc_buf = ctx.need(a, U8)
    acc_q, acc_c = a.quant, coefficients[0]
    for other, c in zip(srcs[1:], coefficients[1:]):
        b = ctx.natural(other) if a.order != other.order else other
        b_buf = ctx.need(b, U8)
        params = quantized_add_params(acc_q, acc_c, b.quant, c, out_q)
        if params is None:
            ctx.problem(node, "the input scales differ too much for QUANTIZED_ADD's 32-bit multipliers")
            return
        out = ctx.buffer(node.name, MAIN, U8, b_buf.shape, out_q)
        ctx.emit("QUANTIZED_ADD", node.name, [acc_buf, b_buf], [out], count=a.count, macs=a.count,
                 coefficients=(acc_q, acc_c, b.quant, c, out_q), **params)
        acc_buf, acc_q, acc_c = out, out_q, 1.0
    ctx.set_value(node.name, node.shape, U8, acc_buf, out_q, order=a.order)


def quantized_add_params(qa, ca, qb, cb, qo):
    """QUANTIZED_ADD fields for out = ca * a + cb * b in real values (spec 2.4).

    Multipliers share the shift 0 and one output shift P. The input with a positive coefficient carries a
    bias of 2**Q codes so that the sum is never negative: the SDK's carry shift rounds negative values wrongly.
    """
    ra, rb = ca * qa.scale / qo.scale, cb * qb.scale / qo.scale
    total = abs(ra) + abs(rb)
    if total == 0 or max(ra, rb) <= 0:
        return None
    p = int(np.clip(math.floor(22 - math.log2(total)), 4, 24))
    ma, mb = int(round(ra * 2 ** p)), int(round(rb * 2 ** p))
    carrier_is_a = ra >= rb
    mc = ma if carrier_is_a else mb
    q = max(p, math.ceil(math.log2(255.0 * (abs(ma) + abs(mb)) / mc + 1)))
    bias_codes = (1 << (q - p)) * mc
    fields = {"a_offset": -qa.zero_point, "a_mul": ma, "a_shift": 0,
              "b_offset": -qb.zero_point, "b_mul": mb, "b_shift": 0,
              "out_offset": qo.zero_point - bias_codes, "out_mul": 1, "out_shift": p}
    fields["a_offset" if carrier_is_a else "b_offset"] += 1 << q
    limit = (1 << 31) - 1
    if any(abs(v) > limit for v in fields.values()) or q > 30:
        return None
    return fields


def float_binary(ctx, node, op):
    """kmodel v4 only: an element-wise op on float32 NCHW values, with broadcasting ('avg' = sum times 1/n)."""
    shapes = [ctx.graph[n].shape for n in node.inputs]
    if any(len(s) not in (1, 3) for s in shapes + [node.shape]):
        ctx.problem(node, f"element-wise '{op}' on {shapes}: the K210 takes maps (H, W, C) and vectors")
        return
    srcs = [ctx.natural(ctx.values[n]) if len(s) == 1 else ctx.values[n] for n, s in zip(node.inputs, shapes)]
    if any(len(shape) == 3 and src.order is not None for src, shape in zip(srcs, shapes)):
        ctx.problem(node, f"element-wise '{op}' on a map not stored CHW; apply it to the map before reshaping")
        return
    acc, acc_shape = ctx.need(srcs[0], F32), nchw(shapes[0])
    for src, shape in zip(srcs[1:], shapes[1:]):
        out_shape = tuple(np.broadcast_shapes(acc_shape, nchw(shape)))
        out = ctx.buffer(node.name, MAIN, F32, (int(np.prod(out_shape)),))
        ctx.emit_v4("binary", node.name, [acc, ctx.need(src, F32)], [out], macs=out.count,
                    binary_op=BINARY_OPS["add" if op == "avg" else op], shapes=(acc_shape, nchw(shape), out_shape))
        acc, acc_shape = out, out_shape
    if op == "avg":
        out = ctx.buffer(node.name + ":avg", MAIN, F32, (acc.count,))
        ctx.emit_v4("binary", node.name, [acc], [out], macs=acc.count, binary_op=BINARY_OPS["mul"],
                    shapes=(acc_shape, (1, 1, 1, 1), acc_shape), constant=np.float32([1.0 / len(srcs)]))
        acc = out
    ctx.set_value(node.name, node.shape, F32, acc, ctx.quant_of(node.name))


@lowers("concat")
def concat(ctx, node):
    """Concatenation of CHW bytes: one range per input (channels), per channel (rows) or per row (columns)."""
    srcs = [ctx.values[n] for n in node.inputs]
    rank = len(node.shape)
    axis = node.op.resolved_axis(rank)
    if rank == 1 and all(s.raw is None and set(s.forms) == {F32} for s in srcs):
        parts = [ctx.need(ctx.natural(s), F32) for s in srcs]
        out = ctx.buffer(node.name, MAIN, F32, (sum(p.count for p in parts),))
        ctx.emit("CONCAT", node.name, parts, [out], ranges=[(p, 0, p.nbytes) for p in parts])
        ctx.set_value(node.name, node.shape, F32, out, ctx.quant_of(node.name))
        return
    if rank not in (1, 3):
        ctx.problem(node, f"concat of rank-{rank} tensors; the K210 concatenates maps and vectors")
        return
    out_q = ctx.quant_of(node.name)
    parts = []
    for s in srcs:
        s = ctx.natural(s) if rank == 1 else s
        buf = ctx.need(s, U8)
        if s.quant != out_q:
            buf = requantize(ctx, node.name, buf, s.quant, out_q)
        parts.append((buf, s.chw))
    ranges = []
    c, h, w = (node.shape[2], node.shape[0], node.shape[1]) if rank == 3 else (node.shape[0], 1, 1)
    if rank == 1 or axis == 2:
        ranges = [(buf, 0, buf.count) for buf, _ in parts]
    elif axis == 0:
        ranges = [(buf, ch * pc[1] * pc[2], pc[1] * pc[2]) for ch in range(c) for buf, pc in parts]
    else:
        ranges = [(buf, (ch * pc[1] + y) * pc[2], pc[2]) for ch in range(c) for y in range(h) for buf, pc in parts]
    out = ctx.buffer(node.name, MAIN, U8, (c, h, w) if rank == 3 else (c,), out_q)
    ctx.emit("QUANTIZED_CONCAT", node.name, [buf for buf, _ in parts], [out], ranges=ranges)
    ctx.set_value(node.name, node.shape, U8, out, out_q)
