"""How a kmodel's uint8 input reaches the device: the camera's CHW planes, from the HWC images users hold."""
import numpy as np

from ....errors import EmcError


def to_device_layout(x, shape, layout):
    """A uint8 batch (N, C, H, W) from an HWC image / NHWC batch (layout='hwc') or CHW / NCHW ('chw').

    Returns (batch, was_batched); a shape mismatch names the expected shape.
    """
    x = np.asarray(x)
    c, h, w = shape
    orders = {"hwc": (h, w, c), "chw": (c, h, w)}
    if layout not in orders:
        raise EmcError(f"layout must be 'hwc' (images as PIL/OpenCV give them) or 'chw' (device layout), "
                       f"not {layout!r}")
    single = orders[layout]
    if x.shape == single:
        x, batched = x[None], False
    elif x.ndim == 4 and x.shape[1:] == single:
        batched = True
    else:
        raise EmcError(f"the kmodel takes a {'x'.join(map(str, single))} ({layout.upper()}) uint8 image or a batch "
                       f"N x {'x'.join(map(str, single))}; got an array of shape {x.shape}")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number) or (x.size and (
                np.any(~np.isfinite(x)) or x.min() < 0 or x.max() > 255 or np.any(np.mod(x, 1) != 0))):
            raise EmcError("the kmodel input is uint8 pixels (0..255); got non-integer or out-of-range values "
                           "(scale floats to 0..255 and round them first)")
        x = x.astype(np.uint8)
    if layout == "hwc":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), batched
