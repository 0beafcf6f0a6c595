"""The K210 mapping table: graph op kind -> generator of kmodel v3 layers (one small function per row).

TABLE is also the source of the "supported layers" list. Generators call ctx.problem() for what the K210
cannot take and return without a value; the lowering then continues, so every problem is listed at once.
"""
import math

import numpy as np

from ...layers import LINEAR, Act
from .actfit import activation_fn
from .convplan import unshift
from .ir import F32, KPU, MAIN, U8
from .kpu import POOL_FACTOR
from .lower import Value
from .quantize import Quant, kpu_conv_params

from .. import registrar  # noqa: E402

TABLE = {}
FC_ACTS = {"linear": 0, "relu": 1, "relu6": 2}


lowers = registrar(TABLE)


# ---- input and pass-through --------------------------------------------------------------------------------
@lowers("input")
def model_input(ctx, node):
    """Placed by the lowering itself (KPU image or float vector); reaching here means it could not be."""
    ctx.problem(node, "the model input could not be placed")


@lowers("identity")
def identity(ctx, node):
    src = ctx.values[node.inputs[0]]
    ctx.alias(node.name, src, node.shape, src.order)


# ---- KPU convolutions ----------------------------------------------------------------------------------------
@lowers("conv2d", "depthwise_conv2d")
def convolution(ctx, node):
    plan = ctx.plans.get(node.name)
    if plan is None:
        ctx.problem(node, "not a convolution the KPU can run")
        return
    kpu_or_cpu_conv(ctx, node, plan)


def kpu_or_cpu_conv(ctx, node, plan):
    """The plan's KPU conv; with kmodel v4, a convolution on a map that the KPU cannot run (5x5, dilated, over
    1024 channels, maps under 4x4...) becomes a float conv2d on the CPU instead of a problem."""
    if plan.problems and ctx.version == 4 and len(ctx.graph[node.inputs[0]].shape) == 3:
        ctx.notes.append(f"'{node.name}' runs on the CPU in float32 (kmodel v4 conv2d): {'; '.join(plan.problems)}")
        cpu_conv(ctx, node, plan)
        return
    kpu_conv(ctx, node, plan)


def cpu_conv(ctx, node, plan):
    """kmodel v4 only: nncase's float conv2d on the CPU, on the dequantized CHW map; relu / relu6 clamp inside,
    other activations follow."""
    src = ctx.values[node.inputs[0]]
    if src.order is not None:
        ctx.problem(node, "a CPU convolution takes a map stored CHW, not the float input vector; give the model "
                          "an image input")
        return
    kernel = np.asarray(plan.kernel, np.float32)
    kh, kw, c_in = kernel.shape[:3]
    if plan.depthwise:
        weights = kernel.reshape(kh, kw, -1).transpose(2, 0, 1)[:, None]       # (C * mult, 1, kh, kw)
        groups = c_in
    else:
        weights = kernel.transpose(3, 2, 0, 1)                                   # (O, I, kh, kw)
        groups = 1
    c_out = weights.shape[0]
    bias = np.zeros(c_out, np.float32) if plan.bias is None else np.asarray(plan.bias, np.float32)
    act = plan.activation
    top, bottom, left, right = plan.pads
    oh, ow = node.shape[:2]
    out = ctx.buffer(node.name, MAIN, F32, (c_out, oh, ow))
    ctx.emit_v4("conv2d", node.name, [ctx.need(src, F32)], [out], macs=oh * ow * c_out * kh * kw * c_in // groups,
                weight_bytes=4 * (weights.size + c_out), weights=np.ascontiguousarray(weights), bias=bias,
                in_chw=src.chw, groups=groups, kernel=(kh, kw), strides=plan.strides,
                dilation=node.op.attrs.get("dilation", (1, 1)),
                pads=((top, bottom), (left, right)), clamp=CONV_CLAMPS.get(act.name, CONV_CLAMPS["linear"]))
    if act.name in CONV_CLAMPS:
        ctx.set_value(node.name, node.shape, F32, out, ctx.quant_of(node.name))
        return
    pre = Value(node.name + ":preact", node.shape, Quant.from_range(*ctx.pre_range(node.name, act)))
    pre.forms[F32] = out
    float_activation(ctx, node, pre, act)


CONV_CLAMPS = {"linear": (-math.inf, math.inf), "relu": (0.0, math.inf), "relu6": (0.0, 6.0)}


@lowers("batch_norm", "rescale")
def channel_affine(ctx, node):
    """Per-channel scale + offset of a map = a depthwise 1x1 KPU conv."""
    plan = ctx.plans.get(node.name)
    if plan is None:
        ctx.problem(node, "a stand-alone per-channel affine on a vector has no K210 layer; fold it into the "
                          "dense layer before it")
        return
    kpu_or_cpu_conv(ctx, node, plan)


