"""kmodel v3 reader: parses any v3 file (emc's, nncase v0.1's, Maix-EMC's) into a printable object.

Every offset and size is checked against the buffer before use; a broken file raises KModelFormatError naming
the offset and the field, and nothing is allocated beyond what the file's own bytes justify.
"""
import numpy as np

from ....errors import KModelFormatError
from ..chip.bounds import check_described
from ..chip.cpu_math import pool_wraps
from ..chip.kpu import ACT_TABLE_BYTES, LAYER_ARG_BYTES, ActTable, LayerArgument, decode_bn_table
from ..chip.layer_types import LAYER_TYPES
from .structs import FLOAT_ACTIVATIONS, KPU_TYPES, body_struct, struct

HEADER = struct("kpu_kmodel_header_t")
OUTPUT = struct("kpu_model_output_t")
LAYER_HEADER = struct("kpu_model_layer_header_t")
K210_SRAM = 8 * 1024 * 1024
LAST_BODY_SHORTFALL = 7        # nncase v0.1 counts the final alignment padding in body_size but never writes it


def read_struct(definition, data, offset, field):
    """One cstruct instance at offset, or KModelFormatError naming where the data ran out."""
    size = len(definition)
    if offset < 0 or offset + size > len(data):
        raise KModelFormatError(f"truncated file: {size} bytes of {definition.__name__} needed, "
                                f"{max(0, len(data) - offset)} left", offset, field)
    return definition(bytes(data[offset:offset + size]))


def read_array(data, offset, dtype, count, field):
    """count values of dtype at offset (a read-only view of the file), or KModelFormatError."""
    dtype = np.dtype(dtype)
    if count < 0 or offset < 0 or offset + count * dtype.itemsize > len(data):
        raise KModelFormatError(f"truncated file: {count} values of {dtype.itemsize} bytes needed", offset, field)
    return np.frombuffer(data, dtype, count, offset)


class Layer:
    """One v3 layer: its type, where its body is, the decoded body and, for K210_CONV, its KPU blocks."""

    def __init__(self, index, code, offset, body_size, body, available):
        self.index, self.code, self.offset, self.body_size, self.body = index, code, offset, body_size, body
        self.available = available                              # body bytes actually present in the file
        self.name = LAYER_TYPES[code][0]
        self.arg = self.weights = self.bn = self.act = None     # K210_CONV
        self.extra = {}                                         # FC weights, concat ranges, channelwise params

    @property
    def type_code(self):
        return self.code

    @property
    def on_kpu(self):
        return self.code in KPU_TYPES

    def field(self, name, default=None):
        return getattr(self.body, name, default) if self.body is not None else default

    def describe(self):
        """Row of the layer table: shapes (C, H, W or (n,)), addresses, output bytes, MACs, weight bytes."""
        row = {"input": None, "output": None, "in_addr": "", "out_addr": "", "out_bytes": None, "macs": 0,
               "weights": 0, "detail": ""}
        describe = DESCRIBERS.get(self.code)
        if describe is not None and self.body is not None:
            row.update(describe(self, self.body))
        return row

    def __repr__(self):
        return f"<v3 layer {self.index} {self.name} @{self.offset} body {self.body_size} B>"


# ---- per-type descriptions for the layer table ----------------------------------------------------------------
def _chw(shape):
    return (shape.channels, shape.height, shape.width)


def _main(address):
    return f"m:{address}"


def _kpu(line):
    return f"kpu:{line}"


def _flat(b, count, in_bytes, out_bytes, in_field="main_mem_in_address", out_field="main_mem_out_address"):
    return {"input": (count,), "output": (count,), "in_addr": _main(getattr(b, in_field)),
            "out_addr": _main(getattr(b, out_field)), "out_bytes": count * out_bytes}


def _describe_conv(layer, b):
    a = layer.arg
    kind = ("dw" if a.depthwise else "conv") + f"{a.kernel}x{a.kernel}"
    out = _kpu(a.image_dst_addr) + (f" {_main(b.main_mem_out_address)}" if b.flags & 1 else "")
    return {"input": a.in_shape, "output": a.out_shape, "in_addr": _kpu(a.image_src_addr), "out_addr": out,
            "out_bytes": int(np.prod(a.out_shape)), "macs": a.macs(), "weights": layer.weights.nbytes,
            "detail": f"{kind} pool={a.pool_type} pad={a.pad_value} arg_x={a.arg_x}>>{a.shr_x} "
                      f"arg_w={a.arg_w}>>{a.shr_w} arg_add={a.arg_add}"}


def _describe_upload(layer, b):
    shape = (b.channels, b.height, b.width)
    return {"input": shape, "output": shape, "in_addr": _main(b.main_mem_in_address),
            "out_addr": _kpu(b.kpu_mem_out_address), "out_bytes": b.channels * b.height * b.width}


