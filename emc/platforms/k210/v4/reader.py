"""kmodel v4 reader: parses any v4 file (nncase v0.2's, emc's) into a printable object that re-encodes itself.

Every size, count and offset is checked against the file before use; a broken file raises KModelFormatError
naming the offset and the field, and nothing is allocated beyond what the file's own bytes justify.
"""
import numpy as np

from ....errors import KModelFormatError
from ..chip.bounds import check_described
from ..chip.layer_types import OPCODES
from ..chip.kpu import ACT_TABLE_BYTES, ActTable, LayerArgument, decode_bn_table, encode_bn_table, kpu_rows
from .structs import BINARY_OPS, DATATYPES, K210_SRAM, KPU_RAM_BYTES, MEMORY_TYPES, MODEL_IDENTIFIER, \
    MODEL_VERSION, NNIL_OPS, NNIL_STACK, REDUCE_OPS, RESIZE_MODES, TARGETS, UNARY_OPS, struct
from .describe import DESCRIBERS, describe_io

HEADER = struct("model_header")
RANGE = struct("memory_range")
NODE_HEADER = struct("node_header")
RANGE_BYTES = len(RANGE)
SHAPE_BYTES = 16
BODY_ALIGN = 8
HEADER_OFFSETS = {"inputs": 28, "outputs": 32, "constants": 16, "nodes": 24}      # where the counts are


class MemoryRange(tuple):
    """(memory_type, datatype, start, size) of a v4 memory_range; str() gives 'main:f32[start+size]'."""

    __slots__ = ()

    def __new__(cls, memory_type, datatype, start, size):
        return super().__new__(cls, (int(memory_type), int(datatype), int(start), int(size)))

    memory_type = property(lambda self: self[0])
    datatype = property(lambda self: self[1])
    start = property(lambda self: self[2])
    size = property(lambda self: self[3])
    memory = property(lambda self: MEMORY_TYPES.get(self[0], f"mem{self[0]}"))
    dtype = property(lambda self: DATATYPES.get(self[1], (f"dt{self[1]}", 1))[0])
    itemsize = property(lambda self: DATATYPES.get(self[1], ("", 1))[1])

    @classmethod
    def of(cls, raw):
        return cls(raw.memory_type, raw.datatype, raw.start, raw.size)

    @property
    def absent(self):
        return self == (0, 0, 0, 0)

    def to_bytes(self):
        return np.array(self, "<u4").tobytes()

    def __str__(self):
        return f"{self.memory}:{self.dtype}[{self.start}+{self.size}]"

    __repr__ = __str__


class BodyReader:
    """A bounds-checked cursor over one node body (what nncase's span_reader does without checks)."""

    def __init__(self, data, start, end, where):
        self.data, self.pos, self.end, self.where = data, start, end, where

    def need(self, nbytes, field, what):
        if nbytes < 0 or self.pos + nbytes > self.end:
            raise KModelFormatError(f"{self.where}: {what} needs {nbytes} bytes, the body has "
                                    f"{max(0, self.end - self.pos)} left", self.pos, f"{self.where}.{field}")

    def struct(self, definition, field):
        self.need(len(definition), field, definition.__name__)
        value = definition(self.data[self.pos:self.pos + len(definition)])
        self.pos += len(definition)
        return value

    def array(self, dtype, count, field):
        dtype = np.dtype(dtype)
        if count < 0:
            raise KModelFormatError(f"{self.where}: negative element count {count}", self.pos, f"{self.where}.{field}")
        self.need(count * dtype.itemsize, field, f"{count} x {dtype.name}")
        out = np.frombuffer(self.data, dtype, count, self.pos).copy()
        self.pos += count * dtype.itemsize
        return out

    def skip(self, count, field):
        self.need(count, field, f"a skip of {count} bytes")
        self.pos += count

    def rest(self):
        out = self.data[self.pos:self.end]
        self.pos = self.end
        return out


