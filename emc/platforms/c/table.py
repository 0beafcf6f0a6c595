"""The C platform's mapping table: graph op kind -> handler that quantises the op and emits int8 kernel steps.

TABLE is the source of the "supported layers" list. Every handler is one small function; shared pieces
(the epilogue of linear ops, broadcasting strides) are helpers below.
"""
import numpy as np

from ...graph import preact_name
from ...layers import LINEAR
from .ir import QTensor
from .quantize import (SOFTMAX_ZERO_POINT, activation_params, activation_table, clamp_bounds,
                       per_channel_weights, quantize_bias, requant_arrays, softmax_exp_table, symmetric_tensor)
from .columns import FOLDED_KINDS, foldable_bias
from .fixedpoint import quantize_multiplier

from .. import registrar  # noqa: E402

TABLE = {}
CLAMP_ACTS = ("linear", "relu", "relu6")
ADD_LEFT_SHIFT = 20              # TFLM's headroom for int8 add: inputs are scaled to Q20 before summing
MAX_ADD_INPUTS = 15              # 15 inputs of at most 2**27 each stay inside int32
MAX_RANK = 4
MAX_SOFTMAX_DEPTH = 32767        # sum of 2**16-scaled exponentials must fit an int32
MAX_SOFTMAX_RECIP = 1 << 24      # output scale 1/R: R * 2**16 stays far inside int64


lowers = registrar(TABLE)


def supported_kinds():
    return sorted(TABLE)


# ---- inputs and views --------------------------------------------------------------------------------------
@lowers("input")
def model_input(ctx, node):
    """Input quantisation: exact camera pixels (q = pixel - 128) when the pixel mapping covers the calibrated
    range, else the calibrated range itself."""
    rng = ctx.range(node.name, node)
    if rng is None:
        return
    quant = _pixel_quant(ctx.input_transform, rng) if len(ctx.graph.inputs) == 1 else None
    scale, zero_point = quant or activation_params(*rng)
    ctx.add_tensor(QTensor(node.name, node.shape, scale, zero_point))


def _pixel_quant(transform, rng):
    if transform is None:
        return None
    scale, offset = float(transform[0]), float(transform[1])
    if scale <= 0:
        return None
    zp = -128.0 - offset / scale
    if abs(zp - round(zp)) > 1e-4 or not -128 <= round(zp) <= 127:
        return None
    zp = int(round(zp))
    lo, hi = (-128 - zp) * scale, (127 - zp) * scale
    slack = 0.5 * scale
    if rng[0] < lo - slack or rng[1] > hi + slack:
        return None
    return scale, zp


@lowers("flatten", "reshape", "identity")
def view(ctx, node):
    ctx.view(node, ctx.tensor(node.inputs[0]))


# ---- linear ops: conv, depthwise, dense, per-channel affine ----------------------------------------------------
def _epilogue(ctx, node, acc_scales):
    """Requantisation of a linear op's int32 accumulators and its fused activation.

    Returns (tensor the kernel writes, params, arrays, follow-up) where follow-up is a softmax to emit after.
    relu/relu6/linear become the output clamp; other activations requantise to the pre-activation range and
    go through a 256-entry table; softmax writes a pre-activation tensor that a softmax step then reads.
    """
    act = node.op.attrs.get("activation", LINEAR)
    lut, follow, act_min, act_max = None, None, -128, 127
    if act.name in CLAMP_ACTS:
        written = ctx.calibrated(node)
        requant_to = written.quant
        act_min, act_max = clamp_bounds(act, written.scale, written.zero_point)
    elif act.name == "softmax":
        written = ctx.calibrated(node, name=preact_name(node.name))
        requant_to, follow = written.quant, "softmax"
    else:
        written = ctx.calibrated(node)
        requant_to = activation_params(*(ctx.range(preact_name(node.name), node) or (-1.0, 1.0)))
        lut = activation_table(act, requant_to, written.quant)
    mult, shift = requant_arrays(acc_scales / requant_to[0])
    params = {"out_zp": requant_to[1], "act_min": act_min, "act_max": act_max}
    arrays = {"mult": mult, "shift": shift}
    if lut is not None:
        arrays["lut"] = lut
    return written, params, arrays, follow


