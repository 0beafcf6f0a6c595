"""The KPU's 16-segment activation table (spec 1.4, 1.5.3): exact for piecewise-linear activations, fitted otherwise.

The table maps the batch-norm output v (an integer, `v_scale` units per real pre-activation value) to the uint8
output code: segment i is the highest with v > x_start[i]; out = clamp(RS((v - x_start) * mul, shift) + add).
"""
import numpy as np

from ....errors import QuantizationError
from ....layers.activations import ACTIVATIONS
from .fixedpoint import fixed_mul
from ..chip.kpu import ActTable as KpuActTable

SEGMENTS = 16
SEG0_X = -(1 << 35)                 # segment 0 starts at the lowest 36-bit value in every real file
X_LIMIT = (1 << 35) - 1
UNUSED_X = (1 << 35) - SEGMENTS     # x_start of padding segments: never selected (v stays far below)
MAX_ACT_SHIFT = 20                  # nncase never writes more; board-proven
MUL_BITS = 15                       # y_mul is a signed 16-bit field

# Piecewise-linear activations: the x positions of their kinks (the table is exact up to rounding).
PIECEWISE_KINKS = {
    "linear": lambda alpha: (),
    "relu": lambda alpha: (0.0,),
    "leaky_relu": lambda alpha: (0.0,),
    "relu6": lambda alpha: (0.0, 6.0),
    "hard_sigmoid": lambda alpha: (-3.0, 3.0),
}


class ActTable:
    """Sixteen segments (x_start, mul, shift, add) plus how well they reproduce the activation."""

    def __init__(self, x_start, mul, shift, add, max_error, method, activation):
        self.x_start = np.asarray(x_start, np.int64)
        self.mul = np.asarray(mul, np.int64)
        self.shift = np.asarray(shift, np.int64)
        self.add = np.asarray(add, np.int64)
        self.max_error = int(max_error)       # max |table - exact rounding| in output LSBs over the range
        self.method = method                  # 'exact' (piecewise linear) or 'fit'
        self.activation = activation

    def encoded(self):
        """The table as the KPU model (kpu.ActTable) encodes and evaluates it."""
        return KpuActTable(self.x_start, self.mul, self.shift, self.add)

    def apply(self, v):
        """The chip's table lookup for integer batch-norm outputs v (any shape) -> uint8 codes."""
        return self.encoded().apply(v)

    def segments(self):
        return list(zip(self.x_start.tolist(), self.mul.tolist(), self.shift.tolist(), self.add.tolist()))

    def __repr__(self):
        return f"ActTable({self.activation}, {self.method}, max error {self.max_error} LSB)"


def activation_fn(act):
    """float64 numpy function of an emc Act."""
    fn = ACTIVATIONS[act.name]
    return lambda x: np.asarray(fn(np.asarray(x, np.float64), act.alpha), np.float64)


class ActShape:
    """An activation's segments in real units, independent of the v scale: (seg0 code, [(x0, code, slope)])."""

    def __init__(self, act, pre_range, out_quant):
        scale, zp = float(out_quant[0]), float(out_quant[1])
        if act.name == "softmax":
            raise QuantizationError("softmax cannot be a KPU activation; it runs as a CPU SOFTMAX layer")
        fn = activation_fn(act)
        lo_out, hi_out = (0.0 - zp) * scale, (255.0 - zp) * scale
        self.act = act
        self.codes = lambda x: np.clip(fn(x), lo_out, hi_out) / scale + zp
        self.lo, self.hi = float(min(pre_range)), float(max(pre_range))
        if act.name in PIECEWISE_KINKS:
            self.seg0, self.pieces = _exact_pieces(fn, PIECEWISE_KINKS[act.name](act.alpha), lo_out, hi_out,
                                                   scale, zp)
            self.method = "exact"
        else:
            self.seg0, self.pieces = _fitted_pieces(self.codes, *_fit_domain(self.codes, self.lo, self.hi))
            self.method = "fit"

    def table(self, v_scale, max_shift=MAX_ACT_SHIFT, points=200001):
        """The integer table for v = round(pre-activation * v_scale), its max error measured at `points` v."""
        table = _encode(self.seg0, self.pieces, v_scale, max_shift, self.act)
        table.method = self.method
        table.max_error = _measure(table, self.codes, v_scale, self.lo, self.hi, points)
        return table

    def error(self, v_scale, max_shift=MAX_ACT_SHIFT, points=4097):
        """Max |table(v) - exact code| (unrounded, so >= 0.5 at best) over the range, at about `points` v."""
        table = _encode(self.seg0, self.pieces, v_scale, max_shift, self.act)
        v = _sample_v(table, v_scale, self.lo, self.hi, points)
        return float(np.max(np.abs(table.apply(v).astype(np.float64) - self.codes(v / v_scale))))


