"""Lowering rows for activations, PReLU, softmax and pooling: aliases where the codes already clamp, REQUANTIZE
lookup tables, float CPU layers, and the quantized max pool.
"""
import numpy as np

from ... import registrar
from ....layers import Act
from .actfit import activation_fn
from .ir import F32, KPU, MAIN, U8

HANDLERS = {}
lowers = registrar(HANDLERS)


def float_activation(ctx, node, src, act):
    """An activation on a float value: LOGISTIC / SOFTMAX on the CPU, others through a uint8 lookup table."""
    if act.name == "sigmoid":
        out = ctx.buffer(node.name + ":sigmoid", MAIN, F32, (src.count,))
        ctx.emit("LOGISTIC", node.name, [ctx.need(src, F32)], [out], count=src.count)
        ctx.set_value(node.name, node.shape, F32, out, order=src.order)
    elif act.name == "softmax":
        softmax(ctx, node, src)
    else:
        lookup_activation(ctx, node, src, act)


def softmax(ctx, node, src):
    shape = node.shape
    if len(shape) > 1 and src.count not in shape:
        if ctx.version == 4 and len(shape) == 3 and src.order is None:
            channel_softmax(ctx, node, src)
            return
        ctx.problem(node, f"softmax over the channels of a {shape} map has no K210 v3 layer (SOFTMAX takes one "
                          f"vector); apply it on the host or use kmodel v4")
        return
    nat = ctx.natural(src)
    out = ctx.buffer(node.name + ":softmax", MAIN, F32, (src.count,))
    ctx.emit("SOFTMAX", node.name, [ctx.need(nat, F32)], [out], count=src.count)
    ctx.set_value(node.name, shape, F32, out)


def channel_softmax(ctx, node, src):
    """kmodel v4 only: softmax over the channels of every pixel (segmentation heads): transpose CHW -> HWC,
    softmax on rows of C values, transpose back."""
    h, w, c = node.shape
    x = ctx.need(src, F32)
    hwc, rows, out = (ctx.buffer(f"{node.name}:{part}", MAIN, F32, (src.count,)) for part in ("hwc", "softmax", "chw"))
    ctx.emit_v4("transpose", node.name, [x], [hwc], in_shape=(1, c, h, w), perm=(0, 2, 3, 1))
    ctx.emit_v4("softmax", node.name, [hwc], [rows], inner_size=c, outer_size=h * w)
    ctx.emit_v4("transpose", node.name, [rows], [out], in_shape=(1, h, w, c), perm=(0, 3, 1, 2))
    ctx.set_value(node.name, node.shape, F32, out, ctx.quant_of(node.name))


def lookup_activation(ctx, node, src, act):
    """REQUANTIZE: a 256-entry table maps the input codes to the activation's output codes (exact rounding)."""
    u8 = ctx.need(src, U8)
    q_in, q_out = src.quant, ctx.quant_of(node.name)
    codes = np.arange(256)
    real = activation_fn(act)((codes - q_in.zero_point) * q_in.scale)
    table = np.clip(np.round(real / q_out.scale) + q_out.zero_point, 0, 255).astype(np.uint8)
    out = ctx.buffer(node.name, MAIN, U8, u8.shape, q_out)
    ctx.emit("REQUANTIZE", node.name, [u8], [out], count=src.count, table=table)
    ctx.set_value(node.name, node.shape, U8, out, q_out, order=src.order)


def requantize(ctx, name, buf, q_in, q_out):
    codes = np.arange(256)
    table = np.clip(np.round((codes - q_in.zero_point) * q_in.scale / q_out.scale) + q_out.zero_point, 0, 255)
    out = ctx.buffer(name + ":requant", MAIN, U8, buf.shape, q_out)
    ctx.emit("REQUANTIZE", name, [buf], [out], count=buf.count, table=table.astype(np.uint8))
    return out


# ---- activations -------------------------------------------------------------------------------------------------
@lowers("activation")
def activation(ctx, node):
    apply_activation(ctx, node, node.op.activation)


@lowers("prelu")
def prelu(ctx, node):
    alpha = np.unique(node.op.weights["alpha"])
    if len(alpha) != 1 and ctx.version == 4:
        float_prelu(ctx, node)
        return
    if len(alpha) != 1:
        ctx.problem(node, "PReLU with per-channel slopes has no K210 v3 layer; use LeakyReLU (one slope) or "
                          "kmodel v4")
        return
    apply_activation(ctx, node, Act("leaky_relu", float(alpha[0])))


