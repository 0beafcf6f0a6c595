"""Data-movement ops: input, identity, padding, cropping, nearest upsampling, flatten, reshape."""
import numpy as np

from ..errors import GraphError
from .base import Op, pair, register_op
from .conv import pad_nhwc


@register_op
class Input(Op):
    """A graph input with a fixed per-sample shape."""

    kind = "input"
    arity = 0

    def __init__(self, shape):
        shape = tuple(shape)
        if any(d is None or int(d) <= 0 for d in shape):
            raise GraphError(f"input shape {shape} is not fixed: give the model a fixed input shape "
                             f"(e.g. keras.Input(shape=(32, 32, 3))) before converting")
        super().__init__(shape=tuple(int(d) for d in shape))

    def output_shape(self, in_shapes):
        return self.shape

    def describe(self):
        return "x".join(map(str, self.shape))


@register_op
class Identity(Op):
    """Passes its input through (what Dropout becomes at inference); removed by a pass."""

    kind = "identity"

    def __init__(self, origin="identity"):
        super().__init__(origin=origin)

    def forward(self, xs):
        return xs[0]

    def describe(self):
        return self.origin


@register_op
class Pad2D(Op):
    """Constant padding of H and W: pads = (top, bottom, left, right)."""

    kind = "pad2d"

    def __init__(self, pads, value=0.0):
        super().__init__(pads=tuple(int(p) for p in pads), value=float(value))

    def output_shape(self, in_shapes):
        h, w, c = _image(in_shapes[0], self.kind)
        t, b, l, r = self.pads
        return (h + t + b, w + l + r, c)

    def forward(self, xs):
        return pad_nhwc(xs[0], self.pads, self.value)

    def describe(self):
        return ",".join(map(str, self.pads))


@register_op
class Crop2D(Op):
    """Cropping of H and W: crops = (top, bottom, left, right)."""

    kind = "crop2d"

    def __init__(self, crops):
        super().__init__(crops=tuple(int(p) for p in crops))

    def output_shape(self, in_shapes):
        h, w, c = _image(in_shapes[0], self.kind)
        t, b, l, r = self.crops
        if h - t - b <= 0 or w - l - r <= 0:
            raise GraphError(f"crop2d {self.crops} removes the whole {h}x{w} map")
        return (h - t - b, w - l - r, c)

    def forward(self, xs):
        t, b, l, r = self.crops
        x = xs[0]
        return x[:, t:x.shape[1] - b, l:x.shape[2] - r, :]

    def describe(self):
        return ",".join(map(str, self.crops))


@register_op
class Upsample2D(Op):
    """Nearest-neighbour upsampling by integer factors (fh, fw)."""

    kind = "upsample2d"

    def __init__(self, factor):
        super().__init__(factor=pair(factor))

    def output_shape(self, in_shapes):
        h, w, c = _image(in_shapes[0], self.kind)
        return (h * self.factor[0], w * self.factor[1], c)

    def forward(self, xs):
        return np.repeat(np.repeat(xs[0], self.factor[0], axis=1), self.factor[1], axis=2)

    def describe(self):
        return f"x{self.factor[0]}x{self.factor[1]}"


@register_op
class Flatten(Op):
    """Row-major flatten of the per-sample tensor (H, W, C order, as Keras and TensorLayer do)."""

    kind = "flatten"

    def output_shape(self, in_shapes):
        return (int(np.prod(in_shapes[0])),)

    def forward(self, xs):
        return xs[0].reshape(xs[0].shape[0], -1)


@register_op
class Reshape(Op):
    """Row-major reshape to a fixed per-sample shape."""

    kind = "reshape"

    def __init__(self, shape):
        super().__init__(shape=tuple(int(d) for d in shape))

    def output_shape(self, in_shapes):
        shape = list(self.shape)
        total = int(np.prod(in_shapes[0]))
        if shape.count(-1) == 1:
            known = int(np.prod([d for d in shape if d != -1]))
            shape[shape.index(-1)] = total // known if known else 0
        if int(np.prod(shape)) != total:
            raise GraphError(f"reshape of {tuple(in_shapes[0])} ({total} values) to {self.shape} is impossible")
        return tuple(shape)

    def forward(self, xs):
        return xs[0].reshape((xs[0].shape[0],) + self.output_shape([xs[0].shape[1:]]))

    def describe(self):
        return "x".join(map(str, self.shape))


def _image(shape, kind):
    if len(shape) != 3:
        raise GraphError(f"{kind} expects an (H, W, C) input, got {tuple(shape)}")
    return shape