class Node:
    """One v4 node: opcode, name, unit, where its body is, the decoded fixed part (body) and its tail (extra)."""

    def __init__(self, index, opcode, offset, body_size, body):
        self.index, self.opcode, self.offset, self.body_size, self.body = index, opcode, offset, body_size, body
        self.name, _, self.unit = OPCODES[opcode]
        if self.name == "kpu_upload":          # a k210 op, but the CPU copies the map into KPU RAM (v3: K210_UPLOAD)
            self.unit = "CPU"
        self.extra = {}
        self.arg = self.bn = self.act = self.weights = self.skips = None      # kpu_conv2d
        self.content_end = None                 # file offset where the decoded content ends (padding follows)

    @property
    def on_kpu(self):
        return self.unit == "KPU"

    def range(self, field):
        return MemoryRange.of(getattr(self.body, field))

    def shape(self, field):
        return tuple(int(v) for v in getattr(self.body, field))

    def describe(self):
        """dict(input=shape, output=shape, memory='in -> out', macs, weights=bytes, detail) for tables."""
        info = DESCRIBERS.get(self.name, describe_io)(self)
        info.setdefault("macs", 0)
        info.setdefault("weights", 0)
        info.setdefault("detail", "")
        return info

    def __repr__(self):
        return f"<node {self.index} {self.name} @{self.offset} size={self.body_size}>"


