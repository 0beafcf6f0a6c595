"""The main pipeline: load the network, optimize the graph, calibrate on data, hand it to a platform."""
import inspect
import logging
import os

import numpy as np

from . import platforms
from .errors import EmcError, PlatformLimitError, UnsupportedLayerError

log = logging.getLogger(__name__)


def input_transform(dataset_func, mean=None, std=None):
    """(scale, offset) with float_input = pixel * scale + offset, or None when the dataset function is opaque.

    Dataset functions registered with a `pixel_transform` attribute (img_0_1, img_0_255, img_neg1_1) tell how
    a uint8 camera pixel maps to the model's float input; mean/std then apply (x - mean) / std on top.
    """
    from . import datasets
    fn = datasets.get(dataset_func) if isinstance(dataset_func, str) else dataset_func
    transform = getattr(fn, "pixel_transform", None)
    if transform is None:
        if mean is not None or std is not None:
            raise EmcError("mean/std need a dataset function with a known pixel mapping (img_0_1, img_0_255, "
                           "img_neg1_1); for a custom function fold the normalisation into it")
        return None
    scale, offset = transform
    check_normalisation(mean, std)
    mean = 0.0 if mean is None else float(mean)
    std = 1.0 if std is None else float(std)
    return (scale / std, (offset - mean) / std)


def model_name(graph, name=None):
    """The artefact's name, the same rule on every platform: the name given, else the model's own name, made a
    C identifier (letters, digits, '_'; not starting with a digit)."""
    from .names import c_identifier
    return c_identifier(name or graph.name or "model")


def check_normalisation(mean, std):
    """EmcError for a mean / std that cannot normalise inputs: not a finite number, or a std of 0."""
    for name, value in (("mean", mean), ("std", std)):
        if value is None:
            continue
        try:
            ok = bool(np.all(np.isfinite(np.asarray(value, np.float64))))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise EmcError(f"{name} must be a finite number (or one per channel), not {value!r}")
    if std is not None and np.any(np.asarray(std, np.float64) == 0):
        raise EmcError("std must not be 0: inputs are normalised as (x - mean) / std; give the inputs' standard "
                       "deviation (e.g. --std 58.4 for 0..255 pixels) or leave std out")


def normalise(x, mean=None, std=None):
    """(x - mean) / std with a checked mean / std; x itself when neither is given."""
    check_normalisation(mean, std)
    if mean is None and std is None:
        return x
    return (x - (0.0 if mean is None else np.asarray(mean, np.float32))) / (
        1.0 if std is None else np.asarray(std, np.float32))


def check_single_input(graph, platform):
    """PlatformLimitError for a model with several inputs (no emc platform takes one yet)."""
    if len(graph.inputs) != 1:
        shapes = ", ".join(f"'{name}' {tuple(shape)}" for name, shape in zip(graph.inputs, graph.input_shapes))
        raise PlatformLimitError(f"models with several inputs are not supported on {platform}; this one has "
                                 f"{len(graph.inputs)}: {shapes}. Merge them into one input (e.g. concatenate "
                                 f"the channels) or convert the branches as separate models", platform=platform)


def prepare(net, dataset, dataset_func="img_0_1", quant_func="minmax", max_samples=256, seed=0,
            mean=None, std=None, progress=False, platform="this platform", platform_passes=()):
    """Load + optimize the graph (plus a platform's own GRAPH_PASSES, e.g. the K210's channel split) and
    calibrate it: returns (graph, calibration, calibration data)."""
    from .calibrate import calibrate
    from .datasets import load_dataset
    from .frontends import load_model
    from .passes import optimize

    check_normalisation(mean, std)
    graph = optimize(load_model(net))
    for rewrite in platform_passes:
        rewrite(graph)
    check_single_input(graph, platform)
    if dataset is None:
        raise EmcError("a calibration dataset is needed: give a folder of images, a .npy/.npz file or an array")
    data = load_dataset(dataset, graph.input_shapes[0], dataset_func=dataset_func, max_samples=max_samples,
                        seed=seed)
    data = normalise(data, mean, std)
    calibration = calibrate(graph, data, method=quant_func, progress=progress)
    warn_degenerate_ranges(graph, calibration)
    return graph, calibration, data


