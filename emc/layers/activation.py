"""Stand-alone activation ops: a named activation, and PReLU with learned slopes."""
import numpy as np

from ..errors import GraphError
from .activations import Act
from .base import Op, as_float32, register_op


@register_op
class Activation(Op):
    kind = "activation"

    def __init__(self, activation):
        super().__init__(activation=activation if isinstance(activation, Act) else Act(activation))

    def forward(self, xs):
        return self.activation(xs[0])

    def describe(self):
        return repr(self.activation)


@register_op
class PReLU(Op):
    """max(x, 0) + alpha * min(x, 0), alpha broadcast to the per-sample shape."""

    kind = "prelu"

    def __init__(self, alpha):
        super().__init__()
        self.weights = {"alpha": as_float32(alpha)}

    def output_shape(self, in_shapes):
        try:
            np.broadcast_shapes(self.weights["alpha"].shape, tuple(in_shapes[0]))
        except ValueError:
            raise GraphError(f"prelu alpha shape {self.weights['alpha'].shape} does not fit input {in_shapes[0]}")
        return tuple(in_shapes[0])

    def forward(self, xs):
        x = xs[0]
        return np.where(x >= 0, x, x * self.weights["alpha"]).astype(np.float32, copy=False)
