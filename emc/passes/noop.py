"""Remove layers that compute nothing: 1x1 stride-1 pools, zero pads and crops, pad-then-crop round trips,
factor-1 upsampling and reshapes / flattens that keep the shape.

Frontends keep such layers (Keras models contain them: `MaxPooling2D(1, 1)`, `ZeroPadding2D(0)`), and each one
costs a platform a layer and a buffer; a pad followed by a crop of the same amounts would make the K210 pad on the
CPU for nothing.
"""
from ..layers import Crop2D, Flatten, Pad2D, Pool2D, Reshape, Upsample2D


def _is_noop(graph, node):
    op = node.op
    if isinstance(op, Pool2D):
        return op.pool_size == (1, 1) and op.strides == (1, 1) and not any(op.pads)
    if isinstance(op, Pad2D):
        return not any(op.pads)
    if isinstance(op, Crop2D):
        return not any(op.crops)
    if isinstance(op, Upsample2D):
        return op.factor == (1, 1)
    if isinstance(op, (Reshape, Flatten)):
        return len(node.inputs) == 1 and tuple(graph[node.inputs[0]].shape) == tuple(node.shape)
    return False


def _cancel_pad_crop(graph, node):
    """Crop2D reading a Pad2D read by nothing else: the common part of the two cancels. Returns True if changed."""
    if not isinstance(node.op, Crop2D) or len(node.inputs) != 1:
        return False
    pad = graph[node.inputs[0]]
    if not isinstance(pad.op, Pad2D) or graph.consumers(pad.name) != [node.name] or pad.name in graph.outputs:
        return False
    common = tuple(min(p, c) for p, c in zip(pad.op.pads, node.op.crops))
    if not any(common):
        return False
    graph.nodes[pad.name].op = Pad2D(tuple(p - c for p, c in zip(pad.op.pads, common)), pad.op.value)
    graph.nodes[pad.name].shape = pad.op.output_shape([graph[pad.inputs[0]].shape])
    graph.replace_op(node.name, Crop2D(tuple(c - m for c, m in zip(node.op.crops, common))))
    return True


def remove_noops(graph):
    """Shrink pad-then-crop pairs and delete no-op layers (see the module docstring); returns the rewrites."""
    count = sum(_cancel_pad_crop(graph, node) for node in list(graph))
    for node in list(graph):
        if node.name not in graph.nodes or not _is_noop(graph, node):
            continue
        if node.name in graph.outputs and graph[node.inputs[0]].name in graph.inputs:
            continue                               # keep a graph that is nothing but its input
        graph.remove(node.name)
        count += 1
    return count
