"""Range functions against distributions with a known right answer, and affine quantisation parameters."""
import functools

import numpy as np
import pytest

import emc
from emc import quant
from emc.calibrate import TensorStats
from emc.quant.params import (affine_params, dequantize, per_channel_symmetric, quantize, symmetric_params)
from emc.quant.ranges import kld_threshold_bins

RNG = np.random.default_rng(42)


def stats_of(x, chunks=5):
    s = TensorStats("t")
    for part in np.array_split(np.asarray(x, np.float32), min(chunks, len(x))):
        s.update(part)
    return s


def fake_quant_mse(x, lo, hi):
    """Mean squared error of quantising x to uint8 over [lo, hi] (TF Lite affine), computed on the raw data."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255
    zp = np.clip(np.floor(-lo / scale + 0.5), 0, 255)
    q = np.clip(np.floor(x / scale + 0.5) + zp, 0, 255)
    return float(np.mean(((q - zp) * scale - x) ** 2))


def with_outliers(shape, factor=50, count=10):
    x = RNG.normal(size=shape).astype(np.float32)
    x.flat[RNG.choice(x.size, count, replace=False)] *= factor
    return x


UNIFORM = RNG.uniform(-2.0, 3.0, size=(100, 1000)).astype(np.float32)
HEAVY = with_outliers((100, 10000))


# ---- known answers ----------------------------------------------------------------------------------------
def test_uniform_ranges_are_the_bounds():
    s = stats_of(UNIFORM)
    for name in ("minmax", "l2", "kld", "percentile"):
        lo, hi = quant.get(name)(s)
        assert lo == pytest.approx(-2.0, abs=0.05), name
        assert hi == pytest.approx(3.0, abs=0.05), name


def test_heavy_tail_is_clipped_inside_the_tail():
    s = stats_of(HEAVY)
    for name in ("kld", "l2", "percentile"):
        lo, hi = quant.get(name)(s)
        assert 2.5 < hi < 0.7 * s.max, (name, hi, s.max)
        assert 0.7 * s.min < lo < -2.5, (name, lo, s.min)
    assert quant.get("minmax")(s) == (s.min, s.max)


def test_kld_on_one_sided_tensors():
    relu = np.maximum(with_outliers((50, 20000)), 0)
    lo, hi = quant.get("kld")(stats_of(relu))
    assert lo == 0.0 and 1.5 < hi < 0.3 * relu.max()
    far = RNG.uniform(0.5, 1.0, size=(50, 400)).astype(np.float32)    # mass far from zero: no clip into it
    assert quant.get("kld")(stats_of(far)) == pytest.approx((far.min(), far.max()), abs=0.01)
    neg = -np.maximum(with_outliers((50, 20000)), 0)
    lo, hi = quant.get("kld")(stats_of(neg))
    assert hi == 0.0 and 0.3 * neg.min() < lo < -1.5


def test_kld_leaves_relu_zeros_out():
    x = RNG.normal(size=(50, 20000)).astype(np.float32)
    relu = np.maximum(x, 0)                                 # half the values exactly 0
    s = stats_of(relu)
    assert s.zeros == np.count_nonzero(relu == 0) and s.positive_hist[0] >= s.zeros
    hi = quant.get("kld")(s)[1]
    assert hi == quant.get("kld")(stats_of(x[x > 0]))[1]     # the search sees only the non-zero half
    assert np.mean(relu[relu > 0] > hi) <= 1e-3             # the zero spike used to pull hi to ~2 sigma


def test_kld_never_clips_more_than_a_sparse_tail():
    # Channels that are constant (a depthwise conv's bias over an all-zero input): a histogram of spikes,
    # where KL prefers clipping a whole channel to smearing any spike over a quantisation level.
    bias = RNG.uniform(-1.0, 1.5, 32).astype(np.float32)
    spikes = bias + RNG.normal(0, 1e-3, (16, 8, 8, 32)).astype(np.float32)
    lo, hi = quant.get("kld")(stats_of(spikes))
    assert np.mean((spikes < lo) | (spikes > hi)) <= quant.ranges.KLD_MAX_CLIPPED
    assert (lo, hi) == pytest.approx((spikes.min(), spikes.max()), abs=0.01)


def plain_divergence(h, i, levels, eps=1e-4):
    """KL(P_i || Q_i) of TensorRT's entropy calibration, written as its plain loop (bins grouped by j * levels // i)."""
    p = h[:i].copy()
    p[-1] += h[i:].sum()
    group = np.arange(i) * levels // i
    q = np.zeros(i)
    for g in range(levels):
        used = (group == g) & (p > 0)
        if used.any():
            mass = h[:i][group == g].sum()
            q[used] = mass / used.sum() if mass > 0 else eps
    keep = p > 0
    pn, qn = p[keep] / p.sum(), q[keep] / q[keep].sum()
    return np.sum(pn * np.log(pn / qn))


