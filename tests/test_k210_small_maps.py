"""Maps under the KPU's 4x4 (issue 10): grown to 4x4 on the CPU, convolved on the KPU, the extra outputs cropped."""
import numpy as np
import pytest

import emc
from emc import layers as L
from emc.graph import Graph
from emc.layers.activations import Act
from support import smooth_images

RNG = np.random.default_rng(31)


def rnd(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def small_map_graph():
    """6x6 -> 'valid' 3x3 conv -> 4x4 -> valid 3x3 (signed, zero point not 0) -> 2x2 ... -> 3x3 'same' on the 2x2
    map after a relu, a BatchNorm on it, a 3x3 'valid' conv covering a 3x3 map (a fully connected layer)."""
    g = Graph()
    i = g.add_input((6, 6, 3))
    x = g.add(L.Conv2D(rnd(3, 3, 3, 8), rnd(8), activation=Act("relu")), i)              # 4x4
    x = g.add(L.Conv2D(rnd(3, 3, 8, 8), rnd(8)), x)                                       # 2x2, signed
    x = g.add(L.Conv2D(rnd(1, 1, 8, 8), rnd(8), activation=Act("relu")), x)              # 1x1 conv on 2x2
    x = g.add(L.Conv2D(rnd(3, 3, 8, 8), rnd(8), pads=(1, 1, 1, 1), activation=Act("relu")), x)   # 'same' on 2x2
    x = g.add(L.Pad2D((1, 0, 1, 0)), x)                                                   # 3x3
    x = g.add(L.BatchNorm(np.abs(rnd(8)) + 0.5, rnd(8)), x)
    x = g.add(L.DepthwiseConv2D(rnd(3, 3, 8, 1), rnd(8), pads=(1, 1, 1, 1)), x)          # depthwise on 3x3
    x = g.add(L.Conv2D(rnd(3, 3, 8, 6), rnd(6)), x)                                       # covers the 3x3 map
    g.set_outputs(x)
    return g


@pytest.mark.parametrize("version", [3, 4])
def test_small_maps_run_on_the_kpu(version):
    g = small_map_graph()
    x = smooth_images((6, 6, 3), 32, np.random.default_rng(3))
    art = emc.convert(g, platform="k210", dataset=x, version=version)
    kpu_layers = {r["layer"] for r in art.report.rows if r["unit"] == "KPU"}
    convs = [n.name for n in art.graph if n.op.kind in ("conv2d", "depthwise_conv2d")]
    assert set(convs) <= kpu_layers
    assert not any("runs on the CPU" in note for note in art.report.notes)
    want, got = art.graph.run(x)[0], art.simulate(x)[0]
    assert want.shape == got.shape == (32, 1, 1, 6)
    cos = float(np.sum(want * got) / np.linalg.norm(want) / np.linalg.norm(got))
    assert cos >= 0.99


def signed_small_map_graph():
    """6x6 -> 'valid' 3x3 conv -> 4x4 -> 'valid' 3x3, signed (zero point not 0) -> 2x2 -> 3x3 'same' conv and a
    3x3 'same' depthwise conv straight on that signed 2x2 map, whose padding must be real 0."""
    g = Graph()
    i = g.add_input((6, 6, 3))
    x = g.add(L.Conv2D(rnd(3, 3, 3, 8), rnd(8), activation=Act("relu")), i)
    x = g.add(L.Conv2D(rnd(3, 3, 8, 8), rnd(8) + 2.0), x)                                 # 2x2, mostly positive
    x = g.add(L.Conv2D(rnd(3, 3, 8, 8), rnd(8), pads=(1, 1, 1, 1)), x)                    # 'same' on 2x2, signed in
    x = g.add(L.DepthwiseConv2D(rnd(3, 3, 8, 1), rnd(8), pads=(1, 1, 1, 1)), x)          # depthwise, signed in
    g.set_outputs(x)
    return g


def test_small_map_same_conv_on_signed_input_runs_exactly_in_v3():
    """v3 pads on the CPU with code 0 only; a conv on a small signed map runs as the dense layer it is instead,
    so the float reference with zero padding is matched to quantisation error (with code-0 padding, i.e. a
    padding of about -1.5 here, it would not be)."""
    g = signed_small_map_graph()
    x = smooth_images((6, 6, 3), 32, np.random.default_rng(3))
    art = emc.convert(g, platform="k210", dataset=x, version=3)
    types = [r["type"] for r in art.report.rows]       # both convs as dense layers: a padded 1x1 map each
    assert types.count("K210_ADD_PADDING") == 2 and types.count("K210_REMOVE_PADDING") == 2, types
    want, got = art.graph.run(x)[0], art.simulate(x)[0]
    assert want.shape == got.shape == (32, 2, 2, 8)
    cos = float(np.sum(want * got) / np.linalg.norm(want) / np.linalg.norm(got))
    assert cos >= 0.99, cos