def _finish_linear(ctx, node, kind, x, params, arrays, acc_scales, bias, channels, macs):
    taps = int(np.prod(arrays["weights"].shape)) // channels
    if taps * 255 * 127 >= 2**31:
        ctx.notes.append(f"layer '{node.name}': {taps} products per output; int32 accumulators could overflow on "
                         f"extreme inputs (as in TF Lite Micro)")
    written, extra, epi_arrays, follow = _epilogue(ctx, node, acc_scales)
    params.update(extra)
    params["in_zp"] = x.zero_point
    arrays["bias"] = quantize_bias(bias, acc_scales, channels)
    if kind in FOLDED_KINDS:
        arrays["bias"] = foldable_bias(kind, arrays["bias"], arrays["weights"], x.zero_point)
    arrays.update(epi_arrays)
    ctx.emit(kind, node, [x], written, params, arrays, macs)
    if follow == "softmax":
        _softmax(ctx, node, written)


@lowers("conv2d")
def conv2d(ctx, node):
    op, x = node.op, ctx.tensor(node.inputs[0])
    kh, kw, cin, cout = op.kernel.shape
    w_q, w_scale = per_channel_weights(op.kernel, axis=3)
    params = {"in_shape": x.shape, "out_shape": node.shape, "kernel": (kh, kw), "stride": op.strides,
              "dilation": op.dilation, "pad": (op.pads[0], op.pads[2])}
    arrays = {"weights": np.ascontiguousarray(w_q.transpose(3, 0, 1, 2))}       # OHWI, as CMSIS-NN wants
    macs = node.shape[0] * node.shape[1] * kh * kw * cin * cout
    _finish_linear(ctx, node, "conv2d", x, params, arrays, x.scale * w_scale, op.bias, cout, macs)


@lowers("depthwise_conv2d")
def depthwise_conv2d(ctx, node):
    op, x = node.op, ctx.tensor(node.inputs[0])
    kh, kw, c, mult = op.kernel.shape
    kernel = op.kernel.reshape(kh, kw, c * mult)                          # output channel c * mult + m
    w_q, w_scale = per_channel_weights(kernel, axis=2)
    params = {"in_shape": x.shape, "out_shape": node.shape, "kernel": (kh, kw), "stride": op.strides,
              "dilation": op.dilation, "pad": (op.pads[0], op.pads[2]), "depth_mult": mult}
    macs = node.shape[0] * node.shape[1] * c * mult * kh * kw
    _finish_linear(ctx, node, "depthwise_conv2d", x, params, {"weights": w_q}, x.scale * w_scale, op.bias,
                   c * mult, macs)


@lowers("conv2d_transpose")
def conv2d_transpose(ctx, node):
    """Transposed conv: per-output-channel int8 weights OHWI, crops as pad_top / pad_left of the conv params."""
    op, x = node.op, ctx.tensor(node.inputs[0])
    kh, kw, cin, cout = op.kernel.shape
    w_q, w_scale = per_channel_weights(op.kernel, axis=3)
    params = {"in_shape": x.shape, "out_shape": node.shape, "kernel": (kh, kw), "stride": op.strides,
              "dilation": (1, 1), "pad": (op.crops[0], op.crops[2])}
    arrays = {"weights": np.ascontiguousarray(w_q.transpose(3, 0, 1, 2))}
    macs = x.shape[0] * x.shape[1] * kh * kw * cin * cout
    _finish_linear(ctx, node, "conv2d_transpose", x, params, arrays, x.scale * w_scale, op.bias, cout, macs)


