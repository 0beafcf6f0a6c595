"""Element-wise activation functions by name: one numpy function per activation, in a table."""
import numpy as np

from ..errors import UnsupportedLayerError


def _sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def _hard_sigmoid(x):
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


ACTIVATIONS = {
    "linear": lambda x, alpha: x,
    "relu": lambda x, alpha: np.maximum(x, 0.0),
    "relu6": lambda x, alpha: np.clip(x, 0.0, 6.0),
    "leaky_relu": lambda x, alpha: np.where(x >= 0, x, x * np.float32(alpha)),
    "elu": lambda x, alpha: np.where(x > 0, x, np.float32(alpha) * np.expm1(np.minimum(x, 0))),
    "sigmoid": lambda x, alpha: _sigmoid(x),
    "tanh": lambda x, alpha: np.tanh(x),
    "hard_sigmoid": lambda x, alpha: _hard_sigmoid(x),
    "swish": lambda x, alpha: x * _sigmoid(x),
    "hard_swish": lambda x, alpha: x * _hard_sigmoid(x),
    "softplus": lambda x, alpha: np.logaddexp(x, 0.0),
    "softsign": lambda x, alpha: x / (1.0 + np.abs(x)),
    "softmax": lambda x, alpha: _softmax(x),
}

# Names that frameworks use for the same function.
ALIASES = {"silu": "swish", "hard_silu": "hard_swish", "lrelu": "leaky_relu", "identity": "linear",
           "None": "linear", "none": "linear", "leakyrelu": "leaky_relu", "relu_6": "relu6"}

# Default parameter of parametric activations (Keras defaults).
DEFAULT_ALPHA = {"leaky_relu": 0.2, "elu": 1.0}


class Act:
    """An activation fused into an op or standing alone: a name from ACTIVATIONS and its parameter."""

    __slots__ = ("name", "alpha")

    def __init__(self, name="linear", alpha=None):
        name = ALIASES.get(name, name)
        if name not in ACTIVATIONS:
            raise UnsupportedLayerError(
                f"activation '{name}' is not supported; supported: {', '.join(sorted(ACTIVATIONS))}")
        self.name = name
        self.alpha = DEFAULT_ALPHA.get(name) if alpha is None else float(alpha)

    def __call__(self, x):
        return np.asarray(ACTIVATIONS[self.name](x, self.alpha), dtype=np.float32)

    @property
    def is_linear(self):
        return self.name == "linear"

    def __eq__(self, other):
        return isinstance(other, Act) and (self.name, self.alpha) == (other.name, other.alpha)

    def __repr__(self):
        return self.name if self.alpha is None else f"{self.name}({self.alpha:g})"


LINEAR = Act("linear")
