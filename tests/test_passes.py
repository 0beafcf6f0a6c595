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


def conv_relu_bn(pads_next=(0, 0, 0, 0), scale=None, shift=None, between=None):
    """conv -> relu -> BN -> [between] -> conv (pads_next); returns the graph."""
    g = Graph()
    i = g.add_input((8, 8, 3))
    c = g.add(L.Conv2D(rnd(3, 3, 3, 4), rnd(4), pads=(1, 1, 1, 1)), i)
    a = g.add(L.Activation("relu"), c)
    b = g.add(L.BatchNorm(np.abs(rnd(4)) + 0.2 if scale is None else scale, rnd(4) if shift is None else shift), a)
    if between is not None:
        b = g.add(between, b)
    g.set_outputs(g.add(L.Conv2D(rnd(3, 3, 4, 5), rnd(5), pads=pads_next), b))
    return g


def check_same(g, opt):
    x = rnd(4, 8, 8, 3)
    assert rel_l2(opt.run(x)[0], g.run(x)[0]) < 1e-5


def test_batchnorm_after_activation_folds_into_next_conv_and_frees_the_pool():
    g = conv_relu_bn(between=L.Pool2D("max", 2))
    opt = passes.optimize(g)
    assert [n.op.kind for n in opt] == ["input", "conv2d", "pool2d", "conv2d"]     # pool now follows the conv
    assert opt[list(opt.nodes)[1]].op.activation.name == "relu"
    check_same(g, opt)


@pytest.mark.parametrize("pads,shift,folds", [((1, 1, 1, 1), None, False), ((1, 1, 1, 1), np.zeros(4), True),
                                              ((0, 0, 0, 0), None, True)])
def test_forward_fold_only_when_padding_is_exact(pads, shift, folds):
    g = conv_relu_bn(pads, shift=shift)
    opt = passes.optimize(g)
    assert ("batch_norm" not in [n.op.kind for n in opt]) == folds
    check_same(g, opt)


def test_negative_scale_does_not_cross_a_max_pool():
    g = conv_relu_bn(scale=np.array([1.0, -0.5, 2.0, 1.0], np.float32), between=L.Pool2D("max", 2))
    assert passes.fold_affine_forward(g.copy()) == 0
    g = conv_relu_bn(scale=np.array([1.0, -0.5, 2.0, 1.0], np.float32), between=L.Pool2D("avg", 2))
    opt = passes.optimize(g)
    assert "batch_norm" not in [n.op.kind for n in opt]
    check_same(g, opt)


def test_batchnorm_folds_through_flatten_into_dense():
    g = Graph()
    i = g.add_input((3, 3, 4))
    b = g.add(L.BatchNorm(rnd(4), rnd(4)), g.add(L.Activation("relu"), i))
    g.set_outputs(g.add(L.Dense(rnd(36, 6), rnd(6)), g.add(L.Flatten(), b)))
    opt = passes.optimize(g)
    assert [n.op.kind for n in opt] == ["input", "activation", "flatten", "dense"]
    x = rnd(4, 3, 3, 4)
    assert rel_l2(opt.run(x)[0], g.run(x)[0]) < 1e-5


def test_noops_are_removed():
    g = Graph()
    i = g.add_input((6, 6, 2))
    x = g.add(L.Pool2D("max", 1, 1), i)
    x = g.add(L.Pad2D((0, 0, 0, 0)), x)
    x = g.add(L.Reshape((6, 6, 2)), x)
    x = g.add(L.Pad2D((2, 1, 1, 0)), x)
    x = g.add(L.Crop2D((2, 0, 1, 0)), x)              # leaves a one-row bottom padding
    g.set_outputs(g.add(L.Conv2D(rnd(1, 1, 2, 3), None), x))
    opt = passes.optimize(g)
    assert [n.op.kind for n in opt] == ["input", "conv2d"]
    assert opt[list(opt.nodes)[1]].op.pads == (0, 1, 0, 0)
    x = rnd(3, 6, 6, 2)
    assert rel_l2(opt.run(x)[0], g.run(x)[0]) < 1e-5


def test_batchnorm_sinks_below_a_max_pool_when_the_next_conv_pads():
    """Conv-ReLU-BN-MaxPool-Conv('same'): the BN cannot fold (padding), but moves below the pool, which then
    follows the conv directly (a platform fuses it); a negative scale keeps the order."""
    g = conv_relu_bn((1, 1, 1, 1), between=L.Pool2D("max", 2))
    opt = passes.optimize(g)
    assert [n.op.kind for n in opt] == ["input", "conv2d", "pool2d", "batch_norm", "conv2d"]
    check_same(g, opt)
    g = conv_relu_bn((1, 1, 1, 1), scale=np.array([1.0, -0.5, 2.0, 1.0], np.float32), between=L.Pool2D("max", 2))
    assert [n.op.kind for n in passes.optimize(g)] == ["input", "conv2d", "batch_norm", "pool2d", "conv2d"]


def test_split_channels_by_count_and_by_map_size():
    """Over `limit` channels: ranges ending in a concat; over max_map_bytes with a summing conv after the
    channel-wise layers: ranges laid out one after the other, partial convs and a sum. Float results equal."""
    from emc.passes.channels import split_channels
    g = Graph()
    i = g.add_input((6, 6, 3))
    wide = g.add(L.Conv2D(rnd(1, 1, 3, 10), rnd(10), activation=L.activations.Act("relu")), i)
    g.set_outputs(g.add(L.Pool2D("max", 2), wide))
    work = g.copy()
    assert split_channels(work, limit=4) == 1
    assert [n.name for n in work if n.op.kind == "conv2d"] == ["conv2d:0-4", "conv2d:4-8", "conv2d:8-10"]
    x = rnd(3, 6, 6, 3)
    assert rel_l2(work.validate().run(x)[0], g.run(x)[0]) < 1e-6

    g = Graph()
    i = g.add_input((8, 8, 3))
    e = g.add(L.Conv2D(rnd(1, 1, 3, 16), rnd(16), activation=L.activations.Act("relu6")), i, "expand")
    d = g.add(L.DepthwiseConv2D(rnd(3, 3, 16, 1), rnd(16), strides=2, pads=(0, 1, 0, 1)), e, "dw")
    g.set_outputs(g.add(L.Conv2D(rnd(1, 1, 16, 5), rnd(5), activation=L.activations.Act("relu")), d, "project"))
    work = g.copy()
    assert split_channels(work, limit=1024, max_map_bytes=8 * 8 * 8) == 1
    assert [n.name for n in work][1:] == ["expand:0-8", "dw:0-8", "project:0-8", "expand:8-16", "dw:8-16",
                                          "project:8-16", "project:sum", "project"]
    x = rnd(3, 8, 8, 3)
    assert rel_l2(work.validate().run(x)[0], g.run(x)[0]) < 1e-5
