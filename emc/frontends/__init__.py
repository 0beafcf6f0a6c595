"""emc.load_model: any supported network (object or file) -> emc.Graph. Frameworks load only when needed."""
import os

from ..errors import ModelLoadError
from ..graph import Graph


def _framework_of(obj):
    for klass in type(obj).__mro__:
        module = klass.__module__ or ""
        if module.startswith("tensorlayer"):
            return "tensorlayer"
        if module.startswith(("keras", "tf_keras", "tensorflow")):
            return "keras"
    return None


def _file_kind(path):
    """'keras' or 'tensorlayer' for a model file, from its extension and, for .h5, its attributes."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".keras":
        return "keras"
    if ext in (".h5", ".hdf5"):
        from .h5sniff import h5_framework
        return h5_framework(path)
    raise ModelLoadError(f"{path}: unknown model file type '{ext}'; emc reads .keras and .h5 (Keras) and "
                         f".h5 (TensorLayer 2.x) files")


def load_model(source):
    """Return an emc.Graph from a Graph, a Keras model, a TensorLayer static Model, or a model file path."""
    if isinstance(source, Graph):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise ModelLoadError(f"model file {path} does not exist")
        if os.path.isdir(path):
            raise ModelLoadError(f"{path} is a folder, not a model file; give the .keras or .h5 file (a TensorFlow "
                                 f"SavedModel folder is not read: save the model with model.save('model.keras'))")
        if not os.path.isfile(path):
            raise ModelLoadError(f"{path} is not a regular file; give a .keras or .h5 model file")
        kind = _file_kind(path)
    else:
        kind = _framework_of(source)
        if kind is None:
            raise ModelLoadError(f"cannot convert an object of type {type(source).__name__}: give a Keras model, "
                                 f"a TensorLayer static Model, an emc.Graph or a .keras/.h5 file path")
    if kind == "keras":
        from .keras import from_keras
        return from_keras(source)
    from .tensorlayer import from_tensorlayer
    return from_tensorlayer(source)