def brute_force_kld_bins(h, levels, min_bins=128, max_clipped=1e-3):
    """The best i >= min_bins cutting off at most max_clipped of the mass, by trying every one: (i, divergence)."""
    h = np.asarray(h, np.float64)
    top = int(np.flatnonzero(h)[-1]) + 1
    allowed = [i for i in range(min_bins, top + 1) if h[i:].sum() <= max_clipped * h.sum()] or [top]
    divergences = [plain_divergence(h, i, levels) for i in allowed]
    return allowed[int(np.argmin(divergences))], min(divergences)


@pytest.mark.parametrize("max_clipped", [1e-3, 0.02, 0.5])
@pytest.mark.parametrize("levels", [128, 256, 5])
def test_kld_search_equals_the_plain_tensorrt_loop(levels, max_clipped):
    for trial in range(4):
        x = np.abs(RNG.standard_t(3, size=100000)) if trial < 2 else RNG.exponential(size=100000)
        h, _ = np.histogram(x, bins=400, range=(0, x.max()))
        if trial % 2:
            h[RNG.integers(0, 400, 40 * trial)] = 0         # empty bins exercise the smoothing
        h = h.astype(np.float64)                            # exponential: max_clipped moves the first candidate
        expected, best = brute_force_kld_bins(h, levels, max_clipped=max_clipped)
        got = kld_threshold_bins(h, levels, max_clipped=max_clipped)
        assert h[got:].sum() <= max_clipped * h.sum() and (got >= 128 or got == expected)
        # a run of empty bins before a lone outlier gives candidates of equal divergence: either is right
        assert got == expected or plain_divergence(h, got, levels) == pytest.approx(best, abs=1e-12)


def test_l2_minimises_the_real_quantisation_error():
    heavy = with_outliers((20, 2000), count=4)
    for x in (heavy, np.maximum(heavy, 0), RNG.laplace(size=(20, 2000)).astype(np.float32)):
        s = stats_of(x)
        lo, hi = quant.get("l2")(s)
        best = min(fake_quant_mse(x, a * s.min, b * s.max)
                   for a in np.linspace(0.02, 1, 40) for b in np.linspace(0.02, 1, 40))
        assert fake_quant_mse(x, lo, hi) <= 1.05 * best
        assert fake_quant_mse(x, lo, hi) <= fake_quant_mse(x, s.min, s.max)


def test_percentiles_match_numpy_within_a_bin():
    x = RNG.gamma(2.0, size=(50, 4000)).astype(np.float32) - 1.0
    s = stats_of(x)
    lo, hi = quant.get("minmax98")(s)
    assert lo == pytest.approx(np.percentile(x, 1), abs=s.width)
    assert hi == pytest.approx(np.percentile(x, 99), abs=s.width)
    for fn, q in [(quant.get("percentile"), 99.99), (functools.partial(quant.ranges.percentile, q=99.5), 99.5),
                  (quant.get("percentile:99.9"), 99.9), (quant.ranges.percentile_of(97), 97.0)]:
        lo, hi = fn(s)
        assert hi == pytest.approx(np.percentile(x, q), abs=s.width)
        assert lo == pytest.approx(np.percentile(x, 100 - q), abs=s.width)
    assert quant.get("percentile:99.9").__name__ == "percentile:99.9"
    with pytest.raises(emc.QuantizationError, match="not a number"):
        quant.get("percentile:abc")
    with pytest.raises(emc.QuantizationError, match=r"\(50, 100\]"):
        quant.get("percentile:20")


def test_meanminmax_is_the_mean_of_per_sample_extremes():
    x = RNG.normal(size=(30, 8, 8, 3)).astype(np.float32)
    lo, hi = quant.get("meanminmax")(stats_of(x, chunks=4))
    per_sample = x.reshape(30, -1)
    assert lo == pytest.approx(np.mean([row.min() for row in per_sample]), rel=1e-6)
    assert hi == pytest.approx(np.mean([row.max() for row in per_sample]), rel=1e-6)


def test_every_range_is_inside_the_data_and_never_empty():
    softmax_like = np.full((50, 100), 1e-3, np.float32)
    softmax_like[:, 0] = 0.9
    cases = [softmax_like, np.zeros((4, 10), np.float32), np.full((4, 10), -3.0, np.float32),
             -RNG.exponential(size=(20, 500)).astype(np.float32), UNIFORM[:10]]
    for x in cases:
        s = stats_of(x)
        for name in quant.names():
            lo, hi = quant.get(name)(s)
            assert s.min <= lo <= hi <= s.max, (name, lo, hi, s.min, s.max)


