"""Lowering rows for the model input, pass-through and shape ops: reshape / flatten (lazy CHW orders), nearest
upsampling, zero padding and cropping on the CPU.
"""
import numpy as np

from ... import registrar
from .ir import F32, MAIN, U8

HANDLERS = {}
lowers = registrar(HANDLERS)


# ---- input and pass-through --------------------------------------------------------------------------------
@lowers("input")
def model_input(ctx, node):
    """Placed by the lowering itself (KPU image or float vector); reaching here means it could not be."""
    ctx.problem(node, "the model input could not be placed")


@lowers("identity")
def identity(ctx, node):
    src = ctx.values[node.inputs[0]]
    ctx.alias(node.name, src, node.shape, src.order)


# ---- shapes ---------------------------------------------------------------------------------------------------------------
@lowers("flatten", "reshape")
def reshape(ctx, node):
    """No layer when the bytes already are in the new order; a flattened map keeps its CHW order lazily."""
    src = ctx.values[node.inputs[0]]
    in_shape, out_shape = ctx.graph[node.inputs[0]].shape, node.shape
    if src.order == "hwc" or _row_major_equals_chw(in_shape) and src.order is None:
        order = None
    elif src.order is None and len(in_shape) == 3:
        order = tuple(in_shape)                    # bytes are CHW of in_shape, graph order is its flattening
    else:
        order = src.order
    if len(out_shape) == 3:
        if order is not None and tuple(out_shape) == tuple(order):
            ctx.alias(node.name, src, out_shape, None)
            return
        if order is not None or not _row_major_equals_chw(out_shape):
            if ctx.version == 4:
                vector_to_map(ctx, node, src, out_shape)
                return
            ctx.problem(node, f"reshape {in_shape} -> {out_shape} reorders channels; kmodel v3 has no layer that "
                              f"turns a vector into a multi-channel CHW map; use kmodel v4")
            return
        order = None
    ctx.alias(node.name, src, out_shape, order)


def vector_to_map(ctx, node, src, shape):
    """kmodel v4 only: a vector (the HWC flattening of `shape`) as a CHW map, by a transpose of its bytes."""
    nat = ctx.natural(src)
    form = U8 if U8 in nat.forms else F32
    h, w, c = shape
    out = ctx.buffer(node.name, MAIN, form, (c, h, w) if form == U8 else (nat.count,), nat.quant)
    ctx.emit_v4("transpose", node.name, [ctx.need(nat, form)], [out], in_shape=(1, h, w, c), perm=(0, 3, 1, 2))
    ctx.set_value(node.name, shape, form, out, nat.quant)


def _row_major_equals_chw(shape):
    return len(shape) != 3 or shape[0] * shape[1] == 1 or shape[2] == 1


@lowers("upsample2d")
def upsample(ctx, node):
    src = ctx.values[node.inputs[0]]
    c, h, w = src.chw
    oh, ow = node.shape[:2]
    for size, out_size in ((h, oh), (w, ow)):         # the SDK's float32 source index must be the nearest one
        scale = np.float32(size) / np.float32(out_size)
        index = np.minimum(np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64), size - 1)
        if not np.array_equal(index, np.arange(out_size) * size // out_size):
            ctx.problem(node, f"upsampling {size} -> {out_size}: the SDK's float32 index rounding differs from "
                              f"nearest-neighbour; use a factor of 2 or 4")
            return
    out = ctx.buffer(node.name, MAIN, U8, (c, oh, ow), src.quant)
    ctx.emit("QUANTIZED_RESIZE_NEAREST_NEIGHBOR", node.name, [ctx.need(src, U8)], [out], in_chw=(c, h, w),
             out_hw=(oh, ow))
    ctx.set_value(node.name, node.shape, U8, out, src.quant)


@lowers("pad2d")
def pad(ctx, node):
    """Padding on the CPU: kmodel v4's pad fills with the value's code; v3 has a 1x1 QUANTIZED_MAX_POOL2D, whose
    out-of-map samples are code 0."""
    src = ctx.values[node.inputs[0]]
    u8 = ctx.need(src, U8)
    q = src.quant
    code = int(np.clip(np.round(node.op.value / q.scale) + q.zero_point, 0, 255)) if ctx.version == 4 else 0
    if abs((code - q.zero_point) * q.scale - node.op.value) > q.scale / 2:
        if ctx.version == 4:
            ctx.problem(node, f"padding with {node.op.value:g} is outside this tensor's range [{q.lo:g}, {q.hi:g}]; "
                              f"calibrate with data that reaches it")
        else:
            ctx.problem(node, f"padding with {node.op.value:g} on the CPU gives code 0 = {q.lo:g} for this tensor; "
                              f"fold the padding into the next conv (ZeroPadding2D(1) + 3x3 'valid') or use kmodel "
                              f"v4")
        return
    out = ctx.pad_map(node.name, u8, src.chw, node.op.pads, code, q)
    ctx.set_value(node.name, node.shape, U8, out, q)


@lowers("crop2d")
def crop(ctx, node):
    src = ctx.values[node.inputs[0]]
    top, _, left, _ = node.op.crops
    oh, ow = node.shape[:2]
    out = ctx.crop(node.name, ctx.need(src, U8), src.chw, (top, left, oh, ow), src.quant, U8)
    ctx.set_value(node.name, node.shape, U8, out, src.quant)
