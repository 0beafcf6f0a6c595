"""emc.Graph and its ops against TensorFlow's own kernels (an independent reference), and graph errors."""
import numpy as np
import pytest

import emc
from emc import layers as L
from emc.graph import Graph

tf = pytest.importorskip("tensorflow")

RNG = np.random.default_rng(1234)


def rel_l2(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / max(np.linalg.norm(b), 1e-12))


def single(op, shape, n=2):
    g = Graph()
    i = g.add_input(shape)
    g.set_outputs(g.add(op, i))
    x = RNG.normal(size=(n,) + shape).astype(np.float32)
    return g.run(x)[0], x


@pytest.mark.parametrize("kernel,stride,dilation,padding,size", [
    (3, 1, 1, "SAME", (9, 9)), (3, 2, 1, "SAME", (8, 8)), (3, 2, 1, "SAME", (7, 9)), (5, 1, 1, "VALID", (10, 8)),
    (1, 2, 1, "VALID", (8, 8)), (3, 1, 2, "SAME", (11, 10)), (2, 3, 1, "SAME", (10, 10)),
])
def test_conv2d_matches_tf(kernel, stride, dilation, padding, size):
    cin, cout = 3, 5
    k = RNG.normal(size=(kernel, kernel, cin, cout)).astype(np.float32)
    b = RNG.normal(size=cout).astype(np.float32)
    pads = (0, 0, 0, 0)
    if padding == "SAME":
        pads = L.same_pads(size[0], kernel, stride, dilation) + L.same_pads(size[1], kernel, stride, dilation)
    y, x = single(L.Conv2D(k, b, strides=stride, dilation=dilation, pads=pads, activation=L.Act("relu6")),
                  size + (cin,))
    ref = tf.nn.relu6(tf.nn.conv2d(x, k, stride, padding, dilations=dilation) + b).numpy()
    assert y.shape == ref.shape
    assert rel_l2(y, ref) < 1e-5


@pytest.mark.parametrize("mult,stride,padding", [(1, 1, "SAME"), (2, 2, "SAME"), (1, 2, "VALID")])
def test_depthwise_matches_tf(mult, stride, padding):
    size, c = (10, 10), 4
    k = RNG.normal(size=(3, 3, c, mult)).astype(np.float32)
    pads = (0, 0, 0, 0)
    if padding == "SAME":
        pads = L.same_pads(size[0], 3, stride) + L.same_pads(size[1], 3, stride)
    y, x = single(L.DepthwiseConv2D(k, None, strides=stride, pads=pads), size + (c,))
    ref = tf.nn.depthwise_conv2d(x, k, (1, stride, stride, 1), padding).numpy()
    assert rel_l2(y, ref) < 1e-5


@pytest.mark.parametrize("mode,pool,stride,padding,size", [
    ("max", 3, 2, "SAME", (32, 32)), ("avg", 3, 2, "SAME", (9, 8)), ("max", 2, 2, "VALID", (7, 7)),
    ("avg", 2, 1, "SAME", (5, 6)),
])
def test_pool_matches_tf(mode, pool, stride, padding, size):
    pads = (0, 0, 0, 0)
    if padding == "SAME":
        pads = L.same_pads(size[0], pool, stride) + L.same_pads(size[1], pool, stride)
    y, x = single(L.Pool2D(mode, pool, stride, pads), size + (3,))
    fn = tf.nn.max_pool2d if mode == "max" else tf.nn.avg_pool2d
    ref = fn(x, pool, stride, padding).numpy()
    assert rel_l2(y, ref) < 1e-6


@pytest.mark.parametrize("name", ["relu", "relu6", "sigmoid", "tanh", "swish", "softplus", "softsign", "elu",
                                  "softmax", "hard_sigmoid", "hard_swish", "leaky_relu"])
def test_activations_match_keras(name):
    import keras
    y, x = single(L.Activation(name), (4, 4, 6))
    ref = np.asarray(keras.activations.get(name)(x))
    assert rel_l2(y, ref) < 1e-5


