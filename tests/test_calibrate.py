"""Streaming calibration: the adaptive histogram against numpy, and one pass over a small graph against direct numpy."""
import logging
import sys

import numpy as np
import pytest

import emc
from emc import layers as L
from emc.calibrate import TensorStats, calibrate, collect_stats
from emc.graph import Graph, preact_name

RNG = np.random.default_rng(7)


def streamed(x, chunks, bins=2048):
    s = TensorStats("t", bins)
    for part in np.array_split(np.asarray(x, np.float32), chunks):
        s.update(part)
    return s


def assert_matches_numpy(s, x):
    """Histogram, extremes, count and per-sample means equal the numpy computation on all the raw data."""
    x = np.asarray(x, np.float32)
    ref, _ = np.histogram(x, bins=s.edges)
    np.testing.assert_array_equal(s.hist, ref)
    assert s.count == x.size and s.min == x.min() and s.max == x.max()
    flat = x.reshape(len(x), -1).astype(np.float64)
    assert s.mean_sample_min == pytest.approx(flat.min(1).mean(), rel=1e-9, abs=1e-12)
    assert s.mean_sample_max == pytest.approx(flat.max(1).mean(), rel=1e-9, abs=1e-12)


def test_histogram_equals_numpy_after_growth_on_both_sides():
    x = RNG.normal(size=(60, 50)).astype(np.float32)
    x[40:50] *= 40                            # grows the range on both sides...
    x[55:] = np.abs(x[55:]) * 3000            # ...and again on the positive side only
    s = streamed(x, chunks=6)
    assert s.limit == 2.0 ** np.floor(np.log2(np.abs(x).max()) + 1)
    assert len(s.hist) == 2 * 2048            # memory stays bounded
    assert_matches_numpy(s, x)


def test_histogram_exact_on_bin_edges_zero_and_tiny_values():
    s = TensorStats("t", bins=64)
    first = np.array([[0.75, -0.5]], np.float32)              # limit 1, width 1/64
    edges = (np.arange(-64, 64) / 64).astype(np.float32)[None]   # every bin edge, -limit included
    tiny = np.array([[-1e-30, 1e-30, -0.0, 0.0, -1e-45, np.nextafter(np.float32(1), np.float32(0))]], np.float32)
    for part in (first, edges, tiny):
        s.update(part)
    ref, _ = np.histogram(np.concatenate([first, edges, tiny], axis=1), bins=s.edges)
    np.testing.assert_array_equal(s.hist, ref)
    assert s.negative_hist[0] == 3 and s.positive_hist[0] == 4   # [-1/64, 0) and [0, 1/64)


def test_histogram_restarts_after_all_zero_batches():
    x = np.zeros((10, 30), np.float32)
    x[5:] = RNG.uniform(-1e-3, 1e-3, size=(5, 30))           # a zero batch first, then small values
    s = streamed(x, chunks=2)
    assert s.limit == 2.0 ** -9                               # fine bins for the small values, not [-1, 1)
    assert_matches_numpy(s, x)


def test_bad_bins_and_non_finite_tensor():
    with pytest.raises(emc.QuantizationError, match="bins"):
        TensorStats("t", bins=3)
    s = TensorStats("conv_7")
    with pytest.raises(emc.QuantizationError, match="conv_7.*NaN"):
        s.update(np.array([[1.0, np.nan]], np.float32))


def small_graph():
    """input -> conv(relu) -> gap -> dense, and an avg-pool branch added back: every kind of tensor."""
    rng = np.random.default_rng(3)
    g = Graph()
    i = g.add_input((6, 6, 2))
    c = g.add(L.Conv2D(rng.normal(size=(3, 3, 2, 4)), rng.normal(size=4), pads=(1, 1, 1, 1),
                       activation=L.Act("relu")), i, name="conv")
    p = g.add(L.GlobalPool2D("avg"), c, name="gap")
    d = g.add(L.Dense(rng.normal(size=(4, 3)), rng.normal(size=3)), p, name="dense")
    m = g.add(L.GlobalPool2D("max"), i, name="gmax")
    e = g.add(L.Dense(rng.normal(size=(2, 3)), None), m, name="dense2")
    g.set_outputs([g.add(L.Elementwise("add"), [d, e], name="out"), p])
    return g


def direct_tensors(g, x):
    """Every tensor of the graph on all the data at once (one unbatched run keeping everything)."""
    seen = {}
    g.run(x, observer=lambda name, value: seen.__setitem__(name, np.array(value)), batch_size=len(x))
    return seen


