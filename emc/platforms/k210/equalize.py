"""Per-channel rescaling between a conv and the conv reading it, so that every channel of the uint8 map
between them spans the map's whole code range (cross-layer equalisation, for the KPU's per-tensor activations).

A MobileNet depthwise layer's channels differ in range (one reaching 4.4 while the others stay under 2 leaves
those a quarter of the 256 codes); that rounding then grows through the layers. Channel c of the depthwise conv
is multiplied by s_c = (the map's calibrated top) / (the channel's calibrated top), at most MAX_SCALE, and the
reading conv's input channel c divided by s_c: the same result, except that each channel now saturates at its
own calibrated top instead of the map's -- what the calibration does to the map as a whole. For a linear, ReLU or
ReLU6 conv / depthwise conv whose only reader is a conv (real zero stays zero, so zero padding stays exact).
"""
import numpy as np

from ...calibrate import Calibration
from ...graph import preact_name

MAX_SCALE = 16.0          # at most 4 bits gained per channel: a near-dead channel is not blown up
CONVS = ("conv2d", "depthwise_conv2d")
MIN_GAIN = 1.25           # below this for every channel, leave the pair alone


def _candidates(graph, calibration):
    """(depthwise node, reading conv node) pairs that can be rescaled."""
    stats = getattr(calibration, "stats", None) or {}
    for node in graph:
        act = node.op.attrs.get("activation")
        if node.op.kind not in CONVS or act is None or act.name not in ("linear", "relu", "relu6"):
            continue
        readers = graph.consumers(node.name)
        if len(readers) != 1 or node.name in graph.outputs or graph[readers[0]].op.kind not in CONVS:
            continue
        if any(n.op.kind == "depthwise_conv2d" and n.op.kernel.shape[-1] != 1 for n in (node, graph[readers[0]])):
            continue                         # a depth multiplier: channels do not map one to one
        out = stats.get(node.name)
        pre = out if act.is_linear else stats.get(preact_name(node.name))
        if pre is None or out is None or out.channel_max is None or pre.channel_max is None:
            continue
        yield node, graph[readers[0]], pre, out


def equalize_depthwise(graph, calibration):
    """(graph copy, calibration copy, {depthwise node: per-channel scales}) with the rescaled pairs; the graph and
    the calibration given are not changed."""
    pairs = [(node.name, reader.name, pre, out) for node, reader, pre, out in _candidates(graph, calibration)]
    if not pairs:
        return graph, calibration, {}
    graph, scales = graph.copy(), {}
    ranges = dict(calibration.ranges)
    for name, reader_name, pre, out in pairs:
        node, reader = graph[name], graph[reader_name]
        lo, top = ranges[node.name]
        tops, bottoms = np.asarray(out.channel_max, np.float64), np.asarray(out.channel_min, np.float64)
        if top <= 0 or tops.shape[0] != node.shape[-1]:
            continue
        s = top / np.maximum(tops, top / MAX_SCALE)
        if lo < 0:                           # a linear map: each channel's both ends stay inside the map's range
            s = np.minimum(s, lo / np.minimum(bottoms, lo / MAX_SCALE))
        s = np.clip(s, 1.0, MAX_SCALE)
        if s.max() < MIN_GAIN:
            continue
        first, second = node.op, reader.op
        out_axis = (1, 1, -1, 1) if first.kind == "depthwise_conv2d" else (1, 1, 1, -1)
        first.weights["kernel"] = (first.kernel * s.reshape(out_axis)).astype(np.float32)
        if first.bias is not None:
            first.weights["bias"] = (first.bias * s).astype(np.float32)
        second.weights["kernel"] = (second.kernel / s.reshape(1, 1, -1, 1)).astype(np.float32)
        if pre is not out:
            lo, hi = ranges[preact_name(node.name)]
            ranges[preact_name(node.name)] = (min(lo, float(np.min(pre.channel_min * s))),
                                              max(hi, float(np.max(pre.channel_max * s))))
        scales[node.name] = s
    return graph, Calibration(ranges, calibration.stats, calibration.method), scales