# ---- the model ---------------------------------------------------------------------------------------------------
class KModelV4:
    """A parsed kmodel v4: header, inputs (+ shapes), outputs, constants image, nodes."""

    version = 4

    def __init__(self, data, header, inputs, input_shapes, outputs, constants, nodes, bodies_start):
        self.data, self.header = data, header
        self.inputs, self.input_shapes, self.outputs = inputs, input_shapes, outputs
        self.constants, self.nodes, self.bodies_start = constants, nodes, bodies_start

    @property
    def main_mem(self):
        return self.header.main_mem

    @classmethod
    def from_bytes(cls, data):
        """Parse a v4 file; KModelFormatError (with offset and field) for anything truncated or inconsistent."""
        data = bytes(data)
        if len(data) < len(HEADER):
            raise KModelFormatError(f"truncated file: the v4 header needs {len(HEADER)} bytes, the file has "
                                    f"{len(data)}", 0, "model_header")
        h = HEADER(data[:len(HEADER)])
        if h.identifier != MODEL_IDENTIFIER:
            raise KModelFormatError(f"not a kmodel v4: identifier {data[:4]!r}, expected b'LDMK'", 0, "identifier")
        if h.version != MODEL_VERSION:
            raise KModelFormatError(f"kmodel v4 header with version {h.version}; only version 4 is defined", 4,
                                    "version")
        if h.target not in TARGETS:
            raise KModelFormatError(f"target {h.target} is neither 0 (cpu) nor 1 (k210)", 12, "target")
        if h.main_mem > K210_SRAM:
            raise KModelFormatError(f"main_mem {h.main_mem} bytes exceeds the K210's {K210_SRAM} bytes of SRAM", 20,
                                    "main_mem")
        limits = {0: h.constants, 1: h.main_mem, 2: KPU_RAM_BYTES}
        pos = len(HEADER)
        tables = [("inputs", 2 * RANGE_BYTES * h.inputs), ("outputs", RANGE_BYTES * h.outputs),
                  ("constants", h.constants), ("nodes", 8 * h.nodes)]
        need = pos
        for field, nbytes in tables:
            need += nbytes
            if need > len(data):
                raise KModelFormatError(f"the header's {field} ({getattr(h, field)}) needs tables up to byte {need}; "
                                        f"the file has {len(data)} bytes", HEADER_OFFSETS[field], field)
        inputs = []
        for i in range(h.inputs):
            inputs.append(_range(data, pos, limits, f"inputs[{i}]"))
            pos += RANGE_BYTES
        input_shapes = []
        for i in range(h.inputs):
            shape = tuple(int(v) for v in np.frombuffer(data, "<i4", 4, pos))
            if min(shape) < 1 or input_bytes(inputs[i], shape) > inputs[i].size:
                raise KModelFormatError(f"input {i} shape {shape} does not fit its range {inputs[i]}", pos,
                                        f"input_shapes[{i}]")
            input_shapes.append(shape)
            pos += SHAPE_BYTES
        outputs = []
        for i in range(h.outputs):
            outputs.append(_range(data, pos, limits, f"outputs[{i}]"))
            pos += RANGE_BYTES
        constants = data[pos:pos + h.constants]
        pos += h.constants
        headers = []
        for i in range(h.nodes):
            nh = NODE_HEADER(data[pos:pos + 8])
            headers.append((pos, nh.opcode, nh.body_size))
            pos += 8
        model = cls(data, h, inputs, input_shapes, outputs, constants, [], pos)
        for i, (header_at, opcode, size) in enumerate(headers):
            if opcode not in OPCODES:
                raise KModelFormatError(f"node {i} has unknown opcode {opcode:#x}; nncase v0.2 defines "
                                        f"0x00-0x14, 0x1001-0x1005, 0x2001-0x2002", header_at, f"nodes[{i}].opcode")
            end = pos + size
            if end > len(data) and not (i == len(headers) - 1 and end - len(data) < BODY_ALIGN):
                raise KModelFormatError(f"node {i} ({OPCODES[opcode][0]}) body of {size} bytes runs past the end "
                                        f"of the file ({len(data)} bytes)", header_at + 4, f"nodes[{i}].body_size")
            model.nodes.append(_parse_node(model, limits, i, opcode, pos, size, min(end, len(data))))
            pos = end
        return model

    # ---- encoding ----------------------------------------------------------------------------------------------
    def to_bytes(self):
        """The file re-encoded from the decoded parts (every body padded to its body_size with zeros)."""
        parts = [self.header.dumps()]
        parts += [r.to_bytes() for r in self.inputs]
        parts += [np.array(s, "<i4").tobytes() for s in self.input_shapes]
        parts += [r.to_bytes() for r in self.outputs]
        parts.append(bytes(self.constants))
        parts += [np.array([n.opcode, n.body_size], "<u4").tobytes() for n in self.nodes]
        for node in self.nodes:
            body = encode_body(node)
            parts.append(body + bytes(max(0, node.body_size - len(body))))
        return b"".join(parts)

    # ---- printing -------------------------------------------------------------------------------------------------
    def summary(self):
        """One dict per node: index, type (opcode name), unit, input/output shapes, memory ranges, body bytes, MACs, weights."""
        rows = []
        for node in self.nodes:
            info = node.describe()
            rows.append({"index": node.index, "type": node.name, "unit": node.unit, "input": info.get("input"),
                         "output": info.get("output"), "memory": info.get("memory", ""), "body": node.body_size,
                         "macs": int(info["macs"]) // (16 if self._padded_dense(node.index) else 1),
                         "weights": int(info["weights"]), "detail": info["detail"]})
        return rows

    def _padded_dense(self, index):
        """A dense layer computed on one pixel of a 4x4 KPU map: a KPU conv fed by pad + kpu_upload of a 1x1 map,
        or one whose output the next node slices down to one value per channel (the window form)."""
        if self.nodes[index].name != "kpu_conv2d" or index < 2:
            return False
        pad, upload = self.nodes[index - 2], self.nodes[index - 1]
        if pad.name == "pad" and upload.name == "kpu_upload" and tuple(pad.shape("in_shape"))[2:] == (1, 1):
            return True
        after = self.nodes[index + 1] if index + 1 < len(self.nodes) else None
        out = tuple(self.nodes[index].describe()["output"])
        return (after is not None and after.name == "strided_slice" and out[2:] == (4, 4)
                and int(np.prod(after.describe()["output"])) == out[1])

    def totals(self, rows=None):
        rows = self.summary() if rows is None else rows
        macs = sum(r["macs"] for r in rows)
        kpu = sum(r["macs"] for r in rows if r["unit"] == "KPU")
        return {"file size": len(self.data), "nodes": len(rows),
                "KPU / CPU nodes": f"{sum(r['unit'] == 'KPU' for r in rows)} / {sum(r['unit'] == 'CPU' for r in rows)}",
                "main memory": self.header.main_mem, "constants": self.header.constants,
                "inputs": ", ".join(f"{r} shape {'x'.join(map(str, s))}"
                                    for r, s in zip(self.inputs, self.input_shapes)),
                "outputs": ", ".join(map(str, self.outputs)),
                "MACs": macs, "MACs on KPU": f"{100.0 * kpu / macs:.1f}%" if macs else "-",
                "weight bytes": sum(r["weights"] for r in rows)}

    def report(self):
        """The layer table and totals as an emc.report.Report."""
        from ....report import Report
        h = self.header
        rows = self.summary()
        notes = []
        if h.reserved0:
            notes.append(f"header reserved0 = {h.reserved0:#x} (left uninitialised by the writer)")
        garbage = [n.index for n in self.nodes if n.extra.get("act_high_bits") is not None
                   and n.extra["act_high_bits"].any()]
        if garbage:
            notes.append(f"activation tables with non-zero bits 60-63 (MSVC garbage, ignored): nodes "
                         f"{', '.join(map(str, garbage))}")
        report = Report(f"kmodel v4 (target {TARGETS.get(h.target, h.target)}): {len(self.nodes)} nodes, "
                        f"{h.inputs} input(s), {h.outputs} output(s)",
                        ["index", "type", "unit", "input", "output", "memory", "body", "macs", "weights", "detail"],
                        rows, self.totals(rows), notes)
        return report

    def __str__(self):
        return self.report().table()

    def _repr_html_(self):
        return self.report()._repr_html_()


