"""Range functions: each maps a tensor's calibration statistics (emc.calibrate.TensorStats) to (lo, hi)."""
import numpy as np


def minmax(stats):
    """The whole observed range."""
    return stats.min, stats.max


def percentile(stats, q=99.99):
    """Clip the q-th upper and (100-q)-th lower percentiles; a non-negative tensor keeps its minimum."""
    lo = stats.min if stats.min >= 0 else stats.percentile(100.0 - q)
    return lo, stats.percentile(q)


def minmax98(stats):
    """Maix-EMC's name: the 1st and 99th percentiles."""
    return stats.percentile(1.0), stats.percentile(99.0)


def meanminmax(stats):
    """Maix-EMC's name: per-sample minimum and maximum, averaged over the samples."""
    return stats.mean_sample_min, stats.mean_sample_max


def _magnitude_hist(stats):
    """Histogram of |x| over [0, limit) with bins/2 bins (folding the symmetric histogram)."""
    half = stats.bins // 2
    return stats.hist[half:] + stats.hist[:half][::-1], stats.limit / half


def _clip_range(stats, threshold):
    """[-threshold, threshold] within the observed range, never empty."""
    lo = max(stats.min, -threshold) if stats.min < 0 else stats.min
    return lo, max(min(stats.max, threshold), lo)


def kld(stats, levels=None):
    """Entropy calibration as TensorRT does it, on the histogram of |x|.

    For each candidate threshold (from 128 bins up), the clipped reference distribution P (outliers folded
    into the last bin) is quantised to `levels` levels and expanded back to Q; the threshold with the smallest
    KL(P||Q) wins. A non-negative tensor uses 255 levels (all of uint8 on one side), a signed one 127.
    """
    hist, width = _magnitude_hist(stats)
    nonzero = np.nonzero(hist)[0]
    if len(nonzero) == 0:
        return stats.min, stats.max
    top = int(nonzero[-1]) + 1
    levels = levels or (255 if stats.min >= 0 else 127)
    if top <= levels:
        return stats.min, stats.max
    best, best_i = np.inf, top
    step = max(1, (top - levels) // 256)
    for i in range(levels, top + 1, step):
        ref = hist[:i].astype(np.float64)            # the clipped histogram, quantised into Q
        p = ref.copy()
        p[-1] += hist[i:].sum()                       # the reference P keeps the clipped mass in its last bin
        level = np.arange(i) * levels // i           # which of the `levels` quantised bins each bin falls in
        used = p > 0
        sums = np.bincount(level, weights=ref, minlength=levels)
        counts = np.bincount(level, weights=used, minlength=levels)
        q = np.where(used, sums[level] / np.maximum(counts[level], 1), 0.0)
        ps, qs = p[used], np.maximum(q[used], 1e-4)   # smoothing: an emptied bin costs, but finitely
        ps, qs = ps / ps.sum(), qs / qs.sum()
        divergence = float(np.sum(ps * np.log(ps / qs)))
        if divergence < best:
            best, best_i = divergence, i
    return _clip_range(stats, (best_i + 0.5) * width)


def l2(stats, candidates=200):
    """The clipping range with the smallest expected squared error (clipping + uniform rounding) on the histogram."""
    centers = (stats.edges[:-1] + stats.edges[1:]) / 2
    counts = stats.hist.astype(np.float64)
    used = counts > 0
    centers, counts = centers[used], counts[used]
    if len(centers) == 0 or stats.max == stats.min:
        return stats.min, stats.max
    best, best_range = np.inf, (stats.min, stats.max)
    for frac in np.linspace(0.05, 1.0, candidates):
        lo = stats.min * frac if stats.min < 0 else stats.min
        hi = stats.max * frac if stats.max > 0 else stats.max
        step = (hi - lo) / 255.0
        if step <= 0:
            continue
        clipped = np.clip(centers, lo, hi)
        error = np.sum(counts * ((centers - clipped) ** 2 + step * step / 12.0))
        if error < best:
            best, best_range = error, (lo, hi)
    return best_range
