"""Runs a kmodel v3 as the chip's loader does (SDK kpu.c, plus the Maix-EMC fork's two extra layer types).

Integer layers (KPU, quantized CPU layers, uploads) are bit-exact; float CPU layers use float32 with the
chip's fused multiply-adds (see cpu_math). One function per layer type, registered by type code.
"""
import numpy as np

from ...errors import EmcError, KModelFormatError
from .cpu_math import carry_shift, dot_fma, fma32, roundf, sequential_sum
from .kpu import KPU_RAM_BYTES, kpu_conv, kpu_download, kpu_upload

EXECUTORS = {}
DMA_SLACK = 8


def executes(*codes):
    def wrap(fn):
        for code in codes:
            EXECUTORS[code] = fn
        return fn
    return wrap


class Machine:
    """Main memory and KPU RAM of one run, with bounds-checked access."""

    def __init__(self, model, sdk="head", arg_x_mode="per_channel"):
        self.model = model
        self.main = np.zeros(model.header.main_mem_usage + DMA_SLACK + 8, np.uint8)
        self.kpu = np.zeros(KPU_RAM_BYTES, np.uint8)
        self.sdk = sdk
        self.arg_x_mode = arg_x_mode
        self.layer = None

    def _span(self, address, nbytes, field):
        if address < 0 or nbytes < 0 or address + nbytes > len(self.main):
            raise KModelFormatError(f"layer {self.layer.index} ({self.layer.name}) accesses main memory "
                                    f"[{address}, {address + nbytes}) beyond its {self.model.header.main_mem_usage} "
                                    f"bytes", self.layer.offset, field)
        return slice(address, address + nbytes)

    def u8(self, address, count, field):
        return self.main[self._span(address, count, field)].copy()

    def f32(self, address, count, field):
        return self.main[self._span(address, 4 * count, field)].view("<f4").copy()

    def put(self, address, values, field):
        raw = np.ascontiguousarray(values).view(np.uint8).reshape(-1)
        self.main[self._span(address, raw.size, field)] = raw
        return values


# ---- KPU layers -------------------------------------------------------------------------------------------
@executes(10240)
def k210_conv(m, layer):
    a = layer.arg
    c, h, w = a.in_shape
    x = kpu_download(m.kpu, a.image_src_addr, c, h, w)
    y = kpu_conv(a, x, layer.weights, layer.bn, layer.act, m.arg_x_mode)
    kpu_upload(m.kpu, a.image_dst_addr, y)
    if layer.body.flags & 1:
        m.put(layer.body.main_mem_out_address, y, "main_mem_out_address")
    return y


@executes(10243)
def k210_upload(m, layer):
    b = layer.body
    x = m.u8(b.main_mem_in_address, b.channels * b.height * b.width, "main_mem_in_address")
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
        raise KModelFormatError("K210_ADD_PADDING writes past the KPU RAM", layer.offset + 8, "kpu_mem_out_address")
    m.kpu[addr] = x
    return x


@executes(10242)
def k210_remove_padding(m, layer):
    b = layer.body
    x = m.u8(b.main_mem_in_address, 16 * b.channels, "main_mem_in_address")
    return m.put(b.main_mem_out_address, x[::16].copy(), "main_mem_out_address")


