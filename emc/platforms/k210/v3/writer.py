"""kmodel v3 writer: header, output table, layer table and the layer bodies, packed through the cstruct
definitions of v3.structs and the KPU encoders of chip.kpu (spec 2.1, 2.4, 6).

Bodies are padded (with zero bytes, counted in body_size) to the next absolute multiple of 8; inside a
K210_CONV body the layer argument, weights, batch-norm and activation tables start at absolute file offsets
aligned to 8, 128, 128 and 256, as nncase writes them.
"""
import numpy as np

from ....errors import KModelFormatError
from ..lowering.convplan import kpu_layer_argument
from ..lowering.ir import CODE, align
from ..chip.kpu import encode_bn_table
from .structs import STOCK_SDK_TYPES, struct

HEADER_BYTES = 28
CONV_BLOCK_ALIGN = {"layer": 8, "weights": 128, "bn": 128, "act": 256}
BODIES = {}


def body(*names):
    """Register a body builder fn(layer, offset) -> bytes for layer type names."""
    def wrap(fn):
        for name in names:
            BODIES[CODE[name]] = fn
        return fn
    return wrap


def pack(name, **fields):
    try:
        return struct(name)(**fields).dumps()
    except Exception as err:                     # struct.error: a value outside its field
        raise KModelFormatError(f"cannot encode {name}: {err} ({fields})", field=name) from None


def shape(c, h, w):
    return struct("kpu_model_shape_t")(width=int(w), height=int(h), channels=int(c))


@body("K210_CONV")
def k210_conv(layer, offset):
    p = layer.params["conv"]
    main = layer.params.get("main_out")
    weights = np.ascontiguousarray(p.weights, np.uint8).tobytes()
    bn = encode_bn_table(p.bn_mul, p.bn_shift, p.bn_add)
    act = p.act.encoded().to_bytes()
    at = {}
    cursor = offset + 24
    for key, size in (("layer", 96), ("weights", len(weights)), ("bn", len(bn)), ("act", len(act))):
        at[key] = align(cursor, CONV_BLOCK_ALIGN[key])
        cursor = at[key] + size
    out = bytearray(cursor - offset)
    out[:24] = pack("kpu_model_conv_layer_argument_t", flags=1 if main is not None else 0,
                    main_mem_out_address=main.address if main is not None else 0, layer_offset=at["layer"],
                    weights_offset=at["weights"], bn_offset=at["bn"], act_offset=at["act"])
    arg = kpu_layer_argument(layer).to_bytes()
    for key, data in (("layer", arg), ("weights", weights), ("bn", bn), ("act", act)):
        out[at[key] - offset:at[key] - offset + len(data)] = data
    return bytes(out)


@body("K210_UPLOAD")
def k210_upload(layer, offset):
    c, h, w = layer.params["chw"]
    return pack("kpu_model_upload_layer_argument_t", flags=0, main_mem_in_address=layer.inputs[0].address,
                kpu_mem_out_address=layer.outputs[0].address, width=w, height=h, channels=c)


@body("K210_ADD_PADDING")
def k210_add_padding(layer, offset):
    return pack("kpu_model_add_padding_layer_argument_t", flags=0, main_mem_in_address=layer.inputs[0].address,
                kpu_mem_out_address=layer.outputs[0].address, channels=layer.params["channels"])


@body("K210_REMOVE_PADDING")
def k210_remove_padding(layer, offset):
    return pack("kpu_model_remove_padding_layer_argument_t", flags=0,
                main_mem_in_address=layer.inputs[0].address, main_mem_out_address=layer.outputs[0].address,
                channels=layer.params["channels"])


# ---- CPU layers ----------------------------------------------------------------------------------------------------
def _in_out(layer):
    return {"flags": 0, "main_mem_in_address": layer.inputs[0].address,
            "main_mem_out_address": layer.outputs[0].address}


@body("QUANTIZE")
def quantize(layer, offset):
    p = layer.params
    return pack("kpu_model_quantize_layer_argument_t", flags=0, main_mem_in_address=layer.inputs[0].address,
                mem_out_address=layer.outputs[0].address, count=p["count"], scale=p["scale"], bias=p["bias"])


@body("DEQUANTIZE")
def dequantize(layer, offset):
    p = layer.params
    return pack("kpu_model_dequantize_layer_argument_t", **_in_out(layer), count=p["count"], scale=p["scale"],
                bias=p["bias"])


@body("REQUANTIZE")
def requantize(layer, offset):
    return pack("kpu_model_requantize_layer_argument_t", **_in_out(layer), count=layer.params["count"],
                table=[int(v) for v in layer.params["table"]])


@body("QUANTIZED_ADD")
def quantized_add(layer, offset):
    p = layer.params
    a, b = layer.inputs
    return pack("kpu_model_quant_add_layer_argument_t", flags=0, main_mem_in_a_address=a.address,
                main_mem_in_b_address=b.address, main_mem_out_address=layer.outputs[0].address, count=p["count"],
                in_a_offset=p["a_offset"], in_a_mul=p["a_mul"], in_a_shift=p["a_shift"],
                in_b_offset=p["b_offset"], in_b_mul=p["b_mul"], in_b_shift=p["b_shift"],
                out_offset=p["out_offset"], out_mul=p["out_mul"], out_shift=p["out_shift"])


