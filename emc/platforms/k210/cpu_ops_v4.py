"""The CPU opcodes of a kmodel v4 (nncase v0.2 neutral and cpu_* kernels), one small function each, registered
by opcode in EXECUTORS; each takes the run's Machine (bounds-checked memories) and the parsed node.

Integer ops are bit-exact. Float ops follow nncase's host runtime: float32 step by step in its loop order (sums
accumulate sequentially, no fused multiply-add); exp/log/sin/cos are rounded from float64, so they may differ from
a C library by one ulp. Where C has undefined behaviour the chip's (RISC-V) behaviour is used: integer division by
zero gives -1, float -> int conversions saturate.
"""
import numpy as np

from .cpu_math import roundf
from .describe_v4 import windowed
from .structs_v4 import OPCODE_BY_NAME

EXECUTORS = {}                # opcode -> fn(machine, node) -> the node's output array
F32 = np.float32
FLT_MAX = float(np.finfo(np.float32).max)
MAX_TAPS = 1 << 16            # window taps along one axis before a (fuzzed) window is refused


def executes(*names):
    """Register a function as the executor of these opcode names."""
    def wrap(fn):
        for name in names:
            EXECUTORS[OPCODE_BY_NAME[name]] = fn
        return fn
    return wrap


# ---- helpers -----------------------------------------------------------------------------------------------------
def prod(shape):
    out = 1
    for s in shape:
        out *= int(s)
    return out


def elem_dtype(r):
    return "<f4" if r.datatype == 0 else "u1"


def raw_dtype(r):
    """Element type for byte-moving ops: 4-byte elements are moved as raw uint32 (NaN payloads survive)."""
    return "<u4" if r.datatype == 0 else "u1"


def clamp(v, lo, hi):
    """std::clamp on float32 (NaN passes through)."""
    lo, hi = F32(lo), F32(hi)
    return np.where(v < lo, lo, np.where(hi < v, hi, v)).astype(F32)


def c_min(a, b):
    return np.where(b < a, b, a)


def c_max(a, b):
    return np.where(a < b, b, a)


def wrap32(v):
    v = np.asarray(v, np.int64)
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def mul_and_carry_shift(value, mul, shift):
    """nncase's mul_and_carry_shift: (int32)((int64(value) * mul + 2^(s-1)) >> s), s = shift as uint8."""
    s = int(shift) & 0xFF
    v = np.asarray(value, np.int64) * np.int64(mul)
    if s > 0:
        v = (v + (np.int64(1) << np.int64((s - 1) & 63))) >> np.int64(s & 63)     # shifts wrap like RV64 / x86-64
    return wrap32(v)


def c_div(a, b):
    """int32 division truncating toward zero, RISC-V results for b == 0 (-1) and overflow (the dividend)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    safe = np.where(b == 0, 1, b)
    q = np.abs(a) // np.abs(safe) * np.sign(a) * np.sign(safe)
    return wrap32(np.where(b == 0, -1, q))


def to_uint8_saturating(v):
    """(int32) of a float as the chip converts (saturating, NaN -> INT_MAX), then clamped to 0..255."""
    v = np.asarray(v, np.float64)
    v = np.where(np.isnan(v), 255, v)
    return np.clip(v, 0, 255).astype(np.uint8)


def exact_f32(fn, x):
    """A transcendental function of float32 values rounded from float64 (what a correctly rounded libm gives)."""
    with np.errstate(all="ignore"):
        return fn(np.asarray(x, np.float64)).astype(F32)


def taps(m, size, out, filt, stride, dilation, before):
    """[(k, clipped index per output, valid mask)] for every filter tap that reaches the input somewhere."""
    if out <= 0 or size <= 0 or filt <= 0:
        return []
    lo = max(0, -((-(before - (out - 1) * stride)) // dilation))
    hi = min(filt - 1, (size - 1 + before) // dilation)
    if hi - lo >= MAX_TAPS:
        m.fail(f"a {filt}-tap window over {size} values would need {hi - lo + 1} passes; implausible", "filter_h")
    o = np.arange(out, dtype=np.int64)
    result = []
    for k in range(lo, hi + 1):
        idx = o * stride - before + k * dilation
        valid = (idx >= 0) & (idx < size)
        if valid.any():
            result.append((k, np.clip(idx, 0, size - 1), valid))
    return result


def _window_geometry(m, b, h, w):
    oh = windowed(h, b.filter_h, b.stride_h, b.dilation_h, b.padding_h.before, b.padding_h.after)
    ow = windowed(w, b.filter_w, b.stride_w, b.dilation_w, b.padding_w.before, b.padding_w.after)
    ys = taps(m, h, oh, b.filter_h, b.stride_h, b.dilation_h, b.padding_h.before)
    xs = taps(m, w, ow, b.filter_w, b.stride_w, b.dilation_w, b.padding_w.before)
    return oh, ow, ys, xs


def _gather(x, in_shape, out_shape, m, field):
    """x (in_shape) read at every out_shape index with coordinates >= the input's dims replaced by 0."""
    if prod(out_shape) and not prod(in_shape):
        m.fail(f"an empty {field} {in_shape} cannot be broadcast to {out_shape}", field)
    idx = [np.where(np.arange(o) < i, np.arange(o), 0) for i, o in zip(in_shape, out_shape)]
    return x.reshape(in_shape)[np.ix_(*idx)]


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
        x, y = _gather(x, a_shape, out_shape, m, "in_a_shape"), _gather(y, b_shape, out_shape, m, "in_b_shape")
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
def _sequential_sum(values, init):
    """init + v0 + v1 + ... along the last axis in float32, one rounding per step."""
    start = np.full(values.shape[:-1] + (1,), init, F32)
    return np.add.accumulate(np.concatenate([start, values.astype(F32)], axis=-1), axis=-1, dtype=F32)[..., -1]


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
        out = _sequential_sum(values, init) if op in (0, 3) else _fold_minmax(values, init, op == 1)
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
    oh, ow, ys, xs = _window_geometry(m, b, h, w)
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
        total = _sequential_sum(e, 0.0)
        out = (e / total[:, None]).astype(F32)
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


# ---- matmul and convolutions -------------------------------------------------------------------------------------
@executes("matmul")
def matmul(m, node):
    b = node.body
    rows, cols, b_cols = b.a_rows, b.a_cols, b.b_cols
    m.reserve(node.range("output"), rows * b_cols * 4, "output")
    if not rows * b_cols:
        return np.zeros((rows, b_cols), F32)
    m.work(rows * cols * b_cols, "the matmul")
    a = m.read(node.range("input_a"), "<f4", rows * cols, "input_a").reshape(rows, cols)
    w = m.read(node.range("input_b"), "<f4", cols * b_cols, "input_b").reshape(cols, b_cols)
    acc = np.broadcast_to(node.extra["bias"], (rows, b_cols)).astype(F32)
    with np.errstate(all="ignore"):
        for i in range(cols):
            acc = (acc + (a[:, i:i + 1] * w[i:i + 1, :]).astype(F32)).astype(F32)
    act = b.fused_activation
    return m.write(node.range("output"), clamp(acc, act.min, act.max), "output")


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
    oh, ow, ys, xs = _window_geometry(m, b, h, w)
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
    oh, ow, ys, xs = _window_geometry(m, b, h, w)
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


