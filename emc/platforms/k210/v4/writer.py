"""kmodel v4 writer: the lowered layers become nncase v0.2 runtime nodes, packed through v4.structs (spec 3).

to_v4(layers) rewrites every kmodel v3 layer of the lowering as one or more V4Layer nodes (table REWRITES; the
lowering's own V4Layer nodes pass through) before memory planning, since some rewrites need scratch buffers.
KModelV4Writer packs planned nodes: header, input/output tables, the constants image, node headers and bodies.
Inside a kpu_conv2d body the batch-norm, activation and weight blocks start at absolute file offsets that are
multiples of 256, with the skips in the layer argument's address fields, as nncase v0.2 writes them (spec 3.5).
"""
import math

import numpy as np

from ....errors import KModelFormatError
from ... import registrar
from ..lowering.convplan import kpu_layer_argument
from ..lowering.ir import F32, KPU, MAIN, U8, Buffer, V4Layer, align
from ..chip.kpu import encode_bn_table
from ..chip.layer_types import OPCODE_BY_NAME
from .structs import MODEL_IDENTIFIER, MODEL_VERSION, struct

DATATYPE = {F32: 0, U8: 1}
FLOAT_MAX = float(np.finfo(np.float32).max)
NO_CLAMP = (-math.inf, math.inf)
FC_CLAMP = {0: NO_CLAMP, 1: (0.0, math.inf), 2: (0.0, 6.0)}          # FULLY_CONNECTED act codes
SIGMOID_NNIL = bytes([0x05, 0x03, 0x26, 0x23, 0x05, 0x40, 0x43, 0xA0])  # 1 / (exp(-x) + 1); ret
KPU_BLOCK_ALIGN = 256            # bn, act and weight blocks of kpu_conv2d start at multiples of 256, as nncase
REWRITES = {}           # kmodel v3 layer type name -> fn(layer) -> [V4Layer]
ENCODERS = {}           # v4 op name -> fn(layer, file offset, Constants) -> body bytes
rewrites = registrar(REWRITES)
encodes = registrar(ENCODERS)


def to_v4(layers):
    """The v4 node list for lowered layers (indices set, ready for planner.plan_memory)."""
    nodes = []
    for layer in layers:
        if isinstance(layer, V4Layer):
            nodes.append(layer)
            continue
        rewrite = REWRITES.get(layer.type_name)
        if rewrite is None:
            raise KModelFormatError(f"the v4 writer has no rewrite of {layer.type_name} (from '{layer.node}')",
                                    field="type")
        nodes.extend(rewrite(layer))
    for index, node in enumerate(nodes):
        node.index = index
    return nodes


def _like(layer, op, inputs=None, outputs=None, **params):
    return V4Layer(op, layer.node, layer.inputs if inputs is None else inputs,
                   layer.outputs if outputs is None else outputs, layer.macs, layer.weight_bytes, **params)


def _scratch(layer, suffix, dtype, shape, quant=None):
    return Buffer(f"{layer.node}:{suffix}", MAIN, dtype, shape, quant)


def _quant_param(params):
    """(zero point, v4 scale) of a v3 QUANTIZE / DEQUANTIZE: real = (q - zp) * s; v4 stores 1 / s."""
    scale, bias = params["scale"], params["bias"]
    return int(round(-bias / scale)), 1.0 / scale


# ---- rewrites of kmodel v3 layers ------------------------------------------------------------------------------
@rewrites("K210_CONV")
def _kpu_conv(layer):
    return [_like(layer, "kpu_conv2d", **layer.params)]


@rewrites("K210_UPLOAD")
def _upload(layer):
    return [_like(layer, "kpu_upload", chw=layer.params["chw"])]


@rewrites("K210_ADD_PADDING")
def _add_padding(layer):
    """A vector as a 4x4 map (value at pixel 0 of each channel): pad on the CPU, then upload."""
    c = layer.params["channels"]
    padded = _scratch(layer, "pad4", U8, (c, 4, 4), layer.outputs[0].quant)
    return [_like(layer, "pad", layer.inputs, [padded], in_shape=(1, c, 1, 1),
                  paddings=((0, 0), (0, 0), (0, 3), (0, 3)), pad_value=0),
            _like(layer, "kpu_upload", [padded], layer.outputs, chw=(c, 4, 4))]


@rewrites("K210_REMOVE_PADDING")
def _remove_padding(layer):
    c = layer.params["channels"]
    return [_like(layer, "strided_slice", in_shape=(1, c, 4, 4), begin=(0, 0, 0, 0), end=(1, c, 1, 1),
                  strides=(1, 1, 1, 1))]


