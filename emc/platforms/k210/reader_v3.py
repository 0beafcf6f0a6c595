"""kmodel v3 reader: parses any v3 file (emc's, nncase v0.1's, Maix-EMC's) into a printable object.

Every offset and size is checked against the buffer before use; a broken file raises KModelFormatError naming
the offset and the field, and nothing is allocated beyond what the file's own bytes justify.
"""
import numpy as np

from ...errors import KModelFormatError
from .kpu import ACT_TABLE_BYTES, LAYER_ARG_BYTES, ActTable, LayerArgument, decode_bn_table
from .structs_v3 import LAYER_TYPES, struct

HEADER = struct("kpu_kmodel_header_t")
OUTPUT = struct("kpu_model_output_t")
LAYER_HEADER = struct("kpu_model_layer_header_t")
RANGE = struct("kpu_model_memory_range_t")
K210_SRAM = 8 * 1024 * 1024
FC_ACTS = {0: "linear", 1: "relu", 2: "relu6"}


def read_struct(definition, data, offset, field):
    """One cstruct instance at offset, or KModelFormatError naming where the data ran out."""
    size = len(definition)
    if offset < 0 or offset + size > len(data):
        raise KModelFormatError(f"truncated file: {size} bytes of {definition.__name__} needed", offset, field)
    return definition(bytes(data[offset:offset + size]))


def f32_array(data, offset, count, field):
    if count < 0 or offset < 0 or offset + 4 * count > len(data):
        raise KModelFormatError(f"truncated file: {count} float32 values needed", offset, field)
    return np.frombuffer(bytes(data[offset:offset + 4 * count]), "<f4").copy()


class Layer:
    """One v3 layer: its type, where its body is, the decoded body and, for K210_CONV, its KPU blocks."""

    def __init__(self, index, code, offset, body_size, body):
        self.index, self.code, self.offset, self.body_size, self.body = index, code, offset, body_size, body
        self.name = LAYER_TYPES.get(code, (f"UNKNOWN_{code}", None))[0]
        self.arg = self.weights = self.bn = self.act = None     # K210_CONV
        self.extra = {}                                         # FC weights, concat ranges, channelwise params

    @property
    def on_kpu(self):
        return self.code == 10240

    def field(self, name, default=None):
        return getattr(self.body, name, default) if self.body is not None else default

    def describe(self):
        """(input shape, output shape, MACs, weight bytes, detail text) for tables."""
        b = self.body
        if self.code == 10240:
            a = self.arg
            c_in, h, w = a.in_shape
            macs = a.out_shape[0] * h * w * a.kernel ** 2 * (1 if a.depthwise else c_in)
            kind = ("dw" if a.depthwise else "conv") + f"{a.kernel}x{a.kernel}"
            detail = f"{kind} pool={a.pool_type} src={a.image_src_addr} dst={a.image_dst_addr}"
            if b.flags & 1:
                detail += f" main_out={b.main_mem_out_address}"
            return a.in_shape, a.out_shape, macs, self.weights.nbytes, detail
        if self.code == 18:
            return (b.in_channels,), (b.out_channels,), b.in_channels * b.out_channels, \
                4 * (b.in_channels * b.out_channels + b.out_channels), FC_ACTS.get(b.act, f"act={b.act}")
        if b is None:
            return None, None, 0, 0, ""
        shape_of = (lambda s: (s.channels, s.height, s.width))
        if hasattr(b, "in_shape"):
            out = shape_of(b.out_shape) if hasattr(b, "out_shape") else (b.in_shape.channels, b.out_height, b.out_width)
            return shape_of(b.in_shape), out, 0, 0, ""
        if hasattr(b, "shape"):
            shape = shape_of(b.shape)
            return shape, (int(np.prod(shape)),), 0, 0, ""
        if self.code == 10243:
            return (b.channels, b.height, b.width), (b.channels, b.height, b.width), 0, 0, f"kpu={b.kpu_mem_out_address}"
        if hasattr(b, "count"):
            return (b.count,), (b.count,), 0, 0, ""
        if hasattr(b, "channels"):
            return (b.channels,), (b.channels,), 0, 0, ""
        return None, None, 0, 0, ""


