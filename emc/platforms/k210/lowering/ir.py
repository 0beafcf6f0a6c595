"""The device-level model the lowering builds: buffers in KPU RAM or main memory, kmodel v3 layers and v4 nodes."""
import numpy as np

from ..chip.kpu import kpu_rows
from ..chip.layer_types import LAYER_TYPES, OPCODE_BY_NAME, OPCODES, TYPE_CODES

KPU, MAIN = "kpu", "main"
U8, F32 = "u8", "f32"
ITEM_BYTES = {U8: 1, F32: 4}


def round8(n):
    return (int(n) + 7) // 8 * 8


def align(offset, to):
    return -(-offset // to) * to


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


class BufferView(Buffer):
    """A map read from `offset` bytes into a main-memory buffer, in place: a CPU layer reads a shifted map without a
    copy (the planner places the parent; the parent's min_bytes must cover the view)."""

    def __init__(self, parent, offset, shape):
        super().__init__(f"{parent.name}+{offset}", parent.where, parent.dtype, shape, parent.quant)
        self.parent, self.offset = parent, int(offset)

    @property
    def address(self):
        return None if self.parent.address is None else self.parent.address + self.offset

    @address.setter
    def address(self, value):
        if value is not None:
            raise ValueError("a buffer view takes its address from its parent")


def storage(buf):
    """The buffer that owns the memory of `buf` (itself, or a view's parent)."""
    return buf.parent if isinstance(buf, BufferView) else buf


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
    """One kmodel v4 node (an nncase v0.2 runtime op, named as in chip.layer_types.OPCODES) with the same interface:
    the lowering emits these for what only v4 has (float CPU convolutions, binary ops, transposes, slices);
    v4.writer rewrites the v3 layers into the rest."""

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


class Value:
    """A graph tensor on the device: its buffers by form ('kpu', 'u8', 'f32') and how to read them.

    order None: the bytes are the tensor in device order (maps CHW, vectors as they are); order (h, w, c): the
    bytes are the CHW map of that shape while the graph tensor is its row-major (HWC) flattening.
    """

    def __init__(self, name, shape, quant=None, order=None, forms=None):
        self.name = name
        self.shape = tuple(shape)
        self.quant = quant
        self.order = order
        self.forms = {} if forms is None else forms
        self.conv = None           # the K210_CONV layer that wrote forms['kpu'] (it can also stream to main)
        self.raw = None            # full-size KPU map of a stride-2 depthwise, awaiting pool 5 in its consumer
        self.affine = None         # model input only: per-channel (scale, offset), real = pixel * scale + offset

    @property
    def chw(self):
        """Device (C, H, W) of the bytes: a map, or a vector as a 1x1 map."""
        if isinstance(self.order, tuple):
            h, w, c = self.order
            return (c, h, w)
        if len(self.shape) == 3 and self.order is None:
            h, w, c = self.shape
            return (c, h, w)
        return (int(np.prod(self.shape)), 1, 1)

    @property
    def count(self):
        return int(np.prod(self.shape))

    def __repr__(self):
        return f"<Value {self.name} {self.shape} forms={sorted(self.forms)}>"
