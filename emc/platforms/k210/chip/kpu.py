"""The KPU hardware model shared by kmodel v3 and v4: RAM layout, the 12-word layer argument, the batch-norm
and activation tables, and the bit-exact arithmetic of one KPU layer (spec sections 1.1-1.5).
"""
import numpy as np

from ....errors import KModelFormatError
from ...exact_matmul import exact_dtype, exact_matmul

KPU_RAM_BYTES = 2 * 1024 * 1024
KPU_LINES = KPU_RAM_BYTES // 64
LAYER_ARG_BYTES = 96
ACT_TABLE_BYTES = 144
BAND_ELEMENTS = 1 << 22          # work arrays of one row band of kpu_conv stay below ~32 MB of int64/float64
LUT_MIN_ELEMENTS = 1 << 12       # ActTable.apply tabulates the value range of inputs at least this large


# ---- RAM layout (spec 1.1) -------------------------------------------------------------------------------
def kpu_layout(width):
    """(channels per line group, row pitch in bytes, lines per row) for a map of this width."""
    if width <= 16:
        return 4, 16, 1
    if width <= 32:
        return 2, 32, 1
    return 1, 64, (width + 63) // 64


def kpu_rows(w, h, c):
    """Lines of KPU RAM a C x H x W map takes."""
    group, _, row_len = kpu_layout(w)
    return row_len * h * ((c + group - 1) // group)


def _map_base(ram, line_addr, n, c, h, w):
    rows = kpu_rows(w, h, c)
    base = (line_addr + n * rows) * 64
    if line_addr < 0 or base + rows * 64 > len(ram):
        raise KModelFormatError(f"KPU map {c}x{h}x{w} at line {line_addr + n * rows} runs past the 2 MiB KPU RAM; "
                                f"the map needs {rows} lines", field="kpu_address")
    return base


def _map_views(ram, line_addr, n, c, h, w):
    """[(channel slot j, view (channels j, j + group, ... ; H; W) of the map's bytes)]: the layout as slices."""
    group, pitch, row_len = kpu_layout(w)
    base = _map_base(ram, line_addr, n, c, h, w)
    if not c * h * w:
        return []
    lines = ram[base:base + kpu_rows(w, h, c) * 64].reshape(-1, h, row_len * 64)
    return [(j, lines[:len(range(j, c, group)), :, j * pitch:j * pitch + w]) for j in range(min(group, c))]


def kpu_upload(ram, line_addr, dense):
    """Store a dense uint8 (C, H, W) map -- or (N, C, H, W), maps consecutive -- in KPU RAM at a line."""
    dense = np.asarray(dense, np.uint8)
    maps = dense if dense.ndim == 4 else dense[None]
    c, h, w = maps.shape[1:]
    group = kpu_layout(w)[0]
    for n, m in enumerate(maps):
        for j, view in _map_views(ram, line_addr, n, c, h, w):
            view[...] = m[j::group]


def kpu_download(ram, line_addr, c, h, w, batches=1):
    """Read a dense uint8 (C, H, W) map (or (N, C, H, W) when batches > 1) from KPU RAM."""
    out = np.empty((batches, c, h, w), np.uint8)
    group = kpu_layout(w)[0]
    for n in range(batches):
        for j, view in _map_views(ram, line_addr, n, c, h, w):
            out[n, j::group] = view
    return out[0] if batches == 1 else out


# ---- the layer argument (spec 1.2) ---------------------------------------------------------------------------
# (word, lsb, width, name, signed) -- names as in the SDK's kpu.h
LAYER_FIELDS = [
    (0, 0, 1, "int_en", False), (0, 1, 1, "ram_flag", False), (0, 2, 1, "full_add", False),
    (0, 3, 1, "depth_wise_layer", False),
    (1, 0, 15, "image_src_addr", False), (1, 32, 15, "image_dst_addr", False),
    (2, 0, 10, "i_ch_num", False), (2, 32, 10, "o_ch_num", False), (2, 48, 10, "o_ch_num_coef", False),
    (3, 0, 10, "i_row_wid", False), (3, 10, 9, "i_col_high", False), (3, 32, 10, "o_row_wid", False),
    (3, 42, 9, "o_col_high", False),
    (4, 0, 3, "kernel_type", False), (4, 3, 1, "pad_type", False), (4, 4, 4, "pool_type", False),
    (4, 8, 1, "first_stride", False), (4, 9, 1, "bypass_conv", False), (4, 10, 1, "load_para", False),
    (4, 16, 8, "dma_burst_size", False), (4, 24, 8, "pad_value", False), (4, 32, 32, "bwsx_base_addr", False),
    (5, 0, 1, "load_coor", False), (5, 1, 6, "load_time", False), (5, 15, 17, "para_size", False),
    (5, 32, 32, "para_start_addr", False),
    (6, 0, 4, "coef_column_offset", False), (6, 4, 12, "coef_row_offset", False),
    (7, 0, 15, "channel_switch_addr", False), (7, 16, 4, "row_switch_addr", False), (7, 20, 8, "coef_size", False),
    (7, 28, 3, "coef_group", False), (7, 31, 1, "load_act", False), (7, 32, 32, "active_addr", False),
    (8, 0, 15, "wb_channel_switch_addr", False), (8, 16, 4, "wb_row_switch_addr", False),
    (8, 20, 3, "wb_group", False),
    (9, 0, 4, "shr_w", False), (9, 4, 4, "shr_x", False), (9, 8, 24, "arg_w", True), (9, 32, 24, "arg_x", True),
    (10, 0, 40, "arg_add", True),
    (11, 0, 1, "send_data_out", False), (11, 16, 16, "channel_byte_num", False), (11, 32, 32, "dma_total_byte", False),
]
_FIELD_NAMES = [f[3] for f in LAYER_FIELDS]
KERNEL_SIZES = {0: 1, 1: 3}                     # kernel_type -> k


def _signed(value, width):
    return value - (1 << width) if value >> (width - 1) else value


class LayerArgument:
    """The decoded 12 x u64 KPU layer argument; attributes are the kpu.h field names (signed ones sign-extended)."""

    __slots__ = _FIELD_NAMES + ["words"]

    def __init__(self, **fields):
        unknown = set(fields) - set(_FIELD_NAMES)
        if unknown:
            raise TypeError(f"unknown KPU layer argument fields: {sorted(unknown)}")
        self.words = [0] * 12
        for name in _FIELD_NAMES:
            setattr(self, name, fields.get(name, 0))

    @classmethod
    def from_bytes(cls, data, offset=0):
        """Decode the 96 bytes at offset; KModelFormatError when fewer remain."""
        if offset < 0 or len(data) - offset < LAYER_ARG_BYTES:
            raise KModelFormatError("truncated KPU layer argument (96 bytes needed)", offset, "layer_argument")
        words = np.frombuffer(bytes(data[offset:offset + LAYER_ARG_BYTES]), "<u8").tolist()
        arg = cls()
        arg.words = words
        for word, lsb, width, name, signed in LAYER_FIELDS:
            value = (words[word] >> lsb) & ((1 << width) - 1)
            setattr(arg, name, _signed(value, width) if signed else value)
        return arg

    def to_bytes(self):
        """Encode; bits of the decoded words outside the named fields (reserved bits) are kept as they were."""
        words = list(self.words)
        for word, lsb, width, name, _ in LAYER_FIELDS:
            mask = ((1 << width) - 1) << lsb
            value = int(getattr(self, name)) & ((1 << width) - 1)
            words[word] = (words[word] & ~mask) | (value << lsb)
        return np.array(words, "<u8").tobytes()

    @property
    def in_shape(self):
        return (self.i_ch_num + 1, self.i_col_high + 1, self.i_row_wid + 1)

    @property
    def out_shape(self):
        return (self.o_ch_num + 1, self.o_col_high + 1, self.o_row_wid + 1)

    @property
    def kernel(self):
        return KERNEL_SIZES.get(self.kernel_type, 1)

    @property
    def depthwise(self):
        return bool(self.depth_wise_layer)

    def weight_count(self):
        c_in, _, _ = self.in_shape
        c_out = self.out_shape[0]
        k2 = self.kernel * self.kernel
        return c_out * k2 if self.depthwise else c_out * c_in * k2

    def macs(self):
        """Multiply-accumulates of the convolution (at input resolution, before pooling)."""
        _, h, w = self.in_shape
        return self.weight_count() * h * w

    def problems(self):
        """[(field, message)] for values the KPU model cannot run: unknown kernel or pool, shapes that disagree."""
        found = []
        c_in, h, w = self.in_shape
        c_out, oh, ow = self.out_shape
        if self.kernel_type not in KERNEL_SIZES:
            found.append(("kernel_type", f"kernel_type {self.kernel_type} is neither 0 (1x1) nor 1 (3x3)"))
        pool = POOLS.get(self.pool_type)
        if pool is None:
            found.append(("pool_type", f"pool_type {self.pool_type} is not one of the KPU's 10 pooling modes"))
        elif (oh, ow) != (h // pool.stride, w // pool.stride):
            found.append(("o_row_wid", f"output {ow}x{oh} does not match input {w}x{h} with pool_type "
                                       f"{self.pool_type} ({pool.name}: {w // pool.stride}x{h // pool.stride})"))
        if self.depthwise and c_in != c_out:
            found.append(("o_ch_num", f"depthwise layer with {c_in} input and {c_out} output channels"))
        if self.depthwise and self.pool_type != 0:          # spec 1.5.5: no writer does it, the chip misbehaves
            found.append(("pool_type", f"depthwise layer with pool_type {self.pool_type}: the KPU cannot pool "
                                       f"after a depthwise convolution; pool in the next 1x1 layer instead"))
        return found

    def validate(self, offset=None):
        """Raise KModelFormatError naming the first field the KPU model cannot run."""
        found = self.problems()
        if found:
            field, message = found[0]
            raise KModelFormatError("KPU layer argument: " + message, offset, field)
        return self

    def as_dict(self):
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    def __repr__(self):
        kind = ("dw" if self.depthwise else "conv") + f"{self.kernel}x{self.kernel}"
        return (f"<KPU {kind} {'x'.join(map(str, self.in_shape))} -> {'x'.join(map(str, self.out_shape))} "
                f"pool={self.pool_type} src={self.image_src_addr} dst={self.image_dst_addr}>")


# ---- batch-norm and activation tables (spec 1.4) ---------------------------------------------------------
def _u64_words(data, offset, count, what):
    end = offset + 8 * count
    if count < 0 or offset < 0 or end > len(data):
        raise KModelFormatError(f"truncated {what} ({count} x 8 bytes needed)", offset, what)
    return np.frombuffer(bytes(data[offset:end]), "<u8")


def _field(words, lsb, width, signed):
    value = ((words >> np.uint64(lsb)) & np.uint64((1 << width) - 1)).astype(np.int64)
    return np.where(value >= 1 << (width - 1), value - (1 << width), value) if signed else value


def decode_bn_table(data, channels, offset=0):
    """(mul, shift, add) int64 arrays of a batch-norm table of `channels` u64 entries."""
    words = _u64_words(data, offset, channels, "bn_table")
    return _field(words, 0, 24, True), _field(words, 56, 4, False), _field(words, 24, 32, True)


def encode_bn_table(mul, shift, add):
    """Bytes of a batch-norm table (norm_mul 24-bit, norm_add 32-bit, norm_shift 4-bit per channel)."""
    mul = np.asarray(mul, np.int64) & 0xFFFFFF
    add = np.asarray(add, np.int64) & 0xFFFFFFFF
    shift = np.asarray(shift, np.int64) & 0xF
    words = (mul.astype(np.uint64) | (add.astype(np.uint64) << np.uint64(24))
             | (shift.astype(np.uint64) << np.uint64(56)))
    return words.astype("<u8").tobytes()


class ActTable:
    """16 segments: x_start (signed 36-bit), y_mul (signed 16-bit), shift (u8), add (u8 bias)."""

    __slots__ = ("x_start", "y_mul", "shift", "add", "_sorted")

    def __init__(self, x_start, y_mul, shift, add):
        self.x_start = np.asarray(x_start, np.int64).reshape(16)
        self.y_mul = np.asarray(y_mul, np.int64).reshape(16)
        self.shift = np.asarray(shift, np.int64).reshape(16)
        self.add = np.asarray(add, np.int64).reshape(16)
        self._sorted = bool(np.all(np.diff(self.x_start) >= 0))

    @classmethod
    def from_bytes(cls, data, offset=0):
        words = _u64_words(data, offset, 18, "act_table")
        # x_start: bits 24..59 only (MSVC-built files carry garbage in bits 60..63)
        add = np.frombuffer(words[16:].tobytes(), np.uint8).astype(np.int64)
        return cls(_field(words[:16], 24, 36, True), _field(words[:16], 8, 16, True), _field(words[:16], 0, 8, False),
                   add)

    def to_bytes(self):
        words = ((self.shift & 0xFF).astype(np.uint64)
                 | ((self.y_mul & 0xFFFF).astype(np.uint64) << np.uint64(8))
                 | ((self.x_start & ((1 << 36) - 1)).astype(np.uint64) << np.uint64(24)))
        return words.astype("<u8").tobytes() + (self.add & 0xFF).astype(np.uint8).tobytes()

    def segments(self):
        """[(x_start, y_mul, shift, add)] * 16 as Python ints."""
        return list(zip(*(a.tolist() for a in (self.x_start, self.y_mul, self.shift, self.add))))

    def segment_of(self, v):
        """Index of the highest segment i with v > x_start[i] (0 when none), for int64 v of any shape."""
        if self._sorted:
            return np.maximum(np.searchsorted(self.x_start, v, side="left") - 1, 0)
        above = v[..., None] > self.x_start
        seg = 15 - np.argmax(above[..., ::-1], axis=-1)
        return np.where(above.any(axis=-1), seg, 0)

    def apply(self, v):
        """uint8 result of the activation stage for int64 batch-norm outputs v (spec 1.5.3).

        A large v is looked up in the table of the function over a range (computed once, the same function): v's
        own range, clipped to where the output stops changing (see `flat_beyond`) -- a few passes over v instead of
        the segment arithmetic's fifteen."""
        v = np.asarray(v, np.int64)
        if v.size >= LUT_MIN_ELEMENTS:
            lo, hi = self.flat_beyond()
            if hi - lo >= v.size // 2:
                vmin, vmax = int(v.min()), int(v.max())
                lo, hi = min(max(vmin, lo), hi), min(max(vmax, lo), hi)
            if hi - lo < v.size // 2:
                table = self._compute(np.arange(lo, hi + 1, dtype=np.int64))
                index = np.clip(v, lo, hi)
                index -= lo
                return table.take(index)
        return self._compute(v)

    def flat_beyond(self):
        """(lo, hi) with lo <= hi: the output is the same for every v <= lo, and for every v >= hi (Python ints).

        A segment with y_mul = 0 outputs its add; one with y_mul != 0 clips for good once |t| >> shift passes
        255 - add (rising to 255) or add (falling to 0), since the carry shift stays at or above the floor quotient
        for t >= 0 and at or below it for t < 0. Sorted tables are walked in from both ends over the segments that
        keep the end's value; for unsorted ones only what lies past every x_start counts."""
        x = [int(e) for e in self.x_start]
        if not self._sorted:
            hi = max(max(x) + 1, x[15] + self._reach(15, self.y_mul[15] > 0))
            lo = min(min(x), x[0] - self._reach(0, self.y_mul[0] < 0))
            return lo, max(lo, hi)
        hi, end = x[0], self._end_value(15, True)
        for i in range(15, -1, -1):                          # segment i takes (x[i], x[i + 1]]
            upper = x[i + 1] + 1 if i < 15 else None
            if self.y_mul[i] == 0 and self.add[i] == end:
                continue
            if self._end_value(i, True) == end:
                hi = x[i] + max(1, self._reach(i, end == 255))
                hi = hi if upper is None else min(hi, upper)
            else:
                hi = upper
            break
        lo, end = x[15], self._end_value(0, False)
        for i in range(16):                                  # segment 0 takes everything up to x[1]
            if self.y_mul[i] == 0 and self.add[i] == end:
                continue
            lo = min(x[0] - self._reach(0, end == 255), x[1]) if i == 0 else x[i]
            break
        return lo, max(lo, hi)

    def _reach(self, seg, to_255):
        """How far past x_start[seg] the segment's output has clipped to 255 (to_255) or to 0 (0: constant)."""
        y, s, a = int(self.y_mul[seg]), min(int(self.shift[seg]), 62), int(self.add[seg])
        return -(-(((255 - a) if to_255 else a) << s) // abs(y)) if y else 0

    def _end_value(self, seg, up):
        """The output segment seg settles at as v grows (up) or falls away from its x_start."""
        y = int(self.y_mul[seg])
        return int(self.add[seg]) if y == 0 else (255 if (y > 0) == up else 0)

    def _compute(self, v):
        """The segment arithmetic itself, element by element."""
        seg = self.segment_of(v)
        t = (v - self.x_start[seg]) * self.y_mul[seg]
        shift = np.minimum(self.shift, 62)              # |t| < 2^61: larger shifts give the same result
        half_less_1 = np.where(shift > 0, (1 << shift) // 2 - 1, 0)
        s = shift[seg]
        q = t >> s
        r = (t + half_less_1[seg] + (q & (shift[seg] > 0))) >> s        # banker_shift, inlined per segment
        if (t < 0).any():
            r = np.where(t < 0, 2 * q - r, r)
        return np.clip(r + self.add[seg], 0, 255).astype(np.uint8)

    def __eq__(self, other):
        return isinstance(other, ActTable) and self.segments() == other.segments()


def decode_act_table(data, offset=0):
    """The 16-segment activation table of 144 bytes at offset, as an ActTable."""
    return ActTable.from_bytes(data, offset)


def encode_act_table(table):
    """144 bytes of an ActTable (or of an (x_start, y_mul, shift, add) tuple of 16-value sequences)."""
    return as_act_table(table).to_bytes()


def as_act_table(act):
    return act if isinstance(act, ActTable) else ActTable(*act)


def banker_shift(t, s):
    """nncase's carry shift of t by s >= 0 (spec 1.5.3): round half to even for t >= 0; for t < 0 the floor
    quotient moves one further down whenever the same rule would round it up (nncase's quirk, kept).
    """
    t = np.asarray(t, np.int64)
    s = np.minimum(np.asarray(s, np.int64), 62)        # |t| < 2^61: any larger shift gives the same result
    q = t >> s
    half = (np.int64(1) << s) >> 1
    bias = np.where(s > 0, half - 1 + (q & 1), 0)      # (t + bias) >> s = q + 1 exactly when rounding up
    r = (t + bias) >> s
    return np.where(t < 0, 2 * q - r, r) if (t < 0).any() else r


# ---- pooling (spec 1.5.5) -----------------------------------------------------------------------------------
# every mode works on the last two axes: a (C, H, W) map or an (N, C, H, W) batch
def _strided(y, size, stride):
    """The size x size window taps of a stride-`stride` pool (floor output size), as a list of arrays."""
    h, w = y.shape[-2:]
    oh, ow = h // stride, w // stride
    return [y[..., dy:dy + stride * (oh - 1) + 1:stride, dx:dx + stride * (ow - 1) + 1:stride]
            for dy in range(size) for dx in range(size)]


def _max_pool(size):
    return lambda y: np.maximum.reduce(_strided(y, size, size))


def _mean_pool(size):
    return lambda y: (np.sum(_strided(y.astype(np.int64), size, size), axis=0) // (size * size)).astype(np.uint8)


def _pick(stride, dx):
    def pick(y):
        h, w = y.shape[-2:]
        oh, ow = h // stride, w // stride
        out = np.zeros(y.shape[:-2] + (oh, ow), np.uint8)
        cols = np.arange(ow) * stride + dx
        valid = cols < w
        out[..., valid] = y[..., 0:oh * stride:stride, :][..., cols[valid]]
        return out
    return pick


def _pad_last_two(y, **how):
    return np.pad(y, [(0, 0)] * (y.ndim - 2) + [(0, 1), (0, 1)], **how)


def _mean_2_s1(y):
    e = _pad_last_two(y, mode="edge").astype(np.int64)
    return ((e[..., :-1, :-1] + e[..., 1:, :-1] + e[..., :-1, 1:] + e[..., 1:, 1:]) // 4).astype(np.uint8)


def _max_2_s1(y):
    e = _pad_last_two(y, constant_values=0)                            # 0 never wins a uint8 max
    return np.maximum.reduce([e[..., :-1, :-1], e[..., 1:, :-1], e[..., :-1, 1:], e[..., 1:, 1:]])


class Pool:
    __slots__ = ("name", "stride", "fn")

    def __init__(self, name, stride, fn):
        self.name, self.stride, self.fn = name, stride, fn


POOLS = {
    0: Pool("bypass", 1, lambda y: y),
    1: Pool("max_2_s2", 2, _max_pool(2)),
    2: Pool("mean_2_s2", 2, _mean_pool(2)),
    3: Pool("max_4_s4", 4, _max_pool(4)),
    4: Pool("mean_4_s4", 4, _mean_pool(4)),
    5: Pool("left_top_2_s2", 2, _pick(2, 0)),
    6: Pool("right_top_2_s2", 2, _pick(2, 1)),
    7: Pool("left_top_4_s4", 4, _pick(4, 0)),
    8: Pool("mean_2_s1", 1, _mean_2_s1),
    9: Pool("max_2_s1", 1, _max_2_s1),
}
POOL_FACTOR = {code: pool.stride for code, pool in POOLS.items()}


def kpu_pool(y, pool_type):
    """The ten KPU pooling modes on a uint8 (C, H, W) map or (N, C, H, W) batch (spec 1.5.5)."""
    pool = POOLS.get(pool_type)
    if pool is None:
        raise KModelFormatError(f"unknown KPU pool type {pool_type}", field="pool_type")
    return pool.fn(np.asarray(y, np.uint8))


# ---- one KPU layer (spec 1.5) -------------------------------------------------------------------------------
# Work arrays are laid out (C_out, N, rows, W): one matmul covers the whole batch, the per-channel batch-norm
# broadcasts over the leading axis, and only the uint8 result is transposed back to (N, C_out, H, W).
def _window_sums(xp, k, h, w):
    """Sums of every k x k window of padded maps (..., H + k - 1, W + k - 1), as int32 (..., H, W)."""
    x32 = xp.astype(np.int32)
    if k == 1:
        return x32
    rows = x32[..., 0:h, :] + x32[..., 1:h + 1, :] + x32[..., 2:h + 2, :]
    return rows[..., 0:w] + rows[..., 1:w + 1] + rows[..., 2:w + 2]


def _offset_terms(arg, xp, wts, c_in, h, w, mode):
    """(x term (N, C_in or 1, H, W), per-output-channel constant) of spec 1.5.1: the arg_x, arg_w, arg_add parts."""
    k = arg.kernel
    k2 = k * k
    if arg.depthwise:
        sw = wts.sum(axis=1)                                            # (C,)
        x_term = (arg.arg_x * _window_sums(xp, k, h, w).astype(np.int64)) >> arg.shr_x
        return x_term, ((arg.arg_w * sw) >> arg.shr_w) + arg.arg_add
    sw = wts.reshape(len(wts), c_in, k2).sum(axis=2)                    # (C_out, C_in)
    if mode == "per_channel" and arg.arg_x % (1 << arg.shr_x):         # the per-channel shifts round differently
        lut = (arg.arg_x * np.arange(255 * k2 + 1, dtype=np.int64)) >> arg.shr_x
        x_term = lut[_window_sums(xp, k, h, w)].sum(axis=1, keepdims=True)     # sum_i (arg_x * SX_i) >> shr_x
    else:                                   # one shift of the channel total: exact when 2^shr_x divides arg_x
        total = _window_sums(xp.sum(axis=1, keepdims=True, dtype=np.int32), k, h, w)
        x_term = (arg.arg_x * total.astype(np.int64)) >> arg.shr_x
    if mode == "per_channel":
        const = ((arg.arg_w * sw) >> arg.shr_w).sum(axis=1) + arg.arg_add * c_in
    else:
        const = ((arg.arg_w * sw.sum(axis=1)) >> arg.shr_w) + arg.arg_add * c_in
    return x_term, const


def _products(arg, band, wts, n, w):
    """sum_taps X * W of padded input rows band (C_in, N, n + k - 1, W + k - 1): int64 (C_out, N, n, W)."""
    k = arg.kernel
    c_in, batch = band.shape[:2]
    per_out = wts.shape[1]
    dtype, chunk = exact_dtype(255 * int(np.abs(wts).max(initial=0)), per_out)
    if arg.depthwise:
        acc = np.zeros((len(wts), batch, n, w), dtype)
        weights = wts.astype(dtype)
        band = band.astype(dtype, order="C")
        for t in range(k * k):
            ky, kx = divmod(t, k)
            acc += band[:, :, ky:ky + n, kx:kx + w] * weights[:, t, None, None, None]
        return acc.astype(np.int64)
    if k == 1:
        cols = band.astype(dtype, order="C").reshape(c_in, batch * n * w)
    else:
        cols = np.empty((c_in, k * k, batch, n, w), dtype)
        for t in range(k * k):
            ky, kx = divmod(t, k)
            cols[:, t] = band[:, :, ky:ky + n, kx:kx + w]
        cols = cols.reshape(c_in * k * k, batch * n * w)
    prod = exact_matmul(wts.astype(dtype), cols, chunk)
    return prod.astype(np.int64).reshape(len(wts), batch, n, w)


def kpu_conv(arg, x, weights, bn, act, arg_x_mode="per_channel"):
    """Output uint8 (C_out, H_out, W_out) of a KPU layer on input x uint8 (C_in, H, W) (spec 1.5); for a batch
    x (N, C_in, H, W) the outputs (N, C_out, H_out, W_out).

    weights: uint8/uint16, (C_out, C_in, k, k) or (C, k, k) depthwise; bn: (mul, shift, add); act: ActTable.
    arg_x_mode: 'per_channel' shifts the arg_x/arg_w terms per input channel as the chip does, 'sum' once
    over the channel sums as nncase's simulators do (equal when arg/2^shr is an integer).
    """
    if arg_x_mode not in ("per_channel", "sum"):
        raise ValueError(f"arg_x_mode must be 'per_channel' or 'sum', not {arg_x_mode!r}")
    arg.validate()
    c_in, h, w = arg.in_shape
    c_out = arg.out_shape[0]
    k = arg.kernel
    x = np.asarray(x, np.uint8)
    batched = x.ndim == 4 and x.shape[1:] == (c_in, h, w)
    if not batched and x.size != c_in * h * w:
        raise KModelFormatError(f"KPU layer input has {x.size} values, the layer argument says {c_in}x{h}x{w}",
                                field="i_ch_num")
    x = x.reshape(-1, c_in, h, w)
    per_out = k * k if arg.depthwise else c_in * k * k
    wts = np.asarray(weights).astype(np.int64)
    if wts.size != c_out * per_out:
        raise KModelFormatError(f"KPU layer has {wts.size} weights, its shape needs {c_out * per_out}", field="weights")
    wts = wts.reshape(c_out, per_out)
    mul, shift, add = (np.asarray(a, np.int64).reshape(-1) for a in bn)
    if not len(mul) == len(shift) == len(add) == c_out:
        raise KModelFormatError(f"batch-norm table has {len(mul)} entries for {c_out} output channels", field="bn")
    table = as_act_table(act)
    pad = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=arg.pad_value) if pad else x
    x_term, const = _offset_terms(arg, xp, wts, c_in, h, w, arg_x_mode)
    x_term = x_term.transpose(1, 0, 2, 3)                               # (C or 1, N, H, W)
    xp = xp.transpose(1, 0, 2, 3)
    y = np.empty((c_out, len(x), h, w), np.uint8)
    band = max(1, BAND_ELEMENTS // max(1, max(c_out, per_out) * w * len(x)))
    mul, shift, add, const = (a[:, None, None, None] for a in (mul, shift, add, const))
    for y0 in range(0, h, band):
        rows = slice(y0, min(h, y0 + band))
        acc = _products(arg, xp[:, :, rows.start:rows.stop + k - 1], wts, rows.stop - rows.start, w)
        acc += x_term[:, :, rows]
        acc += const
        acc *= mul
        acc >>= shift
        acc += add
        y[:, :, rows] = table.apply(acc)
    y = kpu_pool(y.transpose(1, 0, 2, 3), arg.pool_type)
    return np.ascontiguousarray(y if batched else y[0])