class KModelV3:
    """A parsed kmodel v3: header fields, outputs [(address, size)], layers."""

    version = 3

    def __init__(self, data):
        self.data = bytes(data)
        data = self.data
        h = read_struct(HEADER, data, 0, "header")
        self.header = h
        if h.version != 3:
            raise KModelFormatError(f"not a kmodel v3: version {h.version}", 0, "version")
        if h.arch != 0:
            raise KModelFormatError(f"arch {h.arch} is not the K210 (0)", 8, "arch")
        if h.main_mem_usage > K210_SRAM:
            raise KModelFormatError(f"main_mem_usage {h.main_mem_usage} exceeds the K210's 8 MiB SRAM", 20,
                                    "main_mem_usage")
        tables_end = len(HEADER) + 8 * h.output_count + 8 * h.layers_length
        if tables_end > len(data):
            raise KModelFormatError(f"{h.output_count} outputs and {h.layers_length} layers need {tables_end} bytes "
                                    f"of tables; the file has {len(data)}", 12, "layers_length")
        pos = len(HEADER)
        self.outputs = []
        for i in range(h.output_count):
            o = read_struct(OUTPUT, data, pos, f"outputs[{i}]")
            self.outputs.append((o.address, o.size))
            pos += 8
        headers = []
        for i in range(h.layers_length):
            lh = read_struct(LAYER_HEADER, data, pos, f"layer_headers[{i}]")
            headers.append((lh.type, lh.body_size))
            pos += 8
        self.layers = []
        for i, (code, size) in enumerate(headers):
            last = i == len(headers) - 1
            if pos + size > len(data) + (7 if last else 0):     # nncase v0.1 omits the final padding
                raise KModelFormatError(f"layer {i} body of {size} bytes runs past the end of the file", pos,
                                        f"layers[{i}].body_size")
            self.layers.append(self._parse_layer(i, code, pos, size))
            pos += size
        self.flags = h.flags

    def _parse_layer(self, index, code, offset, size):
        data = self.data
        if code not in LAYER_TYPES:
            raise KModelFormatError(f"layer {index} has unknown type {code}", len(HEADER) + 8 * self.header.output_count
                                    + 8 * index, f"layers[{index}].type")
        struct_name = LAYER_TYPES[code][1]
        body = None
        where = f"layers[{index}]"
        if struct_name is not None:
            definition = struct(struct_name)
            if len(definition) > size:
                raise KModelFormatError(f"layer {index} ({LAYER_TYPES[code][0]}) body is {size} bytes, its "
                                        f"structure needs {len(definition)}", offset, f"{where}.body_size")
            body = read_struct(definition, data, offset, where)
        layer = Layer(index, code, offset, size, body)
        parse = EXTRA_PARSERS.get(code)
        if parse is not None:
            parse(self, layer, where)
        return layer

    # ---- printing ----------------------------------------------------------------------------------------
    def summary(self):
        rows = []
        for layer in self.layers:
            in_shape, out_shape, macs, wbytes, detail = layer.describe()
            rows.append({"index": layer.index, "type": layer.name, "unit": "KPU" if layer.on_kpu else "CPU",
                         "input": in_shape, "output": out_shape, "macs": int(macs), "weights": int(wbytes),
                         "body": layer.body_size, "detail": detail})
        return rows

    def totals(self):
        rows = self.summary()
        macs = sum(r["macs"] for r in rows)
        kpu = sum(r["macs"] for r in rows if r["unit"] == "KPU")
        return {"file size": len(self.data), "layers": len(rows), "main memory": self.header.main_mem_usage,
                "outputs": self.outputs, "MACs": macs, "MACs on KPU": f"{100.0 * kpu / macs:.1f}%" if macs else "-",
                "weight bytes": sum(r["weights"] for r in rows)}

    def __str__(self):
        from ...report import Report
        h = self.header
        report = Report(f"kmodel v3: {len(self.layers)} layers, {'8' if h.flags & 1 else '16'}-bit weights, "
                        f"main memory {h.main_mem_usage} bytes, {h.output_count} output(s)",
                        ["index", "type", "unit", "input", "output", "macs", "weights", "detail"],
                        self.summary(), self.totals())
        return report.table()