def _describe_add_padding(layer, b):
    return {"input": (b.channels,), "output": (b.channels, 4, 4), "in_addr": _main(b.main_mem_in_address),
            "out_addr": _kpu(b.kpu_mem_out_address), "out_bytes": b.channels}


def _describe_binary(elem):
    def describe(layer, b):
        return {"input": (b.count,), "output": (b.count,), "out_bytes": b.count * elem,
                "in_addr": f"{_main(b.main_mem_in_a_address)} {_main(b.main_mem_in_b_address)}",
                "out_addr": _main(b.main_mem_out_address)}
    return describe


def _describe_gap(elem):
    def describe(layer, b):
        return {"input": (b.channels, b.kernel_size), "output": (b.channels,), "in_addr": _main(b.main_mem_in_address),
                "out_addr": _main(b.main_mem_out_address), "out_bytes": b.channels * elem}
    return describe


def _describe_pool(elem):
    def describe(layer, b):
        out = _chw(b.out_shape)
        return {"input": _chw(b.in_shape), "output": out, "in_addr": _main(b.main_mem_in_address),
                "out_addr": _main(b.main_mem_out_address), "out_bytes": int(np.prod(out)) * elem,
                "detail": f"k={b.kernel_width}x{b.kernel_height} s={b.stride_width}x{b.stride_height} "
                          f"p={b.padding_width}x{b.padding_height}"}
    return describe


def _describe_count(in_elem, out_elem, out_field="main_mem_out_address"):
    def describe(layer, b):
        row = _flat(b, b.count, in_elem, out_elem, out_field=out_field)
        if hasattr(b, "scale"):
            row["detail"] = f"scale={b.scale:.6g} bias={b.bias:.6g}"
        return row
    return describe


def _describe_channels(elem):
    return lambda layer, b: _flat(b, b.channels, elem, elem)


def _describe_concat(layer, b):
    ranges = layer.extra["ranges"]
    total = int(ranges[:, 1].sum()) if len(ranges) else 0
    return {"input": tuple(int(s) for s in ranges[:, 1]), "input_sizes": True, "output": (total,), "out_bytes": total,
            "in_addr": " ".join(_main(int(s)) for s in ranges[:, 0]), "out_addr": _main(b.main_mem_out_address)}


def _describe_fc(layer, b):
    return {**_flat(b, b.in_channels, 4, 4), "output": (b.out_channels,), "out_bytes": 4 * b.out_channels,
            "macs": b.in_channels * b.out_channels, "weights": 4 * (b.in_channels * b.out_channels + b.out_channels),
            "detail": FLOAT_ACTIVATIONS.get(b.act, f"act={b.act}")}


def _describe_flatten(elem):
    def describe(layer, b):
        shape = _chw(b.shape)
        return {**_flat(b, int(np.prod(shape)), elem, elem), "input": shape}
    return describe


def _describe_resize(elem):
    def describe(layer, b):
        out = (b.in_shape.channels, b.out_height, b.out_width)
        return {"input": _chw(b.in_shape), "output": out, "in_addr": _main(b.main_mem_in_address),
                "out_addr": _main(b.main_mem_out_address), "out_bytes": int(np.prod(out)) * elem}
    return describe


def _describe_channelwise(layer, b):
    return {**_flat(b, b.channels * b.channel_size, 1, 4), "input": (b.channels, b.channel_size)}


DESCRIBERS = {
    10240: _describe_conv, 10243: _describe_upload, 10241: _describe_add_padding,
    10242: lambda layer, b: {**_flat(b, b.channels, 1, 1), "input": (b.channels, 4, 4)},
    1: _describe_binary(4), 2: _describe_binary(1), 5: _describe_gap(4), 6: _describe_gap(1),
    7: _describe_pool(4), 8: _describe_pool(1), 9: _describe_pool(4),
    11: _describe_count(4, 1, out_field="mem_out_address"), 12: _describe_count(1, 4), 13: _describe_count(1, 1),
    14: _describe_channels(4), 15: _describe_channels(4), 25: _describe_channels(4),
    16: _describe_concat, 17: _describe_concat, 18: _describe_fc,
    20: _describe_flatten(4), 21: _describe_flatten(1), 22: _describe_resize(4), 23: _describe_resize(1),
    24: _describe_channelwise,
}