def build_act_table(act, v_scale, pre_range, out_quant, max_shift=MAX_ACT_SHIFT):
    """Table for activation `act`: v = round(pre-activation * v_scale), output real = (code - zp) * scale.

    pre_range is the calibrated range of the pre-activation; outside it the table continues its end pieces.
    """
    return ActShape(act, pre_range, out_quant).table(v_scale, max_shift)


# ---- piecewise-linear activations -------------------------------------------------------------------------
def _exact_pieces(fn, kinks, lo_out, hi_out, scale, zp):
    """Segments of clip(f) in code units: (x0, code at x0, slope in codes per real) after every breakpoint."""
    kinks = sorted(kinks)
    points = list(kinks)
    edges = [-np.inf] + kinks + [np.inf]
    for a, b in zip(edges[:-1], edges[1:]):
        x0 = (a if np.isfinite(a) else (b - 1.0 if np.isfinite(b) else 0.0))
        x1 = (b if np.isfinite(b) else x0 + 1.0)
        if x1 == x0:
            continue
        slope = (fn(x1) - fn(x0)) / (x1 - x0)
        if slope == 0:
            continue
        for level in (lo_out, hi_out):
            x = x0 + (level - fn(x0)) / slope
            if a < x < b:
                points.append(float(x))
    points = sorted(set(points))

    def g(x):
        return float(np.clip(fn(x), lo_out, hi_out))

    pieces = []
    for i, p in enumerate(points):
        nxt = points[i + 1] if i + 1 < len(points) else p + 1.0
        slope = (g(nxt) - g(p)) / (nxt - p)
        pieces.append((p, g(p) / scale + zp, slope / scale))
    first = points[0] - 1.0 if points else 0.0
    seg0 = g(first) / scale + zp
    if points:
        left_slope = g(points[0]) - g(points[0] - 1.0)
        if abs(left_slope) > 1e-12 * max(1.0, abs(g(points[0]))):
            raise QuantizationError("activation table: the piece left of the first breakpoint is not constant")
    else:
        pieces = [(0.0, g(0.0) / scale + zp, 0.0)]
    return seg0, _merge(pieces)


def _merge(pieces):
    """Drop a breakpoint whose piece continues the previous one (same line)."""
    out = []
    for x0, c0, slope in pieces:
        if out:
            px, pc, ps = out[-1]
            if abs(ps - slope) < 1e-12 * max(1.0, abs(slope)) and abs(pc + ps * (x0 - px) - c0) < 1e-9:
                continue
        out.append((x0, c0, slope))
    return out


# ---- smooth activations: minimax piecewise-linear fit -----------------------------------------------------
def _fit_domain(codes_fn, lo, hi, margin=0.1):
    """[lo, hi] widened by a margin, then narrowed to where the clipped activation is not constant."""
    span = max(hi - lo, 1e-6)
    x = np.linspace(lo - margin * span, hi + margin * span, 4097)
    y = codes_fn(x)
    moving = np.nonzero(np.abs(np.diff(y)) > 1e-9)[0]
    if len(moving) == 0:
        return lo, hi
    return float(x[moving[0]]), float(x[moving[-1] + 1])