def input_bytes(r, shape):
    """Bytes an input of this N C H W shape takes in its memory: dense in main memory, KPU layout in KPU RAM."""
    n, c, h, w = shape
    if r.memory_type == 2:
        return n * kpu_rows(w, h, c) * 64
    return n * c * h * w * r.itemsize


def _range(data, offset, limits, field):
    """A memory_range from the file, checked: known memory type and datatype, inside its memory."""
    r = MemoryRange.of(RANGE(data[offset:offset + RANGE_BYTES]))
    check_range(r, limits, offset, field)
    return r


def check_range(r, limits, offset, field):
    if r.memory_type not in MEMORY_TYPES:
        raise KModelFormatError(f"{field}: memory type {r.memory_type} is none of 0 (const), 1 (main), 2 (kpu)",
                                offset, f"{field}.memory_type")
    if r.datatype not in DATATYPES:
        raise KModelFormatError(f"{field}: datatype {r.datatype} is neither 0 (float32) nor 1 (uint8)", offset + 4,
                                f"{field}.datatype")
    limit = limits[r.memory_type]
    if r.start + r.size > limit:
        raise KModelFormatError(f"{field}: range {r} runs past the {limit} bytes of {r.memory} memory", offset + 8,
                                f"{field}.start")


# ---- node bodies -------------------------------------------------------------------------------------------------
def _parse_node(model, limits, index, opcode, offset, body_size, end):
    name, struct_name, _ = OPCODES[opcode]
    where = f"nodes[{index}]"
    reader = BodyReader(model.data, offset, end, where)
    definition = struct(struct_name)
    body = reader.struct(definition, name)
    node = Node(index, opcode, offset, body_size, body)
    for field in definition.__fields__:
        if field.type is RANGE:
            check_range(MemoryRange.of(getattr(body, field.name)), limits, offset + field.offset,
                        f"{where}.{field.name}")
    for field, table in ENUM_FIELDS.get(name, ()):
        value = getattr(body, field)
        if value not in table:
            known = ", ".join(f"{k} ({v})" for k, v in table.items())
            raise KModelFormatError(f"{where} ({name}): {field} {value} is not one of {known}",
                                    offset + OFFSETS[name][field], f"{where}.{field}")
    for field in SHAPE_FIELDS.get(name, ()):
        if min(getattr(body, field)) < 0:
            raise KModelFormatError(f"{where} ({name}): {field} {list(getattr(body, field))} has a negative "
                                    f"dimension", offset + OFFSETS[name][field], f"{where}.{field}")
    for field in POSITIVE_FIELDS.get(name, ()):
        if getattr(body, field) <= 0:
            raise KModelFormatError(f"{where} ({name}): {field} must be positive, not {getattr(body, field)}",
                                    offset + OFFSETS[name][field], f"{where}.{field}")
    check = CHECKS.get(name)
    if check is not None:
        problem = check(body)
        if problem:
            field = problem[0].split(".")[0]
            raise KModelFormatError(f"{where} ({name}): {problem[1]}", offset + OFFSETS[name][field],
                                    f"{where}.{problem[0]}")
    tail = TAIL_PARSERS.get(name)
    if tail is not None:
        tail(node, reader, limits)
    node.content_end = reader.pos
    _check_bounds(node, where)
    return node


