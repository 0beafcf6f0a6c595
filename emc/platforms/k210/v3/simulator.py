"""Runs a kmodel v3 as the chip's loader does (SDK kpu.c at HEAD, plus the two layer types of Maix-EMC's fork).

Integer layers (KPU, quantized CPU layers, uploads) are bit-exact. Float CPU layers compute in float32; where
GCC contracts the C source into fused multiply-adds on the chip (DEQUANTIZE and CHANNELWISE_DEQUANTIZE
`q*scale + bias`, the FULLY_CONNECTED and L2_NORMALIZATION accumulations `acc + x*w`), the product and the sum
are formed in float64 and rounded once to float32: this differs from a true FMA only in rare double-rounding
ties. One function per layer type, registered by type code in EXECUTORS; sdk='maixemc' selects the older
semantics of Maix-EMC's forked loader (table SDKS). A batch runs in lockstep, a machine per sample, with K210_CONV
and FULLY_CONNECTED computed once over all of them (BATCHED).
"""
import logging

import numpy as np

from ....errors import EmcError, KModelFormatError
from ..chip.cpu_math import (carry_shift, dot_fma, exact_f32, fma32, pool_window_axis, pool_wraps, roundf,
                             sequential_sum)
from ..chip.device_input import to_device_layout
from ..chip.kpu import KPU_RAM_BYTES, kpu_conv, kpu_download, kpu_rows, kpu_upload
from ..chip.layer_types import LAYER_TYPES
from .structs import MAIXEMC_FORK_TYPES, MAIXEMC_FORK_EXTRA, STOCK_SDK_TYPES

log = logging.getLogger(__name__)
EXECUTORS = {}
BATCHED = {}                   # type code -> fn(machines, layer) -> outputs, for the layers a lockstep run batches
DMA_SLACK = 8                  # a KPU output DMA and QUANTIZED_ADD write whole groups of 8 bytes
KIND_U8, KIND_F32 = 1, 4       # what the last writer of a main-memory byte stored there
SAMPLES_PER_PASS = 8           # samples run in lockstep (each has its own 2 MiB KPU RAM and main memory)


def executes(*codes):
    """Register fn(machine, layer) -> output array as the executor of these layer type codes."""
    def wrap(fn):
        for code in codes:
            EXECUTORS[code] = fn
        return fn
    return wrap


def _floor_shift(v, shift):
    return v >> shift


def _requantize_head(count):
    return count


