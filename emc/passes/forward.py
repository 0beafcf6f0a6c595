"""Fold a BatchNorm / Rescale into the layer after it, when that is exact.

A BatchNorm placed after an activation (Conv-ReLU-BatchNorm blocks) cannot fold into the conv before it. It can
fold into the next conv or dense: W (s x + t) + b = (W s) x + (b + W t), exactly, as long as every input the
consumer sees is an affine image of x — so the consumer must not pad with zeros (zero padding of s x + t is not
the affine image of any padding of x) unless the shift t is zero. Between the affine op and its consumer may sit
ops that commute with a per-channel affine map: flatten, identity-like reshapes, average pools (which count only
in-map samples), and max pools / global max pools when every scale is positive (max(s x + t) = s max(x) + t).
The affine op then disappears and the pools in between see x: a max pool after a conv becomes adjacent to it,
which is what lets a platform fuse it (the K210's KPU pools inside the conv).
"""
import numpy as np

from ..layers import BatchNorm, Conv2D, Dense, DepthwiseConv2D, Flatten, GlobalPool2D, Pool2D, Rescale


def _commutes(op, positive):
    if isinstance(op, Flatten):
        return True
    if isinstance(op, (Pool2D, GlobalPool2D)):
        return op.mode == "avg" or positive
    return False


def _consumer_chain(graph, name, positive):
    """(ops in between, the conv/dense consumer) reached through sole consumers, or None."""
    between = []
    while True:
        readers = graph.consumers(name)
        if len(readers) != 1 or name in graph.outputs:
            return None
        node = graph[readers[0]]
        if isinstance(node.op, (Conv2D, DepthwiseConv2D, Dense)):
            return between, node
        if not _commutes(node.op, positive):
            return None
        between.append(node)
        name = node.name


def _per_input(values, channels, consumer_in):
    """The affine op's per-channel values laid out on the consumer's input features (a flatten repeats them)."""
    values = np.broadcast_to(np.asarray(values, np.float64), (channels,))
    return np.tile(values, consumer_in // channels)


def _folded(op, scale, shift):
    """The consumer's op with x -> scale * x + shift folded into its kernel and bias (float64 arithmetic)."""
    kernel = op.kernel.astype(np.float64)
    bias = np.zeros(kernel.shape[-1] if not isinstance(op, DepthwiseConv2D) else kernel.shape[2] * kernel.shape[3]) \
        if op.bias is None else op.bias.astype(np.float64)
    if isinstance(op, Dense):
        new_kernel = kernel * scale[:, None]
        new_bias = bias + shift @ kernel
    elif isinstance(op, DepthwiseConv2D):
        new_kernel = kernel * scale[None, None, :, None]
        new_bias = bias + (kernel.sum(axis=(0, 1)) * shift[:, None]).reshape(-1)
    else:
        new_kernel = kernel * scale[None, None, :, None]
        new_bias = bias + np.einsum("hwio,i->o", kernel, shift)
    new = op.copy()
    new.weights = {"kernel": new_kernel.astype(np.float32), "bias": new_bias.astype(np.float32)}
    return new


def sink_affine_below_pools(graph):
    """BatchNorm / Rescale -> pool becomes pool -> BatchNorm / Rescale when they commute (see the module docstring):
    the pool then sits right after the conv before it, where a platform can fuse it (the KPU pools inside the conv
    instead of a CPU pool on a float copy), and the affine op works on the smaller map. Both keep their names; the
    pool's readers now read the affine op, which gives what the pool gave."""
    count = 0
    order = list(graph.nodes)
    for name in order:
        node = graph.nodes.get(name)
        if node is None or not isinstance(node.op, (BatchNorm, Rescale)) or len(node.shape) != 3:
            continue
        readers = graph.consumers(name)
        if len(readers) != 1 or name in graph.outputs:
            continue
        pool = graph[readers[0]]
        positive = bool(np.all(np.asarray(node.op.scale) > 0))
        if not isinstance(pool.op, Pool2D) or not _commutes(pool.op, positive) or pool.name in graph.outputs:
            continue
        _swap(graph, node, pool)
        count += 1
    return count


def _swap(graph, affine, pool):
    """affine -> pool becomes pool -> affine, in the same two places of the node order."""
    source = affine.inputs[0]
    for other in graph.nodes.values():
        other.inputs = [affine.name if s == pool.name else s for s in other.inputs]
    pool.inputs, affine.inputs = [source], [pool.name]
    affine.shape = pool.shape
    items = list(graph.nodes.items())
    i, j = [k for k, (name, _) in enumerate(items) if name in (affine.name, pool.name)]
    items[i], items[j] = items[j], items[i]
    graph.nodes = dict(items)


def fold_affine_forward(graph):
    """BatchNorm / Rescale -> [flatten, pools] -> conv/depthwise/dense: fold into the consumer when exact."""
    count = 0
    for node in list(graph):
        if not isinstance(node.op, (BatchNorm, Rescale)) or node.name not in graph.nodes:
            continue
        channels = node.shape[-1]
        scale = np.broadcast_to(node.op.scale.astype(np.float64), (channels,))
        shift = np.broadcast_to(node.op.offset.astype(np.float64), (channels,))
        found = _consumer_chain(graph, node.name, bool(np.all(scale > 0)))
        if found is None:
            continue
        between, consumer = found
        op = consumer.op
        if isinstance(op, (Conv2D, DepthwiseConv2D)) and any(op.pads) and np.any(shift != 0):
            continue                        # zero padding of s x + t is no padding of x: not exact
        if between and isinstance(between[-1].op, Flatten) and isinstance(op, (Conv2D, DepthwiseConv2D)):
            continue
        n_in = op.kernel.shape[0] if isinstance(op, Dense) else op.kernel.shape[2]
        if n_in % channels:
            continue
        graph.replace_op(consumer.name, _folded(op, _per_input(scale, channels, n_in),
                                                _per_input(shift, channels, n_in)))
        graph.remove(node.name)
        count += 1
    return count