def _fitted_pieces(codes_fn, lo, hi, samples=1025, count=SEGMENTS - 1):
    """Greedy minimax segmentation of codes_fn on [lo, hi] into at most `count` lines (bisection on the error)."""
    if hi - lo < 1e-12:
        c = float(codes_fn(np.array([lo]))[0])
        return c, [(lo, c, 0.0)]
    x = np.linspace(lo, hi, samples)
    y = codes_fn(x)

    def cost(i, j):
        xs, ys = x[i:j + 1], y[i:j + 1]
        slope = (ys[-1] - ys[0]) / (xs[-1] - xs[0])
        dev = ys - (ys[0] + slope * (xs - xs[0]))
        return (dev.max() - dev.min()) / 2.0, slope, ys[0] + (dev.max() + dev.min()) / 2.0

    def segment(tol):
        cuts, i = [0], 0
        while i < samples - 1:
            lo_j, hi_j = i + 1, samples - 1
            if cost(i, hi_j)[0] <= tol:
                lo_j = hi_j
            while lo_j < hi_j:
                mid = (lo_j + hi_j + 1) // 2
                if cost(i, mid)[0] <= tol:
                    lo_j = mid
                else:
                    hi_j = mid - 1
            i = lo_j
            cuts.append(i)
        return cuts

    low, high = 0.0, cost(0, samples - 1)[0]
    best = segment(high)
    for _ in range(40):
        mid = (low + high) / 2.0
        cuts = segment(mid)
        if len(cuts) - 1 <= count:
            best, high = cuts, mid
        else:
            low = mid
        if high - low < 1e-3:
            break
    pieces = []
    for i, j in zip(best[:-1], best[1:]):
        _, slope, start = cost(i, j)
        pieces.append((float(x[i]), float(start), float(slope)))
    return float(y[0]), pieces


# ---- integer encoding and error measurement ---------------------------------------------------------------
def _encode(seg0_code, pieces, v_scale, max_shift, act):
    """Integer segments from (x0 real, code at x0, slope codes per real) pieces."""
    x_start, mul, shift, add = [SEG0_X], [0], [0], [int(np.clip(round(seg0_code), 0, 255))]
    for x0, c0, slope in pieces:
        xs = int(np.clip(round(x0 * v_scale), SEG0_X + 1, X_LIMIT - SEGMENTS))
        if xs <= x_start[-1]:                            # two breakpoints in one v step: the later wins
            for column in (x_start, mul, shift, add):
                column.pop()
        slope_v = slope / v_scale                         # codes per v unit
        m, s = fixed_mul(slope_v, MUL_BITS, max_shift)
        start = c0 + slope_v * (xs - x0 * v_scale)
        if m < 0:
            # RS of a negative product lands 0..0.5 or 1.5..2 codes low (spec 1.5.3): centre it.
            start += 1.0
        x_start.append(xs)
        mul.append(m)
        shift.append(s)
        add.append(int(np.clip(round(start), 0, 255)))
    if len(x_start) > SEGMENTS:
        raise QuantizationError(f"activation {act!r} needs {len(x_start)} table segments; the KPU has {SEGMENTS}")
    while len(x_start) < SEGMENTS:
        x_start.append(UNUSED_X + len(x_start))
        mul.append(0)
        shift.append(0)
        add.append(add[-1])
    return ActTable(x_start, mul, shift, add, 0, "", act)


def _sample_v(table, v_scale, lo, hi, points):
    """Integer v over [lo, hi] * v_scale: every one, or `points` of them, plus each segment start and the next."""
    a, b = lo * v_scale, hi * v_scale
    if b - a < points:
        v = np.arange(int(np.floor(a)), int(np.ceil(b)) + 1, dtype=np.int64)
    else:
        v = np.unique(np.round(np.linspace(a, b, points)).astype(np.int64))
    starts = table.x_start[(table.x_start > a) & (table.x_start < b)]
    return np.unique(np.concatenate([v, starts, starts + 1]))


def _measure(table, codes_fn, v_scale, lo, hi, points=200001):
    """Max |table(v) - round(exact code)| over the calibrated range (every v, or a dense sample of them)."""
    v = _sample_v(table, v_scale, lo, hi, points)
    exact = np.clip(np.round(codes_fn(v / v_scale)), 0, 255)
    return int(np.max(np.abs(table.apply(v).astype(np.int64) - exact.astype(np.int64))))
