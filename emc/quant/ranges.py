"""Range functions: each maps a tensor's calibration statistics (emc.calibrate.TensorStats) to (lo, hi).

Every function returns a range inside the observed [min, max]; the affine parameters (emc.quant.params)
later widen it to contain zero.
"""
import numpy as np

from ..errors import QuantizationError

KLD_MIN_BINS = 128          # smallest candidate threshold of the entropy search, in histogram bins (TensorRT)
KLD_MAX_CLIPPED = 1e-3      # largest fraction of a side's non-zero values a kld threshold may clip
L2_MAX_CANDIDATES = 512     # thresholds tried per side by l2 (a grid of at most 512 x 512 ranges)


def minmax(stats):
    """The whole observed range."""
    return stats.min, stats.max


def percentile(stats, q=99.99):
    """Clip each side at its q-th percentile (upper q, lower 100-q); a side not crossing zero keeps its extreme.

    Parameterise with functools.partial(percentile, q=99.9), percentile_of(99.9) or the name 'percentile:99.9'.
    """
    if not 50.0 < q <= 100.0:
        raise QuantizationError(f"percentile q must be in (50, 100], not {q}")
    lo = stats.percentile(100.0 - q) if stats.min < 0 else stats.min
    hi = stats.percentile(q) if stats.max > 0 else stats.max
    return lo, max(hi, lo)


def percentile_of(q):
    """A range function clipping at the q-th percentile (see percentile), named after q."""
    q = float(q)
    if not 50.0 < q <= 100.0:
        raise QuantizationError(f"percentile q must be in (50, 100], not {q}")

    def fn(stats):
        return percentile(stats, q)
    fn.__name__ = f"percentile:{q:g}"
    return fn


def minmax98(stats):
    """Maix-EMC's name: the 1st and 99th percentiles of all values."""
    return stats.percentile(1.0), stats.percentile(99.0)


def meanminmax(stats):
    """Maix-EMC's name: per-sample minimum and maximum, averaged over the samples."""
    return stats.mean_sample_min, stats.mean_sample_max


