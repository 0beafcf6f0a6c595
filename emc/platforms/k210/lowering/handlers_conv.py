"""Lowering rows for convolutions, batch-norm / rescale and dense layers: K210_CONV on the KPU, kmodel v4's float
conv2d on the CPU for what the KPU cannot run, FULLY_CONNECTED for dense layers on vectors.
"""
import math

import numpy as np

from ... import registrar
from ....layers import LINEAR
from ..chip.kpu import POOL_FACTOR
from .convplan import as_fully_connected, unshift, window_kernel, window_ranges
from .handlers_pointwise import float_activation, softmax
from .ir import F32, KPU, MAIN, U8, Value
from .fixedpoint import fixed_mul
from .quantize import Quant, kpu_conv_params

FC_ACTS = {"linear": 0, "relu": 1, "relu6": 2}

HANDLERS = {}
lowers = registrar(HANDLERS)


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
    if plan.problems and ctx.version == 3 and len(ctx.graph[node.inputs[0]].shape) == 3:
        in_shapes = [ctx.graph[s].shape for s in node.inputs]
        macs = node.op.macs(in_shapes, node.shape)
        plan.problems = [f"{text}; or convert with --version 4 (version=4), which runs it on the CPU as a float32 "
                         f"conv2d: {macs:,} float MACs per image, far slower than the KPU, and "
                         f"{np.asarray(plan.kernel).size * 4:,} bytes of float32 weights" for text in plan.problems]
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
    halves = half_step_codes(ctx, plan, src)
    if src.affine is not None:
        kernel, bias, in_q = fold_input_transform(ctx, node, kernel, bias, plan, src.affine, exact=bool(halves))
    else:
        if src.quant is None:
            src.quant = ctx.quant_of(src.name)
        in_q = src.quant
    if halves:                     # each input channel twice, half the weights: one copy padded with z, one with z + 1
        kernel = np.concatenate([kernel / 2, kernel / 2], axis=2)
        plan.prepad = (1, 1, 0, 1)
    if plan.unshifted is not None and ctx.version == 3 and in_q.zero_point != 0 and src.affine is None:
        unshift(plan)              # v3's CPU padding writes code 0 only: select from the full-size map instead
    if _pads_a_small_map(ctx, node, plan, src, in_q):
        kernel, bias = as_fully_connected(kernel, bias, plan.depthwise, plan.strides, plan.pads, src.shape[:2],
                                          node.shape[:2])
        plan.padded, plan.k, plan.depthwise, plan.prepad, plan.select, plan.pool = True, 1, False, (0,) * 4, None, 0
    if plan.window:
        kernel = window_kernel(kernel)
    c_in = kernel.shape[2]
    if plan.window:
        x, in_chw = window_map(ctx, node, src, c_in, in_q)
    elif plan.padded:
        x = ctx.buffer(node.name + ":pad4", KPU, U8, (c_in, 4, 4), in_q)
        ctx.emit("K210_ADD_PADDING", node.name, [ctx.need(src, U8)], [x], channels=c_in)
        in_chw = (c_in, 4, 4)
    elif plan.inherit:
        x, in_chw = src.raw, src.raw.chw
    elif any(plan.prepad):
        x, in_chw = prepadded(ctx, node, src, plan.prepad, in_q, plan.blind_pad, halves)
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
    pixels = 1 if plan.padded or plan.window else in_chw[1] * in_chw[2]   # a dense layer: one pixel is real work
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
    elif plan.window:                              # output pixel (1, 1) of each channel is the dense layer
        picked = ctx.select(name, ctx.stream_out(layer), out_chw, (1, 1, 1, 1, 1, 1), out_q)
        ctx.set_value(name, shape, U8, picked, out_q)
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


def _pads_a_small_map(ctx, node, plan, src, in_q):
    """kmodel v3, a map under 4x4 whose grown padding a kept output reads, with a zero point not 0 (v3 pads with
    code 0 only): the conv runs exactly as the dense layer it is (as_fully_connected) when that fits the KPU."""
    if not (ctx.version == 3 and any(plan.prepad) and not plan.blind_pad and in_q.zero_point != 0
            and src.affine is None and len(src.shape) == 3 and min(src.shape[:2]) < 4):
        return False
    (h, w, c_in), (oh, ow, c_out) = src.shape, node.shape
    return h * w * c_in <= 1024 and oh * ow * c_out <= 1024


