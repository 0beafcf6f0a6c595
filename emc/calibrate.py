"""Calibration: one streaming pass of the float graph over the data, per-tensor statistics, then ranges."""
import logging
import sys

import numpy as np

from .errors import QuantizationError

log = logging.getLogger(__name__)


class TensorStats:
    """Running statistics of one tensor: min/max, per-sample min/max means, and an adaptive histogram.

    The histogram covers [-limit, limit) with a fixed number of bins; when data falls outside, the limit
    doubles and neighbouring bins merge exactly, so one pass over the data suffices with bounded memory.
    """

    def __init__(self, name, bins=4096):
        if bins % 4:
            raise ValueError("bins must be a multiple of 4")
        self.name = name
        self.bins = bins
        self.hist = np.zeros(bins, np.int64)
        self.limit = 0.0
        self.min = np.inf
        self.max = -np.inf
        self.count = 0
        self.samples = 0
        self.sample_min_sum = 0.0
        self.sample_max_sum = 0.0

    def update(self, batch):
        batch = np.asarray(batch, dtype=np.float32)
        if batch.size == 0:
            return
        flat = batch.reshape(len(batch), -1)
        mins, maxs = flat.min(axis=1), flat.max(axis=1)
        self.samples += len(flat)
        self.sample_min_sum += float(mins.sum())
        self.sample_max_sum += float(maxs.sum())
        self.min = min(self.min, float(mins.min()))
        self.max = max(self.max, float(maxs.max()))
        self.count += flat.size
        absmax = max(abs(self.min), abs(self.max))
        if self.limit == 0.0:
            self.limit = float(2.0 ** np.ceil(np.log2(absmax))) if absmax > 0 else 1.0
        while absmax >= self.limit:
            self._double()
        width = 2 * self.limit / self.bins
        idx = np.clip(((flat.ravel() + self.limit) / width).astype(np.int64), 0, self.bins - 1)
        self.hist += np.bincount(idx, minlength=self.bins)

    def _double(self):
        merged = self.hist.reshape(-1, 2).sum(axis=1)
        new = np.zeros_like(self.hist)
        new[self.bins // 4: self.bins // 4 + len(merged)] = merged
        self.hist = new
        self.limit *= 2

    @property
    def edges(self):
        return np.linspace(-self.limit, self.limit, self.bins + 1)

    def percentile(self, q):
        """Value below which q percent of the data lies (linear inside a bin), clamped to [min, max]."""
        cum = np.cumsum(self.hist)
        target = q / 100.0 * cum[-1]
        i = int(np.searchsorted(cum, target))
        i = min(i, self.bins - 1)
        before = cum[i - 1] if i else 0
        frac = (target - before) / self.hist[i] if self.hist[i] else 0.0
        width = 2 * self.limit / self.bins
        value = -self.limit + (i + frac) * width
        return float(np.clip(value, self.min, self.max))

    @property
    def mean_sample_min(self):
        return self.sample_min_sum / max(self.samples, 1)

    @property
    def mean_sample_max(self):
        return self.sample_max_sum / max(self.samples, 1)

    def __repr__(self):
        return f"TensorStats({self.name}: [{self.min:.4g}, {self.max:.4g}], n={self.count})"


def collect_stats(graph, data, batch_size=16, bins=4096, progress=False):
    """Run the graph over data (batch axis first; a list for several inputs) and return {tensor: TensorStats}."""
    stats = {}

    def observe(name, value):
        if name not in stats:
            stats[name] = TensorStats(name, bins)
        stats[name].update(value)

    inputs = data if isinstance(data, (list, tuple)) else [data]
    total = len(inputs[0])
    starts = range(0, total, batch_size)
    if progress and sys.stderr.isatty():
        from tqdm import tqdm
        starts = tqdm(starts, desc="calibrating", unit="batch", leave=False)
    for start in starts:
        graph.run([x[start:start + batch_size] for x in inputs], observer=observe, batch_size=batch_size)
    log.debug("collected statistics of %d tensors over %d samples", len(stats), total)
    return stats


class Calibration:
    """Per-tensor float ranges (lo, hi) from one range function, with the statistics behind them."""

    def __init__(self, ranges, stats, method):
        self.ranges = ranges
        self.stats = stats
        self.method = method

    def __getitem__(self, name):
        return self.ranges[name]

    def __repr__(self):
        return f"Calibration({self.method}, {len(self.ranges)} tensors)"


def calibrate(graph, data, method="minmax", batch_size=16, bins=4096, progress=False):
    """Collect statistics over data and turn each tensor's into a range with a quant function (name or callable)."""
    from . import quant
    fn = quant.get(method)
    stats = collect_stats(graph, data, batch_size=batch_size, bins=bins, progress=progress)
    ranges = {}
    for name, s in stats.items():
        lo, hi = fn(s)
        lo, hi = float(lo), float(hi)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
            raise QuantizationError(f"quant function {getattr(fn, '__name__', fn)} gave an invalid range "
                                    f"({lo}, {hi}) for tensor '{name}'")
        ranges[name] = (lo, hi)
    name = method if isinstance(method, str) else getattr(method, "__name__", "custom")
    return Calibration(ranges, stats, name)
