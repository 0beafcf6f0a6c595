"""Split layers wider than a platform's channel limit into channel ranges (the K210's KPU: 1024 per layer).

A conv / dense-on-a-map with more output channels than the limit becomes several layers, each computing an adjacent
range of the channels. The split carries on through the channel-wise layers that read it alone (pools, global
pools, activations, per-channel affines), and ends at:

- a conv / dense that reads all the channels: it becomes one partial layer per range (its kernel's input rows of
  that range, the bias in the first) and an element-wise sum, then its activation -- the "CPU sum" of a layer
  with too many input channels (MobileNetV2's 1280-channel Conv_1 -> global pool -> 1280 x 1000 dense head);
- anything else: a channel Concat of the ranges, i.e. the original tensor.

Float results stay equal up to rounding. This runs before calibration, so each new tensor gets its own range.
"""

from ..graph import Graph
from ..layers import (Activation, BatchNorm, Concat, Conv2D, Dense, DepthwiseConv2D, Elementwise, GlobalPool2D,
                      Pool2D, Rescale)
from ..layers.activations import LINEAR


def _ranges(channels, limit):
    """Adjacent ranges of at most `limit` channels, the first ones full (multiples of 4 suit the KPU's layout)."""
    return [(start, min(start + limit, channels)) for start in range(0, channels, limit)]


def _map_bytes(shape):
    """Bytes of an (H, W, C) map in a KPU-like layout (rows padded to 64 bytes); 0 for a vector."""
    if len(shape) != 3:
        return 0
    h, w, c = shape
    return h * -(-w // 64) * 64 * c if w > 32 else h * w * c


def _chunk(node, limit, max_map_bytes):
    """Channels per part: at most `limit`, and (when max_map_bytes is set) small enough that a part's map fits."""
    channels = node.shape[-1]
    if max_map_bytes and _map_bytes(node.shape) > max_map_bytes:
        parts = -(-_map_bytes(node.shape) // max_map_bytes)
        per = -(-channels // parts)
        limit = min(limit, -(-per // 4) * 4 if per > 4 else per)
    return limit


def _out_slice(op, lo, hi):
    """The op restricted to output channels lo..hi (conv / dense / depthwise / affine)."""
    new = op.copy()
    if isinstance(op, (BatchNorm, Rescale)):
        new.weights = {k: (v[lo:hi] if v.size > 1 else v) for k, v in op.weights.items()}
    elif isinstance(op, DepthwiseConv2D):
        new.weights = {"kernel": op.kernel[:, :, lo:hi], "bias": None if op.bias is None else op.bias[lo:hi]}
    elif isinstance(op, (Conv2D, Dense)):
        new.weights = {"kernel": op.kernel[..., lo:hi], "bias": None if op.bias is None else op.bias[lo:hi]}
    return new


def _in_slice(op, lo, hi, first):
    """The conv / dense restricted to input channels lo..hi, linear, with the bias only in the first part."""
    new = op.copy()
    kernel = op.kernel[lo:hi] if isinstance(op, Dense) else op.kernel[:, :, lo:hi]
    new.weights = {"kernel": kernel, "bias": op.bias if first else None}
    new.attrs["activation"] = LINEAR
    return new


def _channelwise(op):
    if isinstance(op, (Pool2D, GlobalPool2D, BatchNorm, Rescale)):
        return True
    if isinstance(op, Activation):
        return op.activation.name != "softmax"
    return isinstance(op, DepthwiseConv2D) and op.kernel.shape[3] == 1


def _wide(graph, node, limit):
    op = node.op
    if isinstance(op, Conv2D) or (isinstance(op, Dense) and len(graph[node.inputs[0]].shape) == 3):
        return op.kernel.shape[-1] > limit
    return False


def _plan(graph, node, limit):
    """(chain of channel-wise nodes after `node`, terminal node or None) for a wide node."""
    chain, name = [], node.name
    while True:
        readers = graph.consumers(name)
        if len(readers) != 1 or name in graph.outputs:
            return chain, None
        reader = graph[readers[0]]
        if _channelwise(reader.op) and len(reader.inputs) == 1:
            chain.append(reader)
            name = reader.name
            continue
        if isinstance(reader.op, (Conv2D, Dense)) and len(reader.inputs) == 1 and reader.op.kernel.shape[-1] <= limit:
            return chain, reader
        return chain, None


def split_channels(graph, limit=1024, max_map_bytes=None):
    """Rewrite every layer with more than `limit` output channels as described in the module docstring; with
    max_map_bytes, also a conv whose output map is bigger (split in as many equal channel ranges as it takes) when
    a conv reading the parts sums them. Returns how many layers were split. The graph is rebuilt in order (the new
    layers sit where the old ones were)."""
    jobs = {}
    for node in graph:
        if node.name in jobs or not isinstance(node.op, (Conv2D, Dense)):
            continue
        chunk = _chunk(node, limit, max_map_bytes)
        if not _wide(graph, node, chunk):
            continue
        chain, terminal = _plan(graph, node, limit)
        if chunk < limit and node.shape[-1] <= limit and terminal is None:
            continue                        # split for its size only: needs a conv that sums the parts
        jobs[node.name] = (chain, terminal, chunk)
    if not jobs:
        return 0
    skip = {n.name for chain, term, _ in jobs.values() for n in chain} | \
        {term.name for _, term, _ in jobs.values() if term is not None}
    new = Graph(graph.name)
    rename = {}
    for node in graph:
        if node.name in skip:
            continue
        inputs = [rename.get(s, s) for s in node.inputs]
        if node.name not in jobs:
            if node.op.kind == "input":
                rename[node.name] = new.add_input(node.shape, node.name)
            else:
                rename[node.name] = new.add(node.op, inputs, node.name)
            continue
        chain, terminal, chunk = jobs[node.name]
        ranges = _ranges(node.shape[-1], chunk)
        ends, partial = [], []
        for i, (lo, hi) in enumerate(ranges):          # range by range: one range's maps are freed before the next
            part = new.add(_out_slice(node.op, lo, hi), inputs, f"{node.name}:{lo}-{hi}")
            for link in chain:
                part = new.add(_out_slice(link.op, lo, hi), [part], f"{link.name}:{lo}-{hi}")
            ends.append(part)
            if terminal is not None:
                partial.append(new.add(_in_slice(terminal.op, lo, hi, i == 0), [part], f"{terminal.name}:{lo}-{hi}"))
        last = chain[-1].name if chain else node.name
        if terminal is None:
            rename[last] = new.add(Concat(-1), ends, last)
            continue
        act = terminal.op.activation
        total = new.add(Elementwise("add"), partial, terminal.name if act.is_linear else f"{terminal.name}:sum")
        if not act.is_linear:
            total = new.add(Activation(act), [total], terminal.name)
        rename[terminal.name] = total
    new.set_outputs([rename.get(o, o) for o in graph.outputs])
    graph.__dict__.update(new.__dict__)
    return len(jobs)
