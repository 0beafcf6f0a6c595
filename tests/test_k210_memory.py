"""K210 memory planning: the best of several first-fit placements, and overflow errors only when none fits."""
import itertools

import numpy as np
import pytest

from emc.errors import PlatformLimitError
from emc.graph import Graph
from emc.layers import Act, Conv2D, DepthwiseConv2D
from emc.lifetimes import best_first_fit, first_fit, live_peak, ORDERS, searched_fit
from emc.passes import optimize
from emc.platforms import k210
from emc.platforms.k210.chip.kpu import KPU_LINES

RNG = np.random.default_rng(5)
PIXELS = (1 / 255.0, 0.0)


class _All(dict):
    """Every tensor calibrated to [0, 1]."""

    def __missing__(self, key):
        return (0.0, 1.0)

    def __contains__(self, key):
        return True


class _Cal:
    ranges = _All()


def mobilenet_v2_block1(expand=96):
    """The start of MobileNetV2 at 160 (maps 80x80 after its stride-2 stem): block 0's depthwise and projection,
    block 1's expansion to 96 channels and its depthwise conv -- two 960 KiB maps alive together."""
    g = Graph("mnv2_160")
    x = g.add_input((80, 80, 8))
    y = g.add(Conv2D(RNG.normal(0, 0.2, (3, 3, 8, 32)), None, pads=(1, 1, 1, 1)), x, name="stem")
    y = g.add(DepthwiseConv2D(RNG.normal(0, 0.2, (3, 3, 32, 1)), None, pads=(1, 1, 1, 1)), y, name="block_0_dw")
    y = g.add(Conv2D(RNG.normal(0, 0.2, (1, 1, 32, 16)), None), y, name="block_0_project")
    y = g.add(Conv2D(RNG.normal(0, 0.2, (1, 1, 16, expand)), None), y, name="block_1_expand")
    y = g.add(DepthwiseConv2D(RNG.normal(0, 0.2, (3, 3, expand, 1)), None, pads=(1, 1, 1, 1)), y,
              name="block_1_depthwise")
    y = g.add(Conv2D(RNG.normal(0, 0.2, (1, 1, expand, 24)), None), y, name="block_1_project")
    g.set_outputs([y])
    return optimize(g)


def test_mobilenet_v2_at_160_fits_where_first_use_placement_fragments():
    art = k210.convert(mobilenet_v2_block1(), _Cal(), input_transform=PIXELS)
    peak = art.report.totals["KPU RAM peak (bytes)"]
    assert 1920 * 1024 <= peak <= KPU_LINES * 64
    # first-fit in order of first use leaves block_0_project's map under the 960 KiB maps: it overflows
    from emc.platforms.k210.lowering.planner import lifetimes
    from emc.platforms.k210 import _lower
    _, layers, _ = _lower(mobilenet_v2_block1(), _Cal(), PIXELS, False, True, "auto")
    kpu = [(id(b), b.alloc_size, f, l) for b, f, l in lifetimes(layers).values() if b.where == "kpu"]
    offsets = first_fit(kpu, ORDERS["first use"])
    assert max(offsets[k] + s for k, s, _, _ in kpu) > KPU_LINES


def test_overflow_gives_the_live_peak_against_the_2_mib():
    with pytest.raises(PlatformLimitError) as err:
        k210.convert(mobilenet_v2_block1(expand=112), _Cal(), input_transform=PIXELS)
    text = str(err.value)
    assert "KPU RAM overflow" in text and "block_1_depthwise" in text and "2,048 KiB" in text
    assert "2,240 KiB" in text                      # two 112x80x80 maps of 1120 KiB alive together


def test_best_first_fit_never_loses_to_one_order_and_respects_the_live_peak():
    rng = np.random.default_rng(2)
    for _ in range(20):
        items = []
        for key in range(12):
            first = int(rng.integers(0, 10))
            items.append((key, int(rng.integers(1, 50)), first, first + int(rng.integers(0, 4))))
        extent, offsets, order = best_first_fit(items)
        assert order in ORDERS and extent >= live_peak(items)
        for name in ORDERS:
            single = first_fit(items, ORDERS[name])
            assert extent <= max(single[k] + s for k, s, _, _ in items)
        for a in items:
            for b in items:
                if a[0] < b[0] and a[2] <= b[3] and b[2] <= a[3]:
                    assert offsets[a[0]] + a[1] <= offsets[b[0]] or offsets[b[0]] + b[1] <= offsets[a[0]]


def tf_same_depthwise_stride2():
    g = Graph("tf_same_dw")
    x = g.add_input((32, 32, 8))
    y = g.add(Conv2D(RNG.normal(0, 0.3, (1, 1, 8, 16)), None), x, name="expand")
    y = g.add(DepthwiseConv2D(RNG.normal(0, 0.3, (3, 3, 16, 1)), None, strides=2, pads=(0, 1, 0, 1)), y,
              name="dw_s2")
    g.set_outputs([g.add(Conv2D(RNG.normal(0, 0.3, (1, 1, 16, 8)), None), y, name="project")])
    return optimize(g)


