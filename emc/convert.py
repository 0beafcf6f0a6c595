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


def prepare(net, dataset, dataset_func="img_0_1", quant_func="minmax", max_samples=256, seed=0,
            mean=None, std=None, progress=False):
    """Load + optimize the graph and calibrate it: returns (graph, calibration, calibration data)."""
    from .calibrate import calibrate
    from .datasets import load_dataset
    from .frontends import load_model
    from .passes import optimize

    graph = optimize(load_model(net))
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
    return graph, calibration, data


def convert(net, platform="k210", dataset=None, dataset_func="img_0_1", quant_func="minmax", quant_bit=8,
            max_samples=256, seed=0, mean=None, std=None, progress=False, **options):
    """Convert a network for a platform and return its Artefact (with .save(), .report, .simulate(x)).

    net: a Keras/TensorLayer model or file, or an emc.Graph. Platform options (e.g. version=3|4 for k210,
    softmax=True, dequantize=True, ram_limit=...) are passed through.
    """
    target = platforms.get(platform)
    graph, calibration, data = prepare(net, dataset, dataset_func, quant_func, max_samples, seed, mean, std,
                                       progress)
    transform = input_transform(dataset_func, mean, std)
    artefact = target.convert(graph, calibration, quant_bit=quant_bit, input_transform=transform, **options)
    artefact.graph = graph
    artefact.calibration = calibration
    if hasattr(artefact, "measure"):          # per-layer accuracy on the calibration data, for the report
        artefact.measure(graph, data)
    log.info("%s", artefact.report)
    return artefact


def save_kmodel(net, path, dataset_dir, dataset_func="img_0_1", quant_func="minmax", quant_bit=8, version=3,
                **options):
    """Maix-EMC's call: convert `net` to a K210 kmodel (v3 or v4) at `path`; returns the conversion report."""
    artefact = convert(net, platform="k210", dataset=dataset_dir, dataset_func=dataset_func,
                       quant_func=quant_func, quant_bit=quant_bit, version=version, **options)
    artefact.save(path)
    return artefact.report