@rewrites("QUANTIZE")
def _quantize(layer):
    return [_like(layer, "quantize", quant=_quant_param(layer.params))]


@rewrites("DEQUANTIZE")
def _dequantize(layer):
    return [_like(layer, "dequantize", quant=_quant_param(layer.params))]


@rewrites("REQUANTIZE")
def _requantize(layer):
    return [_like(layer, "table_lookup1d", table=np.asarray(layer.params["table"], np.uint8))]


@rewrites("QUANTIZED_ADD")
def _quantized_add(layer):
    return [_like(layer, "quantized_binary", binary_op=0, count=layer.params["count"],
                  **quantized_add_v4(*layer.params["coefficients"]))]


def quantized_add_v4(qa, ca, qb, cb, qo):
    """quantized_binary fields for out = ca * a + cb * b in real values, with nncase's rounding shifts.

    Inputs are scaled by integer multipliers (shift 0) and the sum by one rounding shift P, the largest that
    keeps 255 * (|ma| + |mb|) below 2^30.
    """
    ra, rb = ca * qa.scale / qo.scale, cb * qb.scale / qo.scale
    total = abs(ra) + abs(rb)
    p = int(np.clip(math.floor(30 - math.log2(255.0 * total)), 0, 40)) if total > 0 else 0
    return {"input_a_offset": -qa.zero_point, "input_a_mul": int(round(ra * 2 ** p)), "input_a_shift": 0,
            "input_b_offset": -qb.zero_point, "input_b_mul": int(round(rb * 2 ** p)), "input_b_shift": 0,
            "output_offset": qo.zero_point, "output_mul": 1, "output_shift": p}


@rewrites("ADD")
def _add(layer):
    return [_like(layer, "binary", binary_op=0, count=layer.params["count"])]


@rewrites("QUANTIZED_MAX_POOL2D")
def _max_pool(layer):
    """The v3 uint8 max pool, used as pool, zero padding (1x1 window) and row/column selection (1x1 stride s).

    Padding and selection move bytes (pad, strided_slice); a real window runs in float (dequantize,
    reduce_window2d max, quantize), exact since max commutes with the monotone codes.
    """
    p = layer.params
    (c, h, w), (_, oh, ow) = p["in_chw"], p["out_chw"]
    (kh, kw), (sh, sw), (top, left) = p["kernel"], p["strides"], p["pads"]
    src, out = layer.inputs[0], layer.outputs[0]
    if (kh, kw) == (1, 1) and (sh, sw) == (1, 1):
        return [_like(layer, "pad", in_shape=(1, c, h, w), pad_value=0,
                      paddings=((0, 0), (0, 0), (top, oh - h - top), (left, ow - w - left)))]
    if (kh, kw) == (1, 1) and (top, left) == (0, 0):
        return [_like(layer, "strided_slice", in_shape=(1, c, h, w), begin=(0, 0, 0, 0),
                      end=(1, c, (oh - 1) * sh + 1, (ow - 1) * sw + 1), strides=(1, 1, sh, sw))]
    q = out.quant
    zp_scale = (q.zero_point, 1.0 / q.scale)
    x = _scratch(layer, "f32", F32, (c, h, w))
    y = _scratch(layer, "max", F32, (c, oh, ow))
    return [_like(layer, "dequantize", [src], [x], quant=zp_scale),
            _reduce_window(layer, [x], [y], 2, -FLOAT_MAX),
            _like(layer, "quantize", [y], [out], quant=zp_scale)]


@rewrites("AVERAGE_POOL2D")
def _average_pool(layer):
    return [_reduce_window(layer, layer.inputs, layer.outputs, 0, 0.0)]


def _reduce_window(layer, inputs, outputs, reduce_op, init_value):
    """reduce_window2d for a v3 pool layer's window: v3 gives the top/left padding, v4 wants bottom/right too."""
    p = layer.params
    (c, h, w), (_, oh, ow) = p["in_chw"], p["out_chw"]
    (kh, kw), (sh, sw), (top, left) = p["kernel"], p["strides"], p["pads"]
    bottom, right = max(0, (oh - 1) * sh + kh - h - top), max(0, (ow - 1) * sw + kw - w - left)
    return _like(layer, "reduce_window2d", inputs, outputs, reduce_op=reduce_op, in_shape=(1, c, h, w),
                 kernel=(kh, kw), strides=(sh, sw), pads=((top, bottom), (left, right)), init_value=init_value,
                 clamp=NO_CLAMP)


