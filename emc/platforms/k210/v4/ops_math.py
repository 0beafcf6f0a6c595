"""kmodel v4 CPU opcodes that compute element-wise or over windows: binary, quantized_binary, unary, nnil
programs, reduce, reduce_window2d and softmax."""
import numpy as np

from ..chip.cpu_math import exact_f32, sequential_sum
from .ops_common import (F32, c_div, c_max, c_min, clamp, executes, gather, mul_and_carry_shift, prod, window_geometry,
                         wrap32)


# ---- elementwise -------------------------------------------------------------------------------------------------
BINARY = {0: np.add, 1: np.subtract, 2: np.multiply, 3: np.divide, 4: c_min, 5: c_max}
QUANTIZED_BINARY = {0: lambda a, b: wrap32(a + b), 1: lambda a, b: wrap32(a - b), 2: lambda a, b: wrap32(a * b),
                    3: lambda a, b: c_div(wrap32(a + c_div(b, 2)), b), 4: np.minimum, 5: np.maximum}


def _binary_operands(m, node, dtype):
    b = node.body
    a_shape, b_shape, out_shape = node.shape("in_a_shape"), node.shape("in_b_shape"), node.shape("out_shape")
    if a_shape == b_shape:
        out_shape = a_shape
    m.reserve(node.range("output"), prod(out_shape) * np.dtype(dtype).itemsize, "output")
    x = m.read(node.range("input_a"), dtype, prod(a_shape), "input_a")
    y = m.read(node.range("input_b"), dtype, prod(b_shape), "input_b")
    if a_shape != b_shape:
        x, y = gather(x, a_shape, out_shape, m, "in_a_shape"), gather(y, b_shape, out_shape, m, "in_b_shape")
    return x, y, b


@executes("binary")
def binary(m, node):
    x, y, b = _binary_operands(m, node, "<f4")
    with np.errstate(all="ignore"):
        out = np.asarray(BINARY[b.binary_op](x, y), F32)
    act = b.fused_activation
    return m.write(node.range("output"), clamp(out, act.min, act.max), "output")


@executes("quantized_binary")
def quantized_binary(m, node):
    x, y, b = _binary_operands(m, node, "u1")
    x = mul_and_carry_shift(x.astype(np.int64) + b.input_a_offset, b.input_a_mul, b.input_a_shift)
    y = mul_and_carry_shift(y.astype(np.int64) + b.input_b_offset, b.input_b_mul, b.input_b_shift)
    r = mul_and_carry_shift(QUANTIZED_BINARY[b.binary_op](x, y), b.output_mul, b.output_shift)
    out = np.clip(wrap32(r + b.output_offset), 0, 255).astype(np.uint8)
    return m.write(node.range("output"), out, "output")


UNARY = {0: np.abs, 1: np.ceil, 2: lambda x: exact_f32(np.cos, x), 3: lambda x: exact_f32(np.exp, x), 4: np.floor,
         5: lambda x: exact_f32(np.log, x), 6: np.negative, 7: lambda x: F32(1.0) / np.sqrt(x),
         8: lambda x: exact_f32(np.sin, x), 9: lambda x: x * x}


@executes("unary")
def unary(m, node):
    src = node.range("input")
    x = m.read(src, "<f4", src.size // 4, "input")
    with np.errstate(all="ignore"):
        out = np.asarray(UNARY[node.body.unary_op](x), F32)
    return m.write(node.range("output"), out, "output")


def _push_unary(fn):
    return lambda stack, x, imm: stack.append(np.asarray(fn(stack.pop()), F32))


def _push_binary(fn):
    def apply(stack, x, imm):
        right, left = stack.pop(), stack.pop()
        stack.append(np.asarray(fn(left, right), F32))
    return apply


def _clamp_top(stack, x, imm):
    high, low, v = stack.pop(), stack.pop(), stack.pop()
    stack.append(np.where(v < low, low, np.where(high < v, high, v)).astype(F32))


NNIL = {"nop": lambda stack, x, imm: None, "dup": lambda stack, x, imm: stack.append(stack[-1]),
        "pop": lambda stack, x, imm: stack.pop(), "lda_0": lambda stack, x, imm: stack.append(x),
        "ldc_r4_0": lambda stack, x, imm: stack.append(np.zeros(x.shape, F32)),
        "ldc_r4_1": lambda stack, x, imm: stack.append(np.ones(x.shape, F32)),
        "ldc_r4": lambda stack, x, imm: stack.append(np.full(x.shape, imm, F32)),
        "clamp": _clamp_top,
        **{name: _push_unary(UNARY[code]) for code, name in enumerate(
            ("abs", "ceil", "cos", "exp", "floor", "log", "neg", "rsqrt", "sin", "square"))},
        **{name: _push_binary(fn) for name, fn in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                                                   ("div", np.divide), ("min", c_min), ("max", c_max))}}