def window_map(ctx, node, src, channels, in_q):
    """The dense layer's input vector as the CHW 4x4 map of its 3x3 window form: v3 gathers it with a
    QUANTIZED_CONCAT (window_ranges); v4 pads the vector to 9 values per channel, then each 3x3 to 4x4."""
    vec = ctx.need(src, U8)
    chw = (channels, 4, 4)
    out = ctx.buffer(node.name + ":window", MAIN, U8, chw, in_q)
    if ctx.version == 4:
        n, code = src.count, in_q.zero_point
        nine = ctx.buffer(node.name + ":window9", MAIN, U8, (channels * 9,), in_q)
        ctx.emit_v4("pad", node.name, [vec], [nine], in_shape=(1, 1, 1, n), pad_value=code,
                    paddings=((0, 0), (0, 0), (0, 0), (0, channels * 9 - n)))
        ctx.emit_v4("pad", node.name, [nine], [out], in_shape=(1, channels, 3, 3), pad_value=code,
                    paddings=((0, 0), (0, 0), (0, 1), (0, 1)))
    else:
        ctx.emit("QUANTIZED_CONCAT", node.name, [vec], [out],
                 ranges=[(vec, start, size) for start, size in window_ranges(src.count, channels)])
    return ctx.upload(node.name + ":window", out, chw, in_q), chw


def prepadded(ctx, node, src, pads, in_q, blind=False, codes=None):
    """Zero padding on the CPU, then an upload: kmodel v4's pad fills with the zero point's code (real 0 for any
    quantisation); v3 has a 1x1 QUANTIZED_MAX_POOL2D, whose out-of-map samples are code 0 -- right for any
    quantisation when no kept output reads the padding (`blind`: a small map grown to the KPU's 4x4).
    codes: the model input padded once with each (half_step_codes)."""
    if codes:
        u8 = ctx.padded_input(node.name + ":pad", src, pads, in_q, codes)
        return ctx.upload(node.name + ":pad", u8, u8.chw, in_q), u8.chw
    if ctx.version == 3 and in_q.zero_point != 0 and not blind and src.affine is not None and pads[2:] == (0, 0):
        u8 = ctx.padded_input(node.name + ":pad", src, pads, in_q)     # the model input: rows of its zero point
        return ctx.upload(node.name + ":pad", u8, u8.chw, in_q), u8.chw
    if ctx.version == 3 and in_q.zero_point != 0 and not blind:
        ctx.problem(node, f"padding {pads} beyond the KPU's own needs code 0 = real 0 in its input, which has zero "
                          f"point {in_q.zero_point}; pad a non-negative tensor (after a relu), use padding='same' "
                          f"or kmodel v4")
        return None, None
    if src.affine is not None and src.quant is None and U8 not in src.forms:
        src.forms[U8] = ctx.download_input(src, in_q)      # pixels with a fractional zero point (e.g. img_neg1_1)
    u8 = ctx.pad_map(node.name + ":pad", ctx.need(src, U8), src.chw, pads, in_q.zero_point, in_q)
    return ctx.upload(node.name + ":pad", u8, u8.chw, in_q), u8.chw


def half_step_codes(ctx, plan, src):
    """(z, z + 1) when the conv reads the model input, every channel's zero point is z + 0.5 (img_neg1_1: 127.5)
    and the plan is the TF-'same' stride-2 shift (pool 6): padding one copy of the input with z and one with z + 1,
    each with half the weights, pads with real 0 exactly (the halved weights quantise to the same codes), where a
    single pad code is half a pixel step off. None otherwise."""
    if src.affine is None or plan.pool != 6 or plan.k != 3 or plan.prepad != (1, 1, 0, 0) or plan.depthwise:
        return None
    scale, offset = (np.asarray(a, np.float64) for a in src.affine)
    zp = -offset / scale
    if np.ptp(zp) > 1e-9 or abs(zp[0] - np.floor(zp[0]) - 0.5) > 1e-9 or not 0 <= zp[0] < 255:
        return None
    return int(np.floor(zp[0])), int(np.floor(zp[0])) + 1


