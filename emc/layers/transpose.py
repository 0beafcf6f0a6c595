"""Transposed 2-D convolution (Keras Conv2DTranspose): each input pixel scatters a kernel-sized patch.

The op is described by its "full" output -- (H - 1) * stride + kernel rows, every input pixel's patch summed
where it lands -- and a crop (top, bottom, left, right) of that full output. A negative crop extends the
output with rows / columns no patch reaches (only the bias), which is what Keras' 'valid' padding does when
the stride exceeds the kernel or output_padding is set.
"""
import numpy as np

from ..errors import GraphError
from .activations import LINEAR
from .base import register_op
from .conv import _ConvBase


def transpose_out_size(size, kernel, stride, before, after):
    """Output length of a transposed convolution along one axis: full length minus the two crops."""
    return (size - 1) * stride + kernel - before - after


@register_op
class Conv2DTranspose(_ConvBase):
    """Transposed convolution; kernel (kh, kw, C_in, C_out) like Conv2D. Its `pads` (top, bottom, left, right)
    are crops of the full output (a conv's padding of the input turns into a crop of the transposed output)."""

    kind = "conv2d_transpose"

    def __init__(self, kernel, bias=None, strides=1, crops=(0, 0, 0, 0), activation=LINEAR):
        super().__init__(kernel, bias, strides, 1, crops, activation)

    @property
    def crops(self):
        return self.pads

    def spatial_out(self, in_shape):
        kh, kw = self.kernel.shape[:2]
        top, bottom, left, right = self.crops
        oh = transpose_out_size(in_shape[0], kh, self.strides[0], top, bottom)
        ow = transpose_out_size(in_shape[1], kw, self.strides[1], left, right)
        if oh <= 0 or ow <= 0:
            raise GraphError(f"conv2d_transpose: crops {self.crops} leave no output for input {tuple(in_shape)}")
        return oh, ow

    def output_shape(self, in_shapes):
        shape = in_shapes[0]
        if len(shape) != 3 or shape[2] != self.kernel.shape[2]:
            raise GraphError(f"conv2d_transpose expects (H, W, {self.kernel.shape[2]}) input, got {shape}")
        return self.spatial_out(shape) + (self.kernel.shape[3],)

    def forward_linear(self, xs):
        x = xs[0]
        n, h, w, cin = x.shape
        kh, kw, _, cout = self.kernel.shape
        sh, sw = self.strides
        full = np.zeros((n, (h - 1) * sh + kh, (w - 1) * sw + kw, cout), np.float32)
        flat = x.reshape(-1, cin)
        for ky in range(kh):
            for kx in range(kw):
                patch = (flat @ self.kernel[ky, kx]).reshape(n, h, w, cout)
                full[:, ky:ky + (h - 1) * sh + 1:sh, kx:kx + (w - 1) * sw + 1:sw, :] += patch
        top, bottom, left, right = self.crops
        full = np.pad(full, ((0, 0), (max(-top, 0), max(-bottom, 0)), (max(-left, 0), max(-right, 0)), (0, 0)))
        oh, ow = self.spatial_out((h, w))
        out = full[:, max(top, 0):max(top, 0) + oh, max(left, 0):max(left, 0) + ow, :]
        return self.finish(np.ascontiguousarray(out, np.float32))

    def macs(self, in_shapes, out_shape):
        kh, kw, cin, cout = self.kernel.shape
        return in_shapes[0][0] * in_shapes[0][1] * kh * kw * cin * cout
