"""TensorFlow's start-up chatter kept off the user's terminal, without hiding errors.

TensorFlow writes its start-up lines (oneDNN, CUDA probing, cpu_feature_guard) from C++ straight to file
descriptor 2, before its own log level applies; emc starts it once with fd 2 muted when emc itself is about to
read a Keras file. Python exceptions still propagate (the load reports them); a live Keras object means the user
imported TensorFlow already, so nothing is done then. Keras' known UserWarnings on loading are filtered.
"""
import logging
import os
import sys
import warnings

KERAS_NOISE = (r".*Compiled the loaded model, but the compiled metrics have yet to be built.*",
               r".*Skipping variable loading for optimizer.*",
               r".*`build\(\)` was called on layer.*",
               r".*does not have a `build\(\)` method implemented.*",
               r".*Do not pass an `input_shape`/`input_dim` argument to a layer.*")


def needs_tensorflow(path):
    """True when reading the model file at path starts TensorFlow (a Keras .keras / .h5 file)."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".keras":
        return True
    if ext in (".h5", ".hdf5") and os.path.isfile(path):
        try:
            from .frontends.h5sniff import h5_framework
            return h5_framework(path) == "keras"
        except Exception:                            # noqa: BLE001 -- unreadable: load_model names the problem
            return False
    return False


def filter_keras_warnings():
    for pattern in KERAS_NOISE:
        warnings.filterwarnings("ignore", message=pattern, category=UserWarning)


def start_tensorflow_quietly(source=None):
    """Import TensorFlow with fd 2 muted when `source` (a path) needs it and it is not imported yet; no-op when
    emc logs at debug level (then every line shows)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    filter_keras_warnings()
    if "tensorflow" in sys.modules or logging.getLogger("emc").isEnabledFor(logging.DEBUG):
        return
    if not isinstance(source, (str, os.PathLike)) or not needs_tensorflow(source):
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        import tensorflow as tf
        tf.constant(0.0) + 1.0                       # device probing happens at the first operation
    except Exception:                                # noqa: BLE001 -- the real load reports any problem
        pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
