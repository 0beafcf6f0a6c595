"""TensorFlow's and Keras' start-up chatter kept off the user's terminal, without hiding errors.

emc reads Keras files without TensorFlow, so the frameworks only start for a live model object the user made;
their log level is lowered beforehand (TF_CPP_MIN_LOG_LEVEL, unless the user set it) and Keras' known loading
UserWarnings are filtered. Python exceptions still propagate.
"""
import os
import warnings

KERAS_NOISE = (r".*Compiled the loaded model, but the compiled metrics have yet to be built.*",
               r".*Skipping variable loading for optimizer.*",
               r".*`build\(\)` was called on layer.*",
               r".*does not have a `build\(\)` method implemented.*",
               r".*Do not pass an `input_shape`/`input_dim` argument to a layer.*")


def filter_keras_warnings():
    for pattern in KERAS_NOISE:
        warnings.filterwarnings("ignore", message=pattern, category=UserWarning)


def quiet_frameworks():
    """Keep TensorFlow's C++ start-up lines and Keras' known loading warnings off the terminal should a framework
    be imported later (a live Keras or TensorLayer object); model files are read without TensorFlow."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    filter_keras_warnings()