@body("ADD")
def add(layer, offset):
    a, b = layer.inputs
    return pack("kpu_model_add_layer_argument_t", flags=0, main_mem_in_a_address=a.address,
                main_mem_in_b_address=b.address, main_mem_out_address=layer.outputs[0].address,
                count=layer.params["count"])


def _window(layer):
    p = layer.params
    return {"in_shape": shape(*p["in_chw"]), "out_shape": shape(*p["out_chw"]),
            "kernel_width": p["kernel"][1], "kernel_height": p["kernel"][0],
            "stride_width": p["strides"][1], "stride_height": p["strides"][0],
            "padding_width": p["pads"][1], "padding_height": p["pads"][0]}


@body("QUANTIZED_MAX_POOL2D")
def quantized_max_pool(layer, offset):
    return pack("kpu_model_quant_max_pool2d_layer_argument_t", **_in_out(layer), **_window(layer))


@body("AVERAGE_POOL2D")
def average_pool(layer, offset):
    return pack("kpu_model_ave_pool2d_layer_argument_t", **_in_out(layer), **_window(layer), act=0)


@body("GLOBAL_AVERAGE_POOL2D")
def global_average_pool(layer, offset):
    c, h, w = layer.params["chw"]
    return pack("kpu_model_gap2d_layer_argument_t", **_in_out(layer), kernel_size=h * w, channels=c)


@body("SOFTMAX")
def softmax(layer, offset):
    return pack("kpu_model_softmax_layer_argument_t", **_in_out(layer), channels=layer.params["count"])


@body("LOGISTIC")
def logistic(layer, offset):
    return pack("kpu_model_logistic_layer_argument_t", **_in_out(layer), channels=layer.params["count"])


@body("CONCAT", "QUANTIZED_CONCAT")
def concat(layer, offset):
    ranges = layer.params["ranges"]
    head = pack("kpu_model_concat_layer_argument_t", flags=0, main_mem_out_address=layer.outputs[0].address,
                input_count=len(ranges))
    return head + b"".join(pack("kpu_model_memory_range_t", start=buf.address + start, size=size)
                           for buf, start, size in ranges)


@body("FULLY_CONNECTED")
def fully_connected(layer, offset):
    p = layer.params
    n_out, n_in = p["weights"].shape
    head = pack("kpu_model_fully_connected_layer_argument_t", **_in_out(layer), in_channels=n_in,
                out_channels=n_out, act=p["act"])
    return head + np.asarray(p["weights"], "<f4").tobytes() + np.asarray(p["bias"], "<f4").tobytes()


@body("TENSORFLOW_FLATTEN")
def tf_flatten(layer, offset):
    return pack("kpu_model_tf_flatten_layer_argument_t", **_in_out(layer), shape=shape(*layer.params["chw"]))


@body("QUANTIZED_RESIZE_NEAREST_NEIGHBOR")
def resize(layer, offset):
    p = layer.params
    return pack("kpu_model_resize_nearest_neighbor_layer_argument_t", **_in_out(layer),
                in_shape=shape(*p["in_chw"]), out_width=p["out_hw"][1], out_height=p["out_hw"][0], align_corners=0)


# ---- the file --------------------------------------------------------------------------------------------------------
class KModelV3Writer:
    """Serialises planned layers: every buffer address must be set (planner.plan_memory)."""

    def __init__(self, layers, outputs, main_mem_usage, max_start_address, eight_bit=True):
        self.layers = layers
        self.outputs = outputs
        self.main_mem_usage = int(main_mem_usage)
        self.max_start_address = int(max_start_address)
        self.eight_bit = eight_bit

    def to_bytes(self):
        n_out, n_layers = len(self.outputs), len(self.layers)
        header = pack("kpu_kmodel_header_t", version=3, flags=1 if self.eight_bit else 0, arch=0,
                      layers_length=n_layers, max_start_address=self.max_start_address,
                      main_mem_usage=self.main_mem_usage, output_count=n_out)
        table = b"".join(pack("kpu_model_output_t", address=buf.address, size=buf.nbytes) for buf in self.outputs)
        offset = HEADER_BYTES + 8 * n_out + 8 * n_layers
        bodies, heads = [], []
        for layer in self.layers:
            build = BODIES.get(layer.code)
            if layer.code not in STOCK_SDK_TYPES or build is None:
                raise KModelFormatError(f"the v3 writer has no body for {layer.type_name}", field="type")
            data = build(layer, offset)
            data += bytes(align(offset + len(data), 8) - offset - len(data))
            heads.append(pack("kpu_model_layer_header_t", type=layer.code, body_size=len(data)))
            bodies.append(data)
            offset += len(data)
        return header + table + b"".join(heads) + b"".join(bodies)
