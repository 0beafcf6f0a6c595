"""Graph rewrites that keep Graph.run unchanged (within float rounding) and make platforms' work simpler."""
import logging

from .fold import drop_identity, fold_batchnorm, fold_padding, fuse_activation

log = logging.getLogger(__name__)

DEFAULT_PASSES = (drop_identity, fold_padding, fold_batchnorm, fuse_activation)


def optimize(graph, passes=DEFAULT_PASSES):
    """Return a rewritten copy of graph; each pass returns how many rewrites it made."""
    graph = graph.copy()
    for rewrite in passes:
        count = rewrite(graph)
        if count:
            log.debug("%s: %d rewrite(s)", rewrite.__name__, count)
    return graph.validate()


__all__ = ["optimize", "DEFAULT_PASSES", "drop_identity", "fold_batchnorm", "fold_padding", "fuse_activation"]
