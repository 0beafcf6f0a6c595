"""Graph rewrites that keep Graph.run unchanged (within float rounding) and make platforms' work simpler."""
import logging

from .fold import drop_identity, fold_batchnorm, fold_padding, fuse_activation
from .forward import fold_affine_forward, sink_affine_below_pools
from .noop import remove_noops

log = logging.getLogger(__name__)

# no-ops go first (a MaxPooling2D(1) between a conv and its BatchNorm would block the fold); BatchNorm folds into
# the layer before it when it can, else it moves below the pools it commutes with and folds into the layer after
# it when exact; activations fuse last, and platforms then fuse the pools that became adjacent to a conv
DEFAULT_PASSES = (drop_identity, remove_noops, fold_padding, fold_batchnorm, sink_affine_below_pools,
                  fold_affine_forward, fuse_activation)


def optimize(graph, passes=DEFAULT_PASSES):
    """Return a rewritten copy of graph; each pass returns how many rewrites it made."""
    graph = graph.copy()
    for rewrite in passes:
        count = rewrite(graph)
        if count:
            log.debug("%s: %d rewrite(s)", rewrite.__name__, count)
    return graph.validate()


__all__ = ["optimize", "DEFAULT_PASSES", "drop_identity", "fold_affine_forward", "fold_batchnorm", "fold_padding",
           "fuse_activation", "remove_noops", "sink_affine_below_pools"]
