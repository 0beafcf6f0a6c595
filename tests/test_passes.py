"""Each pass leaves Graph.run unchanged within float tolerance, and really rewrites the graph."""
import numpy as np
import pytest

from emc import layers as L
from emc import passes
from emc.graph import Graph

RNG = np.random.default_rng(7)


def rnd(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def rel_l2(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def build():
    """pad -> conv -> BN -> relu6 -> dropout -> depthwise(mult 2) -> BN -> (branch) add -> flatten -> dense -> BN."""
    g = Graph()
    i = g.add_input((8, 8, 3))
    p = g.add(L.Pad2D((1, 1, 1, 1)), i)
    c = g.add(L.Conv2D(rnd(3, 3, 3, 4), None, strides=2), p)
    b = g.add(L.BatchNorm.from_stats(rnd(4), rnd(4), rnd(4), np.abs(rnd(4)) + 0.1, 1e-3), c)
    a = g.add(L.Activation("relu6"), b)
    d = g.add(L.Identity("Dropout"), a)
    dw = g.add(L.DepthwiseConv2D(rnd(3, 3, 4, 2), rnd(8), pads=(1, 1, 1, 1)), d)
    b2 = g.add(L.BatchNorm(rnd(8), rnd(8)), dw)
    side = g.add(L.Conv2D(rnd(1, 1, 4, 8), rnd(8)), d)
    s = g.add(L.Elementwise("add"), [b2, side])
    f = g.add(L.Flatten(), s)
    o = g.add(L.Dense(rnd(128, 3), rnd(3)), f)
    g.set_outputs(g.add(L.BatchNorm(rnd(3), rnd(3)), o))
    return g


@pytest.mark.parametrize("rewrite,removed", [
    (passes.drop_identity, 1), (passes.fold_padding, 1), (passes.fold_batchnorm, 3), (passes.fuse_activation, 0),
])
def test_each_pass_keeps_outputs(rewrite, removed):
    g = build()
    x = rnd(5, 8, 8, 3)
    before = g.run(x)[0]
    work = g.copy()
    assert rewrite(work) == removed
    assert len(work) == len(g) - removed
    np.testing.assert_array_less(rel_l2(work.validate().run(x)[0], before), 1e-5)


def test_optimize_all_passes():
    g = build()
    x = rnd(5, 8, 8, 3)
    opt = passes.optimize(g)
    kinds = [n.op.kind for n in opt]
    assert "identity" not in kinds and "batch_norm" not in kinds and "pad2d" not in kinds
    assert "activation" not in kinds   # relu6 fused into the conv once its BN is folded
    conv = next(n for n in opt if n.op.kind == "conv2d" and n.op.kernel.shape[0] == 3)
    assert conv.op.activation.name == "relu6" and conv.op.pads == (1, 1, 1, 1)
    assert rel_l2(opt.run(x)[0], g.run(x)[0]) < 1e-5
    assert len(g) == 13   # the original graph is untouched


def test_batchnorm_with_branching_input_is_kept():
    g = Graph()
    i = g.add_input((4, 4, 2))
    c = g.add(L.Conv2D(rnd(1, 1, 2, 2), None), i)
    b = g.add(L.BatchNorm(rnd(2), rnd(2)), c)
    g.set_outputs([b, c])           # conv output is also a graph output: BN cannot be folded
    assert passes.fold_batchnorm(g) == 0