# ---- kld ---------------------------------------------------------------------------------------------------
def _xlogx(x):
    x = np.asarray(x, np.float64)
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def kld_threshold_bins(hist, levels, min_bins=KLD_MIN_BINS, max_clipped=KLD_MAX_CLIPPED, eps=1e-4):
    """Number of bins i of a one-sided histogram to keep: the i minimising KL(P_i || Q_i), TensorRT style.

    P_i is the histogram cut at bin i with the cut-off mass added to its last bin; Q_i quantises the cut
    histogram into `levels` groups of consecutive bins (bin j in group floor(j*levels/i)) and spreads each
    group's mass evenly over the group's bins that are non-zero in P_i. A group whose reference mass is zero
    while P_i is not gets `eps` counts (smoothing). Candidates run from the first i that cuts off at most
    `max_clipped` of the histogram's mass (and at least `min_bins`) to the last non-zero bin: a candidate of
    at most `levels` bins has one bin per level, shows no rounding error, and wins on any spiky histogram.
    Computed in closed form for all candidates at once.
    """
    h = np.asarray(hist, np.float64)
    nonzero = np.flatnonzero(h)
    if len(nonzero) == 0:
        return 0
    top = int(nonzero[-1]) + 1
    total = h.sum()
    cum = np.concatenate([[0.0], np.cumsum(h)])
    fewest_kept = int(np.argmax(total - cum <= max_clipped * total))   # first i with a small enough cut-off
    start = max(min_bins, fewest_kept)
    if top <= start:
        return top
    cand = np.arange(start, top + 1)                                # K candidates
    cum_used = np.concatenate([[0], np.cumsum(h > 0)])
    cum_xlogx = np.concatenate([[0.0], np.cumsum(_xlogx(h))])
    groups = np.arange(levels)
    lo_b = -(-(groups[None, :] * cand[:, None]) // levels)        # first bin of each group, K x levels
    hi_b = -(-((groups[None, :] + 1) * cand[:, None]) // levels)
    ref = cum[hi_b] - cum[lo_b]                                     # reference mass of each group
    used = (cum_used[hi_b] - cum_used[lo_b]).astype(np.float64)     # bins of the group non-zero in P
    mass = ref.copy()                                               # P's mass of each group
    rows = np.arange(len(cand))
    last = (cand - 1) * levels // cand                              # the group holding bin i-1
    outliers = total - cum[cand]
    last_bin = h[cand - 1]
    mass[rows, last] += outliers
    used[rows, last] += (last_bin == 0) & (outliers > 0)
    starved = (ref <= 0) & (mass > 0)                               # only possible in the last group
    q_bin = np.where(starved, eps, ref / np.maximum(used, 1))       # Q's (unnormalised) value per used bin
    p_log_q = np.where(mass > 0, mass * np.log(np.where(mass > 0, q_bin, 1.0)), 0.0).sum(axis=1)
    q_total = ref.sum(axis=1) + eps * starved.sum(axis=1)
    p_log_p = cum_xlogx[cand - 1] + _xlogx(last_bin + outliers)
    divergence = (p_log_p - p_log_q) / total - np.log(total) + np.log(q_total)
    return int(cand[int(np.argmin(divergence))])


def _side_threshold(stats, side, levels):
    """KLD clip of one side (positive or negative magnitudes) with `levels` quantisation levels.

    Exact zeros (a ReLU output's cut-off half, zero padding) leave the positive histogram: zero is represented
    exactly, and kept in bin 0 their spike would be smeared over its quantisation group by Q.
    """
    hist = stats.positive_hist if side > 0 else stats.negative_hist
    if side > 0 and stats.zeros:
        hist = hist.copy()
        hist[0] -= stats.zeros
    return kld_threshold_bins(hist, max(int(levels), 1)) * stats.width


def kld(stats, bits=8, rounds=3):
    """Entropy calibration (TensorRT's KL-divergence threshold search on a 2048-bin histogram per side).

    emc quantises asymmetrically (uint8/int8 affine, 2^bits levels over [lo, hi]), so each side of zero is
    searched on its own histogram with the levels it will actually get: all 2^bits for a one-sided tensor
    (e.g. after ReLU); for a tensor of both signs, levels shared in proportion to the side's extent within
    the current range, refined for a few rounds (a symmetric tensor gets 2^(bits-1) a side, as TensorRT's
    |x| search does).

    Guards: KL compares bin masses, not distances, so a spike (a ReLU's exact zeros, a constant channel) smeared
    over its level's bins outweighs any clipping; unguarded, the search clipped up to 42% of a zoo tensor's values.
    Exact zeros (represented exactly) are left out, and a side clips at most KLD_MAX_CLIPPED of its values.
    """
    total_levels = 2 ** int(bits)
    if stats.count == 0 or stats.min == stats.max:
        return stats.min, stats.max
    if stats.min >= 0:
        return stats.min, max(min(stats.max, _side_threshold(stats, +1, total_levels)), stats.min)
    if stats.max <= 0:
        return min(max(stats.min, -_side_threshold(stats, -1, total_levels)), stats.max), stats.max
    lo, hi = stats.min, stats.max
    for _ in range(rounds):
        pos_levels = int(np.clip(round(total_levels * hi / (hi - lo)), 1, total_levels - 1))
        new_hi = min(stats.max, _side_threshold(stats, +1, pos_levels))
        new_lo = max(stats.min, -_side_threshold(stats, -1, total_levels - pos_levels))
        if (new_lo, new_hi) == (lo, hi):
            break
        lo, hi = new_lo, new_hi
    return lo, hi


# ---- l2 ----------------------------------------------------------------------------------------------------
def _thresholds(extent, width, top_bin):
    """Candidate clip points on one side: bin edges up to the data (at most L2_MAX_CANDIDATES) and the extreme."""
    step = max(1, -(-top_bin // L2_MAX_CANDIDATES))
    return np.append(np.arange(1, top_bin, step) * width, extent)


def _clip_error(centers, counts, thresholds):
    """Sum of counts * (center - t)^2 over centers beyond each threshold t (centers, thresholds >= 0)."""
    order = np.argsort(centers)
    c, n = centers[order], counts[order]
    s0 = np.concatenate([np.cumsum(n[::-1])[::-1], [0.0]])
    s1 = np.concatenate([np.cumsum((n * c)[::-1])[::-1], [0.0]])
    s2 = np.concatenate([np.cumsum((n * c * c)[::-1])[::-1], [0.0]])
    k = np.searchsorted(c, thresholds, side="right")               # first center beyond the threshold
    err = s2[k] - 2 * thresholds * s1[k] + thresholds ** 2 * s0[k]
    return np.maximum(err, 0.0), s0[k]


def l2(stats, bits=8):
    """The range with the smallest expected squared error: clipping error plus uniform rounding noise.

    Over the histogram (values at bin centres), for every pair of clip points lo <= 0 <= hi on a grid of bin
    edges, error = sum over clipped values of (x - clip)^2 + in-range count * step^2 / 12 with
    step = (hi - lo) / (2^bits - 1) (the range widened to contain zero, as the affine parameters do).
    A side that does not cross zero is never clipped (it costs nothing in step size).
    """
    if stats.count == 0 or stats.min == stats.max:
        return stats.min, stats.max
    width = stats.width
    steps = 2 ** int(bits) - 1
    pos_centers = (np.arange(stats.bins) + 0.5) * width
    pos, neg = stats.positive_hist.astype(np.float64), stats.negative_hist.astype(np.float64)
    if stats.max > 0:
        top = int(np.flatnonzero(pos)[-1]) + 1
        his = _thresholds(stats.max, width, top)
        hi_err, hi_out = _clip_error(pos_centers, pos, his)
    else:
        his, hi_err, hi_out = np.array([stats.max]), np.zeros(1), np.zeros(1)
    if stats.min < 0:
        top = int(np.flatnonzero(neg)[-1]) + 1
        los = _thresholds(-stats.min, width, top)
        lo_err, lo_out = _clip_error(pos_centers, neg, los)
        los = -los
    else:
        los, lo_err, lo_out = np.array([stats.min]), np.zeros(1), np.zeros(1)
    span = np.maximum(his, 0)[None, :] - np.minimum(los, 0)[:, None]
    inside = stats.count - lo_out[:, None] - hi_out[None, :]
    error = lo_err[:, None] + hi_err[None, :] + inside * (span / steps) ** 2 / 12.0
    i, j = np.unravel_index(int(np.argmin(error)), error.shape)
    lo, hi = float(max(los[i], stats.min)), float(min(his[j], stats.max))
    return lo, max(hi, lo)