# ---- quantized CPU layers ----------------------------------------------------------------------------------
@executes(11)
def quantize(m, layer):
    b = layer.body
    x = m.f32(b.main_mem_in_address, b.count, "main_mem_in_address")
    inv = np.float32(1.0) / np.float32(b.scale)
    v = ((x - np.float32(b.bias)).astype(np.float32) * inv).astype(np.float32)
    q = roundf(v) if m.sdk == "head" else np.trunc(v.astype(np.float64))
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
    count = b.count if m.sdk == "head" else min(b.count, 8 * ((((b.count + 7) // 8) + 7) // 8))
    q = m.u8(b.main_mem_in_address, count, "main_mem_in_address")
    return m.put(b.main_mem_out_address, layer.extra["table"][q], "main_mem_out_address")


@executes(2)
def quantized_add(m, layer):
    b = layer.body
    n = (b.count + 7) // 8 * 8                      # the SDK works in groups of 8
    a = m.u8(b.main_mem_in_a_address, n, "main_mem_in_a_address").astype(np.int64)
    c = m.u8(b.main_mem_in_b_address, n, "main_mem_in_b_address").astype(np.int64)
    if b.in_a_shift == b.in_b_shift:
        v = ((a + b.in_a_offset) * b.in_a_mul + (c + b.in_b_offset) * b.in_b_mul) >> b.in_a_shift
    else:
        v = (((a + b.in_a_offset) * b.in_a_mul) >> b.in_a_shift) + (((c + b.in_b_offset) * b.in_b_mul) >> b.in_b_shift)
    v = v * b.out_mul
    v = carry_shift(v, b.out_shift) if m.sdk == "head" else v >> b.out_shift
    return m.put(b.main_mem_out_address, np.clip(v + b.out_offset, 0, 255).astype(np.uint8), "main_mem_out_address")


def _pool_geometry(m, layer, elem):
    """Shapes of a CPU pool layer, checked against main memory and each other before any work is done."""
    b = layer.body
    ci, hi, wi = b.in_shape.channels, b.in_shape.height, b.in_shape.width
    co, ho, wo = b.out_shape.channels, b.out_shape.height, b.out_shape.width
    m._span(b.main_mem_in_address, elem * ci * hi * wi, "main_mem_in_address")
    m._span(b.main_mem_out_address, elem * co * ho * wo, "main_mem_out_address")
    if co != ci:
        raise KModelFormatError(f"{layer.name} changes the channel count {ci} -> {co}", layer.offset, "out_shape")
    if not (0 < b.kernel_height <= hi + 2 * b.padding_height and 0 < b.kernel_width <= wi + 2 * b.padding_width):
        raise KModelFormatError(f"{layer.name} kernel {b.kernel_width}x{b.kernel_height} does not fit its "
                                f"{wi}x{hi} input", layer.offset, "kernel_width")
    return ci, hi, wi, co, ho, wo


@executes(8)
def quantized_max_pool2d(m, layer):
    b = layer.body
    ci, hi, wi, co, ho, wo = _pool_geometry(m, layer, 1)
    x = m.u8(b.main_mem_in_address, ci * hi * wi, "main_mem_in_address").reshape(ci, hi, wi)
    out = np.zeros((co, ho, wo), np.uint8)        # the SDK starts every window's max at 0
    oy = np.arange(ho) * b.stride_height - b.padding_height
    ox = np.arange(wo) * b.stride_width - b.padding_width
    for ky in range(b.kernel_height):
        for kx in range(b.kernel_width):
            ys, xs = oy + ky, ox + kx
            vy, vx = (ys >= 0) & (ys < hi), (xs >= 0) & (xs < wi)
            if vy.any() and vx.any():
                window = x[:, ys[vy]][:, :, xs[vx]]
                region = out[:, vy][:, :, vx]
                out[np.ix_(np.arange(co), np.nonzero(vy)[0], np.nonzero(vx)[0])] = np.maximum(region, window)
    return m.put(b.main_mem_out_address, out, "main_mem_out_address")


@executes(6)
def quantized_global_average_pool2d(m, layer):
    b = layer.body
    x = m.u8(b.main_mem_in_address, b.channels * b.kernel_size, "main_mem_in_address")
    s = x.reshape(b.channels, b.kernel_size).astype(np.uint32).sum(axis=1)
    return m.put(b.main_mem_out_address, (s // max(b.kernel_size, 1)).astype(np.uint8), "main_mem_out_address")


@executes(17)
def quantized_concat(m, layer):
    return concat(m, layer)


@executes(21)
def quantized_flatten(m, layer):
    return _flatten(m, layer, m.u8, 1)


@executes(23)
def quantized_resize(m, layer):
    return _resize(m, layer, m.u8)


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
    s = sequential_sum(x.reshape(b.channels, b.kernel_size), axis=1)
    return m.put(b.main_mem_out_address, (s / np.float32(max(b.kernel_size, 1))).astype(np.float32),
                 "main_mem_out_address")


@executes(9)
def average_pool2d(m, layer):
    b = layer.body
    ci, hi, wi, co, ho, wo = _pool_geometry(m, layer, 4)
    x = m.f32(b.main_mem_in_address, ci * hi * wi, "main_mem_in_address").reshape(ci, hi, wi)
    total = np.zeros((co, ho, wo), np.float32)
    count = np.zeros((1, ho, wo), np.float32)
    oy = np.arange(ho) * b.stride_height - b.padding_height
    ox = np.arange(wo) * b.stride_width - b.padding_width
    for ky in range(b.kernel_height):
        for kx in range(b.kernel_width):
            ys, xs = oy + ky, ox + kx
            valid = ((ys >= 0) & (ys < hi))[:, None] & ((xs >= 0) & (xs < wi))[None, :]
            sample = x[:, np.clip(ys, 0, hi - 1)][:, :, np.clip(xs, 0, wi - 1)]
            total = (total + np.where(valid, sample, 0)).astype(np.float32)
            count += valid
    return m.put(b.main_mem_out_address, (total / np.maximum(count, 1)).astype(np.float32), "main_mem_out_address")


@executes(14)
def l2_normalization(m, layer):
    b = layer.body
    x = m.f32(b.main_mem_in_address, b.channels, "main_mem_in_address")
    s = max(float(sequential_sum(x * x, axis=0)), 1e-10)
    return m.put(b.main_mem_out_address, (x * np.float32(1.0 / np.sqrt(np.float32(s)))).astype(np.float32),
                 "main_mem_out_address")


@executes(15)
def softmax(m, layer):
    b = layer.body
    x = m.f32(b.main_mem_in_address, b.channels, "main_mem_in_address")
    top = max(np.float32(1.17549435e-38), x.max()) if x.size else np.float32(0)
    e = np.exp((x - top).astype(np.float32)).astype(np.float32)
    s = sequential_sum(e, axis=0)
    return m.put(b.main_mem_out_address, (e / s).astype(np.float32), "main_mem_out_address")


@executes(25)
def logistic(m, layer):
    b = layer.body
    x = m.f32(b.main_mem_in_address, b.channels, "main_mem_in_address")
    return m.put(b.main_mem_out_address, (1 / (1 + np.exp(-x))).astype(np.float32), "main_mem_out_address")


@executes(16)
def concat(m, layer):
    b = layer.body
    parts = [m.u8(start, size, f"inputs[{i}]") for i, (start, size) in enumerate(layer.extra["ranges"])]
    joined = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return m.put(b.main_mem_out_address, joined, "main_mem_out_address")


@executes(18)
def fully_connected(m, layer):
    b = layer.body
    x = m.f32(b.main_mem_in_address, b.in_channels, "main_mem_in_address")
    out = (dot_fma(x, layer.extra["weights"]) + layer.extra["bias"]).astype(np.float32)
    if b.act == 1 or (b.act == 2 and m.sdk != "head"):
        out = np.maximum(out, 0)
    elif b.act == 2:
        out = np.clip(out, 0, 6)
    return m.put(b.main_mem_out_address, out.astype(np.float32), "main_mem_out_address")


@executes(20)
def flatten(m, layer):
    return _flatten(m, layer, m.f32, 4)


def _flatten(m, layer, read, _):
    b = layer.body
    c, h, w = b.shape.channels, b.shape.height, b.shape.width
    x = read(b.main_mem_in_address, c * h * w, "main_mem_in_address").reshape(c, h, w)
    return m.put(b.main_mem_out_address, np.ascontiguousarray(x.transpose(1, 2, 0)).reshape(-1), "main_mem_out_address")


@executes(22)
def resize(m, layer):
    return _resize(m, layer, m.f32)


def _resize(m, layer, read):
    b = layer.body
    c, h, w = b.in_shape.channels, b.in_shape.height, b.in_shape.width
    x = read(b.main_mem_in_address, c * h * w, "main_mem_in_address").reshape(c, h, w)
    m._span(b.main_mem_out_address, x.itemsize * c * b.out_height * b.out_width, "main_mem_out_address")
    if c * h * w == 0:
        raise KModelFormatError(f"{layer.name} has an empty input", layer.offset, "in_shape")
    sh, sw = np.float32(h) / np.float32(max(b.out_height, 1)), np.float32(w) / np.float32(max(b.out_width, 1))
    ys = np.minimum(np.floor(np.arange(b.out_height, dtype=np.float32) * sh).astype(np.int64), h - 1)
    xs = np.minimum(np.floor(np.arange(b.out_width, dtype=np.float32) * sw).astype(np.int64), w - 1)
    return m.put(b.main_mem_out_address, np.ascontiguousarray(x[:, ys][:, :, xs]), "main_mem_out_address")


# ---- running a model -------------------------------------------------------------------------------------------
def input_spec(model):
    """('kpu', (C, H, W)) for a model whose first layer is a KPU conv, ('float', (n,)) for FULLY_CONNECTED first."""
    if not model.layers:
        raise EmcError("the kmodel has no layers")
    first = model.layers[0]
    if first.code == 10240:
        return "kpu", first.arg.in_shape
    if first.code == 18:
        return "float", (first.body.in_channels,)
    raise EmcError(f"the kmodel's first layer is {first.name}; the K210 loader runs only models whose first layer "
                   f"is K210_CONV or FULLY_CONNECTED")


def run_one(model, x, sdk="head", arg_x_mode="per_channel", trace=None):
    """Run one sample (uint8 CHW image or float vector, already in device layout); returns the flat outputs."""
    m = Machine(model, sdk, arg_x_mode)
    kind, shape = input_spec(model)
    if kind == "kpu":
        kpu_upload(m.kpu, model.layers[0].arg.image_src_addr, x.reshape(shape))
    else:
        first = model.layers[0].body
        m.layer = model.layers[0]
        m.put(first.main_mem_in_address, np.asarray(x, np.float32).reshape(-1), "main_mem_in_address")
    for layer in model.layers:
        m.layer = layer
        fn = EXECUTORS.get(layer.code)
        if fn is None:
            raise EmcError(f"layer {layer.index} ({layer.name}) is not run by the K210 loader")
        out = fn(m, layer)
        if trace is not None:
            trace.append((layer.index, layer.name, np.asarray(out).copy()))
    results = []
    for i, (address, size) in enumerate(model.outputs):
        results.append(m.main[m._span(address, size - size % 4, f"outputs[{i}]")].view("<f4").copy())
    return results
