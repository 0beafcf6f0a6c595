"""Per-channel affine ops on the last axis: BatchNorm (inference form) and Rescale (input preprocessing)."""
import numpy as np

from ..errors import GraphError
from .base import Op, as_float32, register_op


class _ChannelAffine(Op):
    """y = x * scale + offset, scale and offset broadcast on the channel (last) axis."""

    def __init__(self, scale, offset, **attrs):
        super().__init__(**attrs)
        self.weights = {"scale": as_float32(np.atleast_1d(scale)), "offset": as_float32(np.atleast_1d(offset))}

    @property
    def scale(self):
        return self.weights["scale"]

    @property
    def offset(self):
        return self.weights["offset"]

    def output_shape(self, in_shapes):
        shape = in_shapes[0]
        for key in ("scale", "offset"):
            if self.weights[key].size not in (1, shape[-1]):
                raise GraphError(f"{self.kind}: {key} has {self.weights[key].size} values for {shape[-1]} channels")
        return tuple(shape)

    def forward(self, xs):
        return (xs[0] * self.scale + self.offset).astype(np.float32, copy=False)

    def macs(self, in_shapes, out_shape):
        return int(np.prod(out_shape, dtype=np.int64))


@register_op
class BatchNorm(_ChannelAffine):
    """Inference batch normalization, stored folded: scale = gamma/sqrt(var+eps), offset = beta - mean*scale."""

    kind = "batch_norm"

    @classmethod
    def from_stats(cls, gamma, beta, mean, var, epsilon):
        gamma = np.ones_like(mean) if gamma is None else np.asarray(gamma, np.float64).reshape(-1)
        beta = np.zeros_like(mean) if beta is None else np.asarray(beta, np.float64).reshape(-1)
        mean = np.asarray(mean, np.float64).reshape(-1)
        var = np.asarray(var, np.float64).reshape(-1)
        scale = gamma / np.sqrt(var + epsilon)
        return cls(scale, beta - mean * scale)


@register_op
class Rescale(_ChannelAffine):
    """Input preprocessing (Keras Rescaling / Normalization): y = x * scale + offset."""

    kind = "rescale"