def _check_bounds(node, where):
    """Every shape the node declares (and the ones its description derives) bounded, per dimension."""
    extra = [(field, node.shape(field)) for field in SHAPE_FIELDS.get(node.name, ())]
    if node.name == "kpu_upload" and min(node.shape("in_shape")) < 1:
        raise KModelFormatError(f"{where} (kpu_upload): in_shape {node.shape('in_shape')} has an empty dimension; a "
                                f"KPU map has at least one pixel", node.offset + OFFSETS["kpu_upload"]["in_shape"],
                                f"{where}.in_shape")
    if node.name == "resize_image":
        n, c = node.shape("in_shape")[:2]
        extra.append(("out_h", (n, c, node.body.out_h, node.body.out_w)))
    check_described(f"{where} ({node.name})", node.describe(), node.offset, extra)


OFFSETS = {name: {f.name: f.offset for f in struct(struct_name).__fields__}      # field -> offset in the body
           for name, struct_name, _ in OPCODES.values()}
_WINDOW = ("stride_h", "stride_w", "dilation_h", "dilation_w")
ENUM_FIELDS = {
    "binary": [("binary_op", BINARY_OPS)], "quantized_binary": [("binary_op", BINARY_OPS)],
    "reduce": [("reduce_op", REDUCE_OPS)], "reduce_window2d": [("reduce_op", REDUCE_OPS)],
    "cpu_reduce_window2d": [("reduce_op", {k: v for k, v in REDUCE_OPS.items() if v != "sum"})],
    "unary": [("unary_op", UNARY_OPS)], "resize_image": [("mode", RESIZE_MODES)],
}
SHAPE_FIELDS = {
    "binary": ("in_a_shape", "in_b_shape", "out_shape"), "quantized_binary": ("in_a_shape", "in_b_shape", "out_shape"),
    "conv2d": ("in_shape",), "quantized_conv2d": ("in_shape",), "conv2d_transpose": ("in_shape", "out_shape"),
    "pad": ("in_shape",), "reduce": ("in_shape", "out_shape"), "reduce_window2d": ("in_shape",),
    "resize_image": ("in_shape",), "transpose": ("in_shape",), "strided_slice": ("in_shape",),
    "cpu_conv2d": ("in_shape",), "cpu_depthwise_conv2d": ("in_shape",), "cpu_reduce_window2d": ("in_shape",),
    "cpu_quantized_conv2d": ("in_shape",), "cpu_quantized_depthwise_conv2d": ("in_shape",),
    "kpu_upload": ("in_shape",),
}
POSITIVE_FIELDS = {
    "conv2d": ("groups",) + _WINDOW, "quantized_conv2d": ("groups",) + _WINDOW,
    "conv2d_transpose": ("groups",) + _WINDOW, "reduce_window2d": _WINDOW, "cpu_reduce_window2d": _WINDOW,
    "cpu_conv2d": _WINDOW, "cpu_depthwise_conv2d": _WINDOW, "cpu_quantized_conv2d": _WINDOW,
    "cpu_quantized_depthwise_conv2d": _WINDOW,
}

