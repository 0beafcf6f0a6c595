"""Optional dependencies by pip extra: a feature whose extra is missing fails with one line naming it."""
import importlib

from .errors import EmcError

# module -> (the pip extra that installs it, what it is for)
EXTRAS = {
    "matplotlib": ("plot", "plots"),
    "keras": ("keras", "live Keras models (files are read without it)"),
    "tensorflow": ("keras", "live Keras models (files are read without it)"),
    "tensorlayer": ("tensorlayer", "live TensorLayer models (files are read without it)"),
}


class MissingExtraError(EmcError, ImportError):
    """An optional package is not installed: the message says which `pip install "emc[extra]"` brings it."""


def require(module, feature=None):
    """Import an optional module, or raise MissingExtraError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        extra, purpose = EXTRAS.get(top, ("all", top))
        raise MissingExtraError(f"{feature or purpose} needs {top}, which is not installed ({err}); install it "
                                f"with: pip install \"emc[{extra}]\"") from None
