"""A dense layer over more than 1024 inputs (issue 10): one 3x3 KPU conv on a gathered 4x4 map with uint8
weights, in kmodel v3 and v4, never float32 FULLY_CONNECTED / matmul weights; too big for that (over 9216
inputs), kmodel v4's uint8 quantized_matmul."""
import numpy as np
import pytest

import emc
from emc import layers as L
from emc.graph import Graph
from emc.layers.activations import Act
from emc.platforms.k210.lowering.convplan import window_kernel, window_ranges
from support import smooth_images

RNG = np.random.default_rng(41)


def rnd(*shape):
    return RNG.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("n_in", [1025, 4096, 9216])
def test_the_window_form_computes_the_dense_product(n_in):
    """Output pixel (1, 1) of a 3x3 conv (zero padding) over the gathered map equals x @ W, done independently."""
    x, w = RNG.normal(size=n_in), RNG.normal(size=(n_in, 5))
    kernel = window_kernel(w[None, None])
    c = kernel.shape[2]
    assert c == -(-n_in // 9) and c <= 1024
    gathered = np.concatenate([x[start:start + size] for start, size in window_ranges(n_in, c)])
    assert gathered.size == 16 * c
    window = gathered.reshape(c, 4, 4)[:, 0:3, 0:3]                    # rows 0-2, columns 0-2: pixel (1, 1)'s taps
    got = np.einsum("cyx,yxco->o", window, kernel)
    assert np.allclose(got, x @ w)


def flatten_dense_graph(stride=2, act="linear"):
    """16x16x3 -> conv, 64 channels (stride 2: 4096 values, stride 1: 16384) -> flatten -> Dense(10)."""
    g = Graph()
    i = g.add_input((16, 16, 3))
    pads = (0, 1, 0, 1) if stride == 2 else (1, 1, 1, 1)
    x = g.add(L.Conv2D(rnd(3, 3, 3, 64) * 0.3, rnd(64) * 0.1, strides=(stride, stride), pads=pads,
                       activation=Act("relu")), i)
    n = 16 * 16 * 64 // stride ** 2
    x = g.add(L.Dense(rnd(n, 10) * 0.1 / np.sqrt(n / 1024), rnd(10) * 0.1, activation=Act(act)), g.add(L.Flatten(), x))
    g.set_outputs(x)
    return g


@pytest.mark.parametrize("version", [3, 4])
def test_flatten_dense_over_4096_inputs_runs_on_the_kpu_with_uint8_weights(version):
    g = flatten_dense_graph()
    data = smooth_images((16, 16, 3), 32, np.random.default_rng(3))
    art = emc.convert(g, platform="k210", dataset=data, version=version)
    rows = {r["layer"]: r for r in art.report.rows if r["unit"] == "KPU"}
    dense = [n.name for n in art.graph if n.op.kind == "dense"][0]
    assert dense in rows and rows[dense]["weights"] < 4096 * 10 * 2          # uint8 weights, not 163,880 B float
    assert not {"FULLY_CONNECTED", "matmul"} & {r["type"] for r in art.report.rows}
    want, got = art.graph.run(data)[0], art.simulate(data)[0]
    cos = float(np.sum(want * got) / np.linalg.norm(want) / np.linalg.norm(got))
    assert cos >= 0.999, cos


def test_dense_cpu_still_gives_float_weights():
    data = smooth_images((16, 16, 3), 8, np.random.default_rng(3))
    art = emc.convert(flatten_dense_graph(), platform="k210", dataset=data, version=3, dense="cpu")
    assert "FULLY_CONNECTED" in {r["type"] for r in art.report.rows}


@pytest.mark.parametrize("act", ["linear", "relu", "softmax"])
def test_a_dense_over_16384_inputs_is_a_quantized_matmul_in_v4(act):
    g = flatten_dense_graph(stride=1, act=act)
    data = smooth_images((16, 16, 3), 16, np.random.default_rng(4))
    art = emc.convert(g, platform="k210", dataset=data, version=4)
    types = [r["type"] for r in art.report.rows]
    assert "quantized_matmul" in types and "matmul" not in types
    row = [r for r in art.report.rows if r["type"] == "quantized_matmul"][0]
    assert row["weights"] == 16384 * 10 + 4 * 10 and row["MACs"] == 16384 * 10
    want, got = art.graph.run(data)[0], art.simulate(data)[0]
    cos = float(np.sum(want * got) / np.linalg.norm(want) / np.linalg.norm(got))
    assert cos >= 0.999, cos
