"""Pooling: windowed max/average (TF semantics: average counts only in-map samples) and global pooling."""
import numpy as np

from ..errors import GraphError
from .base import Op, pair, register_op
from .conv import conv_out_size, pad_nhwc, tap_slice

POOL_MODES = ("max", "avg")


@register_op
class Pool2D(Op):
    kind = "pool2d"

    def __init__(self, mode, pool_size, strides=None, pads=(0, 0, 0, 0)):
        if mode not in POOL_MODES:
            raise GraphError(f"pool mode must be one of {POOL_MODES}, not {mode!r}")
        pool_size = pair(pool_size)
        super().__init__(mode=mode, pool_size=pool_size, strides=pair(strides or pool_size),
                         pads=tuple(int(p) for p in pads))

    def output_shape(self, in_shapes):
        shape = in_shapes[0]
        if len(shape) != 3:
            raise GraphError(f"pool2d expects an (H, W, C) input, got {shape}")
        top, bottom, left, right = self.pads
        oh = conv_out_size(shape[0], self.pool_size[0], self.strides[0], 1, top, bottom)
        ow = conv_out_size(shape[1], self.pool_size[1], self.strides[1], 1, left, right)
        if oh <= 0 or ow <= 0:
            raise GraphError(f"pool2d window {self.pool_size} does not fit input {shape}")
        return (oh, ow, shape[2])

    def forward(self, xs):
        x = xs[0]
        oh, ow, _ = self.output_shape([x.shape[1:]])
        fill = -np.inf if self.mode == "max" else 0.0
        padded = pad_nhwc(x, self.pads, fill)
        count = None
        if self.mode == "avg":
            ones = pad_nhwc(np.ones((1,) + x.shape[1:3] + (1,), np.float32), self.pads, 0.0)
            count = np.zeros((1, oh, ow, 1), np.float32)
        out = None
        for ky in range(self.pool_size[0]):
            for kx in range(self.pool_size[1]):
                rows, cols = tap_slice(ky, oh, self.strides[0]), tap_slice(kx, ow, self.strides[1])
                window = padded[:, rows, cols, :]
                if self.mode == "max":
                    out = window.copy() if out is None else np.maximum(out, window)
                else:
                    out = window.copy() if out is None else out + window
                    count += ones[:, rows, cols, :]
        if self.mode == "avg":
            out = out / count
        return out.astype(np.float32, copy=False)

    def macs(self, in_shapes, out_shape):
        return int(np.prod(out_shape)) * self.pool_size[0] * self.pool_size[1]

    def describe(self):
        text = f"{self.mode} {self.pool_size[0]}x{self.pool_size[1]} s{self.strides[0]}x{self.strides[1]}"
        return text + (" pad" + ",".join(map(str, self.pads)) if any(self.pads) else "")


@register_op
class GlobalPool2D(Op):
    """Max or average over H and W; keepdims gives (1, 1, C) instead of (C,)."""

    kind = "global_pool2d"

    def __init__(self, mode, keepdims=False):
        if mode not in POOL_MODES:
            raise GraphError(f"global pool mode must be one of {POOL_MODES}, not {mode!r}")
        super().__init__(mode=mode, keepdims=bool(keepdims))

    def output_shape(self, in_shapes):
        shape = in_shapes[0]
        if len(shape) != 3:
            raise GraphError(f"global_pool2d expects an (H, W, C) input, got {shape}")
        return (1, 1, shape[2]) if self.keepdims else (shape[2],)

    def forward(self, xs):
        fn = np.max if self.mode == "max" else np.mean
        return fn(xs[0], axis=(1, 2), keepdims=self.keepdims).astype(np.float32, copy=False)

    def macs(self, in_shapes, out_shape):
        return int(np.prod(in_shapes[0]))

    def describe(self):
        return self.mode
