"""Tell a TensorLayer .h5 file from a Keras one by its root attributes, without importing a framework."""
from ..errors import ModelLoadError


def h5_framework(path):
    import h5py
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
    except OSError as err:
        raise ModelLoadError(f"{path} is not a readable HDF5 file ({err})") from None
    if "keras_version" in attrs or "backend" in attrs:
        return "keras"
    config = attrs.get("model_config", attrs.get("model_structure"))
    if isinstance(config, bytes):
        config = config.decode("utf-8", "replace")
    if isinstance(config, str) and config.lstrip().startswith("{\""):
        return "keras"
    if config is not None or "layer_names" in attrs:
        return "tensorlayer"
    raise ModelLoadError(f"{path}: HDF5 file without a model description; save the model with its "
                         f"architecture (Keras model.save, TensorLayer Model.save(save_weights=True))")
