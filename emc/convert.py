"""The main pipeline: load the network, optimize the graph, calibrate on data, hand it to a platform."""
import logging

from . import platforms
from .errors import EmcError

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
    mean = 0.0 if mean is None else float(mean)
    std = 1.0 if std is None else float(std)
    if std == 0:
        raise EmcError("std must not be 0")
    return (scale / std, (offset - mean) / std)


def model_name(graph, name=None):
    """The artefact's name, the same rule on every platform: the name given, else the model's own name, made a
    C identifier (letters, digits, '_'; not starting with a digit)."""
    from .names import c_identifier
    return c_identifier(name or graph.name or "model")


def prepare(net, dataset, dataset_func="img_0_1", quant_func="minmax", max_samples=256, seed=0,
            mean=None, std=None, progress=False, platform_passes=()):
    """Load + optimize the graph (plus a platform's own GRAPH_PASSES, e.g. the K210's channel split) and
    calibrate it: returns (graph, calibration, calibration data)."""
    from .calibrate import calibrate
    from .datasets import load_dataset
    from .frontends import load_model
    from .passes import optimize

    graph = optimize(load_model(net))
    for rewrite in platform_passes:
        rewrite(graph)
    if len(graph.inputs) != 1:
        shapes = graph.input_shapes
    else:
        shapes = graph.input_shapes[0]
    if dataset is None:
        raise EmcError("a calibration dataset is needed: give a folder of images, a .npy/.npz file or an array")
    data = load_dataset(dataset, shapes, dataset_func=dataset_func, max_samples=max_samples, seed=seed)
    if mean is not None or std is not None:
        data = (data - (0.0 if mean is None else mean)) / (1.0 if std is None else std)
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
    graph, calibration, data = prepare(net, dataset, dataset_func, quant_func, max_samples, seed, mean, std,
                                       progress, getattr(target, "GRAPH_PASSES", ()))
    options["name"] = model_name(graph, options.get("name"))
    transform = input_transform(dataset_func, mean, std)
    artefact = target.convert(graph, calibration, quant_bit=quant_bit, input_transform=transform, **options)
    artefact.graph = graph
    artefact.calibration = calibration
    log.info("%s", artefact.report)
    return artefact


def save_kmodel(net, path, dataset_dir, dataset_func="img_0_1", quant_func="minmax", quant_bit=8, version=3,
                **options):
    """Maix-EMC's call: convert `net` to a K210 kmodel (v3 or v4) at `path`; returns the conversion report."""
    artefact = convert(net, platform="k210", dataset=dataset_dir, dataset_func=dataset_func,
                       quant_func=quant_func, quant_bit=quant_bit, version=version, **options)
    artefact.save(path)
    return artefact.report
