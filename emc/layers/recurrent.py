"""Recurrent layers over a (T, F) sequence: SimpleRNN, GRU (reset_after, Keras 3's default) and LSTM.

Weights in Keras' layout: kernel (F, G*U), recurrent kernel (U, G*U), gates side by side in Keras' order
(LSTM i, f, c, o; GRU z, r, h). The state starts at zero. return_sequences gives (T, U), else the last (U,).
Activations are Keras' defaults (tanh, and sigmoid for the gates): the int8 C kernels tabulate exactly those.
"""
import numpy as np

from ..errors import GraphError
from .activations import Act
from .base import Op, as_float32, register_op

GATES = {"simple_rnn": 1, "gru": 3, "lstm": 4}
TANH, SIGMOID = Act("tanh"), Act("sigmoid")


class _Recurrent(Op):
    """Shared parts: weights, shapes, the time loop; subclasses give one step of the cell."""

    def __init__(self, kernel, recurrent_kernel, bias=None, return_sequences=False):
        super().__init__(return_sequences=bool(return_sequences))
        self.weights = {"kernel": as_float32(kernel), "recurrent_kernel": as_float32(recurrent_kernel),
                        "bias": as_float32(bias)}
        gates = GATES[self.kind]
        units = self.weights["recurrent_kernel"].shape[0]
        if self.weights["kernel"].shape[1] != gates * units or self.weights["recurrent_kernel"].shape[1] != gates * units:
            raise GraphError(f"{self.kind}: kernel {self.weights['kernel'].shape} and recurrent kernel "
                             f"{self.weights['recurrent_kernel'].shape} do not hold {gates} gates of {units} units")

    @property
    def units(self):
        return self.weights["recurrent_kernel"].shape[0]

    def output_shape(self, in_shapes):
        shape = in_shapes[0]
        if len(shape) != 2 or shape[1] != self.weights["kernel"].shape[0]:
            raise GraphError(f"{self.kind} expects a (T, {self.weights['kernel'].shape[0]}) sequence, got {shape}")
        return (shape[0], self.units) if self.return_sequences else (self.units,)

    def input_bias(self):
        """The bias added to x W (GRU with reset_after keeps a second, recurrent bias apart)."""
        bias = self.weights["bias"]
        return 0.0 if bias is None else (bias[0] if bias.ndim == 2 else bias)

    def forward(self, xs):
        x = xs[0].astype(np.float32)
        n, steps, _ = x.shape
        state = self.initial_state(n)
        outs = []
        projected = x @ self.weights["kernel"] + self.input_bias()
        for t in range(steps):
            state = self.cell(projected[:, t], state)
            outs.append(state[0])
        out = np.stack(outs, axis=1) if self.return_sequences else outs[-1]
        return out.astype(np.float32, copy=False)

    def initial_state(self, n):
        return (np.zeros((n, self.units), np.float32),)

    def macs(self, in_shapes, out_shape):
        steps, features = in_shapes[0]
        return steps * (features + self.units) * GATES[self.kind] * self.units

    def describe(self):
        return f"{self.units} units" + (" sequences" if self.return_sequences else "")


@register_op
class SimpleRNN(_Recurrent):
    """h = tanh(x W + h U + b)."""

    kind = "simple_rnn"

    def cell(self, xw, state):
        return (TANH(xw + state[0] @ self.weights["recurrent_kernel"]),)


@register_op
class GRU(_Recurrent):
    """Keras' GRU with reset_after=True: bias (2, 3U) = input and recurrent bias; h = z h' + (1 - z) hh with
    hh = tanh(x Wh + b_in + r (h' Uh + b_rec))."""

    kind = "gru"

    def cell(self, xw, state):
        h, u = state[0], self.units
        hu = h @ self.weights["recurrent_kernel"]
        bias = self.weights["bias"]
        if bias is not None:
            hu = hu + bias[1]
        z = SIGMOID(xw[:, :u] + hu[:, :u])
        r = SIGMOID(xw[:, u:2 * u] + hu[:, u:2 * u])
        hh = TANH(xw[:, 2 * u:] + r * hu[:, 2 * u:])
        return (z * h + (1.0 - z) * hh,)


@register_op
class LSTM(_Recurrent):
    """c = f c' + i g, h = o tanh(c), gates i, f, o sigmoid and g tanh of x W + h' U + b."""

    kind = "lstm"

    def initial_state(self, n):
        zeros = np.zeros((n, self.units), np.float32)
        return (zeros, zeros.copy())

    def cell(self, xw, state):
        h, c = state
        u = self.units
        pre = xw + h @ self.weights["recurrent_kernel"]
        i, f, g, o = (pre[:, k * u:(k + 1) * u] for k in range(4))
        c = SIGMOID(f) * c + SIGMOID(i) * TANH(g)
        return (SIGMOID(o) * TANH(c), c)
