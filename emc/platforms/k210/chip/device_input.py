"""How a kmodel's uint8 input reaches the device: the camera's CHW planes, from the HWC images users hold."""
import numpy as np

from ....errors import EmcError


def to_device_layout(x, shape, layout, images=1):
    """A uint8 batch (N, C, H, W) from an HWC image / NHWC batch (layout='hwc') or CHW / NCHW ('chw'); for a model
    that takes `images` > 1 images per run, a batch (N, images, C, H, W) from one run's images or a batch of them.

    Returns (batch, was_batched); a shape mismatch names the expected shape.
    """
    x = np.asarray(x)
    c, h, w = shape
    orders = {"hwc": (h, w, c), "chw": (c, h, w)}
    if layout not in orders:
        raise EmcError(f"layout must be 'hwc' (images as PIL/OpenCV give them) or 'chw' (device layout), "
                       f"not {layout!r}")
    single = orders[layout] if images == 1 else (images,) + orders[layout]
    if x.shape == single:
        x, batched = x[None], False
    elif x.ndim == len(single) + 1 and x.shape[1:] == single:
        batched = True
    else:
        one = f"{'x'.join(map(str, orders[layout]))} ({layout.upper()})"
        what = f"a {one} uint8 image" if images == 1 else f"{images} uint8 images of {one} per run, shape {single},"
        raise EmcError(f"the kmodel takes {what} or a batch N x {'x'.join(map(str, single))}; got an array of shape "
                       f"{x.shape}")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number) or (x.size and (
                np.any(~np.isfinite(x)) or x.min() < 0 or x.max() > 255 or np.any(np.mod(x, 1) != 0))):
            raise EmcError("the kmodel input is uint8 pixels (0..255); got non-integer or out-of-range values "
                           "(scale floats to 0..255 and round them first)")
        x = x.astype(np.uint8)
    if layout == "hwc":
        x = np.moveaxis(x, -1, -3)
    return np.ascontiguousarray(x), batched
