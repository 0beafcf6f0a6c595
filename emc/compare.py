"""Float vs device, layer by layer: where in a converted model does the accuracy go?

Matching rule (device layers have no graph names in a kmodel, so they are matched by shape and order):
- device side: every traced layer of the kmodel simulation (or, for an emc C artefact, every kernel call of
  its integer simulator) except pure data movement (uploads, padding, (de/re)quantize, flatten, reshape,
  transpose), in execution order;
- float side: every node output of the optimized float graph (BatchNorm folded, activations fused), in
  topological order;
- each device layer takes the FIRST float tensor with the same shape (C,H,W on the device = H,W,C in the
  graph, H,W,C on a C device; a device vector of n values = a graph tensor of n values) after the previously
  matched one; for an emc artefact the search starts at the graph layer it names for that device layer (a KPU
  conv with a fused pool then meets the pool's output). Device layers without such a tensor are listed as
  unmatched.
Metrics over all samples: cosine similarity and SNR = 10 log10(sum f^2 / sum (f - d)^2) in dB. uint8 kmodel
tensors are first mapped to float by the least-squares affine fit to the float tensor (a kmodel v3 does not
store the scales of its intermediate tensors): the SNR then excludes a global scale error, which the final
outputs -- dequantized by the device itself and compared as they are -- do show. The int8 tensors of a C
artefact are dequantized with their own scale and zero point.
"""
import logging
import os
import sys

import numpy as np

from .errors import EmcError
from .fileio import write_atomic
from .report import Report

log = logging.getLogger(__name__)

# Device layers that only move or re-encode data: kmodel v3 layer types, kmodel v4 opcodes, C kernel kinds.
DATA_MOVEMENT = {"k210_upload", "k210_add_padding", "k210_remove_padding", "quantize", "dequantize",
                 "channelwise_dequantize", "requantize", "tensorflow_flatten", "quantized_tensorflow_flatten",
                 "kpu_upload", "memory_copy", "transpose", "pad", "reshape", "flatten", "strided_slice"}
# Activations a device runs as layers of their own: paired with the float tensor after them, never before.
POST_OPS = {"softmax"}


class _Sums:
    """Streaming sums for cosine / SNR of float f against device d (optionally through an affine fit of d)."""

    def __init__(self, fit):
        self.fit = fit
        self.n = 0
        self.sf = self.sd = self.sff = self.sdd = self.sfd = 0.0
        self.max_abs = 0.0

    def add(self, f, d):
        f = np.asarray(f, np.float64).ravel()
        d = np.asarray(d, np.float64).ravel()
        self.n += f.size
        self.sf += f.sum()
        self.sd += d.sum()
        self.sff += f @ f
        self.sdd += d @ d
        self.sfd += f @ d
        if not self.fit:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(f - d))) if f.size else 0.0)

    def metrics(self):
        """(cosine, snr_db, max_abs or None, (a, b) fit or None)."""
        n = max(self.n, 1)
        if self.fit:
            var_d = self.sdd - self.sd * self.sd / n
            a = (self.sfd - self.sf * self.sd / n) / var_d if var_d > 1e-12 else 0.0
            b = (self.sf - a * self.sd) / n
            sgg = a * a * self.sdd + 2 * a * b * self.sd + n * b * b
            sfg = a * self.sfd + b * self.sf
            fit = (a, b)
        else:
            sgg, sfg, fit = self.sdd, self.sfd, None
        err = max(self.sff - 2 * sfg + sgg, 0.0)
        norm = np.sqrt(self.sff * sgg)
        cosine = float(sfg / norm) if norm > 0 else (1.0 if self.sff == sgg == 0 else 0.0)
        snr = float("inf") if err <= 1e-20 * max(self.sff, 1e-30) else float(10 * np.log10(max(self.sff, 1e-30) / err))
        return min(cosine, 1.0), snr, (None if self.fit else self.max_abs), fit


def _device_view(array, layout="chw"):
    """A device tensor as (kind, shape): 'chw' (C, H, W) or 'hwc' (H, W, C) maps, or 'flat' (n,)."""
    a = np.asarray(array)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3:
        return layout, a.shape
    return "flat", (a.size,)


