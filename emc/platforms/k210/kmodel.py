"""emc.load_kmodel / emc.run_kmodel: read any kmodel v3 or v4 and compute on the PC what the K210 computes."""
import os

import numpy as np

from ...errors import EmcError, KModelFormatError

V4_MAGIC = b"LDMK"


def load_kmodel(path_or_bytes):
    """Parse a kmodel (v3 or v4) from a path or bytes; returns KModelV3 or KModelV4."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
    else:
        path = os.fspath(path_or_bytes)
        if not os.path.isfile(path):
            raise EmcError(f"kmodel file {path} does not exist")
        with open(path, "rb") as f:
            data = f.read()
    if len(data) < 8:
        raise KModelFormatError(f"a kmodel needs at least 8 bytes, got {len(data)}", 0, "header")
    if data[:4] == V4_MAGIC:
        from .reader_v4 import KModelV4
        return KModelV4.from_bytes(data)
    if int.from_bytes(data[:4], "little") == 3:
        from .reader_v3 import KModelV3
        return KModelV3(data)
    raise KModelFormatError(f"unknown kmodel header {data[:4].hex()}: neither v3 (version 3) nor v4 ('KMDL')", 0,
                            "version")


def _as_model(model):
    if hasattr(model, "layers") or hasattr(model, "nodes"):
        return model
    return load_kmodel(model)


def to_device_layout(x, shape, layout):
    """One uint8 image per sample in CHW order; returns (batch array, was_batched)."""
    x = np.asarray(x)
    c, h, w = shape
    if layout == "hwc":
        single, batch = (h, w, c), (h, w, c)
    elif layout == "chw":
        single, batch = (c, h, w), (c, h, w)
    else:
        raise EmcError(f"layout must be 'hwc' or 'chw', not {layout!r}")
    if x.shape == single:
        x, batched = x[None], False
    elif x.ndim == 4 and x.shape[1:] == batch:
        batched = True
    else:
        raise EmcError(f"the kmodel takes a {'x'.join(map(str, single))} ({layout.upper()}) uint8 image or a batch "
                       f"of them; got an array of shape {x.shape}")
    if x.dtype != np.uint8:
        if x.size and (x.min() < 0 or x.max() > 255 or not np.all(np.equal(np.mod(x, 1), 0))):
            raise EmcError("the kmodel input is uint8 pixels (0..255); got non-integer or out-of-range values")
        x = x.astype(np.uint8)
    if layout == "hwc":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), batched


def run_kmodel(model, x, layout="hwc", trace=False, **options):
    """Outputs of the kmodel for x as a list of flat float32 arrays (device order, CHW), batched like x.

    x: a uint8 HWC image (layout='chw' for the raw device layout) or a batch of them for KPU-input models;
    a float vector (or batch) for float-input models. trace=True also returns [(layer, name, array), ...]
    of the first sample. Options: arg_x_mode='per_channel'|'sum', sdk='head'|'maixemc' (v3).
    """
    model = _as_model(model)
    if model.version == 4:
        from .simulator_v4 import run_v4
        return run_v4(model, x, layout=layout, trace=trace, **options)
    from .simulator_v3 import input_spec, run_one
    kind, shape = input_spec(model)
    if kind == "kpu":
        xs, batched = to_device_layout(x, shape, layout)
    else:
        arr = np.asarray(x, np.float32)
        if arr.shape == shape:
            xs, batched = arr[None], False
        elif arr.ndim == 2 and arr.shape[1:] == shape:
            xs, batched = arr, True
        else:
            raise EmcError(f"the kmodel takes {shape[0]} float inputs (or a batch of them); got shape {arr.shape}")
    steps = [] if trace else None
    outs = [run_one(model, sample, trace=steps if i == 0 else None, **options) for i, sample in enumerate(xs)]
    results = [np.stack([o[k] for o in outs]) if batched else outs[0][k] for k in range(len(model.outputs))]
    return (results, steps) if trace else results