def fold_input_transform(ctx, node, kernel, bias, plan, affine, exact=False):
    """First conv on the camera image: fold the per-channel pixel -> float mapping into kernel and bias.

    The KPU then sees raw pixels with an integer zero point; a fractional zero point (e.g. 127.5 for
    img_neg1_1) is corrected in the bias (exact inside the map, half a pixel step off on padded borders unless
    `exact`: the borders are padded as half_step_codes says).
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
    reads_padding = any(getattr(node.op, "pads", ()))             # a 'valid' conv's kept outputs never do
    if np.any(np.abs(corr) > 1e-6) and plan.k == 3 and reads_padding and not exact:
        ctx.notes.append(pad_offset_note(node.name, zp_c, float(np.max(np.abs(corr)))))
    return kernel, bias, Quant(1.0, zp)


def pad_offset_note(name, zp_c, steps):
    """What the padded border of a first 3x3 conv reads when real 0 is no pixel code: `steps` pixel steps off;
    a real 0 outside 0..255 means the preprocessing given does not fit the model (a warning, with the fix)."""
    zp = float(np.mean(zp_c))
    if steps <= 0.5 + 1e-6:
        return (f"'{name}': the input zero point {zp:g} is not an integer pixel value; border pixels of this 3x3 "
                f"conv see padding {steps:.2f} pixel steps off")
    text = (f"'{name}': real 0 of the input lies at pixel {zp:g}; the KPU pads this 3x3 conv's border with a pixel "
            f"{steps:.1f} steps from it, so border outputs are off")
    if not 0 <= zp <= 255:
        text += "; the dataset function probably does not match the model's preprocessing (img_0_255 for a model " \
                "that rescales 0..255 pixels itself)"
    return text


# ---- dense (CPU) -----------------------------------------------------------------------------------------------
QMATMUL_MAX_INPUTS = (1 << 31) // (255 * 255)      # an int32 accumulator cannot overflow


def fully_connected(ctx, node):
    """FULLY_CONNECTED on float32; a preceding flatten is folded by permuting the weight rows to CHW order.
    kmodel v4: a big dense layer the KPU cannot take (big_dense, not dense='cpu') is a uint8 quantized_matmul."""
    op = node.op
    src = ctx.values[node.inputs[0]]
    if len(ctx.graph[node.inputs[0]].shape) != 1:
        ctx.problem(node, f"dense on a {ctx.graph[node.inputs[0]].shape} tensor; the K210 takes dense layers "
                          f"on vectors and on (H, W, C) maps; flatten first")
        return
    kernel = np.asarray(op.kernel, np.float32)
    if src.order not in (None, "hwc"):
        kernel = kernel[chw_rows(src.order)]
    if (ctx.version == 4 and ctx.dense_mode != "cpu" and ctx.big_dense(node) and ctx.input_kind == "kpu"
            and kernel.shape[0] <= QMATMUL_MAX_INPUTS and quantized_matmul(ctx, node, src, kernel)):
        return
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


def quantized_matmul(ctx, node, src, kernel):
    """kmodel v4's quantized_matmul: uint8 input and weights (one scale, zero point each), int32 bias and
    accumulator, one fixed-point multiplier to the output's codes; relu / relu6 clamp through the output range."""
    in_q = src.quant or ctx.quant_of(src.name)
    bias = np.zeros(kernel.shape[1]) if node.op.bias is None else np.asarray(node.op.bias, np.float64)
    w_q = Quant.from_range(min(float(kernel.min()), 0.0), max(float(kernel.max()), 0.0))
    codes = np.clip(np.round(kernel / w_q.scale) + w_q.zero_point, 0, 255).astype(np.uint8)
    n_in, n_out = kernel.shape
    acc_scale = in_q.scale * w_q.scale
    bias = np.round(bias / acc_scale)
    if np.abs(bias).max(initial=0) >= 2 ** 31 - 255 * 255 * n_in:
        return False                       # the bias does not fit the int32 accumulator: float matmul instead
    x = ctx.need(src, U8)
    act = node.op.activation
    clamps = act.name in FC_ACTS
    out_q = ctx.quant_of(node.name) if clamps else Quant.from_range(*ctx.pre_range(node.name, act))
    mul, shift = fixed_mul(acc_scale / out_q.scale, 24, 60)
    out = ctx.buffer(node.name + (":u8" if clamps else ":preact"), MAIN, U8, (n_out,), out_q)
    ctx.emit_v4("quantized_matmul", node.name, [x], [out], macs=n_in * n_out, weight_bytes=n_in * n_out + 4 * n_out,
                matrix=codes, bias=bias.astype(np.int64), a_offset=-in_q.zero_point,
                b_offset=-w_q.zero_point, mul=mul, shift=shift, out_offset=out_q.zero_point)
    if clamps:
        ctx.set_value(node.name, node.shape, U8, out, out_q)
        return True
    pre = Value(node.name + ":preact", node.shape, out_q)
    pre.forms[U8] = out
    float_activation(ctx, node, pre, act)
    return True


def chw_rows(order):
    """Row permutation of a dense kernel whose input is the flattened (h, w, c) map stored in CHW order."""
    h, w, c = order
    cc, yy, xx = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    return ((yy * w + xx) * c + cc).reshape(-1)