def test_shape_ops_and_merge():
    g = Graph()
    a = g.add_input((4, 6, 2), "a")
    b = g.add_input((4, 6, 3), "b")
    cat = g.add(L.Concat(-1), [a, b])
    up = g.add(L.Upsample2D(2), cat)
    crop = g.add(L.Crop2D((1, 2, 0, 3)), up)
    pad = g.add(L.Pad2D((0, 1, 2, 0)), crop)
    add = g.add(L.Elementwise("add"), [pad, pad])
    flat = g.add(L.Flatten(), add)
    g.set_outputs([flat, g.add(L.GlobalPool2D("avg"), cat)])
    xa = RNG.normal(size=(2, 4, 6, 2)).astype(np.float32)
    xb = RNG.normal(size=(2, 4, 6, 3)).astype(np.float32)
    y, gp = g.run([xa, xb])
    ref = np.concatenate([xa, xb], -1).repeat(2, 1).repeat(2, 2)[:, 1:-2, 0:-3]
    ref = np.pad(ref, ((0, 0), (0, 1), (2, 0), (0, 0))) * 2
    np.testing.assert_allclose(y, ref.reshape(2, -1), rtol=1e-6)
    np.testing.assert_allclose(gp, np.concatenate([xa, xb], -1).mean(axis=(1, 2)), rtol=1e-5)


def test_summary_counts_params_and_macs():
    g = Graph("s")
    i = g.add_input((8, 8, 3))
    c = g.add(L.Conv2D(np.ones((3, 3, 3, 4)), np.zeros(4), pads=(1, 1, 1, 1)), i)
    d = g.add(L.Dense(np.ones((256, 10)), np.zeros(10)), g.add(L.Flatten(), c))
    g.set_outputs(d)
    rows = {r["name"]: r for r in g.rows()}
    assert rows["conv2d"]["params"] == 3 * 3 * 3 * 4 + 4
    assert rows["conv2d"]["macs"] == 8 * 8 * 3 * 3 * 3 * 4
    assert rows["dense"]["macs"] == 2560
    assert "total: 2,682 parameters" in g.summary()


def test_run_accepts_single_sample_and_batches():
    y, _ = single(L.Activation("relu"), (3,), n=70)
    assert y.shape == (70, 3)
    g = Graph()
    g.set_outputs(g.add(L.Activation("relu"), g.add_input((3,))))
    assert g.run(np.array([-1.0, 0.5, 2.0]))[0].shape == (1, 3)


def test_graph_errors_are_emc_errors():
    g = Graph()
    i = g.add_input((4, 4, 2))
    with pytest.raises(emc.GraphError, match="not .*in the graph"):
        g.add(L.Activation("relu"), "missing")
    with pytest.raises(emc.GraphError, match="expects"):
        g.add(L.Conv2D(np.ones((3, 3, 5, 1))), i)
    with pytest.raises(emc.GraphError, match="NaN or inf"):
        g.add(L.Dense(np.array([[np.nan]]), None), i, name="bad_dense")
    with pytest.raises(emc.GraphError, match="not fixed"):
        L.Input((None, 4, 3))
    with pytest.raises(emc.UnsupportedLayerError, match="supported"):
        L.Act("gelu_approx")
    g.set_outputs(i)
    with pytest.raises(emc.GraphError, match="per-sample shape"):
        g.run(np.zeros((1, 5, 4, 2)))
    assert issubclass(emc.GraphError, emc.EmcError)


def test_elementwise_broadcasts_lower_rank_inputs():
    g = Graph()
    a = g.add_input((4, 5, 3), "a")
    b = g.add_input((3,), "b")
    g.set_outputs(g.add(L.Elementwise("add"), [a, b]))
    xa, xb = RNG.normal(size=(2, 4, 5, 3)), RNG.normal(size=(2, 3))
    np.testing.assert_allclose(g.run([xa, xb])[0], xa + xb[:, None, None, :], rtol=1e-6)


def test_written_files_follow_the_umask(tmp_path):
    import os
    from emc.fileio import write_atomic
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644