@rewrites("GLOBAL_AVERAGE_POOL2D")
def _global_average_pool(layer):
    c, h, w = layer.params["chw"]
    return [_like(layer, "reduce", reduce_op=0, in_shape=(1, c, h, w), out_shape=(1, c, 1, 1), init_value=0.0)]


@rewrites("SOFTMAX")
def _softmax(layer):
    return [_like(layer, "softmax", inner_size=layer.params["count"], outer_size=1)]


@rewrites("LOGISTIC")
def _logistic(layer):
    return [_like(layer, "nnil_unary_method", program=SIGMOID_NNIL)]


@rewrites("CONCAT", "QUANTIZED_CONCAT")
def _concat(layer):
    return [_like(layer, "concat", ranges=layer.params["ranges"])]


@rewrites("FULLY_CONNECTED")
def _fully_connected(layer):
    p = layer.params
    return [_like(layer, "matmul", matrix=np.ascontiguousarray(np.asarray(p["weights"], np.float32).T),
                  bias=np.asarray(p["bias"], np.float32), clamp=FC_CLAMP.get(p["act"], NO_CLAMP))]


@rewrites("TENSORFLOW_FLATTEN")
def _flatten(layer):
    c, h, w = layer.params["chw"]
    return [_like(layer, "transpose", in_shape=(1, c, h, w), perm=(0, 2, 3, 1))]


@rewrites("QUANTIZED_RESIZE_NEAREST_NEIGHBOR")
def _resize(layer):
    p = layer.params
    return [_like(layer, "resize_image", in_shape=(1,) + tuple(p["in_chw"]), out_hw=p["out_hw"], mode=1)]


# ---- packing ---------------------------------------------------------------------------------------------------------
def pack(name, **fields):
    try:
        return struct(name)(**fields).dumps()
    except Exception as err:                     # struct.error: a value outside its field
        raise KModelFormatError(f"cannot encode {name}: {err} ({fields})", field=name) from None


def make(name, **fields):
    """A v4.structs value, for the nested fields of a body."""
    return struct(name)(**fields)


NO_RANGE = make("memory_range", memory_type=0, datatype=0, start=0, size=0)


def memory_range(buf, start=0, size=None):
    """The v4 memory_range of a planned buffer (KPU buffers in bytes of their 64-byte lines)."""
    if buf.where == KPU:
        return make("memory_range", memory_type=2, datatype=1, start=buf.address * 64, size=buf.lines * 64)
    return make("memory_range", memory_type=1, datatype=DATATYPE[buf.dtype], start=buf.address + start,
                size=buf.nbytes if size is None else size)


def _io(layer):
    return {"input": memory_range(layer.inputs[0]), "output": memory_range(layer.outputs[0])}


def _padding(before, after):
    return make("padding", before=int(before), after=int(after))


def _value_range(bounds):
    return make("value_range", min=float(bounds[0]), max=float(bounds[1]))


def _window(p):
    (kh, kw), (sh, sw), (pad_h, pad_w) = p["kernel"], p["strides"], p["pads"]
    dh, dw = p.get("dilation", (1, 1))
    return {"padding_h": _padding(*pad_h), "padding_w": _padding(*pad_w), "filter_h": kh, "filter_w": kw,
            "stride_h": sh, "stride_w": sw, "dilation_h": dh, "dilation_w": dw}


class Constants:
    """The constants image: arrays appended at 8-byte aligned offsets, each addressed by a memory range."""

    def __init__(self):
        self.data = bytearray()
        self.ranges = {}

    def add(self, key, array):
        raw = np.ascontiguousarray(array)
        start = len(self.data)
        self.data += raw.tobytes() + bytes(align(raw.nbytes, 8) - raw.nbytes)     # the image stays a multiple of 8
        self.ranges[key] = make("memory_range", memory_type=0, datatype=0 if raw.dtype == np.float32 else 1,
                                start=start, size=raw.nbytes)

    def __getitem__(self, key):
        return self.ranges[key]