# ---- the parsed file --------------------------------------------------------------------------------------
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
            field = "output_count" if len(HEADER) + 8 * h.output_count > len(data) else "layers_length"
            raise KModelFormatError(f"{h.output_count} outputs and {h.layers_length} layers need {tables_end} bytes "
                                    f"of tables; the file has {len(data)}", 24 if field == "output_count" else 12,
                                    field)
        outputs = read_array(data, len(HEADER), "<u4", 2 * h.output_count, "outputs").reshape(-1, 2)
        self.outputs = [(int(a), int(s)) for a, s in outputs]
        table_at = len(HEADER) + 8 * h.output_count
        headers = read_array(data, table_at, "<u4", 2 * h.layers_length, "layer_headers").reshape(-1, 2)
        self.layers = []
        pos = tables_end
        for i, (code, size) in enumerate(headers.tolist()):
            last = i == len(headers) - 1
            if pos + size > len(data) + (LAST_BODY_SHORTFALL if last else 0):
                raise KModelFormatError(f"layer {i} body of {size} bytes at offset {pos} runs past the end of the "
                                        f"file ({len(data)} bytes)", table_at + 8 * i + 4, f"layers[{i}].body_size")
            if code not in LAYER_TYPES:
                raise KModelFormatError(f"layer {i} has unknown type {code}", table_at + 8 * i, f"layers[{i}].type")
            self.layers.append(self._parse_layer(i, code, pos, size))
            pos += size

    @classmethod
    def from_bytes(cls, data):
        return cls(data)

    def __getattr__(self, name):              # header fields: version, flags, arch, layers_length, ...
        header = self.__dict__.get("header")
        if header is not None and name in HEADER.fields:
            return getattr(header, name)
        raise AttributeError(name)

    @property
    def eight_bit(self):
        return bool(self.header.flags & 1)

    def _parse_layer(self, index, code, offset, size):
        where = f"layers[{index}]"
        available = max(0, min(offset + size, len(self.data)) - offset)
        definition = body_struct(code)
        body = None
        if definition is not None:
            if len(definition) > available:
                raise KModelFormatError(f"layer {index} ({LAYER_TYPES[code][0]}) body has {available} bytes, its "
                                        f"structure needs {len(definition)}", offset, f"{where}.body_size")
            body = read_struct(definition, self.data, offset, where)
        layer = Layer(index, code, offset, size, body, available)
        parse = EXTRA_PARSERS.get(code)
        if parse is not None:
            parse(self, layer, where)
        check_described(f"{where} ({layer.name})", layer.describe(), offset)     # every shape it implies, bounded
        return layer

    # ---- printing ----------------------------------------------------------------------------------------
    def summary(self):
        """The layer table as rows: index, type, unit (KPU/CPU), shapes, addresses, sizes, MACs."""
        rows = []
        for layer in self.layers:
            d = layer.describe()
            macs = int(d["macs"]) // (16 if self._padded_dense(layer) else 1)
            rows.append({"index": layer.index, "type": layer.name, "unit": "KPU" if layer.on_kpu else "CPU",
                         "input": d["input"], "output": d["output"], "in_addr": d["in_addr"],
                         "out_addr": d["out_addr"], "out_bytes": d["out_bytes"], "macs": macs,
                         "weights": int(d["weights"]), "offset": layer.offset, "body": layer.body_size,
                         "detail": d["detail"]})
        return rows

    def _padded_dense(self, layer):
        """A dense layer computed on one pixel of a 4x4 KPU map: a KPU conv after K210_ADD_PADDING, or one whose
        output the next layer gathers down to one value per channel (the window form)."""
        if not layer.on_kpu or not layer.index:
            return False
        if self.layers[layer.index - 1].name == "K210_ADD_PADDING":
            return True
        after = self.layers[layer.index + 1] if layer.index + 1 < len(self.layers) else None
        out = tuple(layer.describe()["output"])
        return (after is not None and after.name == "QUANTIZED_CONCAT" and out[1:] == (4, 4)
                and int(after.describe()["out_bytes"]) == out[0])

    def totals(self, rows=None):
        rows = self.summary() if rows is None else rows
        macs = sum(r["macs"] for r in rows)
        kpu = sum(r["macs"] for r in rows if r["unit"] == "KPU")
        return {"file size": len(self.data), "layers": len(rows),
                "KPU layers": sum(r["unit"] == "KPU" for r in rows),
                "main memory": self.header.main_mem_usage,
                "outputs": ", ".join(f"m:{a} ({s} B)" for a, s in self.outputs),
                "MACs": macs, "MACs on KPU": f"{100.0 * kpu / macs:.1f}%" if macs else "-",
                "weight bytes": sum(r["weights"] for r in rows)}

    def warnings(self):
        """Layers whose result depends on a quirk of the SDK loader: CPU pools with windows that start 2+ pixels
        past the map's edge, which kpu.c's unsigned window end makes read the next row / channel (or past the
        input tensor) instead of nothing."""
        found = []
        for layer in self.layers:
            if layer.code not in (8, 9) or layer.body is None:
                continue
            b = layer.body
            n = pool_wraps((b.in_shape.height, b.in_shape.width), (b.out_shape.height, b.out_shape.width),
                           (b.kernel_height, b.kernel_width), (b.stride_height, b.stride_width),
                           (b.padding_height, b.padding_width))
            if n:
                found.append(f"WARNING: layer {layer.index} ({layer.name}): {n} window(s) per channel start 2+ "
                             f"pixels past the {b.in_shape.height}x{b.in_shape.width} input; kpu.c's unsigned window "
                             f"end makes them read the next row / channel and, in the last channel, main memory past "
                             f"the input (emc simulates this; the result depends on those bytes)")
        return found

    def report(self):
        """The layer table and totals as an emc.report.Report."""
        from ....report import Report
        h = self.header
        rows = self.summary()
        report = Report(f"kmodel v3: {len(self.layers)} layers, {'8' if h.flags & 1 else '16'}-bit weights, "
                        f"main memory {h.main_mem_usage} bytes, {h.output_count} output(s)",
                        ["index", "type", "unit", "input", "output", "in_addr", "out_addr", "out_bytes", "macs",
                         "weights", "body", "detail"], rows, self.totals(rows), notes=self.warnings())
        return report

    def __str__(self):
        return self.report().table()

    def _repr_html_(self):
        return self.report()._repr_html_()