CHECKS = {      # op -> body -> None, or (field, what is wrong): what the runtime would loop, crash or read garbage on
    "transpose": lambda b: None if sorted(b.perm) == [0, 1, 2, 3] else ("perm", f"perm {list(b.perm)} is not a "
                                                                                 f"permutation of 0, 1, 2, 3"),
    "strided_slice": lambda b: ("strides", f"a zero stride in {list(b.strides)} loops forever") if 0 in b.strides
    else None,
    "softmax": lambda b: ("outer_size", f"negative sizes inner={b.inner_size} outer={b.outer_size}")
    if min(b.inner_size, b.outer_size) < 0 else None,
    "table_lookup1d": lambda b: None if b.input.datatype == 1 else ("input.datatype", "the input must be uint8"),
    "pad": lambda b: None if b.input.datatype in (0, 1) else ("input.datatype", "unknown element type"),
}


def _nonneg(node, *fields):
    for field in fields:
        if getattr(node.body, field) < 0:
            raise KModelFormatError(f"nodes[{node.index}] ({node.name}): {field} {getattr(node.body, field)} is "
                                    f"negative", node.offset + OFFSETS[node.name][field],
                                    f"nodes[{node.index}].{field}")


def _grouped_weights(node, out_channels, in_channels):
    """C's (size_t)oc * ic / groups * fh * fw, with ic and oc required to be multiples of groups."""
    b = node.body
    _nonneg(node, "filter_h", "filter_w")
    if in_channels % b.groups or out_channels % b.groups:
        raise KModelFormatError(f"nodes[{node.index}] ({node.name}): {in_channels} input and {out_channels} output "
                                f"channels are not multiples of groups={b.groups}", node.offset,
                                f"nodes[{node.index}].groups")
    return out_channels * in_channels // b.groups * b.filter_h * b.filter_w


def _tail_concat(node, reader, limits):
    n = node.body.inputs_count
    reader.need(20 * n, "inputs", f"{n} inputs")
    ranges = []
    for i in range(n):
        at = reader.pos
        r = MemoryRange.of(reader.struct(RANGE, f"inputs[{i}]"))
        check_range(r, limits, at, f"nodes[{node.index}].inputs[{i}]")
        ranges.append(r)
    node.extra["inputs"] = ranges
    node.extra["dims"] = reader.array("<i4", n, "dims")
    if n and node.extra["dims"].min() < 0:
        raise KModelFormatError(f"nodes[{node.index}] (concat): negative dims {node.extra['dims'].tolist()}",
                                node.offset, f"nodes[{node.index}].dims")


def _tail_conv2d(node, reader, limits):
    b = node.body
    _nonneg(node, "out_channels")
    node.extra["weights"] = reader.array("<f4", _grouped_weights(node, b.out_channels, b.in_shape[1]), "weights")
    node.extra["bias"] = reader.array("<f4", b.out_channels, "bias")


def _tail_quantized_conv2d(node, reader, limits):
    b = node.body
    _nonneg(node, "out_channels")
    count = _grouped_weights(node, b.out_channels, b.in_shape[1])
    node.extra["bias"] = reader.array("<i4", b.out_channels, "bias")
    node.extra["weights"] = reader.array("u1", count, "weights")


def _tail_conv2d_transpose(node, reader, limits):
    b = node.body
    oc = b.out_shape[1]
    node.extra["weights"] = reader.array("<f4", _grouped_weights(node, oc, b.in_shape[1]), "weights")
    node.extra["bias"] = reader.array("<f4", oc, "bias")


def _tail_matmul(node, reader, limits):
    _nonneg(node, "a_rows", "a_cols", "b_cols")
    node.extra["bias"] = reader.array("<f4", node.body.b_cols, "bias")