def _conv_blocks(model, layer, where):
    b = layer.body
    data = model.data
    layer.arg = LayerArgument.from_bytes(data, b.layer_offset) if 0 <= b.layer_offset <= len(data) - LAYER_ARG_BYTES \
        else _bad(f"K210_CONV layer argument offset {b.layer_offset} is outside the file", layer.offset + 8,
                  f"{where}.layer_offset")
    a = layer.arg
    wbytes = 1 if model.header.flags & 1 else 2
    count = a.weight_count()
    end = b.weights_offset + count * wbytes
    if b.weights_offset < 0 or end > len(data):
        _bad(f"K210_CONV weights ({count} x {wbytes} bytes) run past the end of the file", layer.offset + 12,
             f"{where}.weights_offset")
    dtype = np.uint8 if wbytes == 1 else np.dtype("<u2")
    w = np.frombuffer(data[b.weights_offset:end], dtype)
    c_out, c_in = a.out_shape[0], a.in_shape[0]
    layer.weights = w.reshape(c_out, a.kernel, a.kernel) if a.depthwise else w.reshape(c_out, c_in, a.kernel, a.kernel)
    layer.bn = decode_bn_table(data, c_out, b.bn_offset) if b.bn_offset >= 0 else None
    if b.act_offset + ACT_TABLE_BYTES > len(data):
        _bad("K210_CONV activation table runs past the end of the file", layer.offset + 20, f"{where}.act_offset")
    layer.act = ActTable.from_bytes(data, b.act_offset)


def _fully_connected(model, layer, where):
    b = layer.body
    n_w = b.in_channels * b.out_channels
    need = 24 + 4 * (n_w + b.out_channels)
    if need > layer.body_size + 7:
        _bad(f"FULLY_CONNECTED {b.in_channels}x{b.out_channels} needs {need} body bytes, the body has "
             f"{layer.body_size}", layer.offset + 12, f"{where}.in_channels")
    start = layer.offset + 24
    layer.extra["weights"] = f32_array(model.data, start, n_w, f"{where}.weights").reshape(b.out_channels, b.in_channels)
    layer.extra["bias"] = f32_array(model.data, start + 4 * n_w, b.out_channels, f"{where}.bias")


def _concat(model, layer, where):
    n = layer.body.input_count
    if 12 + 8 * n > layer.body_size:
        _bad(f"CONCAT with {n} inputs needs {12 + 8 * n} body bytes", layer.offset + 8, f"{where}.input_count")
    layer.extra["ranges"] = [(r.start, r.size) for r in
                             (read_struct(RANGE, model.data, layer.offset + 12 + 8 * i, f"{where}.inputs[{i}]")
                              for i in range(n))]


def _channelwise(model, layer, where):
    c = layer.body.channels
    if 20 + 8 * c > layer.body_size + 7:
        _bad(f"CHANNELWISE_DEQUANTIZE with {c} channels needs {20 + 8 * c} body bytes", layer.offset + 12,
             f"{where}.channels")
    params = f32_array(model.data, layer.offset + 20, 2 * c, f"{where}.params").reshape(c, 2)
    layer.extra["scale"], layer.extra["bias"] = params[:, 0].copy(), params[:, 1].copy()


def _requantize(model, layer, where):
    layer.extra["table"] = np.array(list(layer.body.table), np.uint8)


def _bad(message, offset, field):
    raise KModelFormatError(message, offset, field)


EXTRA_PARSERS = {10240: _conv_blocks, 18: _fully_connected, 16: _concat, 17: _concat, 24: _channelwise,
                 13: _requantize}
