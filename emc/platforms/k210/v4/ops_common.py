"""The registry of kmodel v4 CPU opcodes (nncase v0.2 neutral and cpu_* kernels) and the C arithmetic they share.

The ops_* modules hold one small function per opcode, registered by opcode in EXECUTORS; each takes the run's
Machine (bounds-checked memories) and the parsed node.

Integer ops are bit-exact. Float ops follow nncase's host runtime: float32 step by step in its loop order (sums
accumulate sequentially, no fused multiply-add); exp/log/sin/cos are rounded from float64, so they may differ from
a C library by one ulp. Where C has undefined behaviour the chip's (RISC-V) behaviour is used: integer division by
zero gives -1, float -> int conversions saturate.
"""
import numpy as np

from .describe import windowed
from ..chip.layer_types import OPCODE_BY_NAME

EXECUTORS = {}                # opcode -> fn(machine, node) -> the node's output array
BATCHED = {}                  # opcode -> fn(machines, node) -> outputs, for the nodes a lockstep run batches
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


def executes_batched(*names):
    """Register fn(machines, node) -> [output per machine] as the lockstep form of these opcodes, and
    fn([machine], node)[0] as their executor."""
    def wrap(fn):
        for name in names:
            BATCHED[OPCODE_BY_NAME[name]] = fn
            EXECUTORS[OPCODE_BY_NAME[name]] = lambda m, node: fn([m], node)[0]
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


def window_geometry(m, b, h, w):
    oh = windowed(h, b.filter_h, b.stride_h, b.dilation_h, b.padding_h.before, b.padding_h.after)
    ow = windowed(w, b.filter_w, b.stride_w, b.dilation_w, b.padding_w.before, b.padding_w.after)
    ys = taps(m, h, oh, b.filter_h, b.stride_h, b.dilation_h, b.padding_h.before)
    xs = taps(m, w, ow, b.filter_w, b.stride_w, b.dilation_w, b.padding_w.before)
    return oh, ow, ys, xs


def gather(x, in_shape, out_shape, m, field):
    """x (in_shape) read at every out_shape index with coordinates >= the input's dims replaced by 0."""
    if prod(out_shape) and not prod(in_shape):
        m.fail(f"an empty {field} {in_shape} cannot be broadcast to {out_shape}", field)
    idx = [np.where(np.arange(o) < i, np.arange(o), 0) for i, o in zip(in_shape, out_shape)]
    return x.reshape(in_shape)[np.ix_(*idx)]
