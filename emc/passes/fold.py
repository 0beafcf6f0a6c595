"""The standard passes: drop Identity (Dropout), fold zero padding and BatchNorm into convs, fuse activations."""
import numpy as np

from ..layers import Activation, BatchNorm, Conv2D, Dense, DepthwiseConv2D, Identity, Pad2D

LINEAR_PRODUCERS = (Conv2D, DepthwiseConv2D, Dense)


def _sole_consumer(graph, name):
    """The one node reading `name`, if exactly one does and `name` is not a graph output."""
    readers = graph.consumers(name)
    if len(readers) != 1 or name in graph.outputs:
        return None
    return graph[readers[0]]


def _foldable_producer(graph, node):
    """The linear conv/dense node feeding `node` alone, if any."""
    if len(node.inputs) != 1:
        return None
    producer = graph[node.inputs[0]]
    if not isinstance(producer.op, LINEAR_PRODUCERS) or not producer.op.activation.is_linear:
        return None
    if _sole_consumer(graph, producer.name) is not node:
        return None
    return producer


def drop_identity(graph):
    names = [n.name for n in graph if isinstance(n.op, Identity)]
    for name in names:
        graph.remove(name)
    return len(names)


def fold_batchnorm(graph):
    """conv/depthwise/dense -> BatchNorm becomes one op with scaled kernel and bias."""
    count = 0
    for node in list(graph):
        if not isinstance(node.op, BatchNorm):
            continue
        producer = _foldable_producer(graph, node)
        if producer is None:
            continue
        op = producer.op.copy()
        channels = producer.shape[-1]
        scale = np.broadcast_to(node.op.scale, (channels,)).astype(np.float64)
        offset = np.broadcast_to(node.op.offset, (channels,)).astype(np.float64)
        kernel = op.weights["kernel"].astype(np.float64)
        if isinstance(op, DepthwiseConv2D):
            kh, kw, c, mult = kernel.shape
            kernel = kernel * scale.reshape(c, mult)
        else:
            kernel = kernel * scale
        bias = op.weights["bias"]
        bias = offset + (0.0 if bias is None else bias.astype(np.float64) * scale)
        op.weights = {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32)}
        graph.replace_op(producer.name, op)
        graph.remove(node.name)
        count += 1
    return count


def fuse_activation(graph):
    """conv/depthwise/dense (linear) -> Activation becomes one op with a fused activation."""
    count = 0
    for node in list(graph):
        if not isinstance(node.op, Activation) or node.op.activation.name == "softmax":
            continue
        producer = _foldable_producer(graph, node)
        if producer is None:
            continue
        op = producer.op.copy()
        op.attrs["activation"] = node.op.activation
        graph.replace_op(producer.name, op)
        graph.remove(node.name)
        count += 1
    return count


def fold_padding(graph):
    """Zero Pad2D -> conv/depthwise becomes the conv with larger explicit padding."""
    count = 0
    for node in list(graph):
        if not isinstance(node.op, Pad2D) or node.op.value != 0.0:
            continue
        consumer = _sole_consumer(graph, node.name)
        if consumer is None or not isinstance(consumer.op, (Conv2D, DepthwiseConv2D)):
            continue
        op = consumer.op.copy()
        op.attrs["pads"] = tuple(a + b for a, b in zip(op.pads, node.op.pads))
        graph.remove(node.name)
        graph.replace_op(consumer.name, op)
        count += 1
    return count
