"""emc, the Embedded Model Converter: Keras / TensorLayer networks -> K210 kmodel v3/v4 or C for MCUs."""
from .errors import (DatasetError, EmcError, GraphError, KModelFormatError, ModelLoadError, PlatformLimitError,
                     QuantizationError, UnsupportedLayerError)
from .extras import MissingExtraError
from .graph import Graph
from . import datasets, platforms, quant  # registries: emc.datasets.register, emc.quant.register ...

__version__ = "0.1.0"


def load_model(source):
    """Any supported network (Keras / TensorLayer object or file, or a Graph) -> emc.Graph."""
    from .frontends import load_model as _load
    from .quiet import quiet_frameworks
    quiet_frameworks()
    return _load(source)


def convert(net, platform="k210", **kwargs):
    """Convert a network for a platform; see emc.convert.convert."""
    from .convert import convert as _convert
    from .quiet import quiet_frameworks
    quiet_frameworks()
    return _convert(net, platform=platform, **kwargs)


def save_kmodel(net, path, dataset_dir, dataset_func="img_0_1", quant_func="minmax", quant_bit=8, version=3,
                **options):
    """Maix-EMC's call: write a K210 kmodel for net; returns the report."""
    from .convert import save_kmodel as _save
    return _save(net, path, dataset_dir, dataset_func=dataset_func, quant_func=quant_func, quant_bit=quant_bit,
                 version=version, **options)


def load_kmodel(path_or_bytes):
    """Parse a kmodel v3 or v4 made by anyone (emc, nncase, Maix-EMC)."""
    from .platforms.k210.kmodel import load_kmodel as _load
    return _load(path_or_bytes)


def run_kmodel(model, x, **kwargs):
    """Compute on the PC exactly what the K210 computes for x; returns the list of outputs."""
    from .inputs import run_arguments
    from .platforms.k210.kmodel import run_kmodel as _run
    model, x = run_arguments(model, x, kwargs)
    return _run(model, x, **kwargs)


__all__ = ["EmcError", "UnsupportedLayerError", "ModelLoadError", "GraphError", "DatasetError",
           "QuantizationError", "PlatformLimitError", "KModelFormatError", "MissingExtraError", "Graph", "load_model",
           "convert", "save_kmodel", "load_kmodel", "run_kmodel", "__version__"]

# ---- evaluation and comparison helpers (the user's journey, issue 6) ----------------------------------------
# Importing a submodule sets the package attribute of the same name, which would replace the functions
# emc.convert / emc.compare / emc.evaluate by their modules the first time anything imports them; importing
# the modules here, once, and binding the functions afterwards keeps `emc.convert(...)` callable.
_convert_function = convert
__import__("importlib").import_module(".convert", __name__)
convert = _convert_function
from .evaluate import evaluate, export_c_array, export_test_bin, format_evaluation  # noqa: E402
from .compare import compare  # noqa: E402
__all__ += ["evaluate", "format_evaluation", "export_test_bin", "export_c_array", "compare"]
