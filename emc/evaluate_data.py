"""Evaluation at dataset scale: labelled sources streamed in batches (an image folder with one subfolder per
class, the Keras / ImageNet layout, or arrays), the accumulated result (top-k, confusion matrix) and its
rendering as text, as an HTML table in notebooks, and as a picture.

Memory stays bounded: a folder is read one batch at a time, and per sample only the prediction and the top-k
class indices are kept (all scores only when they are small).
"""
import os

import numpy as np

from .errors import DatasetError, EmcError

KEEP_SCORES = 10_000_000          # keep every sample's scores when samples x classes stays below this


class ArraySource:
    """Samples and labels already in memory (x batch first, y class indices or one-hot rows)."""

    def __init__(self, x, y):
        if isinstance(x, (list, tuple)):
            raise EmcError("evaluate() takes one input array (batch first); multi-input models are not supported")
        self.x = np.asarray(x)
        if len(self.x) == 0:
            raise EmcError("evaluate() needs at least one sample")
        if y is None:
            raise EmcError("evaluate() needs labels y for an array x (or give a folder with one subfolder per class)")
        self.y = labels_of(y, len(self.x))
        self.classes = None

    def __len__(self):
        return len(self.x)

    def batch(self, start, stop):
        return self.x[start:stop], self.y[start:stop]


class FolderSource:
    """A folder with one subfolder per class (sorted names = class indices), each holding that class's images;
    images are loaded a batch at a time through the dataset function, then (x - mean) / std."""

    def __init__(self, folder, shape, dataset_func="img_0_1", mean=None, std=None, classes=None):
        from .datasets import IMAGE_EXTENSIONS, get
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise DatasetError(f"{folder} is not a folder; give a folder with one subfolder of images per class")
        found = sorted(e for e in os.listdir(folder) if not e.startswith(".") and
                       os.path.isdir(os.path.join(folder, e)))
        if not found:
            raise DatasetError(f"{folder} has no class subfolders; put each class's images in a subfolder named "
                               f"after the class (e.g. {folder}/cat/*.jpg, {folder}/dog/*.jpg)")
        self.classes = list(classes) if classes is not None else found
        index = {name: i for i, name in enumerate(self.classes)}
        unknown = [name for name in found if name not in index]
        if unknown:
            raise DatasetError(f"class subfolder(s) {', '.join(unknown[:5])} are not in the labels given")
        self.files, labels = [], []
        for name in found:
            sub = os.path.join(folder, name)
            for entry in sorted(os.listdir(sub)):
                if os.path.splitext(entry)[1].lower() in IMAGE_EXTENSIONS:
                    self.files.append(os.path.join(sub, entry))
                    labels.append(index[name])
        if not self.files:
            raise DatasetError(f"the class subfolders of {folder} hold no images "
                               f"({', '.join(sorted(IMAGE_EXTENSIONS)[:5])} ...)")
        self.y = np.asarray(labels, np.int64)
        self.shape, self.load = tuple(shape), get(dataset_func)
        self.mean, self.std = mean, std

    def __len__(self):
        return len(self.files)

    def batch(self, start, stop):
        from .datasets import _load_images
        x = _load_images(self.files[start:stop], self.shape, self.load).astype(np.float32)
        if self.mean is not None or self.std is not None:
            x = (x - (0.0 if self.mean is None else self.mean)) / (1.0 if self.std is None else self.std)
        return x, self.y[start:stop]

    def subset(self, indices):
        """The same source restricted to the given sample indices (a seeded random subset)."""
        self.files = [self.files[i] for i in indices]
        self.y = self.y[np.asarray(indices, np.int64)]
        return self