@lowers("dense")
def dense(ctx, node):
    op, x = node.op, ctx.tensor(node.inputs[0])
    n_in, n_out = op.kernel.shape
    rows = int(np.prod(x.shape[:-1], dtype=np.int64))
    w_q, w_scale = per_channel_weights(op.kernel, axis=1)
    params = {"rows": rows, "in_features": n_in, "out_features": n_out}
    arrays = {"weights": np.ascontiguousarray(w_q.T)}                   # [out][in]
    _finish_linear(ctx, node, "dense", x, params, arrays, x.scale * w_scale, op.bias, n_out, rows * n_in * n_out)


@lowers("batch_norm", "rescale")
def channel_affine(ctx, node):
    """A stand-alone per-channel x * scale + offset: one int8 weight and an int32 bias per channel."""
    op, x = node.op, ctx.tensor(node.inputs[0])
    channels = x.shape[-1]
    scale = np.broadcast_to(op.scale.astype(np.float64), (channels,))
    offset = np.broadcast_to(op.offset.astype(np.float64), (channels,))
    w_q, w_scale = per_channel_weights(scale.reshape(1, channels), axis=1)
    out = ctx.calibrated(node)
    acc_scales = x.scale * w_scale
    mult, shift = requant_arrays(acc_scales / out.scale)
    ctx.emit("channel_scale", node, [x], out,
             {"count": x.size, "channels": channels, "in_zp": x.zero_point, "out_zp": out.zero_point},
             {"weights": w_q.reshape(-1), "bias": quantize_bias(offset, acc_scales, channels), "mult": mult,
              "shift": shift}, macs=x.size, inplace=True)


# ---- activations -------------------------------------------------------------------------------------------------
@lowers("activation")
def activation(ctx, node):
    act, x = node.op.activation, ctx.tensor(node.inputs[0])
    if act.name == "linear":
        ctx.view(node, x)
    elif act.name == "softmax":
        _softmax(ctx, node, x)
    elif act.name in ("relu", "relu6"):
        out = ctx.calibrated(node)
        act_min, act_max = clamp_bounds(act, out.scale, out.zero_point)
        m, s = quantize_multiplier(x.scale / out.scale)
        ctx.emit("requant_clamp", node, [x], out, {"count": x.size, "in_zp": x.zero_point, "out_zp": out.zero_point,
                                                   "mult": m, "shift": s, "act_min": act_min, "act_max": act_max},
                 inplace=True)
    elif act.name == "leaky_relu":
        out = ctx.calibrated(node)
        mp, sp = quantize_multiplier(x.scale / out.scale)
        mn, sn = quantize_multiplier(act.alpha * x.scale / out.scale)
        ctx.emit("leaky_relu", node, [x], out, {"count": x.size, "in_zp": x.zero_point, "out_zp": out.zero_point,
                                                "mult_pos": mp, "shift_pos": sp, "mult_neg": mn, "shift_neg": sn},
                 inplace=True)
    else:
        out = ctx.calibrated(node)
        ctx.emit("lut", node, [x], out, {"count": x.size}, {"table": activation_table(act, x.quant, out.quant)},
                 inplace=True)


