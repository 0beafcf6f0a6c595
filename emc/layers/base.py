"""The base of every graph op: shape inference, a numpy forward pass, weights and MACs."""
import numpy as np

from ..errors import GraphError

OPS = {}


def register_op(cls):
    """Class decorator: make an op known by its `kind` (used by summaries and platform tables)."""
    OPS[cls.kind] = cls
    return cls


class Op:
    """A float op of emc.Graph. Shapes are per sample (no batch axis): (H, W, C) images, (C,) vectors."""

    kind = "op"
    arity = 1            # number of inputs; None = any number >= 2

    def __init__(self, **attrs):
        self.attrs = attrs
        self.weights = {}

    def __getattr__(self, name):
        attrs = self.__dict__.get("attrs", {})
        if name in attrs:
            return attrs[name]
        raise AttributeError(name)

    def output_shape(self, in_shapes):
        """Per-sample output shape for these per-sample input shapes; raise GraphError if they do not fit."""
        return tuple(in_shapes[0])

    def forward(self, xs):
        """Compute the batched float32 output from the list of batched inputs."""
        raise NotImplementedError

    def macs(self, in_shapes, out_shape):
        """Multiply-accumulates per sample (0 for data-movement ops)."""
        return 0

    def params(self):
        return int(sum(w.size for w in self.weights.values() if w is not None))

    def describe(self):
        """Short attribute text for summaries."""
        return ""

    def copy(self):
        new = self.__class__.__new__(self.__class__)
        new.attrs = dict(self.attrs)
        new.weights = {k: (None if v is None else v.copy()) for k, v in self.weights.items()}
        return new

    def check_finite(self, node_name):
        for key, w in self.weights.items():
            if w is not None and not np.all(np.isfinite(w)):
                raise GraphError(f"layer '{node_name}' ({self.kind}) has NaN or inf values in its {key} weights; "
                                 f"retrain or fix the model before converting")

    def __repr__(self):
        text = self.describe()
        return f"{self.kind}({text})" if text else self.kind


def as_float32(array):
    return None if array is None else np.ascontiguousarray(array, dtype=np.float32)


def pair(value):
    """(a, b) from an int or a pair."""
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    a, b = value
    return (int(a), int(b))


def same_pads(size, kernel, stride, dilation=1):
    """TF 'same' padding (before, after) for one spatial axis."""
    eff = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return (total // 2, total - total // 2)
