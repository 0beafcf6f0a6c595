"""The device-level model the lowering builds: buffers in KPU RAM or main memory, kmodel v3 layers and v4 nodes."""
import numpy as np

from .kpu import kpu_rows
from .structs_v3 import LAYER_TYPES, TYPE_CODES
from .structs_v4 import OPCODE_BY_NAME, OPCODES

KPU, MAIN = "kpu", "main"
U8, F32 = "u8", "f32"
ITEM_BYTES = {U8: 1, F32: 4}


def round8(n):
    return (int(n) + 7) // 8 * 8


class Buffer:
    """A device tensor: where it lives, its element type, its device shape (C, H, W) or (N,), its quantisation.

    The planner fills `address` (KPU line index, or byte offset in the main buffer).
    """

    def __init__(self, name, where, dtype, shape, quant=None):
        self.name = name
        self.where = where
        self.dtype = dtype
        self.shape = tuple(int(d) for d in shape)
        self.quant = quant
        self.address = None
        self.min_bytes = 0            # extra room some layers need (QUANTIZED_ADD groups of 8)

    @property
    def count(self):
        return int(np.prod(self.shape))

    @property
    def nbytes(self):
        return self.count * ITEM_BYTES[self.dtype]

    @property
    def chw(self):
        """(C, H, W) of a map; a vector of n values is a 1x1 map of n channels."""
        return self.shape if len(self.shape) == 3 else (self.count, 1, 1)

    @property
    def lines(self):
        c, h, w = self.chw
        return kpu_rows(w, h, c)

    @property
    def alloc_size(self):
        """Lines (KPU) or bytes (main, rounded to 8: DMA stream-out and QUANTIZED_ADD write in 8-byte groups)."""
        if self.where == KPU:
            return self.lines
        return round8(max(self.nbytes, self.min_bytes))

    def __repr__(self):
        where = f"@{self.address}" if self.address is not None else ""
        return f"<{self.where} {self.dtype} {'x'.join(map(str, self.shape))} {self.name}{where}>"


class Layer:
    """One kmodel v3 layer: its type code, graph origin, buffers read and written, and body parameters."""

    CODES = LAYER_TYPES

    def __init__(self, code, node, inputs, outputs, macs=0, weight_bytes=0, **params):
        if code not in self.CODES:
            raise ValueError(f"unknown layer type {code} for {type(self).__name__}")
        self.code = code
        self.node = node
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.macs = int(macs)
        self.weight_bytes = int(weight_bytes)
        self.params = params
        self.index = None

    @property
    def type_name(self):
        return LAYER_TYPES[self.code][0]

    @property
    def on_kpu(self):
        return self.code == TYPE_CODES["K210_CONV"]

    def __repr__(self):
        return f"<{self.index} {self.type_name} ({self.node}) {self.inputs} -> {self.outputs}>"


class V4Layer(Layer):
    """One kmodel v4 node (an nncase v0.2 runtime op, named as in structs_v4.OPCODES) with the same interface:
    the lowering emits these for what only v4 has (float CPU convolutions, binary ops, transposes, slices);
    writer_v4 rewrites the v3 layers into the rest."""

    CODES = OPCODES

    def __init__(self, op, node, inputs, outputs, macs=0, weight_bytes=0, **params):
        if op not in OPCODE_BY_NAME:
            raise ValueError(f"unknown kmodel v4 op {op!r}")
        super().__init__(OPCODE_BY_NAME[op], node, inputs, outputs, macs, weight_bytes, **params)
        self.op = op

    @property
    def type_name(self):
        return self.op

    @property
    def on_kpu(self):
        return self.op == "kpu_conv2d"


CODE = TYPE_CODES
