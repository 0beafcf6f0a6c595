"""Calibration: one streaming pass of the float graph over the data, per-tensor statistics, then ranges."""
import logging
import sys
import time

import numpy as np

from .errors import DatasetError, EmcError, QuantizationError

log = logging.getLogger(__name__)
MIN_LIMIT = 2.0 ** -100     # keeps bins / limit finite in float32 for denormal-sized data


class TensorStats:
    """Running statistics of one tensor: min/max, count, per-sample min/max means and an adaptive histogram.

    `zeros` counts the values that are exactly 0 (also counted in positive_hist[0]): quantisation represents
    zero exactly, so a range function may leave them out of a rounding-error estimate (kld does).

    The histogram has `bins` bins on each side of zero over [-limit, limit) (limit a power of two). When data
    falls outside, the limit doubles and neighbouring bins merge exactly, so one pass over the data suffices
    with bounded memory; with a power-of-two `bins` every bin index is computed exactly.
    """

    def __init__(self, name, bins=2048):
        if int(bins) != bins or bins < 2 or bins % 2:
            raise QuantizationError(f"histogram bins must be an even number >= 2 (a power of two keeps bin "
                                    f"edges exact), not {bins!r}")
        self.name = name
        self.bins = int(bins)
        self.hist = np.zeros(2 * self.bins, np.int64)    # [-limit, 0) then [0, limit), each `bins` bins
        self.limit = 0.0
        self.min = np.inf
        self.max = -np.inf
        self.count = 0
        self.zeros = 0
        self.samples = 0
        self.sample_min_sum = 0.0
        self.sample_max_sum = 0.0
        self.channel_min = self.channel_max = None      # per channel (last axis): for per-channel rescaling

    # ---- accumulation -----------------------------------------------------------------------------------
    def update(self, batch):
        """Add one batch (batch axis first) of this tensor's values."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.size == 0:
            return
        flat = batch.reshape(len(batch), -1)
        mins, maxs = flat.min(axis=1), flat.max(axis=1)
        lo, hi = float(mins.min()), float(maxs.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise QuantizationError(f"tensor '{self.name}' holds NaN or inf on the calibration data: check the "
                                    f"model's weights and that the data is scaled as the model expects")
        self._fit_limit(lo, hi)
        self.samples += len(flat)
        self.sample_min_sum += float(mins.sum(dtype=np.float64))
        self.sample_max_sum += float(maxs.sum(dtype=np.float64))
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        by_channel = batch.reshape(-1, batch.shape[-1]) if batch.ndim > 1 else batch.reshape(-1, 1)
        cmin, cmax = by_channel.min(axis=0), by_channel.max(axis=0)
        if self.channel_min is None or self.channel_min.shape != cmin.shape:
            self.channel_min, self.channel_max = cmin, cmax
        else:
            self.channel_min, self.channel_max = np.minimum(self.channel_min, cmin), np.maximum(self.channel_max, cmax)
        self.count += flat.size
        self.zeros += int(np.count_nonzero(flat == 0))
        self.hist += np.bincount(self._bin_index(flat.ravel()), minlength=2 * self.bins)

    def _fit_limit(self, lo, hi):
        """Make [-limit, limit) hold [lo, hi]; a histogram holding only zeros may restart at any limit."""
        if self.count == 0 or (self.min == 0.0 and self.max == 0.0):
            absmax = max(-lo, hi)
            self.limit = float(2.0 ** np.ceil(np.log2(absmax))) if absmax > 0 else 1.0
            self.limit = max(self.limit, MIN_LIMIT)
        while hi >= self.limit or -lo > self.limit:
            self._double()

    def _bin_index(self, values):
        """Bin of each value in `hist`: bins + floor(v / width), exact for power-of-two widths."""
        factor = self.bins / self.limit
        scaled = values * np.float32(factor)            # exact: a power-of-two scaling into [-bins, bins)
        np.floor(scaled, out=scaled)
        if factor < 0.5:                                # a tiny negative may underflow to -0.0: bin -1
            np.minimum(scaled, -1, out=scaled, where=values < 0)
        scaled += self.bins
        return scaled.astype(np.intp)

    def _double(self):
        merged = self.hist.reshape(-1, 2).sum(axis=1)
        self.hist = np.zeros_like(self.hist)
        self.hist[self.bins // 2: self.bins // 2 + self.bins] = merged
        self.limit *= 2

    # ---- views --------------------------------------------------------------------------------------------
    @property
    def width(self):
        """Width of one histogram bin."""
        return self.limit / self.bins

    @property
    def edges(self):
        """The 2*bins+1 bin edges of `hist`, from -limit to limit."""
        return np.arange(-self.bins, self.bins + 1) * self.width

    @property
    def positive_hist(self):
        """Counts of [k*width, (k+1)*width), k = 0..bins-1 (zero included)."""
        return self.hist[self.bins:]

    @property
    def negative_hist(self):
        """Counts of [-(k+1)*width, -k*width), k = 0..bins-1: the negative side by magnitude."""
        return self.hist[:self.bins][::-1]

    @property
    def abs_hist(self):
        """Histogram of |x| over [0, limit) with `bins` bins (edges up to a measure-zero boundary)."""
        return self.positive_hist + self.negative_hist

    def percentile(self, q):
        """Value below which q percent of the data lies (linear inside a bin), clamped to [min, max]."""
        if self.count == 0:
            raise QuantizationError(f"tensor '{self.name}' has no calibration data")
        if q <= 0:
            return float(self.min)
        if q >= 100:
            return float(self.max)
        cum = np.cumsum(self.hist)
        target = q / 100.0 * cum[-1]
        i = min(int(np.searchsorted(cum, target)), 2 * self.bins - 1)
        before = cum[i - 1] if i else 0
        frac = (target - before) / self.hist[i] if self.hist[i] else 0.0
        value = (i - self.bins + frac) * self.width
        return float(np.clip(value, self.min, self.max))

    @property
    def mean_sample_min(self):
        return self.sample_min_sum / max(self.samples, 1)

    @property
    def mean_sample_max(self):
        return self.sample_max_sum / max(self.samples, 1)

    def __repr__(self):
        return f"TensorStats({self.name}: [{self.min:.4g}, {self.max:.4g}], n={self.count})"


def _as_inputs(data):
    """The calibration data as a list of batched arrays (one per graph input), all of one length."""
    inputs = list(data) if isinstance(data, (list, tuple)) else [data]
    inputs = [np.asarray(x) for x in inputs]
    lengths = {len(x) if x.ndim else 0 for x in inputs}
    if not inputs or lengths == {0}:
        raise DatasetError("the calibration data is empty: give at least one sample (emc.datasets.load_dataset "
                           "reads folders, image files, .npy/.npz files and arrays)")
    if len(lengths) != 1:
        raise DatasetError(f"the calibration inputs have different numbers of samples {sorted(lengths)}: give "
                           f"every graph input the same number of samples")
    return inputs


def _progress(total, enabled):
    """A tqdm bar on an interactive stderr, else None."""
    if not (enabled and sys.stderr.isatty()):
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc="calibrating", unit="sample", leave=False)


def collect_stats(graph, data, batch_size=16, bins=2048, progress=False):
    """Run the graph once over data (batch axis first; a list for several inputs): {tensor: TensorStats}.

    Every tensor the executor reports (inputs, outputs and pre-activation outputs) is summarised batch by
    batch, so memory stays bounded whatever the number of samples.
    """
    if int(batch_size) != batch_size or batch_size < 1:
        raise QuantizationError(f"batch_size must be a positive integer, not {batch_size!r}")
    inputs = _as_inputs(data)
    total = len(inputs[0])
    stats = {}

    def observe(name, value):
        if name not in stats:
            stats[name] = TensorStats(name, bins)
        stats[name].update(value)

    bar = _progress(total, progress)
    start_time = time.perf_counter()
    try:
        for start in range(0, total, batch_size):
            batch = [x[start:start + batch_size] for x in inputs]
            graph.run(batch if len(batch) > 1 else batch[0], observer=observe, batch_size=batch_size)
            if bar is not None:
                bar.update(len(batch[0]))
    finally:
        if bar is not None:
            bar.close()
    log.info("calibration pass: %d tensors over %d samples in %.1f s", len(stats), total,
             time.perf_counter() - start_time)
    return stats


class Calibration:
    """Per-tensor float ranges (lo, hi) from one range function, with the statistics behind them."""

    def __init__(self, ranges, stats, method):
        self.ranges = ranges
        self.stats = stats
        self.method = method

    def __getitem__(self, name):
        return self.ranges[name]

    def __contains__(self, name):
        return name in self.ranges

    def __repr__(self):
        return f"Calibration({self.method}, {len(self.ranges)} tensors)"


def _checked_range(fn_name, tensor, result):
    """(lo, hi) as floats, or a QuantizationError naming the tensor and the function."""
    try:
        lo, hi = (float(v) for v in result)
    except (TypeError, ValueError):
        raise QuantizationError(f"quant function {fn_name} returned {result!r} for tensor '{tensor}'; it must "
                                f"return a pair of numbers (lo, hi)") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise QuantizationError(f"quant function {fn_name} gave an invalid range ({lo}, {hi}) for tensor "
                                f"'{tensor}': a range must be finite with lo <= hi")
    return lo, hi


def calibrate(graph, data, method="minmax", **kw):
    """Collect statistics over data and turn each tensor's into a range with a quant function (name or callable).

    Keyword arguments go to collect_stats (batch_size, bins, progress).
    """
    from . import quant
    fn = quant.get(method)
    fn_name = method if isinstance(method, str) else getattr(fn, "__name__", repr(fn))
    stats = collect_stats(graph, data, **kw)
    ranges = {}
    for name, s in stats.items():
        try:
            result = fn(s)
        except EmcError:
            raise
        except Exception as err:    # a user's function: name the tensor and the function instead of a traceback
            raise QuantizationError(f"quant function {fn_name} failed on tensor '{name}': "
                                    f"{type(err).__name__}: {err}") from err
        ranges[name] = _checked_range(fn_name, name, result)
    log.debug("calibrated %d tensors with %s", len(ranges), fn_name)
    return Calibration(ranges, stats, fn_name)