def _tail_quantized_matmul(node, reader, limits):
    _nonneg(node, "a_rows", "a_cols", "b_cols")
    node.extra["bias"] = reader.array("<i4", node.body.b_cols, "bias")


def _tail_nnil(node, reader, limits):
    at = reader.pos
    code = reader.rest()
    node.extra["code"] = code
    node.extra["program"] = decode_nnil(code, at, f"nodes[{node.index}].body")


def _cpu_conv_tail(weights_dtype, bias_dtype, depthwise):
    def parse(node, reader, limits):
        b = node.body
        _nonneg(node, "filter_h", "filter_w")
        channels = b.in_shape[3]
        if depthwise:
            oc, count = channels, channels * b.filter_h * b.filter_w
        else:
            _nonneg(node, "out_channels")
            oc, count = b.out_channels, b.out_channels * b.filter_h * b.filter_w * channels
        node.extra["weights"] = reader.array(weights_dtype, count, "weights")
        node.extra["bias"] = reader.array(bias_dtype, oc, "bias")
    return parse


def _tail_kpu_conv2d(node, reader, limits):
    where = f"nodes[{node.index}]"
    arg = LayerArgument.from_bytes(reader.data, node.offset + 24)      # the 12 words the fixed part ends with
    node.arg = arg
    if node.body.batches < 0:
        raise KModelFormatError(f"{where} (kpu_conv2d): negative batches {node.body.batches}", node.offset + 16,
                                f"{where}.batches")
    problems = arg.problems()                   # unknown kernel or pool, shapes the pooling cannot give, ...
    if problems:
        field, problem = problems[0]
        raise KModelFormatError(f"{where} (kpu_conv2d): {problem}", node.offset + 24, f"{where}.layer.{field}")
    c_in, h, w = arg.in_shape
    c_out, oh, ow = arg.out_shape
    batches = node.body.batches
    for label, line, rows in (("input", arg.image_src_addr, kpu_rows(w, h, c_in)),
                              ("output", arg.image_dst_addr, kpu_rows(ow, oh, c_out))):
        if (line + rows * batches) * 64 > KPU_RAM_BYTES:
            raise KModelFormatError(f"{where} (kpu_conv2d): {batches} {label} map(s) at line {line} run past the "
                                    f"2 MiB KPU RAM", node.offset + 24 + 8,
                                    f"{where}.layer.image_{'src' if label == 'input' else 'dst'}_addr")
    main_out = node.range("main_mem_output")
    if main_out.size and batches * c_out * oh * ow > limits[main_out.memory_type] - main_out.start:
        raise KModelFormatError(f"{where} (kpu_conv2d): the {batches}x{c_out}x{oh}x{ow} output does not fit "
                                f"{main_out.memory} memory at {main_out.start}", node.offset,
                                f"{where}.main_mem_output")
    skips = (arg.bwsx_base_addr, arg.active_addr, arg.para_start_addr)
    node.skips = skips
    reader.skip(skips[0], "layer.bwsx_base_addr")
    at = reader.pos
    reader.need(8 * c_out, "batch_norm", f"{c_out} batch-norm entries")
    node.bn = decode_bn_table(reader.data, c_out, at)
    reader.pos += 8 * c_out
    reader.skip(skips[1], "layer.active_addr")
    at = reader.pos
    reader.need(ACT_TABLE_BYTES, "activation", "the activation table")
    node.act = ActTable.from_bytes(reader.data, at)
    node.extra["act_high_bits"] = (np.frombuffer(reader.data, "<u8", 16, at) >> np.uint64(60)).astype(np.uint8)
    reader.pos += ACT_TABLE_BYTES
    reader.skip(skips[2], "layer.para_start_addr")
    weights = reader.array("u1", arg.weight_count(), "weights")
    k = arg.kernel
    node.weights = weights.reshape(c_out, k, k) if arg.depthwise else weights.reshape(c_out, c_in, k, k)