@executes("nnil_unary_method")
def nnil_unary_method(m, node):
    """The nnil stack program run on all elements at once (it has no branches); the reader checked the stack."""
    src = node.range("input")
    x = m.read(src, "<f4", src.size // 4, "input")
    stack = []
    with np.errstate(all="ignore"):
        for op, immediate in node.extra["program"]:
            if op == "ret":
                return m.write(node.range("output"), np.broadcast_to(stack.pop(), x.shape).astype(F32), "output")
            NNIL[op](stack, x, immediate)
    return x                    # no ret: the output is left as it was


# ---- reductions --------------------------------------------------------------------------------------------------
def _fold_minmax(values, init, fmin):
    """std::min / std::max folded from init: NaN inputs are skipped, a NaN init sticks."""
    if np.isnan(init):
        return np.full(values.shape[:-1], np.nan, F32)
    fn = np.fmin if fmin else np.fmax
    folded = fn.reduce(values, axis=-1, initial=init) if values.shape[-1] else np.full(values.shape[:-1], init)
    return np.asarray(folded, F32)


@executes("reduce")
def reduce(m, node):
    b = node.body
    in_shape, out_shape = node.shape("in_shape"), node.shape("out_shape")
    out_range = node.range("output")
    m.reserve(out_range, prod(out_shape) * 4, "output")
    if prod(in_shape) and not prod(out_shape):
        m.fail(f"reduce of {in_shape} into the empty shape {out_shape}", "out_shape")
    x = m.read(node.range("input"), "<f4", prod(in_shape), "input").reshape(in_shape)
    init, op = F32(b.init_value), b.reduce_op
    if all(o in (i, 1) for i, o in zip(in_shape, out_shape)):
        reduced = [k for k, (i, o) in enumerate(zip(in_shape, out_shape)) if o != i]
        kept = [k for k in range(4) if k not in reduced]
        n_red = prod(in_shape[k] for k in reduced)
        values = x.transpose(kept + reduced).reshape(prod(out_shape), n_red)
        out = sequential_sum(values, init) if op in (0, 3) else _fold_minmax(values, init, op == 1)
    else:                          # coordinates past a smaller output dim fold into index 0 (nncase semantics)
        idx = np.ix_(*[np.where(np.arange(i) < o, np.arange(i), 0) for i, o in zip(in_shape, out_shape)])
        flat = np.ravel_multi_index(np.broadcast_arrays(*idx), out_shape).reshape(-1) if x.size else \
            np.zeros(0, np.int64)
        out = np.full(prod(out_shape), init, F32)
        if op in (0, 3):
            np.add.at(out, flat, x.reshape(-1))
        elif not np.isnan(init):
            (np.fmin if op == 1 else np.fmax).at(out, flat, x.reshape(-1))
    out = np.asarray(out, F32).reshape(-1)
    m.write(out_range, out, "output")
    if op == 0:                   # mean: the whole output range times (float)out_count / in_count
        in_count = node.range("input").size // 4
        count = out_range.size // 4
        with np.errstate(all="ignore"):
            mul = F32(count) / F32(in_count)
            scaled = (m.read(out_range, "<f4", count, "output") * mul).astype(F32)
        m.write(out_range, scaled, "output")
        out = scaled
    return out


def _reduce_window(m, node, x, nhwc):
    """reduce_window2d on an NCHW float32 tensor; returns the NCHW result (before any layout change)."""
    b = node.body
    n, c, h, w = x.shape
    oh, ow, ys, xs = window_geometry(m, b, h, w)
    m.reserve(node.range("output"), n * c * oh * ow * 4, "output")
    m.work(n * c * oh * ow * max(1, len(ys) * len(xs)), "the window reduction")
    acc = np.full((n, c, oh, ow), b.init_value, F32)
    count = np.zeros((oh, ow), np.int32)
    op = {0: np.add, 3: np.add, 1: c_min, 2: c_max}[b.reduce_op]
    with np.errstate(all="ignore"):
        for _, iy, vy in ys:
            rows = x[:, :, iy]
            for _, ix, vx in xs:
                valid = vy[:, None] & vx[None, :]
                acc = np.where(valid, op(acc, rows[:, :, :, ix]), acc).astype(F32)
                count += valid
        if b.reduce_op == 0:
            acc = (acc / count.astype(F32)).astype(F32)
    act = b.fused_activation
    return clamp(acc, act.min, act.max)


@executes("reduce_window2d")
def reduce_window2d(m, node):
    shape = node.shape("in_shape")
    x = m.read(node.range("input"), "<f4", prod(shape), "input").reshape(shape)
    return m.write(node.range("output"), _reduce_window(m, node, x, False), "output")


@executes("cpu_reduce_window2d")
def cpu_reduce_window2d(m, node):
    shape = node.shape("in_shape")
    x = m.read(node.range("input"), "<f4", prod(shape), "input").reshape(shape).transpose(0, 3, 1, 2)
    out = _reduce_window(m, node, x, True).transpose(0, 2, 3, 1)
    return m.write(node.range("output"), np.ascontiguousarray(out), "output")


@executes("softmax")
def softmax(m, node):
    b = node.body
    outer, inner = b.outer_size, b.inner_size
    m.reserve(node.range("output"), outer * inner * 4, "output")
    x = m.read(node.range("input"), "<f4", outer * inner, "input").reshape(outer, inner)
    if not x.size:
        return x
    with np.errstate(all="ignore"):
        shifted = ((x - x.max(axis=1, keepdims=True)).astype(F32) * F32(b.beta)).astype(F32)
        e = exact_f32(np.exp, shifted)
        total = sequential_sum(e, 0.0)
        out = (e / total[:, None]).astype(F32)
    return m.write(node.range("output"), out, "output")