def test_streaming_pass_matches_direct_computation():
    g = small_graph()
    x = RNG.normal(size=(37, 6, 6, 2)).astype(np.float32)
    stats = collect_stats(g, x, batch_size=8)
    full = direct_tensors(g, x)
    assert set(stats) == set(full) == {"input", preact_name("conv"), "conv", "gap", "dense", "gmax", "dense2", "out"}
    for name, s in stats.items():
        assert_matches_numpy(s, full[name])
    # the path input -> gmax -> dense2 against an independent numpy computation with the same weights
    rng = np.random.default_rng(3)
    rng.normal(size=(3, 3, 2, 4)), rng.normal(size=4), rng.normal(size=(4, 3)), rng.normal(size=3)
    kernel2 = rng.normal(size=(2, 3))
    gmax = x.reshape(37, -1, 2).max(axis=1).astype(np.float64)
    dense2 = gmax @ kernel2
    assert stats["dense2"].max == pytest.approx(dense2.max(), rel=1e-5)
    assert stats["dense2"].mean_sample_min == pytest.approx(dense2.min(1).mean(), rel=1e-5)
    assert stats["gmax"].max == x.max() and stats["gmax"].mean_sample_min == pytest.approx(gmax.min(1).mean())


def test_batch_size_does_not_change_the_statistics():
    g = small_graph()
    x = RNG.normal(size=(21, 6, 6, 2)).astype(np.float32)
    a, b = collect_stats(g, x, batch_size=1), collect_stats(g, x, batch_size=64)
    for name in ("input", "gmax"):                  # exact ops: identical statistics
        np.testing.assert_array_equal(a[name].hist, b[name].hist)
        assert (a[name].min, a[name].max, a[name].count) == (b[name].min, b[name].max, b[name].count)
    for name in a:                                  # matmul rounding may differ with the batch shape
        assert a[name].count == b[name].count
        assert a[name].min == pytest.approx(b[name].min, rel=1e-5)
        assert a[name].max == pytest.approx(b[name].max, rel=1e-5)


def test_calibrate_ranges_every_tensor_and_checks_the_function():
    g = small_graph()
    x = RNG.normal(size=(20, 6, 6, 2)).astype(np.float32)
    cal = calibrate(g, x, method="minmax", batch_size=6)
    full = direct_tensors(g, x)
    assert set(cal.ranges) == set(full) and cal.method == "minmax" and "out" in cal
    for name, value in full.items():
        assert cal[name] == (pytest.approx(value.min()), pytest.approx(value.max()))
    custom = calibrate(g, x, method=lambda s: (s.min / 2, s.max / 2))
    assert custom.ranges["input"] == pytest.approx((x.min() / 2, x.max() / 2))
    with pytest.raises(emc.QuantizationError, match="invalid range.*'input'"):
        calibrate(g, x, method=lambda s: (1.0, -1.0))
    with pytest.raises(emc.QuantizationError, match="'input'.*pair of numbers"):
        calibrate(g, x, method=lambda s: 3.0)
    with pytest.raises(emc.QuantizationError, match="failed on tensor 'input'.*ZeroDivisionError"):
        calibrate(g, x, method=lambda s: (1 / 0, 1))
    with pytest.raises(emc.QuantizationError, match="unknown quant function 'nope'.*minmax"):
        calibrate(g, x, method="nope")


def test_several_inputs_and_bad_data():
    g = Graph()
    a, b = g.add_input((4,), "a"), g.add_input((4,), "b")
    g.set_outputs(g.add(L.Elementwise("mul"), [a, b], name="prod"))
    xa, xb = RNG.normal(size=(9, 4)).astype(np.float32), RNG.normal(size=(9, 4)).astype(np.float32)
    stats = collect_stats(g, [xa, xb], batch_size=4)
    assert stats["prod"].max == pytest.approx((xa * xb).max()) and stats["b"].min == xb.min()
    with pytest.raises(emc.DatasetError, match="same number of samples"):
        collect_stats(g, [xa, xb[:5]])
    with pytest.raises(emc.DatasetError, match="empty"):
        collect_stats(small_graph(), np.zeros((0, 6, 6, 2), np.float32))
    with pytest.raises(emc.QuantizationError, match="batch_size"):
        collect_stats(small_graph(), np.zeros((2, 6, 6, 2), np.float32), batch_size=0)


def test_progress_bar_only_on_a_terminal_and_logging(capsys, caplog, monkeypatch):
    g = small_graph()
    x = RNG.normal(size=(4, 6, 6, 2)).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="emc.calibrate"):
        collect_stats(g, x, progress=True)
    assert capsys.readouterr().err == ""                       # stderr is not a TTY under capture
    assert any("4 samples" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    collect_stats(g, x, progress=True)
    assert "calibrating" in capsys.readouterr().err
