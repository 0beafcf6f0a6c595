"""Convolutions in NHWC: Conv2D (HWIO kernel) and DepthwiseConv2D (kernel H, W, C, multiplier)."""
import numpy as np

from ..errors import GraphError
from .activations import LINEAR
from .base import Op, as_float32, pair, register_op


def pad_nhwc(x, pads, value=0.0):
    top, bottom, left, right = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def conv_out_size(size, kernel, stride, dilation, before, after):
    return (size + before + after - (kernel - 1) * dilation - 1) // stride + 1


def tap_slice(start, count, stride):
    return slice(start, start + (count - 1) * stride + 1, stride)


class _ConvBase(Op):
    """Shared attributes: strides, dilation, explicit pads (top, bottom, left, right), fused activation."""

    def __init__(self, kernel, bias=None, strides=1, dilation=1, pads=(0, 0, 0, 0), activation=LINEAR):
        super().__init__(strides=pair(strides), dilation=pair(dilation), pads=tuple(int(p) for p in pads),
                         activation=activation)
        self.weights = {"kernel": as_float32(kernel), "bias": as_float32(bias)}

    @property
    def kernel(self):
        return self.weights["kernel"]

    @property
    def bias(self):
        return self.weights["bias"]

    def spatial_out(self, in_shape):
        h, w = in_shape[0], in_shape[1]
        kh, kw = self.kernel.shape[:2]
        top, bottom, left, right = self.pads
        oh = conv_out_size(h, kh, self.strides[0], self.dilation[0], top, bottom)
        ow = conv_out_size(w, kw, self.strides[1], self.dilation[1], left, right)
        if oh <= 0 or ow <= 0:
            raise GraphError(f"{self.kind}: input {h}x{w} is smaller than the kernel {kh}x{kw}")
        return oh, ow

    def taps(self, x, out_hw):
        """Yield (ky, kx, input window sampled at the output grid) for every kernel tap."""
        kh, kw = self.kernel.shape[:2]
        (sh, sw), (dh, dw) = self.strides, self.dilation
        for ky in range(kh):
            for kx in range(kw):
                yield ky, kx, x[:, tap_slice(ky * dh, out_hw[0], sh), tap_slice(kx * dw, out_hw[1], sw), :]

    def finish(self, out):
        if self.bias is not None:
            out += self.bias
        return out

    def forward(self, xs):
        return self.activation(self.forward_linear(xs))

    def describe(self):
        kh, kw = self.kernel.shape[:2]
        text = f"{kh}x{kw}"
        if self.strides != (1, 1):
            text += f" s{self.strides[0]}x{self.strides[1]}"
        if self.dilation != (1, 1):
            text += f" d{self.dilation[0]}x{self.dilation[1]}"
        if any(self.pads):
            text += " pad" + ",".join(map(str, self.pads))
        if not self.activation.is_linear:
            text += f" {self.activation!r}"
        return text


@register_op
class Conv2D(_ConvBase):
    """2-D convolution; kernel (kh, kw, C_in, C_out)."""

    kind = "conv2d"

    def output_shape(self, in_shapes):
        shape = in_shapes[0]
        if len(shape) != 3 or shape[2] != self.kernel.shape[2]:
            raise GraphError(f"conv2d expects (H, W, {self.kernel.shape[2]}) input, got {shape}")
        return self.spatial_out(shape) + (self.kernel.shape[3],)

    def forward_linear(self, xs):
        x = pad_nhwc(xs[0], self.pads)
        n = x.shape[0]
        out_hw = self.spatial_out((x.shape[1] - self.pads[0] - self.pads[1], x.shape[2] - self.pads[2] - self.pads[3]))
        cin, cout = self.kernel.shape[2:]
        out = np.zeros((n * out_hw[0] * out_hw[1], cout), np.float32)
        for ky, kx, window in self.taps(x, out_hw):
            out += np.ascontiguousarray(window).reshape(-1, cin) @ self.kernel[ky, kx]
        return self.finish(out.reshape(n, out_hw[0], out_hw[1], cout))

    def macs(self, in_shapes, out_shape):
        kh, kw, cin, cout = self.kernel.shape
        return out_shape[0] * out_shape[1] * kh * kw * cin * cout


@register_op
class DepthwiseConv2D(_ConvBase):
    """Depthwise convolution; kernel (kh, kw, C, multiplier); output channel c*multiplier + m (Keras order)."""

    kind = "depthwise_conv2d"

    def output_shape(self, in_shapes):
        shape = in_shapes[0]
        if len(shape) != 3 or shape[2] != self.kernel.shape[2]:
            raise GraphError(f"depthwise_conv2d expects (H, W, {self.kernel.shape[2]}) input, got {shape}")
        return self.spatial_out(shape) + (self.kernel.shape[2] * self.kernel.shape[3],)

    def forward_linear(self, xs):
        x = pad_nhwc(xs[0], self.pads)
        n = x.shape[0]
        out_hw = self.spatial_out((x.shape[1] - self.pads[0] - self.pads[1], x.shape[2] - self.pads[2] - self.pads[3]))
        c, mult = self.kernel.shape[2:]
        out = np.zeros((n, out_hw[0], out_hw[1], c, mult), np.float32)
        for ky, kx, window in self.taps(x, out_hw):
            out += window[..., None] * self.kernel[ky, kx]
        return self.finish(out.reshape(n, out_hw[0], out_hw[1], c * mult))

    def macs(self, in_shapes, out_shape):
        kh, kw = self.kernel.shape[:2]
        return out_shape[0] * out_shape[1] * out_shape[2] * kh * kw
