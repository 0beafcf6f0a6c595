"""The KPU hardware model shared by kmodel v3 and v4: RAM layout, the 12-word layer argument, the batch-norm
and activation tables, and the bit-exact arithmetic of one KPU layer (spec sections 1.1-1.5).
"""
import functools

import numpy as np

from ...errors import KModelFormatError

KPU_RAM_BYTES = 2 * 1024 * 1024
KPU_LINES = KPU_RAM_BYTES // 64
LAYER_ARG_BYTES = 96
ACT_TABLE_BYTES = 144


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


@functools.lru_cache(maxsize=256)
def _addresses(c, h, w):
    group, pitch, row_len = kpu_layout(w)
    ci = np.arange(c).reshape(c, 1, 1)
    yi = np.arange(h).reshape(1, h, 1)
    xi = np.arange(w).reshape(1, 1, w)
    addr = (ci // group) * row_len * h * 64 + (ci % group) * pitch + yi * row_len * 64 + xi
    addr.setflags(write=False)
    return addr


def kpu_upload(ram, line_addr, dense):
    """Store a dense uint8 (C, H, W) map -- or (N, C, H, W), maps consecutive -- in KPU RAM at a line."""
    dense = np.asarray(dense, np.uint8)
    maps = dense if dense.ndim == 4 else dense[None]
    c, h, w = maps.shape[1:]
    rows = kpu_rows(w, h, c)
    for n, m in enumerate(maps):
        base = (line_addr + n * rows) * 64
        if base + rows * 64 > len(ram):
            raise KModelFormatError(f"KPU map {c}x{h}x{w} at line {line_addr + n * rows} runs past the 2 MiB KPU RAM")
        ram[base + _addresses(c, h, w)] = m


def kpu_download(ram, line_addr, c, h, w, batches=1):
    """Read a dense uint8 (C, H, W) map (or (N, C, H, W) when batches > 1) from KPU RAM."""
    rows = kpu_rows(w, h, c)
    out = []
    for n in range(batches):
        base = (line_addr + n * rows) * 64
        if base + rows * 64 > len(ram):
            raise KModelFormatError(f"KPU map {c}x{h}x{w} at line {line_addr + n * rows} runs past the 2 MiB KPU RAM")
        out.append(ram[base + _addresses(c, h, w)])
    return out[0] if batches == 1 else np.stack(out)


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


def _signed(value, width):
    return value - (1 << width) if value >> (width - 1) else value


class LayerArgument:
    """The decoded 12 x u64 KPU layer argument; attributes are the kpu.h field names."""

    __slots__ = _FIELD_NAMES + ["words"]

    def __init__(self, **fields):
        self.words = [0] * 12
        for name in _FIELD_NAMES:
            setattr(self, name, fields.get(name, 0))

    @classmethod
    def from_bytes(cls, data, offset=0):
        if len(data) - offset < LAYER_ARG_BYTES:
            raise KModelFormatError("truncated KPU layer argument", offset, "layer_argument")
        words = np.frombuffer(bytes(data[offset:offset + LAYER_ARG_BYTES]), "<u8").tolist()
        arg = cls()
        arg.words = words
        for word, lsb, width, name, signed in LAYER_FIELDS:
            value = (words[word] >> lsb) & ((1 << width) - 1)
            setattr(arg, name, _signed(value, width) if signed else value)
        return arg

    def to_bytes(self):
        """Encode: bits of the original words outside the known fields are kept (reserved bits round-trip)."""
        words = list(self.words)
        for word, lsb, width, name, signed in LAYER_FIELDS:
            mask = ((1 << width) - 1) << lsb
            value = int(getattr(self, name)) & ((1 << width) - 1)
            words[word] = (words[word] & ~mask) | (value << lsb)
        return np.array(words, "<u8").tobytes()

    # derived shapes
    @property
    def in_shape(self):
        return (self.i_ch_num + 1, self.i_col_high + 1, self.i_row_wid + 1)

    @property
    def out_shape(self):
        return (self.o_ch_num + 1, self.o_col_high + 1, self.o_row_wid + 1)

    @property
    def kernel(self):
        return 3 if self.kernel_type == 1 else 1

    @property
    def depthwise(self):
        return bool(self.depth_wise_layer)

    def weight_count(self):
        c_in, _, _ = self.in_shape
        c_out = self.out_shape[0]
        k2 = self.kernel * self.kernel
        return c_out * k2 if self.depthwise else c_out * c_in * k2

    def as_dict(self):
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    def __repr__(self):
        kind = ("dw" if self.depthwise else "conv") + f"{self.kernel}x{self.kernel}"
        return (f"<KPU {kind} {'x'.join(map(str, self.in_shape))} -> {'x'.join(map(str, self.out_shape))} "
                f"pool={self.pool_type} src={self.image_src_addr} dst={self.image_dst_addr}>")


# ---- batch-norm and activation tables (spec 1.4) ---------------------------------------------------------
def decode_bn_table(data, channels, offset=0):
    """(mul, shift, add) int64 arrays of a batch-norm table of `channels` u64 entries."""
    end = offset + 8 * channels
    if end > len(data) or channels < 0:
        raise KModelFormatError(f"truncated batch-norm table ({channels} channels)", offset, "bn_table")
    words = np.frombuffer(bytes(data[offset:end]), "<u8").astype(np.uint64)
    mul = (words & np.uint64(0xFFFFFF)).astype(np.int64)
    mul = np.where(mul >= 1 << 23, mul - (1 << 24), mul)
    add = ((words >> np.uint64(24)) & np.uint64(0xFFFFFFFF)).astype(np.int64)
    add = np.where(add >= 1 << 31, add - (1 << 32), add)
    shift = ((words >> np.uint64(56)) & np.uint64(0xF)).astype(np.int64)
    return mul, shift, add


def encode_bn_table(mul, shift, add):
    mul = np.asarray(mul, np.int64) & 0xFFFFFF
    add = np.asarray(add, np.int64) & 0xFFFFFFFF
    shift = np.asarray(shift, np.int64) & 0xF
    words = mul.astype(np.uint64) | (add.astype(np.uint64) << np.uint64(24)) | (shift.astype(np.uint64) << np.uint64(56))
    return words.astype("<u8").tobytes()


class ActTable:
    """16 segments: x_start (signed 36-bit), y_mul (signed 16-bit), shift (u8), add (u8 bias)."""

    __slots__ = ("x_start", "y_mul", "shift", "add")

    def __init__(self, x_start, y_mul, shift, add):
        self.x_start = np.asarray(x_start, np.int64)
        self.y_mul = np.asarray(y_mul, np.int64)
        self.shift = np.asarray(shift, np.int64)
        self.add = np.asarray(add, np.int64)

    @classmethod
    def from_bytes(cls, data, offset=0):
        if offset + ACT_TABLE_BYTES > len(data):
            raise KModelFormatError("truncated activation table", offset, "act_table")
        words = np.frombuffer(bytes(data[offset:offset + 128]), "<u8").astype(np.uint64)
        shift = (words & np.uint64(0xFF)).astype(np.int64)
        y_mul = ((words >> np.uint64(8)) & np.uint64(0xFFFF)).astype(np.int64)
        y_mul = np.where(y_mul >= 1 << 15, y_mul - (1 << 16), y_mul)
        x_start = ((words >> np.uint64(24)) & np.uint64((1 << 36) - 1)).astype(np.int64)   # bits 60-63 masked
        x_start = np.where(x_start >= 1 << 35, x_start - (1 << 36), x_start)
        add = np.frombuffer(bytes(data[offset + 128:offset + 144]), np.uint8).astype(np.int64)
        return cls(x_start, y_mul, shift, add)

    def to_bytes(self):
        words = ((self.shift & 0xFF).astype(np.uint64)
                 | ((self.y_mul & 0xFFFF).astype(np.uint64) << np.uint64(8))
                 | ((self.x_start & ((1 << 36) - 1)).astype(np.uint64) << np.uint64(24)))
        return words.astype("<u8").tobytes() + (self.add & 0xFF).astype(np.uint8).tobytes()

    def apply(self, v):
        """uint8 result of the activation stage for int64 batch-norm outputs v (spec 1.5.3)."""
        v = np.asarray(v, np.int64)
        above = v[..., None] > self.x_start                       # (..., 16)
        seg = 15 - np.argmax(above[..., ::-1], axis=-1)
        seg = np.where(above.any(axis=-1), seg, 0)
        t = (v - self.x_start[seg]) * self.y_mul[seg]
        r = banker_shift(t, self.shift[seg])
        return np.clip(r + self.add[seg], 0, 255).astype(np.uint8)


def banker_shift(t, s):
    """nncase's carry shift: round half to even on the magnitude side, with its quirk for negative t."""
    t = np.asarray(t, np.int64)
    s = np.broadcast_to(np.asarray(s, np.int64), t.shape)
    positive = s > 0
    s_safe = np.where(positive, s, 1)
    q = t >> s_safe
    frac = t & ((np.int64(1) << s_safe) - 1)
    half = np.int64(1) << (s_safe - 1)
    sign = np.where(t < 0, -1, 1)
    up = (frac > half) | ((frac == half) & ((q & 1) == 1))
    r = np.where(up, q + sign, q)
    return np.where(positive, r, t << np.maximum(-s, 0))


# ---- one KPU layer (spec 1.5) -------------------------------------------------------------------------------
def kpu_conv(arg, x, weights, bn, act, arg_x_mode="per_channel"):
    """Output uint8 (C_out, H_out, W_out) of a KPU layer on input x uint8 (C_in, H, W).

    weights: uint8/uint16 array, (C_out, C_in, k, k) or (C, k, k) for depthwise; bn: (mul, shift, add);
    act: ActTable. arg_x_mode 'per_channel' applies the arg_x/arg_w shifts per input channel as the real
    chip does; 'sum' applies them once over the channel sum as nncase's simulators do.
    """
    c_in, h, w = arg.in_shape
    c_out = arg.out_shape[0]
    k = arg.kernel
    x = np.asarray(x, np.uint8).reshape(c_in, h, w)
    pad = k // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), constant_values=arg.pad_value).astype(np.float64)
    taps = [(ky, kx) for ky in range(k) for kx in range(k)]
    wts = np.asarray(weights).astype(np.float64)
    if arg.depthwise:
        wts = wts.reshape(c_out, k, k)
        prod = np.zeros((c_out, h, w))
        for ky, kx in taps:
            prod += xp[:, ky:ky + h, kx:kx + w] * wts[:, ky, kx][:, None, None]
        sw = wts.reshape(c_out, -1).sum(axis=1).astype(np.int64)[:, None]       # (C, 1): own channel
    else:
        wts = wts.reshape(c_out, c_in, k, k)
        prod = np.zeros((c_out, h * w))
        for ky, kx in taps:
            prod += wts[:, :, ky, kx] @ xp[:, ky:ky + h, kx:kx + w].reshape(c_in, h * w)
        prod = prod.reshape(c_out, h, w)
        sw = wts.reshape(c_out, c_in, -1).sum(axis=2).astype(np.int64)            # (C_out, C_in)
    acc = np.rint(prod).astype(np.int64)
    sx = np.zeros((c_in, h, w), np.int64)                                        # window sums per input channel
    xpi = xp.astype(np.int64)
    for ky, kx in taps:
        sx += xpi[:, ky:ky + h, kx:kx + w]
    groups = 1 if arg.depthwise else c_in
    if arg_x_mode == "per_channel":
        x_term = (arg.arg_x * sx) >> arg.shr_x                                   # (C_in, H, W)
        x_term = x_term if arg.depthwise else x_term.sum(axis=0, keepdims=True)
        w_term = ((arg.arg_w * sw) >> arg.shr_w).sum(axis=1)
    elif arg_x_mode == "sum":
        x_term = (arg.arg_x * (sx if arg.depthwise else sx.sum(axis=0, keepdims=True))) >> arg.shr_x
        w_term = (arg.arg_w * sw.sum(axis=1)) >> arg.shr_w
    else:
        raise ValueError(f"arg_x_mode must be 'per_channel' or 'sum', not {arg_x_mode!r}")
    acc = acc + x_term + w_term[:, None, None] + arg.arg_add * groups
    mul, shift, add = (np.asarray(a, np.int64)[:, None, None] for a in bn)
    v = ((acc * mul) >> shift) + add
    y = act.apply(v)
    return kpu_pool(y, arg.pool_type)


def _windows(y, size, stride, out_h, out_w):
    return [y[:, dy:dy + stride * (out_h - 1) + 1:stride, dx:dx + stride * (out_w - 1) + 1:stride]
            for dy in range(size) for dx in range(size)]


def kpu_pool(y, pool_type):
    """The ten KPU pooling modes on a uint8 (C, H, W) map (spec 1.5.5)."""
    c, h, w = y.shape
    if pool_type == 0:
        return y
    if pool_type in (1, 2, 3, 4):
        size = 2 if pool_type in (1, 2) else 4
        oh, ow = h // size, w // size
        parts = _windows(y, size, size, oh, ow)
        if pool_type in (1, 3):
            return np.maximum.reduce(parts)
        return (np.sum([p.astype(np.int64) for p in parts], axis=0) // (size * size)).astype(np.uint8)
    if pool_type == 5:
        return y[:, 0:(h // 2) * 2:2, 0:(w // 2) * 2:2]
    if pool_type == 6:
        oh, ow = h // 2, w // 2
        out = np.zeros((c, oh, ow), np.uint8)
        cols = np.arange(ow) * 2 + 1
        valid = cols < w
        out[:, :, valid] = y[:, 0:oh * 2:2][:, :, cols[valid]]
        return out
    if pool_type == 7:
        return y[:, 0:(h // 4) * 4:4, 0:(w // 4) * 4:4]
    if pool_type == 8:
        e = np.pad(y, ((0, 0), (0, 1), (0, 1)), mode="edge").astype(np.int64)
        return ((e[:, :-1, :-1] + e[:, 1:, :-1] + e[:, :-1, 1:] + e[:, 1:, 1:]) // 4).astype(np.uint8)
    if pool_type == 9:
        e = np.pad(y, ((0, 0), (0, 1), (0, 1)), constant_values=0)
        return np.maximum.reduce([e[:, :-1, :-1], e[:, 1:, :-1], e[:, :-1, 1:], e[:, 1:, 1:]])
    raise KModelFormatError(f"unknown KPU pool type {pool_type}", field="pool_type")


POOL_FACTOR = {0: 1, 1: 2, 2: 2, 3: 4, 4: 4, 5: 2, 6: 2, 7: 4, 8: 1, 9: 1}
