"""The C platform's device program: int8 tensors with affine quantisation, and kernel steps that read and write them."""
import numpy as np


class QTensor:
    """An int8 tensor: per-sample shape, real = (q - zero_point) * scale, and where its bytes live.

    `view_of` names the tensor whose bytes this one reuses unchanged (reshape, flatten): views share storage.
    """

    __slots__ = ("name", "shape", "scale", "zero_point", "view_of")

    def __init__(self, name, shape, scale, zero_point, view_of=None):
        self.name = name
        self.shape = tuple(int(d) for d in shape)
        self.scale = float(scale)
        self.zero_point = int(zero_point)
        self.view_of = view_of

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def quant(self):
        return (self.scale, self.zero_point)

    def quantize(self, x):
        """Float32 -> int8 exactly as the C float wrapper does: floor(x / scale + zero_point + 0.5), saturated."""
        x = np.asarray(x, np.float32)
        t = x / np.float32(self.scale)
        t = t + np.float32(self.zero_point)
        t = np.floor(t + np.float32(0.5))
        return np.clip(t, -128, 127).astype(np.int8)

    def dequantize(self, q):
        """int8 -> float32 exactly as the C float wrapper does: (float)(q - zero_point) * scale."""
        return (np.asarray(q, np.int32) - self.zero_point).astype(np.float32) * np.float32(self.scale)

    def __repr__(self):
        return f"QTensor({self.name}, {self.shape}, scale={self.scale:.6g}, zp={self.zero_point})"


class Step:
    """One kernel call: kind (a key of the kernel registries), the graph layer it comes from, input and output
    tensor names, integer parameters, constant arrays (weights, biases, multipliers, tables) and MACs."""

    __slots__ = ("kind", "node", "inputs", "output", "params", "arrays", "macs", "inplace")

    def __init__(self, kind, node, inputs, output, params=None, arrays=None, macs=0, inplace=False):
        self.kind = kind
        self.node = node
        self.inputs = list(inputs)
        self.output = output
        self.params = dict(params or {})
        self.arrays = dict(arrays or {})
        self.macs = int(macs)
        self.inplace = bool(inplace)      # the kernel may write its output over its first input

    @property
    def weight_bytes(self):
        return int(sum(a.nbytes for a in self.arrays.values()))

    def __repr__(self):
        return f"Step({self.kind}, {self.node}: {self.inputs} -> {self.output})"


class Program:
    """The lowered model: steps in execution order, every tensor, and the graph's input and output tensors."""

    __slots__ = ("steps", "tensors", "inputs", "outputs")

    def __init__(self, steps, tensors, inputs, outputs):
        self.steps = list(steps)
        self.tensors = dict(tensors)
        self.inputs = list(inputs)
        self.outputs = list(outputs)

    @property
    def macs(self):
        return sum(s.macs for s in self.steps)

    @property
    def weight_bytes(self):
        return sum(s.weight_bytes for s in self.steps)