@encodes("kpu_conv2d")
def kpu_conv2d(layer, offset, consts):
    p = layer.params["conv"]
    main = layer.params.get("main_out")
    arg = kpu_layer_argument(layer)
    blocks = {"bn": encode_bn_table(p.bn_mul, p.bn_shift, p.bn_add), "act": p.act.encoded().to_bytes(),
              "weights": np.ascontiguousarray(p.weights, np.uint8).tobytes()}
    cursor = offset + 24 + 96
    parts, skips = [], []
    for key in ("bn", "act", "weights"):
        start = align(cursor, KPU_BLOCK_ALIGN)
        skips.append(start - cursor)
        parts += [bytes(start - cursor), blocks[key]]
        cursor = start + len(blocks[key])
    arg.bwsx_base_addr, arg.active_addr, arg.para_start_addr = skips
    arg.send_data_out = int(main is not None)          # as nncase writes it; the runtime clears it on the chip
    head = pack("kpu_conv2d_options", main_mem_output=NO_RANGE if main is None else memory_range(main), batches=1,
                reserved0=0)[:24]
    return head + arg.to_bytes() + b"".join(parts)


@encodes("kpu_upload")
def kpu_upload(layer, offset, consts):
    return pack("kpu_upload_options", **_io(layer), in_shape=(1,) + tuple(layer.params["chw"]))


@encodes("quantize", "dequantize")
def quantize(layer, offset, consts):
    zero_point, scale = layer.params["quant"]
    return pack(f"{layer.op}_options", **_io(layer), quant_param=make("quant_param", zero_point=zero_point,
                                                                         scale=scale))


@encodes("table_lookup1d")
def table_lookup(layer, offset, consts):
    return pack("table_lookup1d_options", input=memory_range(layer.inputs[0]), table=consts[id(layer)],
                output=memory_range(layer.outputs[0]))


def _flat_shape(count):
    return (1, 1, 1, int(count))


@encodes("binary", "quantized_binary")
def binary(layer, offset, consts):
    """Equal flat shapes (params count) or N C H W shapes with broadcasting (params shapes = a, b, out); input b
    is the second input buffer or, with params constant, that array in the constants image."""
    p = dict(layer.params)
    shapes = p.pop("shapes", None) or (_flat_shape(p.pop("count")),) * 3
    b = consts[id(layer)] if p.pop("constant", None) is not None else memory_range(layer.inputs[1])
    fields = {"input_a": memory_range(layer.inputs[0]), "input_b": b, "output": memory_range(layer.outputs[0]),
              "binary_op": p.pop("binary_op"), "in_a_shape": shapes[0], "in_b_shape": shapes[1],
              "out_shape": shapes[2]}
    if layer.op == "binary":
        fields["fused_activation"] = _value_range(NO_CLAMP)
    return pack(f"{layer.op}_options", **fields, **p)


@encodes("pad")
def pad(layer, offset, consts):
    p = layer.params
    value = make("scalar", type=DATATYPE[layer.inputs[0].dtype],
                 storage=[int(b) for b in np.array([p["pad_value"]], "<u4").view("u1")])
    return pack("pad_options", **_io(layer), in_shape=p["in_shape"],
                paddings=[_padding(*pair) for pair in p["paddings"]], pad_value=value)


@encodes("strided_slice")
def strided_slice(layer, offset, consts):
    p = layer.params
    return pack("strided_slice_options", **_io(layer), in_shape=p["in_shape"], begin=p["begin"], end=p["end"],
                strides=p["strides"], begin_mask=0, end_mask=0, ellipsis_mask=0, new_axis_mask=0, shrink_axis_mask=0)


@encodes("reduce_window2d")
def reduce_window(layer, offset, consts):
    p = layer.params
    return pack("reduce_window2d_options", **_io(layer), reduce_op=p["reduce_op"], in_shape=p["in_shape"],
                **_window(p), init_value=p["init_value"], fused_activation=_value_range(p["clamp"]))


@encodes("reduce")
def reduce(layer, offset, consts):
    p = layer.params
    return pack("reduce_options", **_io(layer), reduce_op=p["reduce_op"], in_shape=p["in_shape"],
                out_shape=p["out_shape"], init_value=p["init_value"])


@encodes("softmax")
def softmax(layer, offset, consts):
    p = layer.params
    return pack("softmax_options", **_io(layer), inner_size=p["inner_size"], outer_size=p["outer_size"], beta=1.0)


@encodes("nnil_unary_method")
def nnil(layer, offset, consts):
    return pack("nnil_unary_method_options", **_io(layer)) + layer.params["program"]


@encodes("concat")
def concat(layer, offset, consts):
    ranges = layer.params["ranges"]
    head = pack("concat_options", output=memory_range(layer.outputs[0]), inner_size=1, outer_size=1,
                inputs_count=len(ranges))
    inputs = b"".join(memory_range(buf, start, size).dumps() for buf, start, size in ranges)
    return head + inputs + np.array([size for _, _, size in ranges], "<i4").tobytes()


