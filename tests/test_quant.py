"""Calibration statistics and range functions against distributions with a known right answer."""
import numpy as np
import pytest

import emc
from emc import layers as L
from emc import quant
from emc.calibrate import TensorStats, calibrate, collect_stats
from emc.graph import Graph, preact_name
from emc.quant.params import affine_params, dequantize, per_channel_symmetric, quantize

RNG = np.random.default_rng(42)


def stats_of(x, chunks=5):
    s = TensorStats("t")
    for part in np.array_split(np.asarray(x, np.float32), min(chunks, len(x))):
        s.update(part)
    return s


def test_adaptive_histogram_equals_numpy_after_growth():
    x = RNG.normal(size=(60, 50)).astype(np.float32)
    x[-1] *= 40                              # the last chunk forces the range to grow several times
    s = stats_of(x, chunks=6)
    ref, _ = np.histogram(x, bins=s.edges)
    np.testing.assert_array_equal(s.hist, ref)
    assert s.count == x.size and s.min == x.min() and s.max == x.max()


def test_uniform_ranges_are_the_bounds():
    s = stats_of(RNG.uniform(-2.0, 3.0, size=(100, 1000)))
    for name in ("minmax", "l2", "kld", "percentile"):
        lo, hi = quant.get(name)(s)
        assert lo == pytest.approx(-2.0, abs=0.1), name
        assert hi == pytest.approx(3.0, abs=0.1), name


def test_heavy_tail_is_clipped_inside_the_tail():
    x = RNG.normal(size=(100, 10000)).astype(np.float32)
    x[0, :10] *= 50                          # rare huge outliers
    s = stats_of(x)
    for name in ("kld", "l2", "percentile"):
        lo, hi = quant.get(name)(s)
        assert 2.5 < hi < 0.7 * s.max, (name, hi, s.max)
        assert 0.7 * s.min < lo < -2.5, (name, lo, s.min)
    assert quant.get("minmax")(s) == (s.min, s.max)


def test_percentiles_match_numpy_within_a_bin():
    x = RNG.gamma(2.0, size=(50, 4000)).astype(np.float32)
    s = stats_of(x)
    width = 2 * s.limit / s.bins
    lo, hi = quant.get("minmax98")(s)
    assert lo == pytest.approx(np.percentile(x, 1), abs=width)
    assert hi == pytest.approx(np.percentile(x, 99), abs=width)
    assert quant.get("percentile")(s)[1] == pytest.approx(np.percentile(x, 99.99), abs=width)


def test_meanminmax_is_the_mean_of_per_sample_extremes():
    x = RNG.normal(size=(30, 8, 8, 3)).astype(np.float32)
    s = stats_of(x, chunks=4)
    lo, hi = quant.get("meanminmax")(s)
    assert lo == pytest.approx(x.reshape(30, -1).min(1).mean(), rel=1e-5)
    assert hi == pytest.approx(x.reshape(30, -1).max(1).mean(), rel=1e-5)


def test_registry_accepts_names_and_callables():
    quant.register("half", lambda s: (s.min / 2, s.max / 2))
    assert "half" in quant.names()
    s = stats_of(RNG.uniform(-1, 1, size=(4, 100)))
    assert quant.get("half")(s) == (s.min / 2, s.max / 2)
    with pytest.raises(emc.QuantizationError, match="known"):
        quant.get("nope")


def small_graph():
    g = Graph()
    i = g.add_input((6, 6, 2))
    c = g.add(L.Conv2D(RNG.normal(size=(3, 3, 2, 4)), RNG.normal(size=4), pads=(1, 1, 1, 1),
                       activation=L.Act("relu")), i, name="conv")
    g.set_outputs(g.add(L.GlobalPool2D("avg"), c, name="gap"))
    return g


def test_streaming_pass_matches_direct_computation():
    g = small_graph()
    x = RNG.normal(size=(37, 6, 6, 2)).astype(np.float32)
    stats = collect_stats(g, x, batch_size=8)
    conv_op = g["conv"].op
    pre = conv_op.forward_linear([x])
    assert stats[preact_name("conv")].min == pytest.approx(pre.min())
    assert stats["conv"].max == pytest.approx(np.maximum(pre, 0).max())
    assert stats["gap"].count == 37 * 4
    cal = calibrate(g, x, method="minmax")
    assert cal.ranges["input"] == pytest.approx((x.min(), x.max()))
    with pytest.raises(emc.QuantizationError, match="invalid range"):
        calibrate(g, x, method=lambda s: (1.0, -1.0))


def test_affine_params_represent_zero_and_round_trip():
    for lo, hi in [(-1.3, 2.7), (0.2, 5.0), (-4.0, -0.5), (0.0, 0.0)]:
        scale, zp = affine_params(lo, hi)
        assert 0 <= zp <= 255
        assert dequantize(quantize(0.0, scale, zp), scale, zp) == 0.0
        x = np.linspace(min(lo, 0), max(hi, 0), 101)
        assert np.abs(dequantize(quantize(x, scale, zp), scale, zp) - x).max() <= scale / 2 + 1e-6   # dequantize returns float32
    scale, zp = affine_params(-1.0, 1.0, signed=True)
    assert -128 <= zp <= 127
    w = RNG.normal(size=(3, 3, 4, 5))
    np.testing.assert_allclose(per_channel_symmetric(w, axis=-1), np.abs(w).reshape(-1, 5).max(0) / 127)


def test_ranges_never_empty_for_positive_tensors():
    x = np.full((50, 100), 1e-3, np.float32)
    x[:, 0] = 0.9                          # softmax-like: positive minimum, a few large values
    s = stats_of(x)
    for name in quant.names():
        lo, hi = quant.get(name)(s)
        assert lo <= hi, name