def _float_view(kind, dev_shape, node_shape):
    """How to lay a float tensor (per-sample node_shape) out like the device one, or None if they do not fit."""
    size = int(np.prod(node_shape))
    if kind == "chw":
        c, h, w = dev_shape
        return "chw" if tuple(node_shape) == (h, w, c) else None
    if kind == "hwc":
        return "flat" if tuple(node_shape) == tuple(dev_shape) else None
    if size != dev_shape[0]:
        return None
    return "chw" if len(node_shape) == 3 else "flat"


def _as_device_order(value, layout):
    """Batched float tensor -> (N, -1) in the device's element order."""
    value = np.asarray(value, np.float32)
    if layout == "padded":
        return value.reshape(len(value), -1)
    if layout == "chw" and value.ndim == 4:
        value = value.transpose(0, 3, 1, 2)
    return value.reshape(len(value), -1)


def _is_data_movement(type_name):
    return str(type_name).lower() in DATA_MOVEMENT


def _report_names(device):
    """{device layer index: graph layer name} from an emc artefact's report, or {}."""
    report = getattr(device, "report", None)
    rows = getattr(report, "rows", None) or []
    names = {}
    for row in rows:
        if isinstance(row, dict) and "#" in row and row.get("layer"):
            names[row["#"]] = row["layer"]
    return names


class Traced:
    """One device layer's output for one sample: index, type, values, the graph layer it names (emc
    artefacts), its map layout ('chw' kmodel, 'hwc' C) and whether its values still need an affine fit."""

    __slots__ = ("index", "type", "array", "node", "layout", "fit")

    def __init__(self, index, type_name, array, node=None, layout="chw", fit=None):
        self.index, self.type, self.array, self.node, self.layout = index, type_name, np.asarray(array), node, layout
        self.fit = self.array.dtype.kind in "ui" if fit is None else fit


def _post_op(node):
    """The activation a graph node ends with when it is one a device runs as a layer of its own (softmax)."""
    act = getattr(getattr(node, "op", None), "activation", None)
    name = getattr(act, "name", None)
    return name if name in POST_OPS else None


def _exact_view(kind, shape, node_shape):
    """_float_view for a pairing known by name; a vector computed as a padded KPU map (C, 4, 4) reads [:, 0, 0]."""
    layout = _float_view(kind, shape, node_shape)
    if layout is not None or len(node_shape) != 1:
        return layout
    if kind == "chw" and shape == (node_shape[0], 4, 4):
        return "padded"
    return "flat" if int(np.prod(shape)) == node_shape[0] else None


def match_layers(graph, steps, names=None, exact=False):
    """[(device index, device type, graph node name, layout)] and the unmatched [(index, type)] per the rule above.

    steps: Traced records, or (index, type, array) triples of a kmodel trace; names: {index: graph layer}.
    exact=True: names are the graph tensors the device layers compute (emc's own artefacts): each layer is
    paired with its tensor only, and a layer naming none (a pre-activation, an intermediate) stays unmatched.
    """
    order = [n.name for n in graph if n.name not in graph.inputs]
    position = {name: i for i, name in enumerate(order)}
    names = dict(names or {})
    matches, unmatched = [], []
    cursor = 0
    for step in steps:
        if not isinstance(step, Traced):
            step = Traced(*step)
        index, type_name = step.index, step.type
        if step.node:
            names.setdefault(index, step.node)
        if _is_data_movement(type_name):
            continue
        kind, shape = _device_view(step.array, step.layout)
        named = names.get(index)
        if exact:
            layout = _exact_view(kind, shape, graph[named].shape) if named in position else None
            if layout is None:
                unmatched.append((index, type_name))
            else:
                matches.append((index, type_name, named, layout))
            continue
        start = cursor
        if named in position and position[named] >= cursor:
            start = position[named]
        post = str(type_name).lower() if str(type_name).lower() in POST_OPS else None
        found = None
        for i in range(start, len(order)):
            if _post_op(graph[order[i]]) != post:    # a device softmax meets the softmax's output, nothing else
                continue
            layout = _float_view(kind, shape, graph[order[i]].shape)
            if layout is not None:
                found = (i, layout)
                break
        if found is None:
            unmatched.append((index, type_name))
            continue
        i, layout = found
        matches.append((index, type_name, order[i], layout))
        cursor = i + 1
    return matches, unmatched