@encodes("matmul")
def matmul(layer, offset, consts):
    p = layer.params
    n_in, n_out = p["matrix"].shape
    head = pack("matmul_options", input_a=memory_range(layer.inputs[0]), input_b=consts[id(layer)],
                output=memory_range(layer.outputs[0]), a_rows=1, a_cols=n_in, b_cols=n_out,
                fused_activation=_value_range(p["clamp"]))
    return head + p["bias"].astype("<f4").tobytes()


@encodes("quantized_matmul")
def quantized_matmul(layer, offset, consts):
    p = layer.params
    n_in, n_out = p["matrix"].shape
    head = pack("quantized_matmul_options", input_a=memory_range(layer.inputs[0]), input_b=consts[id(layer)],
                output=memory_range(layer.outputs[0]), a_rows=1, a_cols=n_in, b_cols=n_out,
                input_a_offset=p["a_offset"], input_b_offset=p["b_offset"], output_mul=p["mul"],
                output_shift=p["shift"], output_offset=p["out_offset"])
    return head + np.asarray(p["bias"]).astype("<i4").tobytes()


@encodes("transpose")
def transpose(layer, offset, consts):
    return pack("transpose_options", **_io(layer), in_shape=layer.params["in_shape"], perm=layer.params["perm"])


@encodes("resize_image")
def resize_image(layer, offset, consts):
    p = layer.params
    return pack("resize_image_options", **_io(layer), in_shape=p["in_shape"], out_h=p["out_hw"][0],
                out_w=p["out_hw"][1], mode=p["mode"], align_corners=0, tail_padding=[0, 0, 0])


@encodes("conv2d")
def conv2d(layer, offset, consts):
    p = layer.params
    head = pack("conv2d_options", **_io(layer), in_shape=(1,) + tuple(p["in_chw"]), groups=p["groups"],
                out_channels=p["weights"].shape[0], **_window(p), fused_activation=_value_range(p["clamp"]))
    return head + p["weights"].astype("<f4").tobytes() + p["bias"].astype("<f4").tobytes()


# parameters stored in the constants image
CONSTANT_PARAMS = {"matmul": "matrix", "quantized_matmul": "matrix", "table_lookup1d": "table", "binary": "constant"}


# ---- the file --------------------------------------------------------------------------------------------------------
class KModelV4Writer:
    """Serialises planned v4 nodes; every buffer address must be set (planner.plan_memory)."""

    def __init__(self, nodes, input_buffer, input_shape, outputs, main_mem):
        self.nodes = nodes
        self.input_buffer = input_buffer
        self.input_shape = tuple(int(d) for d in input_shape)
        self.outputs = outputs
        self.main_mem = int(main_mem)

    def to_bytes(self):
        consts = Constants()
        for node in self.nodes:
            key = CONSTANT_PARAMS.get(node.op)
            if key in node.params:
                consts.add(id(node), node.params[key])
        tables = [memory_range(self.input_buffer).dumps(), np.array(self.input_shape, "<i4").tobytes()]
        tables += [memory_range(buf).dumps() for buf in self.outputs]
        header_bytes = len(struct("model_header"))
        offset = header_bytes + sum(map(len, tables)) + len(consts.data) + 8 * len(self.nodes)
        heads, bodies = [], []
        for node in self.nodes:
            encode = ENCODERS.get(node.op)
            if encode is None:
                raise KModelFormatError(f"the v4 writer has no encoder for {node.op} (from '{node.node}')",
                                        field="opcode")
            data = encode(node, offset, consts)
            data += bytes(align(offset + len(data), 8) - offset - len(data))
            heads.append(np.array([OPCODE_BY_NAME[node.op], len(data)], "<u4").tobytes())
            bodies.append(data)
            offset += len(data)
        header = pack("model_header", identifier=MODEL_IDENTIFIER, version=MODEL_VERSION, flags=0, target=1,
                      constants=len(consts.data), main_mem=self.main_mem, nodes=len(self.nodes), inputs=1,
                      outputs=len(self.outputs), reserved0=0)
        return b"".join([header] + tables + [bytes(consts.data)] + heads + bodies)


def stored_input_shape(buf):
    """The stored N C H W shape of the model input: a KPU image (1, C, H, W) or a float vector (1, 1, 1, n)."""
    return (1,) + tuple(buf.chw) if buf.where == KPU else _flat_shape(buf.count)


__all__ = ["to_v4", "KModelV4Writer", "REWRITES", "ENCODERS", "stored_input_shape"]
