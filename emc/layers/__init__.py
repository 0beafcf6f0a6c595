"""Float graph ops (NHWC, per-sample shapes). Each op: shape inference, numpy forward, weights, MACs."""
from .activations import ACTIVATIONS, Act, LINEAR
from .activation import Activation, PReLU
from .base import OPS, Op, register_op, same_pads
from .conv import Conv2D, DepthwiseConv2D
from .dense import Dense
from .merge import Concat, Elementwise
from .norm import BatchNorm, Rescale
from .pool import GlobalPool2D, Pool2D
from .shape import Crop2D, Flatten, Identity, Input, Pad2D, Reshape, Upsample2D
from .recurrent import GRU, LSTM, SimpleRNN
from .transpose import Conv2DTranspose

__all__ = ["ACTIVATIONS", "Act", "LINEAR", "Activation", "PReLU", "OPS", "Op", "register_op", "same_pads",
           "Conv2D", "DepthwiseConv2D", "Dense", "Concat", "Elementwise", "BatchNorm", "Rescale",
           "GlobalPool2D", "Pool2D", "Crop2D", "Flatten", "Identity", "Input", "Pad2D", "Reshape", "Upsample2D",
           "Conv2DTranspose", "GRU", "LSTM", "SimpleRNN"]