def test_v3_stride2_selection_reads_the_full_map_in_place():
    """TF-'same' stride-2 depthwise in v3: the 1x1 stride-2 max pool reads the streamed map from (1, 1) on, no
    shifted copy: main memory = the full-size map + the selection, as in v4 (strided_slice); output = v4's."""
    graph = tf_same_depthwise_stride2()
    x = np.random.default_rng(0).uniform(0, 1, (3, 32, 32, 8)).astype(np.float32)
    from emc.calibrate import calibrate
    cal = calibrate(graph, x)
    v3, v4 = (k210.convert(graph, cal, input_transform=PIXELS, version=v) for v in (3, 4))
    types = [r["type"] for r in v3.report.rows]
    assert "QUANTIZED_CONCAT" not in types and "QUANTIZED_MAX_POOL2D" in types
    full, picked = 16 * 32 * 32, 16 * 16 * 16
    assert v3.report.totals["main memory (bytes)"] <= full + picked + 64
    assert v3.report.totals["main memory (bytes)"] <= v4.report.totals["main memory (bytes)"] + 64
    np.testing.assert_allclose(v3.simulate(x)[0], v4.simulate(x)[0], atol=1e-6)     # same codes, float dequantize


def test_v3_tf_same_stride2_first_conv_with_zero_point_128_uses_pool_6():
    """x / 127.5 - 1 input (pixel zero point 128): v3 pads the rows with code 128 from an extra constant channel of
    the input copy, then runs pool 6 as v4 does -- no full-size stride-1 map in main memory; same codes as v4."""
    g = Graph("tf_same_first")
    x = g.add_input((32, 32, 3))
    y = g.add(Conv2D(RNG.normal(0, 0.3, (3, 3, 3, 16)), RNG.normal(0, 0.1, 16), strides=2, pads=(0, 1, 0, 1),
                     activation=Act("relu")), x, name="conv1")
    g.set_outputs([g.add(Conv2D(RNG.normal(0, 0.3, (1, 1, 16, 8)), None), y, name="pw")])
    graph = optimize(g)
    data = np.random.default_rng(1).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    from emc.calibrate import calibrate
    cal = calibrate(graph, data)
    v3, v4 = (k210.convert(graph, cal, input_transform=(1 / 127.5, -1.0), version=v) for v in (3, 4))
    conv1 = [r for r in v3.report.rows if r["layer"] == "conv1" and r["type"] == "K210_CONV"]
    assert conv1[0]["output"].startswith("16x17x16")              # pool 6 on the row-padded 34x32 map
    assert v3.report.totals["main memory (bytes)"] < 16 * 32 * 32      # never the full-size stride-1 map
    np.testing.assert_allclose(v3.simulate(data)[0], v4.simulate(data)[0], atol=1e-6)
    ref = graph.run(data)[0]
    assert np.corrcoef(ref.ravel(), v3.simulate(data)[0].ravel())[0, 1] > 0.995


def overlapping_pairs(items):
    return [(a, b) for a in items for b in items if a[0] < b[0] and a[2] <= b[3] and b[2] <= a[3]]


def test_searched_fit_finds_the_live_peak_where_every_heuristic_order_misses_it():
    items = [(0, 6, 4, 6), (1, 8, 1, 3), (2, 3, 4, 4), (3, 7, 3, 3), (4, 8, 4, 4), (5, 5, 3, 4), (6, 5, 5, 5)]
    assert best_first_fit(items)[0] == 23 and live_peak(items) == 22
    extent, offsets, order = searched_fit(items)
    assert (extent, order) == (22, "search")               # the live peak: nothing can use less
    for a, b in overlapping_pairs(items):
        assert offsets[a[0]] + a[1] <= offsets[b[0]] or offsets[b[0]] + b[1] <= offsets[a[0]]
    assert max(offsets[k] + s for k, s, _, _ in items) == extent


def test_searched_fit_equals_the_best_of_every_order_on_small_sets():
    rng = np.random.default_rng(4)
    for _ in range(15):
        items = []
        for key in range(6):
            first = int(rng.integers(0, 5))
            items.append((key, int(rng.integers(1, 30)), first, first + int(rng.integers(0, 3))))
        every = min(max(offsets[k] + s for k, s, _, _ in items)            # first-fit in all 720 orders
                    for offsets in (first_fit(items, lambda t, p=p: p.index(t[0]))
                                    for p in itertools.permutations(range(6))))
        extent, offsets, _ = searched_fit(items)
        assert extent == every
        for a, b in overlapping_pairs(items):
            assert offsets[a[0]] + a[1] <= offsets[b[0]] or offsets[b[0]] + b[1] <= offsets[a[0]]