class Comparison:
    """Result of compare(): per matched layer and per output metrics; str() prints worst layers first."""

    def __init__(self, layers, outputs, unmatched, samples, device_name, exact=False):
        self.layers = layers        # [{index, device, tensor, shape, values, cosine, snr_db, max_abs}]
        self.outputs = outputs      # [{output, cosine, snr_db, mean_abs, max_abs, top1_agree}]
        self.unmatched = unmatched  # [(device index, device type)]
        self.samples = samples
        self.device_name = device_name
        self.exact = exact          # True: pairs from emc's own layer -> tensor record, not shapes

    def worst_first(self):
        return sorted(self.layers, key=lambda r: (r["snr_db"], r["index"]))

    @property
    def report(self):
        report = Report(f"float vs {self.device_name}, layer by layer ({self.samples} samples, worst first)",
                        ["#", "device layer", "graph tensor", "shape", "values", "cosine", "SNR dB", "max |err|"])
        for r in self.worst_first():
            report.add(**{"#": r["index"], "device layer": r["device"], "graph tensor": r["tensor"],
                          "shape": r["shape"], "values": r["values"], "cosine": f"{r['cosine']:.5f}",
                          "SNR dB": _db(r["snr_db"]), "max |err|": r["max_abs"]})
        for out in self.outputs:
            text = (f"cosine {out['cosine']:.5f}, SNR {_db(out['snr_db'])} dB, mean |err| {out['mean_abs']:.4g}, "
                    f"max |err| {out['max_abs']:.4g}")
            if out.get("top1_agree") is not None:
                text += f", same top-1 on {out['top1_agree']:.1%} of samples"
            report.totals[f"output '{out['output']}'"] = text
        if self.unmatched:
            why = ("device layers computing no tensor of the float graph (pre-activations, intermediates): "
                   if self.exact else "device layers without a float tensor of their shape: ")
            report.notes.append(why + ", ".join(f"{i} {t}" for i, t in self.unmatched))
        report.notes.append("layers paired by the graph tensor emc recorded for each device layer" if self.exact
                            else "layers paired by shape and order (the device file names no graph tensors)")
        report.notes.append("u8 (fit): uint8 device tensor mapped to float by a least-squares affine fit; "
                            "i8: int8 tensor dequantized with its own scale; f32: compared as it is")
        return report

    def __str__(self):
        return str(self.report)

    def _repr_html_(self):
        return self.report._repr_html_()

    def plot(self, path=None, title=None):
        """Draw per-layer SNR (execution order) into a PNG with matplotlib's Agg backend."""
        import io

        from .extras import require
        matplotlib = require("matplotlib", "Comparison.plot / emc compare --plot")
        matplotlib.use("Agg")
        from matplotlib.figure import Figure
        rows = sorted(self.layers, key=lambda r: r["index"])
        fig = Figure(figsize=(max(6.0, 0.45 * len(rows) + 2), 4.5))
        ax = fig.add_subplot(1, 1, 1)
        values = [min(r["snr_db"], 99.0) for r in rows]
        ax.bar(range(len(rows)), values, color=["#c0392b" if v < 20 else "#2e86c1" for v in values])
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([f"{r['index']} {r['tensor']}" for r in rows], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("SNR (dB), float vs device")
        ax.axhline(20, color="#888888", linewidth=0.8, linestyle="--")
        ax.set_title(title or f"float vs {self.device_name}: per-layer SNR ({self.samples} samples)")
        fig.tight_layout()
        if path is None:                            # a notebook: the Figure itself
            return fig
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        write_atomic(path, buffer.getvalue())
        return path


def _db(value):
    return "inf" if value == float("inf") else round(value, 2)


def _load_data(data, graph, dataset_func, mean, std, max_samples, seed):
    from .convert import normalise
    from .datasets import load_dataset
    if len(graph.inputs) != 1:
        raise EmcError("compare() handles single-input models")
    x = load_dataset(data, graph.input_shapes[0], dataset_func=dataset_func, max_samples=max_samples, seed=seed)
    return normalise(x, mean, std)                  # as emc.convert applies them


def _sidecar_tensors(device):
    """{device layer: graph tensor} from the sidecar emc wrote next to a kmodel file, or None."""
    if not isinstance(device, (str, os.PathLike)):
        return None
    from .sidecar import for_kmodel, layer_tensors
    return layer_tensors(for_kmodel(device)) or None


class _Device:
    """Runs one sample on the device with a layer trace; final outputs shaped like the graph's."""

    def __init__(self, device, graph, input_transform):
        from .platforms.k210.kmodel import load_kmodel
        from .artefact import Artefact
        from .evaluate import is_parsed_kmodel
        self.artefact = device if isinstance(device, Artefact) else None
        self.names = _report_names(device) if self.artefact is not None else {}
        self.exact = False
        tensors = getattr(device, "layer_tensors", None) if self.artefact is not None else _sidecar_tensors(device)
        if tensors:                                 # emc's own artefact: the graph tensor of every device layer
            self.names, self.exact = dict(tensors), True
        self.graph = graph
        self.model = None
        self.to_device = None
        if self.artefact is not None:
            if getattr(device, "platform", "") == "k210":
                self.model = getattr(device, "model", None)
            self.name = f"{device.platform} ({device.name})"
            self.to_device = getattr(device, "to_pixels", None)
        else:
            self.model = device if is_parsed_kmodel(device) else load_kmodel(device)
            self.name = f"kmodel v{self.model.version}"
        if self.model is None:
            return
        image_input = len(graph.input_shapes[0]) == 3
        if self.to_device is None and image_input:
            if input_transform is None:
                raise EmcError("the kmodel takes camera pixels: give input_transform=(scale, offset) or a dataset "
                               "function with a known pixel mapping (img_0_1, img_0_255, img_neg1_1)")
            from .evaluate import to_pixels
            self.to_device = lambda x: to_pixels(x, input_transform)
        if not image_input:
            self.to_device = lambda x: np.asarray(x, np.float32).reshape(len(x), -1)

    def trace(self, x_one):
        """[Traced] of one sample and its flat outputs (kmodels); ([], None) for a device without a trace."""
        if self.model is not None:
            from .platforms.k210.kmodel import run_kmodel
            sample = self.to_device(x_one[None])[0]
            outs, steps = run_kmodel(self.model, sample, trace=True)
            return [Traced(i, t, a) for i, t, a in steps], outs
        simulate_int8 = getattr(self.artefact, "simulate_int8", None)
        program = getattr(self.artefact, "program", None)
        if simulate_int8 is None or program is None:
            return [], None
        traced = []

        def observe(step, value):                  # an emc C artefact: int8 NHWC tensors with their own scales
            real = program.tensors[step.output].dequantize(np.asarray(value)[0])
            traced.append(Traced(len(traced), step.kind, real, node=step.node, layout="hwc", fit=False))
        simulate_int8(self.artefact.quantize_inputs(x_one[None]), observer=observe)
        return traced, None

    def outputs(self, x, flat_outs):
        """Final outputs (batched, graph shapes) for x."""
        if self.artefact is not None:
            return [np.asarray(o, np.float32) for o in self.artefact.simulate(x)]
        shaped = []
        for k, shape in enumerate(self.graph.output_shapes):
            flat = np.stack([np.asarray(o[k], np.float32).reshape(-1) for o in flat_outs])
            if flat.shape[1] != int(np.prod(shape)):
                raise EmcError(f"output {k} of the kmodel has {flat.shape[1]} values, the float model's "
                               f"'{self.graph.outputs[k]}' has {int(np.prod(shape))}: are they the same network?")
            if len(shape) == 3:
                h, w, c = shape
                flat = flat.reshape(-1, c, h, w).transpose(0, 2, 3, 1)
            shaped.append(flat.reshape((-1,) + tuple(shape)))
        return shaped


def compare(net, device, data, dataset_func="img_0_1", mean=None, std=None, max_samples=None, seed=0,
            input_transform=None, progress=False):
    """Compare the float network with what the device computes, layer by layer, on data; returns a Comparison.

    net: anything emc.load_model takes (None: the artefact's own graph); device: a K210Artefact, a kmodel
    (path, bytes or parsed, anyone's), an emc C / STM32 artefact, or another emc artefact (then only its final
    outputs are compared); data: a dataset folder / file (loaded with dataset_func, mean and std as
    emc.convert does) or a float array, batch first. input_transform=(scale, offset) maps float input to camera
    pixels for a foreign kmodel (default: from dataset_func, mean and std).
    """
    from .convert import input_transform as pixel_mapping
    from .frontends import load_model
    from .passes import optimize
    if net is None:
        graph = getattr(device, "graph", None)
        if graph is None:
            raise EmcError("compare() needs the float network for a device without its own graph")
    else:
        from .quiet import quiet_frameworks
        quiet_frameworks()
        graph = optimize(load_model(net))
    x = _load_data(data, graph, dataset_func, mean, std, max_samples, seed)
    if input_transform is None and isinstance(dataset_func, str):
        try:
            input_transform = pixel_mapping(dataset_func, mean, std)
        except EmcError:
            input_transform = None
    if isinstance(device, (str, os.PathLike)) and os.path.isdir(device):
        from .c_folder import CFolder
        device = CFolder(os.fspath(device))        # a C / STM32 folder: its compiled C, final outputs
    elif input_transform is None and isinstance(device, (str, os.PathLike)):
        from .evaluate import sidecar_transform
        input_transform = sidecar_transform(device)
    dev = _Device(device, graph, input_transform)
    samples = range(len(x))
    if progress and sys.stderr.isatty():
        from tqdm import tqdm
        samples = tqdm(samples, desc="comparing", unit="sample", leave=False)
    matches, unmatched, sums, flat_outs, kinds = None, [], {}, [], {}
    for i in samples:
        steps, outs = dev.trace(x[i])
        flat_outs.append(outs)
        by_index = {s.index: s for s in steps}
        if matches is None:
            matches, unmatched = match_layers(graph, steps, dev.names, dev.exact)
            for index, _, _, _ in matches:
                step = by_index[index]
                kinds[index] = "u8 (fit)" if step.fit else ("i8" if step.layout == "hwc" else "f32")
                sums[index] = _Sums(step.fit)
        if not matches:
            continue
        wanted = {m[2] for m in matches}
        seen = {}
        graph.run(x[i:i + 1], observer=lambda name, v: seen.__setitem__(name, v) if name in wanted else None)
        for index, _, tensor, layout in matches:
            f = _as_device_order(seen[tensor], layout)
            d = np.asarray(by_index[index].array, np.float64)
            if layout == "padded":                  # a vector the KPU computed as a (C, 4, 4) map: pixel (0, 0)
                d = d.reshape(-1, 4, 4)[:, 0, 0]
            sums[index].add(f, d.reshape(1, -1))
    layers = []
    for index, type_name, tensor, layout in matches or []:
        cosine, snr, max_abs, _ = sums[index].metrics()
        layers.append({"index": index, "device": type_name, "tensor": tensor,
                       "shape": "x".join(map(str, graph[tensor].shape)), "values": kinds[index],
                       "cosine": cosine, "snr_db": snr, "max_abs": max_abs})
    outputs = _compare_outputs(graph, x, dev.outputs(x, flat_outs))
    result = Comparison(layers, outputs, unmatched, len(x), dev.name, dev.exact)
    log.info("%s", result)
    return result


def _compare_outputs(graph, x, device_outs):
    floats = graph.run(x)
    rows = []
    for name, f, d in zip(graph.outputs, floats, device_outs):
        f = np.asarray(f, np.float64).reshape(len(f), -1)
        d = np.asarray(d, np.float64).reshape(len(d), -1)
        if f.shape != d.shape:
            raise EmcError(f"output '{name}': float shape {f.shape[1:]} vs device {d.shape[1:]}")
        s = _Sums(False)
        s.add(f, d)
        cosine, snr, max_abs, _ = s.metrics()
        agree = float(np.mean(f.argmax(1) == d.argmax(1))) if f.shape[1] > 1 else None
        rows.append({"output": name, "cosine": cosine, "snr_db": snr, "mean_abs": float(np.mean(np.abs(f - d))),
                     "max_abs": max_abs, "top1_agree": agree})
    return rows


__all__ = ["compare", "Comparison", "Traced", "match_layers"]