def test_registry_accepts_names_decorators_and_callables(monkeypatch):
    monkeypatch.setattr(quant, "_FUNCS", dict(quant._FUNCS))         # leave the registry as found
    quant.register("half", lambda s: (s.min / 2, s.max / 2))

    @quant.register("third")
    def third(s):
        return s.min / 3, s.max / 3
    assert {"half", "third", "minmax", "kld", "l2", "percentile", "minmax98", "meanminmax"} <= set(quant.names())
    s = stats_of(RNG.uniform(-1, 1, size=(4, 100)))
    assert quant.get("half")(s) == (s.min / 2, s.max / 2) and quant.get(third) is third
    with pytest.raises(emc.QuantizationError, match="unknown quant function 'nope'.*kld.*minmax98"):
        quant.get("nope")
    with pytest.raises(emc.QuantizationError, match="callable"):
        quant.register("bad", 3)


# ---- affine parameters ------------------------------------------------------------------------------------
@pytest.mark.parametrize("signed", [False, True])
def test_affine_params_represent_zero_and_round_trip(signed):
    qmin, qmax = (-128, 127) if signed else (0, 255)
    for lo, hi in [(-1.3, 2.7), (0.2, 5.0), (-4.0, -0.5), (-1e-3, 1000.0), (-0.3, 0.3), (0.0, 0.0)]:
        scale, zp = affine_params(lo, hi, signed=signed)
        assert qmin <= zp <= qmax and isinstance(zp, int) and scale > 0
        assert dequantize(quantize(0.0, scale, zp, signed=signed), scale, zp) == 0.0
        a, b = min(lo, 0.0), max(hi, 0.0)
        x = np.linspace(a, b, 1001)
        assert (qmin - zp) * scale <= a + scale / 2 + 1e-12 and (qmax - zp) * scale >= b - scale / 2 - 1e-12
        inside = (x >= (qmin - zp) * scale) & (x <= (qmax - zp) * scale)
        err = np.abs(dequantize(quantize(x, scale, zp, signed=signed), scale, zp) - x)
        tol = 1e-6 * max(abs(a), abs(b))                          # dequantize returns float32
        assert err[inside].max() <= scale / 2 + tol
        assert err.max() <= scale + tol                 # nudging moves the ends by at most scale/2


def test_affine_params_match_tf_lite_nudging():
    # real = (q - zp) * scale; TF Lite: scale = (max - min) / 255, zp = round(qmin - min / scale) half away from 0
    assert affine_params(-1.0, 1.0) == (pytest.approx(2 / 255), 128)          # 127.5 -> 128
    assert affine_params(0.5, 2.0) == (pytest.approx(2 / 255), 0)             # widened to contain 0
    assert affine_params(-2.0, -1.0) == (pytest.approx(2 / 255), 255)
    assert affine_params(-1.0, 1.0, signed=True) == (pytest.approx(2 / 255), -1)  # -128 + 127.5 = -0.5 -> -1
    assert affine_params(0.0, 0.0) == (1.0, 0) and affine_params(0.0, 0.0, signed=True) == (1.0, 0)
    for bad in [(1.0, -1.0), (np.nan, 1.0), (0.0, np.inf)]:
        with pytest.raises(emc.QuantizationError, match="range"):
            affine_params(*bad)
    with pytest.raises(emc.QuantizationError, match="bits"):
        affine_params(0, 1, bits=1)


def test_quantize_saturates_and_symmetric_scales():
    scale, zp = affine_params(-1.0, 1.0)
    assert quantize([-5.0, 5.0], scale, zp).tolist() == [0, 255]
    assert quantize([-5.0, 5.0], scale, 0, bits=4, signed=True).tolist() == [-8, 7]
    assert symmetric_params(2.54) == pytest.approx(0.02) and symmetric_params(0.0) == 1.0
    w = RNG.normal(size=(3, 3, 4, 5))
    w[..., 2] = 0.0                                         # an all-zero output channel
    scales = per_channel_symmetric(w, axis=-1)
    expected = np.array([np.abs(w[..., c]).max() / 127 for c in range(5)])
    expected[2] = 1.0
    np.testing.assert_allclose(scales, expected)
    np.testing.assert_allclose(per_channel_symmetric(w, axis=2), [np.abs(w[:, :, c]).max() / 127 for c in range(4)])
    q = quantize(w, scales, 0, signed=True)
    assert np.abs(q).max() == 127 and np.abs(dequantize(q, scales, 0) - w).max() <= scales.max() / 2 + 1e-6
    with pytest.raises(emc.QuantizationError, match="positive"):
        quantize(w, 0.0, 0)
