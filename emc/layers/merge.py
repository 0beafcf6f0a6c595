"""Ops with several inputs: element-wise arithmetic (numpy broadcasting) and concatenation."""
import functools

import numpy as np

from ..errors import GraphError
from .base import Op, register_op

ELEMENTWISE = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "max": np.maximum,
    "min": np.minimum,
}


@register_op
class Elementwise(Op):
    """Folds its inputs left to right with one binary op ('add', 'sub', 'mul', 'max', 'min'); 'avg' = mean."""

    kind = "elementwise"
    arity = None

    def __init__(self, op):
        if op not in ELEMENTWISE and op != "avg":
            raise GraphError(f"elementwise op must be one of {sorted(ELEMENTWISE) + ['avg']}, not {op!r}")
        super().__init__(op=op)

    def output_shape(self, in_shapes):
        try:
            return tuple(np.broadcast_shapes(*[tuple(s) for s in in_shapes]))
        except ValueError:
            raise GraphError(f"elementwise {self.op}: input shapes {list(in_shapes)} do not broadcast")

    def forward(self, xs):
        rank = max(x.ndim for x in xs)       # align per-sample ranks behind the batch axis (numpy aligns from the right)
        xs = [x.reshape((x.shape[0],) + (1,) * (rank - x.ndim) + x.shape[1:]) for x in xs]
        if self.op == "avg":
            return (functools.reduce(np.add, xs) / np.float32(len(xs))).astype(np.float32)
        return functools.reduce(ELEMENTWISE[self.op], xs).astype(np.float32, copy=False)

    def macs(self, in_shapes, out_shape):
        return int(np.prod(out_shape)) * (len(in_shapes) - 1)

    def describe(self):
        return self.op


@register_op
class Concat(Op):
    """Concatenation along a per-sample axis (non-negative, batch axis excluded; -1 = last)."""

    kind = "concat"
    arity = None

    def __init__(self, axis=-1):
        super().__init__(axis=int(axis))

    def resolved_axis(self, rank):
        return self.axis % rank

    def output_shape(self, in_shapes):
        rank = len(in_shapes[0])
        axis = self.resolved_axis(rank)
        out = list(in_shapes[0])
        for shape in in_shapes[1:]:
            if len(shape) != rank or any(a != b for i, (a, b) in enumerate(zip(shape, out)) if i != axis):
                raise GraphError(f"concat on axis {axis}: shapes {list(in_shapes)} differ off that axis")
            out[axis] += shape[axis]
        return tuple(out)

    def forward(self, xs):
        return np.concatenate(xs, axis=self.resolved_axis(xs[0].ndim - 1) + 1)

    def describe(self):
        return f"axis {self.axis}"