TAIL_PARSERS = {
    "concat": _tail_concat, "conv2d": _tail_conv2d, "quantized_conv2d": _tail_quantized_conv2d,
    "conv2d_transpose": _tail_conv2d_transpose, "matmul": _tail_matmul, "quantized_matmul": _tail_quantized_matmul,
    "nnil_unary_method": _tail_nnil,
    "cpu_conv2d": _cpu_conv_tail("<f4", "<f4", False), "cpu_depthwise_conv2d": _cpu_conv_tail("<f4", "<f4", True),
    "cpu_quantized_conv2d": _cpu_conv_tail("u1", "<i4", False),
    "cpu_quantized_depthwise_conv2d": _cpu_conv_tail("u1", "<i4", True),
    "kpu_conv2d": _tail_kpu_conv2d,
}

# order of the tail arrays, for re-encoding
TAIL_ORDER = {
    "conv2d": ("weights", "bias"), "quantized_conv2d": ("bias", "weights"), "conv2d_transpose": ("weights", "bias"),
    "matmul": ("bias",), "quantized_matmul": ("bias",), "cpu_conv2d": ("weights", "bias"),
    "cpu_depthwise_conv2d": ("weights", "bias"), "cpu_quantized_conv2d": ("weights", "bias"),
    "cpu_quantized_depthwise_conv2d": ("weights", "bias"),
}


_UNARY = ("abs", "ceil", "cos", "exp", "floor", "log", "neg", "rsqrt", "sin", "square")
_BINARY = ("add", "sub", "mul", "div", "min", "max")
NNIL_EFFECTS = {"nop": (0, 0), "dup": (1, 2), "pop": (1, 0), "lda_0": (0, 1), "ldc_r4_0": (0, 1), "ldc_r4_1": (0, 1),
                "ldc_r4": (0, 1), "clamp": (3, 1), "ret": (1, 0), **{op: (1, 1) for op in _UNARY},
                **{op: (2, 1) for op in _BINARY}}          # (values popped, values pushed)


def decode_nnil(code, offset, field):
    """The nnil program up to its ret as [(op name, immediate)], checked: known ops, stack within 0..64."""
    program, depth, pos = [], 0, 0
    while pos < len(code):
        op = NNIL_OPS.get(code[pos])
        if op is None:
            raise KModelFormatError(f"invalid nnil opcode {code[pos]:#04x}", offset + pos, field)
        immediate = None
        if op == "ldc_r4":
            if pos + 5 > len(code):
                raise KModelFormatError("truncated nnil ldc_r4 immediate", offset + pos, field)
            immediate = np.frombuffer(code, "<f4", 1, pos + 1)[0]
        pops, pushes = NNIL_EFFECTS[op]
        if depth < pops:
            raise KModelFormatError(f"nnil stack underflow at {op}", offset + pos, field)
        depth += pushes - pops
        if depth > NNIL_STACK:
            raise KModelFormatError(f"nnil stack overflow (more than {NNIL_STACK} values)", offset + pos, field)
        pos += 5 if op == "ldc_r4" else 1
        program.append((op, immediate))
        if op == "ret":
            break
    return program


def encode_body(node):
    """The body bytes of a node from its decoded parts (without the trailing alignment padding)."""
    if node.name == "kpu_conv2d":
        head = node.body.dumps()[:24]
        bn = encode_bn_table(*node.bn)
        return b"".join([head, node.arg.to_bytes(), bytes(node.skips[0]), bn, bytes(node.skips[1]),
                         node.act.to_bytes(), bytes(node.skips[2]), node.weights.astype(np.uint8).tobytes()])
    parts = [node.body.dumps()]
    if node.name == "concat":
        parts += [r.to_bytes() for r in node.extra["inputs"]]
        parts.append(node.extra["dims"].astype("<i4").tobytes())
    elif node.name == "nnil_unary_method":
        parts.append(bytes(node.extra["code"]))
    for key in TAIL_ORDER.get(node.name, ()):
        parts.append(node.extra[key].tobytes())
    return b"".join(parts)
