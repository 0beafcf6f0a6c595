"""Fully connected layer on the last axis; kernel (C_in, C_out) as Keras stores it."""
import numpy as np

from ..errors import GraphError
from .activations import LINEAR
from .base import Op, as_float32, register_op


@register_op
class Dense(Op):
    kind = "dense"

    def __init__(self, kernel, bias=None, activation=LINEAR):
        super().__init__(activation=activation)
        self.weights = {"kernel": as_float32(kernel), "bias": as_float32(bias)}

    @property
    def kernel(self):
        return self.weights["kernel"]

    @property
    def bias(self):
        return self.weights["bias"]

    def output_shape(self, in_shapes):
        shape = in_shapes[0]
        if shape[-1] != self.kernel.shape[0]:
            raise GraphError(f"dense expects {self.kernel.shape[0]} input features on the last axis, got shape {shape}")
        return tuple(shape[:-1]) + (self.kernel.shape[1],)

    def forward_linear(self, xs):
        out = np.matmul(xs[0], self.kernel)
        if self.bias is not None:
            out = out + self.bias
        return out.astype(np.float32, copy=False)

    def forward(self, xs):
        return self.activation(self.forward_linear(xs))

    def macs(self, in_shapes, out_shape):
        return int(np.prod(out_shape[:-1], dtype=np.int64)) * self.kernel.shape[0] * self.kernel.shape[1]

    def describe(self):
        text = f"{self.kernel.shape[0]}->{self.kernel.shape[1]}"
        return text if self.activation.is_linear else f"{text} {self.activation!r}"