def apply_activation(ctx, node, act):
    src = ctx.values[node.inputs[0]]
    if act.name == "softmax":
        softmax(ctx, node, src)
        return
    if src.raw is None and not ({KPU, U8} & set(src.forms)):
        float_activation(ctx, node, src, act)
        return
    if src.quant is None:
        src.quant = ctx.quant_of(src.name)
    q = src.quant
    if act.name in ("relu", "relu6") and q.zero_point == 0 and (act.name == "relu" or q.hi <= 6.0 + 1e-6):
        ctx.alias(node.name, src, node.shape, src.order)          # the codes already clamp at real 0
        return
    lookup_activation(ctx, node, src, act)


# ---- pooling --------------------------------------------------------------------------------------------------------
@lowers("pool2d")
def pool(ctx, node):
    op = node.op
    src = ctx.values[node.inputs[0]]
    top, _, left, _ = op.pads
    out_hw = node.shape[:2]
    if op.mode == "max":           # out-of-map samples are skipped, as TF's 'same' max pool ignores padding
        out = ctx.max_pool(node.name, ctx.need(src, U8), src.chw, out_hw, op.pool_size, op.strides, (top, left),
                           src.quant)
        ctx.set_value(node.name, node.shape, U8, out, src.quant)
        return
    c = src.chw[0]
    out = ctx.buffer(node.name, MAIN, F32, (c,) + tuple(out_hw))
    ctx.emit("AVERAGE_POOL2D", node.name, [ctx.need(src, F32)], [out], in_chw=src.chw, out_chw=(c,) + tuple(out_hw),
             kernel=op.pool_size, strides=op.strides, pads=(top, left),
             macs=int(np.prod(node.shape)) * op.pool_size[0] * op.pool_size[1])
    ctx.set_value(node.name, node.shape, F32, out, ctx.quant_of(node.name))


@lowers("global_pool2d")
def global_pool(ctx, node):
    src = ctx.values[node.inputs[0]]
    c, h, w = src.chw
    if node.op.mode == "max":
        out = ctx.max_pool(node.name, ctx.need(src, U8), src.chw, (1, 1), (h, w), (1, 1), (0, 0), src.quant)
        ctx.set_value(node.name, node.shape, U8, out, src.quant)
        return
    out = ctx.buffer(node.name, MAIN, F32, (c,))
    ctx.emit("GLOBAL_AVERAGE_POOL2D", node.name, [ctx.need(src, F32)], [out], chw=(c, h, w), macs=c * h * w)
    ctx.set_value(node.name, node.shape, F32, out, ctx.quant_of(node.name))


BINARY_OPS = {"add": 0, "sub": 1, "mul": 2, "div": 3, "min": 4, "max": 5}


def nchw(shape):
    """The v4 N C H W shape of a graph tensor stored CHW: a map (H, W, C) or a vector (C,) as a 1x1 map."""
    h, w, c = (1,) * (3 - len(shape)) + tuple(shape)
    return (1, c, h, w)


def float_prelu(ctx, node):
    """kmodel v4 only: PReLU with per-channel slopes as x + (alpha - 1) * min(x, 0) on float32 (three nodes)."""
    src = ctx.values[node.inputs[0]]
    if len(node.shape) == 1:
        src = ctx.natural(src)
    shape = nchw(node.shape)
    alpha = np.broadcast_to(node.op.weights["alpha"], node.shape).astype(np.float32)
    alpha = alpha.transpose(2, 0, 1) if alpha.ndim == 3 else alpha
    if alpha.ndim == 3 and np.all(alpha == alpha[:, :1, :1]):
        alpha = alpha[:, :1, :1]                   # one slope per channel
    slope_shape = (1, alpha.shape[0]) + (alpha.shape[1:] if alpha.ndim == 3 else (1, 1))
    x = ctx.need(src, F32)
    count = x.count
    neg, scaled, out = (ctx.buffer(f"{node.name}:{part}", MAIN, F32, (count,)) for part in ("neg", "scaled", "out"))
    one = (1, 1, 1, 1)
    ctx.emit_v4("binary", node.name, [x], [neg], macs=count, binary_op=BINARY_OPS["min"], shapes=(shape, one, shape),
                constant=np.float32([0.0]))
    ctx.emit_v4("binary", node.name, [neg], [scaled], macs=count, binary_op=BINARY_OPS["mul"],
                shapes=(shape, slope_shape, shape), constant=np.ascontiguousarray(alpha - 1.0, np.float32))
    ctx.emit_v4("binary", node.name, [x, scaled], [out], macs=count, binary_op=BINARY_OPS["add"],
                shapes=(shape, shape, shape))
    ctx.set_value(node.name, node.shape, F32, out, ctx.quant_of(node.name))