@lowers("dense")
def dense(ctx, node):
    plan = ctx.plans.get(node.name)
    if plan is not None:                       # dense on a map: a 1x1 KPU conv
        kpu_or_cpu_conv(ctx, node, plan)
    else:
        fully_connected(ctx, node)


def kpu_conv(ctx, node, plan):
    """One K210_CONV (plus the padding / selection layers its plan asks for)."""
    if plan.problems:
        for text in plan.problems:
            ctx.problem(node, text)
        return
    src = ctx.values[node.inputs[0]]
    kernel, bias = plan.kernel, plan.bias
    if node.op.kind == "dense" and src.order not in (None, "hwc"):
        kernel = kernel[:, :, chw_rows(src.order)]
    if src.affine is not None:
        kernel, bias, in_q = fold_input_transform(ctx, node, kernel, bias, plan, src.affine)
    else:
        if src.quant is None:
            src.quant = ctx.quant_of(src.name)
        in_q = src.quant
    if plan.unshifted is not None and ctx.version == 3 and in_q.zero_point != 0:
        unshift(plan)              # v3's CPU padding writes code 0 only: select from the full-size map instead
    c_in = kernel.shape[2]
    if plan.padded:
        x = ctx.buffer(node.name + ":pad4", KPU, U8, (c_in, 4, 4), in_q)
        ctx.emit("K210_ADD_PADDING", node.name, [ctx.need(src, U8)], [x], channels=c_in)
        in_chw = (c_in, 4, 4)
    elif plan.inherit:
        x, in_chw = src.raw, src.raw.chw
    elif any(plan.prepad):
        x, in_chw = prepadded(ctx, node, src, plan.prepad, in_q)
        if x is None:
            return
    else:
        x, in_chw = ctx.need(src, KPU), src.chw
    act = plan.activation
    pre_range = ctx.pre_range(node.name, act)
    if act.name == "softmax":                      # the KPU computes the logits, SOFTMAX runs on the CPU
        act, out_q = LINEAR, Quant.from_range(*pre_range)
    else:
        out_q = ctx.quant_of(node.name)
    params = kpu_conv_params(kernel, bias, plan.depthwise, in_q, pre_range, out_q, act)
    ctx.act_errors.append((node.name, repr(act), params.act.method, params.act.max_error))
    c_out, factor = params.c_out, POOL_FACTOR[plan.pool]
    out_chw = (c_out, in_chw[1] // factor, in_chw[2] // factor)
    out = ctx.buffer(node.name, KPU, U8, out_chw, out_q)
    k = params.kernel_size
    pixels = 1 if plan.padded else in_chw[1] * in_chw[2]     # a padded 1x1 map: only one pixel is real work
    macs = pixels * k * k * c_out * (1 if plan.depthwise else c_in)
    layer = ctx.emit("K210_CONV", node.name, [x], [out], macs=macs,
                     weight_bytes=params.weights.size + 8 * c_out + 144,
                     conv=params, pool=plan.pool, in_chw=in_chw, out_chw=out_chw)
    name = plan.fused or node.name
    shape = ctx.graph[name].shape
    if plan.padded:
        flat = ctx.buffer(name + ":unpad", MAIN, U8, (c_out,), out_q)
        ctx.emit("K210_REMOVE_PADDING", name, [ctx.stream_out(layer)], [flat], channels=c_out)
        ctx.set_value(name, shape, U8, flat, out_q)
    elif plan.select:
        picked = ctx.select(name, ctx.stream_out(layer), out_chw, plan.select, out_q)
        ctx.set_value(name, shape, U8, picked, out_q)
    elif plan.defer:
        v = Value(name, shape, out_q)
        v.raw, v.conv = out, layer
        ctx.values[name] = v
    else:
        ctx.set_value(name, shape, KPU, out, out_q, conv=layer)
    if plan.activation.name == "softmax":
        softmax(ctx, node, ctx.values.pop(name))


def prepadded(ctx, node, src, pads, in_q):
    """Zero padding on the CPU, then an upload: kmodel v4's pad fills with the zero point's code (real 0 for any
    quantisation); v3 has a 1x1 QUANTIZED_MAX_POOL2D, whose out-of-map samples are code 0."""
    if ctx.version == 3 and in_q.zero_point != 0:
        ctx.problem(node, f"padding {pads} beyond the KPU's own needs code 0 = real 0 in its input, which has zero "
                          f"point {in_q.zero_point}; pad a non-negative tensor (after a relu), use padding='same' "
                          f"or kmodel v4")
        return None, None
    u8 = ctx.pad_map(node.name + ":pad", ctx.need(src, U8), src.chw, pads, in_q.zero_point, in_q)
    return ctx.upload(node.name + ":pad", u8, u8.chw, in_q), u8.chw


def fold_input_transform(ctx, node, kernel, bias, plan, affine):
    """First conv on the camera image: fold the per-channel pixel -> float mapping into kernel and bias.

    The KPU then sees raw pixels with an integer zero point; a fractional zero point (e.g. 127.5 for
    img_neg1_1) is corrected in the bias (exact inside the map, half a pixel step off on padded borders).
    """
    scale, offset = (np.asarray(a, np.float64) for a in affine)
    zp_c = -offset / scale
    zp = int(np.clip(round(float(np.mean(zp_c))), 0, 255))
    kernel = np.asarray(kernel, np.float64) * scale.reshape(1, 1, -1, 1)
    corr = zp - zp_c
    bias = np.zeros(kernel.shape[2] if plan.depthwise else kernel.shape[3]) if bias is None \
        else np.asarray(bias, np.float64).copy()
    if plan.depthwise:
        bias += kernel[:, :, :, 0].sum(axis=(0, 1)) * corr
    else:
        bias += np.einsum("hwio,i->o", kernel, corr)
    if np.any(np.abs(corr) > 1e-6) and plan.k == 3:
        ctx.notes.append(f"'{node.name}': the input zero point {float(np.mean(zp_c)):g} is not an integer pixel "
                         f"value; border pixels of this 3x3 conv see padding half a pixel step off")
    return kernel, bias, Quant(1.0, zp)


# ---- dense (float, CPU) ---------------------------------------------------------------------------------------
def fully_connected(ctx, node):
    """FULLY_CONNECTED on float32; a preceding flatten is folded by permuting the weight rows to CHW order."""
    op = node.op
    src = ctx.values[node.inputs[0]]
    if len(ctx.graph[node.inputs[0]].shape) != 1:
        ctx.problem(node, f"dense on a {ctx.graph[node.inputs[0]].shape} tensor; the K210 takes dense layers "
                          f"on vectors and on (H, W, C) maps; flatten first")
        return
    kernel = np.asarray(op.kernel, np.float32)
    if src.order not in (None, "hwc"):
        kernel = kernel[chw_rows(src.order)]
    x = ctx.need(src, F32)
    n_in, n_out = kernel.shape
    bias = np.zeros(n_out, np.float32) if op.bias is None else np.asarray(op.bias, np.float32)
    act = op.activation
    out = ctx.buffer(node.name, MAIN, F32, (n_out,))
    ctx.emit("FULLY_CONNECTED", node.name, [x], [out], macs=n_in * n_out, weight_bytes=4 * (n_in * n_out + n_out),
             weights=np.ascontiguousarray(kernel.T), bias=bias, act=FC_ACTS.get(act.name, 0))
    if act.name in FC_ACTS:
        ctx.set_value(node.name, node.shape, F32, out)
        return
    pre = Value(node.name + ":preact", node.shape, Quant.from_range(*ctx.pre_range(node.name, act)))
    pre.forms[F32] = out
    float_activation(ctx, node, pre, act)


def chw_rows(order):
    """Row permutation of a dense kernel whose input is the flattened (h, w, c) map stored in CHW order."""
    h, w, c = order
    cc, yy, xx = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    return ((yy * w + xx) * c + cc).reshape(-1)


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


BINARY_OPS = {"add": 0, "sub": 1, "mul": 2, "div": 3, "min": 4, "max": 5}


def nchw(shape):
    """The v4 N C H W shape of a graph tensor stored CHW: a map (H, W, C) or a vector (C,) as a 1x1 map."""
    h, w, c = (1,) * (3 - len(shape)) + tuple(shape)
    return (1, c, h, w)


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


def requantize(ctx, name, buf, q_in, q_out):
    codes = np.arange(256)
    table = np.clip(np.round((codes - q_in.zero_point) * q_in.scale / q_out.scale) + q_out.zero_point, 0, 255)
    out = ctx.buffer(name + ":requant", MAIN, U8, buf.shape, q_out)
    ctx.emit("REQUANTIZE", name, [buf], [out], count=buf.count, table=table.astype(np.uint8))
    return out


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


def supported_kinds():
    """Graph op kinds the K210 v3 writer lowers (some with conditions, see the messages of check())."""
    return sorted(TABLE)


__all__ = ["TABLE", "lowers", "supported_kinds"]