def labels_of(y, n):
    """Class indices from indices or one-hot rows; EmcError naming the problem otherwise."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        y = np.argmax(y, axis=1)                  # one-hot (or scores) -> class index
    y = y.reshape(-1)
    if len(y) != n:
        raise EmcError(f"{n} samples but {len(y)} labels; give one label (or one-hot row) per sample")
    if not np.all(np.equal(np.mod(y, 1), 0)) or (y.size and y.min() < 0):
        raise EmcError("labels must be non-negative class indices or one-hot rows")
    return y.astype(np.int64)


class Evaluation(dict):
    """evaluate()'s result: a dict ('samples', 'top1', 'confusion', ...) that prints NNoM-style, renders as HTML
    tables in a notebook and draws its confusion matrix with plot()."""

    labels = None

    def __str__(self):
        return format_evaluation(self, self.labels)

    def _repr_html_(self):
        from .report import html_escape
        rows = "".join(f"<tr><th>top-{k[3:]}</th><td>{self[k]:.4f}</td></tr>" for k in self.top_keys())
        if "time_per_inference" in self:
            rows += f"<tr><th>time / sample</th><td>{1000 * self['time_per_inference']:.3f} ms (host)</td></tr>"
        confusion = self["confusion"]
        names = [html_escape(self.labels[i]) if self.labels is not None and i < len(self.labels) else str(i)
                 for i in range(len(confusion))]
        head = "".join(f"<th>{n}</th>" for n in names)
        peak = max(int(confusion.max()), 1) if confusion.size else 1
        body = ""
        for name, row in zip(names, confusion):
            cells = "".join(f'<td style="background: rgba(46,134,193,{0.6 * int(v) / peak:.2f})">{int(v)}</td>'
                            for v in row)
            body += f"<tr><th>{name}</th>{cells}</tr>"
        return (f"<div><b>evaluation on {self['samples']} samples</b><table>{rows}</table>"
                f"<p>confusion matrix (rows: true class, columns: predicted)</p>"
                f"<table><tr><th></th>{head}</tr>{body}</table></div>")

    def top_keys(self):
        return sorted((k for k in self if k.startswith("top") and k[3:].isdigit()), key=lambda k: int(k[3:]))

    def plot(self, path=None):
        """The confusion matrix as a picture: a matplotlib Figure, also written to path (PNG) when given."""
        import io

        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        from .fileio import write_atomic
        confusion = self["confusion"]
        size = min(12.0, 2.0 + 0.35 * len(confusion))
        fig = Figure(figsize=(size, size))
        ax = fig.add_subplot(1, 1, 1)
        ax.imshow(confusion, cmap="Blues")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(", ".join(f"top-{k[3:]} {self[k]:.3f}" for k in self.top_keys()))
        if path is not None:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=100)
            write_atomic(path, buffer.getvalue())
        return fig


def format_evaluation(result, labels=None):
    """A printable summary of evaluate()'s result: top-k lines, timing, and the confusion matrix."""
    lines = []
    for key in sorted((k for k in result if k.startswith("top") and k[3:].isdigit()), key=lambda k: int(k[3:])):
        right = int(round(result[key] * result["samples"]))
        lines.append(f"top-{key[3:]} accuracy: {result[key]:.4f} ({right}/{result['samples']})")
    if "time_per_inference" in result:
        lines.append(f"time per inference: {1000 * result['time_per_inference']:.3f} ms (median "
                     f"{1000 * result['time_median']:.3f} ms, host)")
    confusion = result["confusion"]
    names = [str(labels[i]) if labels is not None and i < len(labels) else str(i) for i in range(len(confusion))]
    width = max([len(n) for n in names] + [len(str(int(confusion.max()))) if confusion.size else 1, 4])
    lines.append("confusion matrix (rows: true class, columns: predicted):")
    lines.append(" " * (width + 1) + " ".join(n[:width].rjust(width) for n in names))
    for name, row in zip(names, confusion):
        lines.append(name[:width].rjust(width) + " " + " ".join(str(int(v)).rjust(width) for v in row))
    return "\n".join(lines)


class Tally:
    """Streaming top-k hits, confusion counts and predictions over batches of scores."""

    def __init__(self, n, top_k):
        self.n, self.top_k = n, [int(k) for k in top_k]
        for k in self.top_k:
            if k < 1:
                raise EmcError(f"top_k values must be >= 1, got {k}")
        self.hits = {k: 0 for k in self.top_k}
        self.predictions = np.zeros(n, np.int64)
        self.labels = np.zeros(n, np.int64)
        self.scores = None
        self.width = None

    def add(self, start, scores, labels):
        scores = np.asarray(scores, np.float32).reshape(len(labels), -1)
        if self.width is None:
            self.width = scores.shape[1]
            if self.n * self.width <= KEEP_SCORES:
                self.scores = np.zeros((self.n, self.width), np.float32)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :max(self.top_k)]
        for k in self.top_k:
            self.hits[k] += int(np.any(order[:, :k] == labels[:, None], axis=1).sum())
        stop = start + len(labels)
        self.predictions[start:stop] = order[:, 0]
        self.labels[start:stop] = labels
        if self.scores is not None:
            self.scores[start:stop] = scores

    def result(self):
        classes = max(self.width or 0, int(self.labels.max()) + 1)
        confusion = np.zeros((classes, classes), np.int64)
        np.add.at(confusion, (self.labels, self.predictions), 1)
        out = Evaluation(samples=self.n, classes=self.width)
        for k in self.top_k:
            out[f"top{k}"] = self.hits[k] / self.n
        out.update(confusion=confusion, predictions=self.predictions)
        if self.scores is not None:
            out["scores"] = self.scores
        return out