def _softmax(ctx, node, x):
    """Integer softmax over the last axis. Output: zero point -128 and scale 1/R, R = floor(255 / calibrated max
    probability) (at least 255), so small probabilities of wide softmaxes keep their resolution."""
    depth = x.shape[-1]
    if depth > MAX_SOFTMAX_DEPTH:
        ctx.problem(node, f"softmax over {depth} values; the int8 kernel takes at most {MAX_SOFTMAX_DEPTH}")
        return
    rng = ctx.range(node.name)
    top = min(max(rng[1], 1e-6), 1.0) if rng else 1.0
    recip = int(min(max(np.floor(255.0 / top), 255), MAX_SOFTMAX_RECIP))
    out = ctx.add_tensor(QTensor(node.name, node.shape, 1.0 / recip, SOFTMAX_ZERO_POINT))
    ctx.emit("softmax", node, [x], out, {"rows": x.size // depth, "depth": depth, "recip": recip},
             {"table": softmax_exp_table(x.scale)}, macs=x.size, inplace=True)


@lowers("prelu")
def prelu(ctx, node):
    x = ctx.tensor(node.inputs[0])
    alpha = np.broadcast_to(node.op.weights["alpha"].astype(np.float64), x.shape).reshape(-1)
    period = _period(alpha, x.shape)
    a_q, a_scale = symmetric_tensor(alpha[:period])
    out = ctx.calibrated(node)
    mp, sp = quantize_multiplier(x.scale / out.scale)
    mn, sn = quantize_multiplier(x.scale * a_scale / out.scale)
    ctx.emit("prelu", node, [x], out, {"count": x.size, "period": period, "in_zp": x.zero_point,
                                       "out_zp": out.zero_point, "mult_pos": mp, "shift_pos": sp, "mult_neg": mn,
                                       "shift_neg": sn}, {"alpha": a_q}, macs=x.size, inplace=True)


def _period(flat, shape):
    """Smallest trailing block (C, W*C, ...) whose repetition gives the whole flattened slope array."""
    block = 1
    for dim in reversed(shape):
        block *= dim
        if np.array_equal(flat, np.tile(flat[:block], flat.size // block)):
            return block
    return flat.size


# ---- pooling ---------------------------------------------------------------------------------------------------------
@lowers("pool2d")
def pool2d(ctx, node):
    """Windowed max / average pooling keep the input quantisation (TF Lite's rule; CMSIS-NN needs it too)."""
    op, x = node.op, ctx.tensor(node.inputs[0])
    out = ctx.same_quant(node, x)
    params = {"in_shape": x.shape, "out_shape": node.shape, "pool": op.pool_size, "stride": op.strides,
              "pad": (op.pads[0], op.pads[2])}
    ctx.emit(f"{op.mode}_pool", node, [x], out, params, macs=out.size * op.pool_size[0] * op.pool_size[1])


@lowers("global_pool2d")
def global_pool2d(ctx, node):
    op, x = node.op, ctx.tensor(node.inputs[0])
    params = {"in_shape": x.shape}
    if op.mode == "max":
        ctx.emit("global_max_pool", node, [x], ctx.same_quant(node, x), params, macs=x.size)
        return
    out = ctx.calibrated(node)
    count = x.shape[0] * x.shape[1]
    m, s = quantize_multiplier(x.scale / (count * out.scale))
    params.update({"in_zp": x.zero_point, "out_zp": out.zero_point, "mult": m, "shift": s})
    ctx.emit("global_avg_pool", node, [x], out, params, macs=x.size)


# ---- element-wise and concatenation ----------------------------------------------------------------------------
def _broadcast_strides(ctx, node, inputs):
    """Output dims padded to 4 and, per input, element strides over them (0 on broadcast axes); None if rank > 4."""
    shape = tuple(node.shape)
    if len(shape) > MAX_RANK:
        ctx.problem(node, f"rank {len(shape)} element-wise op; the int8 kernels broadcast up to rank {MAX_RANK}")
        return None
    dims = (1,) * (MAX_RANK - len(shape)) + shape
    strides = []
    for t in inputs:
        s = (1,) * (MAX_RANK - len(t.shape)) + t.shape
        contiguous = np.cumprod((1,) + s[:0:-1])[::-1]
        strides.append([0 if s[i] == 1 and dims[i] != 1 else int(contiguous[i]) for i in range(MAX_RANK)])
    return dims, np.array(strides, np.int32)


@lowers("elementwise")
def elementwise(ctx, node):
    kind = node.op.op
    inputs = [ctx.tensor(s) for s in node.inputs]
    shaped = _broadcast_strides(ctx, node, inputs)
    if shaped is None:
        return
    dims, strides = shaped
    out = ctx.calibrated(node)
    zps = np.array([t.zero_point for t in inputs], np.int32)
    base = {"n": len(inputs), "dims": dims, "out_zp": out.zero_point}
    inplace = any(t.shape == out.shape for t in inputs)
    if kind in ("add", "sub", "avg"):
        if len(inputs) > MAX_ADD_INPUTS:
            ctx.problem(node, f"{len(inputs)} inputs; the int8 add takes at most {MAX_ADD_INPUTS}: chain two adds")
            return
        twice_max = 2.0 * max(t.scale for t in inputs)
        in_mult, in_shift = requant_arrays([t.scale / twice_max for t in inputs])
        divisor = len(inputs) if kind == "avg" else 1
        om, os_ = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * out.scale * divisor))
        sign = np.array([1] + [(-1 if kind == "sub" else 1)] * (len(inputs) - 1), np.int32)
        base.update({"left_shift": ADD_LEFT_SHIFT, "out_mult": om, "out_shift": os_})
        ctx.emit("add", node, inputs, out, base, {"strides": strides, "in_zp": zps, "in_mult": in_mult,
                                                  "in_shift": in_shift, "sign": sign},
                 macs=out.size * len(inputs), inplace=inplace)
    elif kind == "mul":
        if len(inputs) != 2:
            ctx.problem(node, f"multiply of {len(inputs)} inputs; the int8 kernel multiplies two: chain two-input "
                              f"Multiply layers")
            return
        m, s = quantize_multiplier(inputs[0].scale * inputs[1].scale / out.scale)
        base.update({"out_mult": m, "out_shift": s})
        ctx.emit("mul", node, inputs, out, base, {"strides": strides, "in_zp": zps}, macs=out.size,
                 inplace=inplace)
    else:                                                                  # max / min
        in_mult, in_shift = requant_arrays([t.scale / out.scale for t in inputs])
        base["is_max"] = int(kind == "max")
        ctx.emit("maxmin", node, inputs, out, base, {"strides": strides, "in_zp": zps, "in_mult": in_mult,
                                                     "in_shift": in_shift}, macs=out.size, inplace=inplace)


@lowers("concat")
def concat(ctx, node):
    inputs = [ctx.tensor(s) for s in node.inputs]
    if len({t.quant for t in inputs}) == 1:
        out = ctx.same_quant(node, inputs[0])
    else:
        out = ctx.calibrated(node)
    axis = node.op.resolved_axis(len(node.shape))
    outer = int(np.prod(node.shape[:axis], dtype=np.int64))
    inner = np.array([int(np.prod(t.shape[axis:], dtype=np.int64)) for t in inputs], np.int32)
    same = np.array([int(t.quant == out.quant) for t in inputs], np.int32)
    in_mult, in_shift = requant_arrays([t.scale / out.scale for t in inputs])
    ctx.emit("concat", node, inputs, out, {"n": len(inputs), "outer": outer, "out_zp": out.zero_point},
             {"inner": inner, "same": same, "in_zp": np.array([t.zero_point for t in inputs], np.int32),
              "in_mult": in_mult, "in_shift": in_shift})


# ---- data movement ----------------------------------------------------------------------------------------------------
@lowers("pad2d")
def pad2d(ctx, node):
    x = ctx.tensor(node.inputs[0])
    out = ctx.same_quant(node, x)
    value = int(np.clip(np.round(node.op.value / x.scale) + x.zero_point, -128, 127))
    ctx.emit("pad", node, [x], out, {"in_shape": x.shape, "out_shape": node.shape,
                                     "pad": (node.op.pads[0], node.op.pads[2]), "value": value})


@lowers("crop2d")
def crop2d(ctx, node):
    x = ctx.tensor(node.inputs[0])
    ctx.emit("crop", node, [x], ctx.same_quant(node, x), {"in_shape": x.shape, "out_shape": node.shape,
                                                         "crop": (node.op.crops[0], node.op.crops[2])})


@lowers("upsample2d")
def upsample2d(ctx, node):
    x = ctx.tensor(node.inputs[0])
    ctx.emit("upsample", node, [x], ctx.same_quant(node, x), {"in_shape": x.shape, "factor": node.op.factor})