# ---- trailing blocks of some layer types ------------------------------------------------------------------
def _conv_blocks(model, layer, where):
    b = layer.body
    data = model.data
    if b.layer_offset + LAYER_ARG_BYTES > len(data):
        raise KModelFormatError(f"K210_CONV layer argument at {b.layer_offset} runs past the end of the file",
                                layer.offset + 8, f"{where}.layer_offset")
    layer.arg = a = LayerArgument.from_bytes(data, b.layer_offset)
    wbytes = 1 if model.header.flags & 1 else 2
    count = a.weight_count()
    if b.weights_offset + count * wbytes > len(data):
        raise KModelFormatError(f"K210_CONV weights ({count} x {wbytes} bytes) at {b.weights_offset} run past the "
                                f"end of the file", layer.offset + 12, f"{where}.weights_offset")
    w = read_array(data, b.weights_offset, "<u1" if wbytes == 1 else "<u2", count, f"{where}.weights")
    c_out, c_in, k = a.out_shape[0], a.in_shape[0], a.kernel
    layer.weights = w.reshape(c_out, k, k) if a.depthwise else w.reshape(c_out, c_in, k, k)
    if b.bn_offset + 8 * c_out > len(data):
        raise KModelFormatError(f"K210_CONV batch-norm table ({c_out} x 8 bytes) at {b.bn_offset} runs past the "
                                f"end of the file", layer.offset + 16, f"{where}.bn_offset")
    layer.bn = decode_bn_table(data, c_out, b.bn_offset)
    if b.act_offset + ACT_TABLE_BYTES > len(data):
        raise KModelFormatError(f"K210_CONV activation table at {b.act_offset} runs past the end of the file",
                                layer.offset + 20, f"{where}.act_offset")
    layer.act = ActTable.from_bytes(data, b.act_offset)


def _need(layer, nbytes, field, what):
    if nbytes > layer.available:
        raise KModelFormatError(f"layer {layer.index} ({layer.name}): {what} needs {nbytes} body bytes, the file "
                                f"holds {layer.available}", layer.offset, field)


def _fully_connected(model, layer, where):
    b = layer.body
    n_w = b.in_channels * b.out_channels
    _need(layer, 24 + 4 * (n_w + b.out_channels), f"{where}.in_channels",
          f"{b.in_channels}x{b.out_channels} float weights and bias")
    start = layer.offset + 24
    layer.extra["weights"] = read_array(model.data, start, "<f4", n_w, f"{where}.weights").reshape(
        b.out_channels, b.in_channels)
    layer.extra["bias"] = read_array(model.data, start + 4 * n_w, "<f4", b.out_channels, f"{where}.bias")


def _concat(model, layer, where):
    n = layer.body.input_count
    _need(layer, 12 + 8 * n, f"{where}.input_count", f"{n} input ranges")
    layer.extra["ranges"] = read_array(model.data, layer.offset + 12, "<u4", 2 * n, f"{where}.inputs_mem") \
        .reshape(n, 2).astype(np.int64)


def _channelwise(model, layer, where):
    c = layer.body.channels
    _need(layer, 20 + 8 * c, f"{where}.channels", f"{c} (scale, bias) pairs")
    params = read_array(model.data, layer.offset + 20, "<f4", 2 * c, f"{where}.quant_params").reshape(c, 2)
    layer.extra["scale"], layer.extra["bias"] = params[:, 0], params[:, 1]


def _requantize(model, layer, where):
    layer.extra["table"] = np.array(list(layer.body.table), np.uint8)


EXTRA_PARSERS = {10240: _conv_blocks, 18: _fully_connected, 16: _concat, 17: _concat, 24: _channelwise,
                 13: _requantize}
