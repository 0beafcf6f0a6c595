"""emc.load_kmodel / emc.run_kmodel: read any kmodel v3 or v4 and compute on the PC what the K210 computes."""
import os

from ...errors import EmcError, KModelFormatError

V4_MAGIC = b"LDMK"          # C's multi-character 'KMDL' stored little-endian
V3_VERSION = 3


def load_kmodel(path_or_bytes):
    """Parse a kmodel (v3 or v4) from a path or bytes; returns KModelV3 or KModelV4."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
    else:
        try:
            path = os.fspath(path_or_bytes)
        except TypeError:
            raise EmcError(f"load_kmodel takes a file path or the file's bytes, not {type(path_or_bytes).__name__}") \
                from None
        if not os.path.isfile(path):
            raise EmcError(f"kmodel file {path} does not exist: check the path")
        with open(path, "rb") as f:
            data = f.read()
    if len(data) < 8:
        raise KModelFormatError(f"a kmodel starts with at least 8 header bytes, this one has {len(data)}", 0, "header")
    if data[:4] == V4_MAGIC:
        from .v4.reader import KModelV4
        return KModelV4.from_bytes(data)
    if int.from_bytes(data[:4], "little") == V3_VERSION:
        from .v3.reader import KModelV3
        return KModelV3.from_bytes(data)
    raise KModelFormatError(f"unknown kmodel header {data[:4].hex()}: neither v3 (first word 3) nor v4 ('LDMK'); "
                            f"is this a kmodel?", 0, "version")


def _as_model(model):
    if hasattr(model, "layers") or hasattr(model, "nodes"):
        return model
    return load_kmodel(model)


def run_kmodel(model, x, layout="hwc", trace=False, **options):
    """Outputs of the kmodel for x as a list of flat float32 arrays (device order, CHW), batched like x.

    model: a parsed kmodel, a path or the file's bytes. x: for a KPU-input model a uint8 HWC image or an
    N,H,W,C batch (layout='chw' takes the raw device layout C,H,W / N,C,H,W); for a float-input model
    (first layer FULLY_CONNECTED) a float vector or an N x n batch. trace=True returns (outputs, trace) with
    trace = [(layer_index, layer_name, array), ...] of every layer's output (arrays batched like x).
    Options (v3): arg_x_mode='per_channel' (the chip) | 'sum' (nncase's simulators), sdk='head' | 'maixemc'.
    """
    model = _as_model(model)
    if model.version == 4:
        from .v4.simulator import run_v4
        return run_v4(model, x, layout, trace, **options)
    from .v3.simulator import run_v3
    return run_v3(model, x, layout=layout, trace=trace, **options)