DEGENERATE = 1e-6         # a calibrated range narrower than this (relative to the input's) has collapsed


def degenerate_ranges(graph, calibration):
    """Graph tensors whose calibrated range is (almost) a single value: [(name, (lo, hi))] in graph order."""
    ranges = calibration.ranges
    scale = max([abs(v) for name in graph.inputs if name in ranges for v in ranges[name]] + [1.0])
    found = []
    for node in graph:
        lo_hi = ranges.get(node.name) if node.name not in graph.inputs else None
        if lo_hi is not None and abs(float(lo_hi[1]) - float(lo_hi[0])) < DEGENERATE * scale:
            found.append((node.name, lo_hi))
    return found


def warn_degenerate_ranges(graph, calibration):
    """One warning naming the layers whose calibrated output range collapsed: quantised, they carry no signal."""
    found = degenerate_ranges(graph, calibration)
    if found:
        names = ", ".join(f"'{n}' [{float(lo):.3g}, {float(hi):.3g}]" for n, (lo, hi) in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        log.warning("the calibrated ranges of %d layer(s) have collapsed to a single value: %s%s -- the calibration "
                    "data do not move these outputs (an untrained or dead model, too few or wrong images, or a "
                    "wrong dataset_func)", len(found), names, more)
    return found


def convert(net, platform="k210", dataset=None, dataset_func="img_0_1", quant_func="minmax", quant_bit=8,
            max_samples=256, seed=0, mean=None, std=None, progress=False, **options):
    """Convert a network for a platform and return its Artefact (with .save(), .report, .simulate(x)).

    net: a Keras/TensorLayer model or file, or an emc.Graph. Platform options (e.g. version=3|4 for k210,
    softmax=True, dequantize=True, ram_limit=...) are passed through.
    """
    target = platforms.get(platform)
    try:
        graph, calibration, data = prepare(net, dataset, dataset_func, quant_func, max_samples, seed, mean, std,
                                           progress, platform, getattr(target, "GRAPH_PASSES", ()))
    except UnsupportedLayerError as err:
        raise _with_platform_problems(err, target, platform, options) from None
    options["name"] = model_name(graph, options.get("name"))
    transform = input_transform(dataset_func, mean, std)
    artefact = target.convert(graph, calibration, quant_bit=quant_bit, input_transform=transform, **options)
    artefact.graph = graph
    artefact.sources = [s for s in (net, dataset) if isinstance(s, (str, os.PathLike))]   # save() never overwrites them
    artefact.calibration = calibration
    if hasattr(artefact, "measure"):          # per-layer accuracy on the calibration data, for the report
        artefact.measure(graph, data)
    log.info("%s", artefact.report)
    return artefact


def _with_platform_problems(err, target, platform, options):
    """The frontend's error plus what the platform finds in the layers the frontend did convert, so that one
    attempt names every layer to change (a Keras frontend error carries the partial graph for this)."""
    partial, check = getattr(err, "partial_graph", None), getattr(target, "check", None)
    if partial is None or check is None:
        return err
    graph, stand_ins = partial
    try:
        from .passes import optimize
        accepted = inspect.signature(check).parameters
        problems = check(optimize(graph), **{k: v for k, v in options.items() if k in accepted})
    except Exception:                  # noqa: BLE001 -- extra information only; the frontend's list stands
        log.debug("platform check of the partial graph failed", exc_info=True)
        return err
    more = [f"{p} (on {platform})" for p in problems
            if not any(name in p for name in stand_ins) and "several inputs" not in p]
    return err.extended(more) if more else err


def save_kmodel(net, path, dataset_dir, dataset_func="img_0_1", quant_func="minmax", quant_bit=8, version=3,
                **options):
    """Maix-EMC's call: convert `net` to a K210 kmodel (v3 or v4) at `path`; returns the conversion report."""
    artefact = convert(net, platform="k210", dataset=dataset_dir, dataset_func=dataset_func,
                       quant_func=quant_func, quant_bit=quant_bit, version=version, **options)
    artefact.save(path)
    return artefact.report