def _requantize_fork(count):
    """The a33de35 / Maix-EMC loop bound: only 8 * ceil(ceil(count / 8) / 8) elements are processed."""
    return 8 * -(-(-(-count // 8)) // 8)


class Sdk:
    """What one loader revision runs and how its CPU layers round (spec 2.3, 2.5)."""

    def __init__(self, name, types, first_types, quantize_round, qadd_out_shift, fc_acts, requantize_count):
        self.name, self.types, self.first_types = name, types, first_types
        self.quantize_round, self.qadd_out_shift = quantize_round, qadd_out_shift
        self.fc_acts, self.requantize_count = fc_acts, requantize_count


def _relu(v):
    return np.maximum(v, np.float32(0))


def _relu6(v):
    return np.minimum(np.maximum(v, np.float32(0)), np.float32(6))


SDKS = {
    "head": Sdk("SDK HEAD (+ Maix-EMC layer types 6, 21)", STOCK_SDK_TYPES | MAIXEMC_FORK_EXTRA, (10240, 18), roundf,
                carry_shift, {1: _relu, 2: _relu6}, _requantize_head),
    "maixemc": Sdk("Maix-EMC forked kpu.c (a33de35)", MAIXEMC_FORK_TYPES, (10240,), np.trunc, _floor_shift,
                   {1: _relu}, _requantize_fork),
}


class Machine:
    """Main memory and KPU RAM of one run, with bounds-checked access and a record of what was stored where."""

    def __init__(self, model, sdk="head", arg_x_mode="per_channel"):
        if sdk not in SDKS:
            raise EmcError(f"sdk must be one of {sorted(SDKS)}, not {sdk!r}")
        if arg_x_mode not in ("per_channel", "sum"):
            raise EmcError(f"arg_x_mode must be 'per_channel' (the chip) or 'sum' (nncase), not {arg_x_mode!r}")
        self.model = model
        self.size = model.header.main_mem_usage
        self.main = np.zeros(self.size + DMA_SLACK, np.uint8)
        self.kind = np.full(self.size + DMA_SLACK, KIND_F32, np.uint8)
        self.kpu = np.zeros(KPU_RAM_BYTES, np.uint8)
        self.sdk = SDKS[sdk]
        self.arg_x_mode = arg_x_mode
        self.layer = None

    def span(self, address, nbytes, field, slack=0):
        """The slice [address, address + nbytes) of main memory, or KModelFormatError naming the layer field."""
        if address < 0 or nbytes < 0 or address + nbytes > self.size + slack:
            where = self.layer.offset if self.layer is not None else None
            name = f"layer {self.layer.index} ({self.layer.name})" if self.layer is not None else "the input"
            raise KModelFormatError(f"{name} accesses main memory [{address}, {address + nbytes}) beyond its "
                                    f"{self.size} bytes", where, field)
        return slice(address, address + nbytes)

    def u8(self, address, count, field, slack=0):
        return self.main[self.span(address, count, field, slack)].copy()

    def f32(self, address, count, field):
        return self.main[self.span(address, 4 * count, field)].view("<f4").copy()

    def put(self, address, values, field, slack=0):
        values = np.ascontiguousarray(values)
        raw = values.view(np.uint8).reshape(-1)
        where = self.span(address, raw.size, field, slack)
        self.main[where] = raw
        self.kind[where] = KIND_U8 if values.dtype.itemsize == 1 else KIND_F32
        return values

    def output(self, index, address, size):
        """Output `index` as float32 values: float data as stored, uint8 data converted value by value."""
        if address + size > self.size:
            raise KModelFormatError(f"output {index} [{address}, {address + size}) lies beyond the {self.size} bytes "
                                    f"of main memory", 28 + 8 * index, f"outputs[{index}]")
        where = slice(address, address + size)
        if size and self.kind[address] == KIND_U8 or size % 4:
            return self.main[where].astype(np.float32)
        return self.main[where].view("<f4").copy()


def _check_shift(layer, value, field):
    if not 0 <= value < 64:
        raise KModelFormatError(f"layer {layer.index} ({layer.name}) shift {value} is outside 0..63", layer.offset,
                                field)
    return value


# ---- KPU layers -------------------------------------------------------------------------------------------
def k210_conv_batched(machines, layer):
    """K210_CONV of one layer in every machine of a lockstep run: one kpu_conv call over all their maps."""
    a = layer.arg
    a.validate(layer.offset)
    c_out, oh, ow = a.out_shape
    if a.image_dst_addr + kpu_rows(ow, oh, c_out) > KPU_RAM_BYTES // 64:
        raise KModelFormatError(f"layer {layer.index} K210_CONV output {c_out}x{oh}x{ow} at line "
                                f"{a.image_dst_addr} runs past the 2 MiB KPU RAM", layer.offset, "image_dst_addr")
    x = np.stack([kpu_download(m.kpu, a.image_src_addr, *a.in_shape) for m in machines])
    outs = list(kpu_conv(a, x, layer.weights, layer.bn, layer.act, machines[0].arg_x_mode))
    for m, y in zip(machines, outs):
        kpu_upload(m.kpu, a.image_dst_addr, y)
        if layer.body.flags & 1:               # DMA of (dma_total_byte + 8) / 8 words from the output FIFO
            if a.dma_total_byte + 1 != y.size:
                raise KModelFormatError(f"layer {layer.index} K210_CONV streams dma_total_byte + 1 = "
                                        f"{a.dma_total_byte + 1} bytes, its output has {y.size}", layer.offset,
                                        "dma_total_byte")
            padded = np.zeros(-(-y.size // 8) * 8, np.uint8)
            padded[:y.size] = y.reshape(-1)
            m.put(layer.body.main_mem_out_address, padded, "main_mem_out_address", slack=DMA_SLACK)
    return outs


@executes(10240)
def k210_conv(m, layer):
    return k210_conv_batched([m], layer)[0]


BATCHED[10240] = k210_conv_batched


@executes(10243)
def k210_upload(m, layer):
    b = layer.body
    x = m.u8(b.main_mem_in_address, b.channels * b.height * b.width, "main_mem_in_address")
    if x.size:
        x = x.reshape(b.channels, b.height, b.width)
        kpu_upload(m.kpu, b.kpu_mem_out_address, x)
    return x


@executes(10241)
def k210_add_padding(m, layer):
    b = layer.body
    x = m.u8(b.main_mem_in_address, b.channels, "main_mem_in_address")
    c = np.arange(b.channels)
    addr = b.kpu_mem_out_address * 64 + (c // 4) * 256 + (c % 4) * 16
    if addr.size and addr.max() >= KPU_RAM_BYTES:
        raise KModelFormatError("K210_ADD_PADDING writes past the 2 MiB KPU RAM", layer.offset + 8,
                                "kpu_mem_out_address")
    m.kpu[addr] = x
    return x


@executes(10242)
def k210_remove_padding(m, layer):
    b = layer.body
    x = m.u8(b.main_mem_in_address, 16 * b.channels - 15 if b.channels else 0, "main_mem_in_address")
    return m.put(b.main_mem_out_address, x[::16].copy(), "main_mem_out_address")


# ---- quantized CPU layers ----------------------------------------------------------------------------------
@executes(11)
def quantize(m, layer):
    """out = clamp((int)round((x - bias) * (1/scale))), RISC-V float->int conversion saturating (NaN -> max)."""
    b = layer.body
    x = m.f32(b.main_mem_in_address, b.count, "main_mem_in_address")
    inv = np.float32(1) / np.float32(b.scale)
    q = m.sdk.quantize_round(((x - np.float32(b.bias)).astype(np.float32) * inv).astype(np.float32))
    q = np.nan_to_num(q, nan=255.0, posinf=255.0, neginf=0.0)
    return m.put(b.mem_out_address, np.clip(q, 0, 255).astype(np.uint8), "mem_out_address")


@executes(12)
def dequantize(m, layer):
    b = layer.body
    q = m.u8(b.main_mem_in_address, b.count, "main_mem_in_address")
    return m.put(b.main_mem_out_address, fma32(q, np.float32(b.scale), np.float32(b.bias)), "main_mem_out_address")


@executes(24)
def channelwise_dequantize(m, layer):
    b = layer.body
    q = m.u8(b.main_mem_in_address, b.channels * b.channel_size, "main_mem_in_address")
    q = q.reshape(b.channels, b.channel_size)
    out = fma32(q, layer.extra["scale"][:, None], layer.extra["bias"][:, None])
    return m.put(b.main_mem_out_address, out.reshape(-1), "main_mem_out_address")


@executes(13)
def requantize(m, layer):
    b = layer.body
    count = m.sdk.requantize_count(b.count)
    q = m.u8(b.main_mem_in_address, count, "main_mem_in_address")
    return m.put(b.main_mem_out_address, layer.extra["table"][q], "main_mem_out_address")


@executes(2)
def quantized_add(m, layer):
    """int64 arithmetic in groups of 8 elements: ceil(count / 8) * 8 bytes read and written (spec 2.4)."""
    b = layer.body
    sa, sb, so = (_check_shift(layer, getattr(b, f), f) for f in ("in_a_shift", "in_b_shift", "out_shift"))
    n = -(-b.count // 8) * 8
    a = m.u8(b.main_mem_in_a_address, n, "main_mem_in_a_address", slack=DMA_SLACK).astype(np.int64)
    c = m.u8(b.main_mem_in_b_address, n, "main_mem_in_b_address", slack=DMA_SLACK).astype(np.int64)
    with np.errstate(over="ignore"):
        if sa == sb:
            v = ((a + b.in_a_offset) * b.in_a_mul + (c + b.in_b_offset) * b.in_b_mul) >> sa
        else:
            v = (((a + b.in_a_offset) * b.in_a_mul) >> sa) + (((c + b.in_b_offset) * b.in_b_mul) >> sb)
        v = m.sdk.qadd_out_shift(v * b.out_mul, so) + b.out_offset
    return m.put(b.main_mem_out_address, np.clip(v, 0, 255).astype(np.uint8), "main_mem_out_address",
                 slack=DMA_SLACK)


class PoolGeometry:
    """Window geometry of a CPU pool layer as kpu.c loops over it (QUANTIZED_MAX_POOL2D, AVERAGE_POOL2D).

    kpu.c computes a window's end as `min(kernel, in_size - origin)` in uint32 arithmetic: a window whose origin
    lies two or more pixels past the right (bottom) edge does not come out empty, it wraps and reads `kernel`
    pixels at `y * in_w + x`, i.e. the next row's (the next channel's) first pixels, and for the last channel the
    bytes that follow the input tensor in main memory. emc reads those bytes as they stand in the simulated main
    memory (other tensors, or what this layer has already written when its output follows its input); a read past
    the end of main memory is a KModelFormatError, since on the chip it reads heap memory the kmodel does not
    define. `wrapped` counts the windows that read outside their own channel.
    """

    def __init__(self, m, layer, elem):
        b = layer.body
        self.elem = elem
        self.ci, self.hi, self.wi = b.in_shape.channels, b.in_shape.height, b.in_shape.width
        self.co, self.ho, self.wo = b.out_shape.channels, b.out_shape.height, b.out_shape.width
        self.src, self.dst = b.main_mem_in_address, b.main_mem_out_address
        m.span(self.dst, elem * self.co * self.ho * self.wo, "main_mem_out_address")
        self.axes = [self._axis(layer, "height", self.hi, self.ho, b.kernel_height, b.stride_height,
                                b.padding_height),
                     self._axis(layer, "width", self.wi, self.wo, b.kernel_width, b.stride_width, b.padding_width)]
        self.wrapped = self.co * pool_wraps((self.hi, self.wi), (self.ho, self.wo),
                                            (b.kernel_height, b.kernel_width), (b.stride_height, b.stride_width),
                                            (b.padding_height, b.padding_width))
        plane = self.hi * self.wi
        self.index = self._flat(plane)                  # (taps, Ho, Wo) element offsets in channel 0, -1 = skipped
        reach = int(self.index.max()) + 1 if self.index.size and self.co else 0
        self.read_count = (self.co - 1) * plane + reach if reach else 0
        m.span(self.src, elem * max(self.read_count, self.ci * plane), "main_mem_in_address")

    @staticmethod
    def _axis(layer, name, size, out, kernel, stride, pad):
        """kpu.c's (origin, first tap, end tap) of each output window along one axis, the end in uint32."""
        if out and not (1 <= kernel <= size + 2 * pad and pad <= size):     # bounds the taps to 3 x size per axis
            raise KModelFormatError(f"{layer.name} {name}: kernel {kernel} with padding {pad} does not fit an input "
                                    f"of {size}", layer.offset, f"kernel_{name}")
        return pool_window_axis(size, out, kernel, stride, pad)

    def _flat(self, plane):
        (oy, ys, ye), (ox, xs, xe) = self.axes
        kh = int(ye.max(initial=0))
        kw = int(xe.max(initial=0))
        taps = []
        for ky in range(kh):
            vy = (ky >= ys) & (ky < ye)
            for kx in range(kw):
                vx = (kx >= xs) & (kx < xe)
                flat = (oy[:, None] + ky) * self.wi + (ox[None, :] + kx)
                taps.append(np.where(vy[:, None] & vx[None, :], flat, -1))
        return np.array(taps, np.int64).reshape(len(taps), len(oy), len(ox))

    def gather(self, m, dtype):
        """Yield (valid (C, Ho, Wo), samples (C, Ho, Wo)) per kernel tap, in kpu.c's tap order.

        When the bytes read overlap the output, kpu.c sees its own earlier writes: the caller then runs
        `sequential` instead (see `overlaps`)."""
        plane = self.hi * self.wi
        flat = m.main[self.src:self.src + self.elem * self.read_count].view(dtype) if self.read_count else None
        base = np.arange(self.co, dtype=np.int64)[:, None, None] * plane
        for idx in self.index:
            valid = np.broadcast_to(idx >= 0, (self.co,) + idx.shape)
            if flat is None:
                yield valid, np.zeros(valid.shape, dtype)
                continue
            yield valid, flat[np.where(valid, base + idx, 0)]

    def overlaps(self):
        read = (self.src, self.src + self.elem * self.read_count)
        write = (self.dst, self.dst + self.elem * self.co * self.ho * self.wo)
        return read[0] < write[1] and write[0] < read[1]


def _max_pool_sequential(m, g):
    """kpu.c's loop element by element on live memory: for a layer whose reads overlap its own output."""
    plane = g.hi * g.wi
    src = m.main[g.src:g.src + g.read_count]
    out = m.main[g.dst:g.dst + g.co * g.ho * g.wo]
    k = 0
    for c in range(g.co):
        for y in range(g.ho):
            for x in range(g.wo):
                idx = g.index[:, y, x]
                idx = idx[idx >= 0] + c * plane
                out[k] = src[idx].max(initial=0)
                k += 1
    m.kind[g.dst:g.dst + out.size] = KIND_U8
    return out.reshape(g.co, g.ho, g.wo).copy()


@executes(8)
def quantized_max_pool2d(m, layer):
    g = PoolGeometry(m, layer, 1)
    if g.wrapped:
        log.debug("layer %d (%s): %d windows start 2+ pixels past the map's edge and wrap as kpu.c computes them",
                  layer.index, layer.name, g.wrapped)
    if g.overlaps():
        return _max_pool_sequential(m, g)
    out = np.zeros((g.co, g.ho, g.wo), np.uint8)            # the SDK starts every window's max at 0
    for valid, sample in g.gather(m, np.uint8):
        np.maximum(out, np.where(valid, sample, 0), out=out)
    return m.put(layer.body.main_mem_out_address, out, "main_mem_out_address")


@executes(6)
def quantized_global_average_pool2d(m, layer):
    """Fork only: uint32 sum / kernel_size (a RISC-V division by 0 gives all ones, stored as 255)."""
    b = layer.body
    x = m.u8(b.main_mem_in_address, b.channels * b.kernel_size, "main_mem_in_address")
    if b.kernel_size == 0:
        out = np.full(b.channels, 255, np.uint8)
    else:
        s = x.reshape(b.channels, b.kernel_size).astype(np.uint64).sum(axis=1) & np.uint64(0xFFFFFFFF)
        out = (s // np.uint64(b.kernel_size)).astype(np.uint8)
    return m.put(b.main_mem_out_address, out, "main_mem_out_address")


@executes(16, 17)
def concat(m, layer):
    b = layer.body
    m.span(b.main_mem_out_address, int(layer.extra["ranges"][:, 1].sum()), "main_mem_out_address")
    parts = [m.u8(int(start), int(size), f"inputs_mem[{i}]") for i, (start, size) in enumerate(layer.extra["ranges"])]
    joined = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return m.put(b.main_mem_out_address, joined, "main_mem_out_address")


# ---- float CPU layers -----------------------------------------------------------------------------------------
@executes(1)
def add(m, layer):
    b = layer.body
    a = m.f32(b.main_mem_in_a_address, b.count, "main_mem_in_a_address")
    c = m.f32(b.main_mem_in_b_address, b.count, "main_mem_in_b_address")
    return m.put(b.main_mem_out_address, (a + c).astype(np.float32), "main_mem_out_address")


@executes(5)
def global_average_pool2d(m, layer):
    b = layer.body
    x = m.f32(b.main_mem_in_address, b.channels * b.kernel_size, "main_mem_in_address")
    s = sequential_sum(x.reshape(b.channels, b.kernel_size))
    return m.put(b.main_mem_out_address, (s / np.float32(b.kernel_size)).astype(np.float32), "main_mem_out_address")


@executes(9)
def average_pool2d(m, layer):
    """Float average over the samples of each window as kpu.c bounds it (padding excluded, wrap included); the SDK
    ignores `act`. Reads overlapping the output are refused (no writer makes them for a float pool)."""
    b = layer.body
    g = PoolGeometry(m, layer, 4)
    if g.overlaps():
        raise KModelFormatError(f"layer {layer.index} ({layer.name}) reads main memory its own output overwrites",
                                layer.offset, "main_mem_out_address")
    total = np.zeros((g.co, g.ho, g.wo), np.float32)
    count = np.zeros((g.co, g.ho, g.wo), np.float32)
    for valid, sample in g.gather(m, "<f4"):
        total = np.where(valid, total + sample, total).astype(np.float32)
        count += valid
    with np.errstate(invalid="ignore", divide="ignore"):
        return m.put(b.main_mem_out_address, (total / count).astype(np.float32), "main_mem_out_address")


@executes(14)
def l2_normalization(m, layer):
    b = layer.body
    x = m.f32(b.main_mem_in_address, b.channels, "main_mem_in_address")
    s = dot_fma(x, x[None, :])[0] if x.size else np.float32(0)
    s = max(s, np.float32(1e-10))
    return m.put(b.main_mem_out_address, (x * (np.float32(1) / np.sqrt(np.float32(s)))).astype(np.float32),
                 "main_mem_out_address")


@executes(15)
def softmax(m, layer):
    """The SDK starts the max at FLT_MIN (not -FLT_MAX), then exp, sequential sum, divide."""
    b = layer.body
    x = m.f32(b.main_mem_in_address, b.channels, "main_mem_in_address")
    top = np.fmax.reduce(np.concatenate([[np.float32(1.17549435e-38)], x]).astype(np.float32))
    e = exact_f32(np.exp, (x - top).astype(np.float32))
    s = sequential_sum(e)
    return m.put(b.main_mem_out_address, (e / s).astype(np.float32), "main_mem_out_address")


@executes(25)
def logistic(m, layer):
    b = layer.body
    x = m.f32(b.main_mem_in_address, b.channels, "main_mem_in_address")
    return m.put(b.main_mem_out_address, (np.float32(1) / (np.float32(1) + exact_f32(np.exp, -x))).astype(np.float32),
                 "main_mem_out_address")


def fully_connected_batched(machines, layer):
    """out[o] = (sum_i x[i] * w[o][i], one FMA rounding per step) + bias[o], then the loader's activation; the
    steps run once for every machine of a lockstep run."""
    b = layer.body
    x = np.stack([m.f32(b.main_mem_in_address, b.in_channels, "main_mem_in_address") for m in machines])
    for m in machines:
        m.span(b.main_mem_out_address, 4 * b.out_channels, "main_mem_out_address")
    out = (dot_fma(x, layer.extra["weights"]) + layer.extra["bias"]).astype(np.float32)
    act = machines[0].sdk.fc_acts.get(b.act)
    return [m.put(b.main_mem_out_address, act(o) if act else o, "main_mem_out_address") for m, o in zip(machines, out)]


@executes(18)
def fully_connected(m, layer):
    return fully_connected_batched([m], layer)[0]


BATCHED[18] = fully_connected_batched


def _flatten(m, layer, read):
    """CHW -> HWC (TensorFlow's flatten order)."""
    b = layer.body
    c, h, w = b.shape.channels, b.shape.height, b.shape.width
    x = read(b.main_mem_in_address, c * h * w, "main_mem_in_address").reshape(c, h, w)
    return m.put(b.main_mem_out_address, np.ascontiguousarray(x.transpose(1, 2, 0)).reshape(-1),
                 "main_mem_out_address")


def _resize(m, layer, read):
    """Nearest neighbour with float32 scales in/out, src = min(floor(o * scale), in - 1); align_corners ignored."""
    b = layer.body
    c, h, w = b.in_shape.channels, b.in_shape.height, b.in_shape.width
    x = read(b.main_mem_in_address, c * h * w, "main_mem_in_address").reshape(c, h, w)
    m.span(b.main_mem_out_address, x.itemsize * c * b.out_height * b.out_width, "main_mem_out_address")
    if c * b.out_height * b.out_width == 0:
        return m.put(b.main_mem_out_address, np.zeros(0, x.dtype), "main_mem_out_address")
    if h * w == 0:
        raise KModelFormatError(f"{layer.name} resizes an empty {w}x{h} map", layer.offset, "in_shape")
    sh = np.float32(h) / np.float32(b.out_height) if b.out_height else np.float32(0)
    sw = np.float32(w) / np.float32(b.out_width) if b.out_width else np.float32(0)
    ys = np.minimum(np.floor(np.arange(b.out_height, dtype=np.float32) * sh).astype(np.int64), max(h - 1, 0))
    xs = np.minimum(np.floor(np.arange(b.out_width, dtype=np.float32) * sw).astype(np.int64), max(w - 1, 0))
    return m.put(b.main_mem_out_address, np.ascontiguousarray(x[:, ys][:, :, xs]), "main_mem_out_address")


EXECUTORS[20] = lambda m, layer: _flatten(m, layer, m.f32)
EXECUTORS[21] = lambda m, layer: _flatten(m, layer, m.u8)
EXECUTORS[22] = lambda m, layer: _resize(m, layer, m.f32)
EXECUTORS[23] = lambda m, layer: _resize(m, layer, m.u8)


# ---- running a model -------------------------------------------------------------------------------------------
def input_spec(model):
    """('kpu', (C, H, W)) for a model whose first layer is a KPU conv, ('float', (n,)) for FULLY_CONNECTED first."""
    if not model.layers:
        raise EmcError("the kmodel has no layers: there is nothing to run")
    first = model.layers[0]
    if first.code == 10240:
        return "kpu", first.arg.in_shape
    if first.code == 18:
        return "float", (first.body.in_channels,)
    raise EmcError(f"the kmodel's first layer is {first.name}; the K210 loader runs only models whose first layer "
                   f"is K210_CONV or FULLY_CONNECTED")


def _check_runnable(model, sdk):
    first = model.layers[0].code if model.layers else None
    if first not in sdk.first_types:
        names = " or ".join(LAYER_TYPES[c][0] for c in sdk.first_types)
        raise EmcError(f"{sdk.name} starts a model only at {names}; this kmodel starts with "
                       f"{LAYER_TYPES.get(first, ('no layer',))[0]}")
    for layer in model.layers:
        if layer.code not in sdk.types or layer.code not in EXECUTORS:
            raise EmcError(f"layer {layer.index} ({layer.name}) is not run by the {sdk.name} loader"
                           + ("; try sdk='head'" if layer.code in SDKS["head"].types else ""))


def run_lockstep(model, xs, sdk="head", arg_x_mode="per_channel", trace=None):
    """Run samples (uint8 CHW images or float vectors, in device layout) layer by layer, one machine each, KPU
    layers batched over them; returns the flat outputs per sample. trace collects every layer's outputs."""
    machines = [Machine(model, sdk, arg_x_mode) for _ in xs]
    _check_runnable(model, machines[0].sdk)
    kind, shape = input_spec(model)
    first = model.layers[0]
    for m, x in zip(machines, xs):
        m.layer = first
        if kind == "kpu":
            kpu_upload(m.kpu, first.arg.image_src_addr, np.asarray(x, np.uint8).reshape(shape))
        else:
            m.put(first.body.main_mem_in_address, np.asarray(x, np.float32).reshape(-1), "main_mem_in_address")
    with np.errstate(all="ignore"):                 # the chip's float layers overflow to inf/NaN silently
        for layer in model.layers:
            for m in machines:
                m.layer = layer
            batched = BATCHED.get(layer.code)
            outs = batched(machines, layer) if batched else [EXECUTORS[layer.code](m, layer) for m in machines]
            log.debug("layer %d %s -> %s %s", layer.index, layer.name, np.shape(outs[0]), np.asarray(outs[0]).dtype)
            if trace is not None:
                trace.append((layer.index, layer.name, [np.array(out) for out in outs]))
    for m in machines:
        m.layer = None
    return [[m.output(i, address, size) for i, (address, size) in enumerate(model.outputs)] for m in machines]


def run_v3(model, x, layout="hwc", trace=False, sdk="head", arg_x_mode="per_channel"):
    """Outputs of a parsed kmodel v3 for x (see emc.platforms.k210.kmodel.run_kmodel for the conventions)."""
    kind, shape = input_spec(model)
    if kind == "kpu":
        xs, batched = to_device_layout(x, shape, layout)
    else:
        arr = np.asarray(x, np.float32)
        if arr.shape == shape:
            xs, batched = arr[None], False
        elif arr.ndim == 2 and arr.shape[1:] == shape:
            xs, batched = arr, True
        else:
            raise EmcError(f"the kmodel takes {shape[0]} float inputs (or a batch of them, N x {shape[0]}); "
                           f"got an array of shape {arr.shape}")
    if len(xs) == 0:
        raise EmcError("the batch is empty: give at least one sample")
    outs, steps = [], None
    for start in range(0, len(xs), SAMPLES_PER_PASS):
        part = [] if trace else None
        outs += run_lockstep(model, xs[start:start + SAMPLES_PER_PASS], sdk, arg_x_mode, part)
        steps = part if steps is None else [(i, name, a + b) for (i, name, a), (_, _, b) in zip(steps, part)]
    results = [np.stack([o[k] for o in outs]) if batched else outs[0][k] for k in range(len(model.outputs))]
    if not trace:
        return results
    if not batched:
        return results, [(i, name, values[0]) for i, name, values in steps]
    return results, [(i, name, np.stack(values)) for i, name, values in steps]
