"""Keras 3 (and tf.keras) models and .keras/.h5 files -> emc.Graph: one small handler per layer class."""
import logging

import numpy as np

from .. import layers as L
from ..errors import ModelLoadError, UnsupportedLayerError
from ..graph import Graph

log = logging.getLogger(__name__)

HANDLERS = {}
IDENTITY_LAYERS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                   "GaussianDropout", "AlphaDropout", "ActivityRegularization")


def handler(*class_names):
    """Register fn(layer, config, inputs, graph) -> output tensor name for these Keras layer classes.
    For settings emc cannot express it raises UnsupportedLayerError(reason); the walker names the layer."""
    def wrap(fn):
        for name in class_names:
            HANDLERS[name] = fn
        return fn
    return wrap


def act_of(activation):
    """emc Act of a Keras activation given as a built-in function, its name, or None."""
    import keras
    if activation is None:
        return L.LINEAR
    if isinstance(activation, str):
        return L.Act(activation)
    name = getattr(activation, "__name__", type(activation).__name__)
    try:
        builtin = keras.activations.get(name) is activation
    except (ValueError, TypeError):
        builtin = False
    if not builtin:
        raise UnsupportedLayerError(f"custom activation function '{name}' is not supported; use a built-in "
                                    f"one: {', '.join(sorted(L.ACTIVATIONS))}")
    return L.Act(name)


def _weights(layer):
    return [np.asarray(w) for w in layer.get_weights()]


def _bias(weights, index):
    return weights[index] if len(weights) > index else None


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _spatial_pads(config, in_shape, kernel, strides, dilation):
    padding = config.get("padding", "valid")
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding != "same":
        raise UnsupportedLayerError(f"padding '{padding}' is not supported; use 'same' or 'valid'")
    return (L.same_pads(in_shape[0], kernel[0], strides[0], dilation[0])
            + L.same_pads(in_shape[1], kernel[1], strides[1], dilation[1]))


def _conv_geometry(config, graph, inputs):
    if config.get("groups", 1) != 1:
        raise UnsupportedLayerError(f"grouped convolution (groups={config['groups']}) is not supported; use "
                                    f"DepthwiseConv2D or groups=1")
    kernel, strides = _pair(config["kernel_size"]), _pair(config["strides"])
    dilation = _pair(config.get("dilation_rate", 1))
    return strides, dilation, _spatial_pads(config, graph[inputs[0]].shape, kernel, strides, dilation)


@handler("Conv2D")
def conv2d(layer, config, inputs, graph):
    w = _weights(layer)
    strides, dilation, pads = _conv_geometry(config, graph, inputs)
    op = L.Conv2D(w[0], _bias(w, 1), strides, dilation, pads, act_of(layer.activation))
    return graph.add(op, inputs, layer.name)


@handler("DepthwiseConv2D")
def depthwise_conv2d(layer, config, inputs, graph):
    w = _weights(layer)
    strides, dilation, pads = _conv_geometry(config, graph, inputs)
    op = L.DepthwiseConv2D(w[0], _bias(w, 1), strides, dilation, pads, act_of(layer.activation))
    return graph.add(op, inputs, layer.name)


@handler("SeparableConv2D")
def separable_conv2d(layer, config, inputs, graph):
    """A depthwise conv (no bias) followed by a 1x1 conv that carries the bias and the activation."""
    w = _weights(layer)
    strides, dilation, pads = _conv_geometry(config, graph, inputs)
    act = act_of(layer.activation)
    dw = graph.add(L.DepthwiseConv2D(w[0], None, strides, dilation, pads), inputs, layer.name + "/depthwise")
    return graph.add(L.Conv2D(w[1], _bias(w, 2), activation=act), [dw], layer.name)


@handler("Conv1D")
def conv1d(layer, config, inputs, graph):
    """A Conv1D over (L, C) runs as a Conv2D over a (1, L, C) view."""
    if config.get("groups", 1) != 1:
        raise UnsupportedLayerError(f"grouped convolution (groups={config['groups']}) is not supported")
    length, channels = graph[inputs[0]].shape
    w = _weights(layer)
    k, s, d = config["kernel_size"][0], config["strides"][0], config["dilation_rate"][0]
    pads_1d = {"valid": lambda: (0, 0), "same": lambda: L.same_pads(length, k, s, d),
               "causal": lambda: ((k - 1) * d, 0)}
    if config["padding"] not in pads_1d:
        raise UnsupportedLayerError(f"padding '{config['padding']}' is not supported")
    act = act_of(layer.activation)
    view = graph.add(L.Reshape((1, length, channels)), inputs, layer.name + "/as2d")
    conv = graph.add(L.Conv2D(w[0][None], _bias(w, 1), (1, s), (1, d), (0, 0) + pads_1d[config["padding"]](), act),
                     [view], layer.name + "/conv2d")
    out = graph[conv].shape
    return graph.add(L.Reshape((out[1], out[2])), [conv], layer.name)


@handler("Dense")
def dense(layer, config, inputs, graph):
    w = _weights(layer)
    return graph.add(L.Dense(w[0], _bias(w, 1), act_of(layer.activation)), inputs, layer.name)


def _last_axis_only(axis, rank, what):
    """Accept an axis (or one-element list) that names the last axis of a tensor of this batched rank."""
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if not isinstance(axis, int) or axis % rank != rank - 1:
        raise UnsupportedLayerError(f"{what} axis {axis} is not supported; emc works channels-last (axis=-1)")


@handler("BatchNormalization")
def batch_norm(layer, config, inputs, graph):
    _last_axis_only(config["axis"], len(graph[inputs[0]].shape) + 1, "normalization")
    weights = iter(_weights(layer))
    gamma = next(weights) if config["scale"] else None
    beta = next(weights) if config["center"] else None
    mean, var = next(weights), next(weights)
    return graph.add(L.BatchNorm.from_stats(gamma, beta, mean, var, config["epsilon"]), inputs, layer.name)


@handler("Activation")
def activation(layer, config, inputs, graph):
    return graph.add(L.Activation(act_of(layer.activation)), inputs, layer.name)


def _relu_act(slope, max_value):
    """relu / leaky_relu / relu6 from Keras' ReLU settings (the only combinations emc runs)."""
    if max_value is None:
        return L.Act("leaky_relu", slope) if slope else L.Act("relu")
    if float(max_value) == 6.0 and not slope:
        return L.Act("relu6")
    raise UnsupportedLayerError(f"max_value={max_value} with negative_slope={slope} is not supported; use "
                                f"max_value None, or 6 without a slope")


@handler("ReLU")
def relu(layer, config, inputs, graph):
    if config.get("threshold", 0.0):
        raise UnsupportedLayerError(f"threshold={config['threshold']} is not supported; use threshold=0")
    act = _relu_act(config.get("negative_slope", 0.0), config.get("max_value"))
    return graph.add(L.Activation(act), inputs, layer.name)


@handler("ReLU6")
def relu6(layer, config, inputs, graph):
    return graph.add(L.Activation("relu6"), inputs, layer.name)


@handler("LeakyReLU")
def leaky_relu(layer, config, inputs, graph):
    slope = config.get("negative_slope", config.get("alpha", 0.3))
    return graph.add(L.Activation(L.Act("leaky_relu", slope)), inputs, layer.name)


@handler("ELU")
def elu(layer, config, inputs, graph):
    return graph.add(L.Activation(L.Act("elu", config.get("alpha", 1.0))), inputs, layer.name)


@handler("PReLU")
def prelu(layer, config, inputs, graph):
    return graph.add(L.PReLU(_weights(layer)[0]), inputs, layer.name)


@handler("Softmax")
def softmax(layer, config, inputs, graph):
    _last_axis_only(config.get("axis", -1), len(graph[inputs[0]].shape) + 1, "softmax")
    return graph.add(L.Activation("softmax"), inputs, layer.name)


def _pool(mode):
    def build(layer, config, inputs, graph):
        size = _pair(config["pool_size"])
        strides = _pair(config["strides"]) if config.get("strides") is not None else size
        pads = _spatial_pads(config, graph[inputs[0]].shape, size, strides, (1, 1))
        return graph.add(L.Pool2D(mode, size, strides, pads), inputs, layer.name)
    return build


handler("MaxPooling2D", "MaxPool2D")(_pool("max"))
handler("AveragePooling2D", "AvgPool2D")(_pool("avg"))


def _global_pool(mode):
    def build(layer, config, inputs, graph):
        return graph.add(L.GlobalPool2D(mode, config.get("keepdims", False)), inputs, layer.name)
    return build


handler("GlobalMaxPooling2D", "GlobalMaxPool2D")(_global_pool("max"))
handler("GlobalAveragePooling2D", "GlobalAvgPool2D")(_global_pool("avg"))


def _two_sided(value):
    """Keras' int / (h, w) / ((top, bottom), (left, right)) -> (top, bottom, left, right)."""
    (top, bottom), (left, right) = [_pair(v) for v in _pair(value)]
    return (top, bottom, left, right)


@handler("ZeroPadding2D")
def zero_padding(layer, config, inputs, graph):
    return graph.add(L.Pad2D(_two_sided(config["padding"])), inputs, layer.name)


@handler("Cropping2D")
def cropping(layer, config, inputs, graph):
    return graph.add(L.Crop2D(_two_sided(config["cropping"])), inputs, layer.name)


@handler("UpSampling2D")
def upsampling(layer, config, inputs, graph):
    if config.get("interpolation", "nearest") != "nearest":
        raise UnsupportedLayerError(f"interpolation '{config['interpolation']}' is not supported; use 'nearest'")
    return graph.add(L.Upsample2D(_pair(config["size"])), inputs, layer.name)


@handler("Flatten")
def flatten(layer, config, inputs, graph):
    return graph.add(L.Flatten(), inputs, layer.name)


@handler("Reshape")
def reshape(layer, config, inputs, graph):
    return graph.add(L.Reshape(config["target_shape"]), inputs, layer.name)


def _merge(op):
    def build(layer, config, inputs, graph):
        return graph.add(L.Elementwise(op), inputs, layer.name)
    return build


for _cls, _op in (("Add", "add"), ("Subtract", "sub"), ("Multiply", "mul"), ("Average", "avg"),
                  ("Maximum", "max"), ("Minimum", "min")):
    handler(_cls)(_merge(_op))


@handler("Concatenate")
def concatenate(layer, config, inputs, graph):
    axis = config.get("axis", -1)
    if axis == 0:
        raise UnsupportedLayerError("concatenation along the batch axis is not supported")
    return graph.add(L.Concat(axis - 1 if axis > 0 else axis), inputs, layer.name)


@handler(*IDENTITY_LAYERS)
def identity(layer, config, inputs, graph):
    return graph.add(L.Identity(type(layer).__name__), inputs, layer.name)


@handler("Rescaling")
def rescaling(layer, config, inputs, graph):
    scale = np.asarray(layer.scale, np.float32).reshape(-1)
    offset = np.asarray(layer.offset, np.float32).reshape(-1)
    return graph.add(L.Rescale(scale, offset), inputs, layer.name)


@handler("Normalization")
def normalization(layer, config, inputs, graph):
    """(x - mean) / max(sqrt(var), 1e-7), as Keras computes it, for statistics per last-axis channel."""
    import keras
    if config.get("invert"):
        raise UnsupportedLayerError("invert=True is not supported")
    rank = len(graph[inputs[0]].shape) + 1
    kept = tuple(sorted(a % rank for a in (layer.axis or ())))
    if kept not in ((), (rank - 1,)):
        raise UnsupportedLayerError(f"statistics over axis {config.get('axis')} are not supported; use axis=-1")
    mean = np.asarray(layer.mean, np.float64).reshape(-1)
    std = np.maximum(np.sqrt(np.asarray(layer.variance, np.float64).reshape(-1)), keras.config.epsilon())
    return graph.add(L.Rescale(1.0 / std, -mean / std), inputs, layer.name)


SUPPORTED_KERAS_LAYERS = sorted(set(HANDLERS) | {"InputLayer"})


# ---- walking the functional graph ---------------------------------------------------------------------------
def _is_model(op):
    return hasattr(op, "inputs") and hasattr(op, "outputs") and hasattr(op, "layers")


def _handler_for(layer):
    for klass in type(layer).__mro__:
        if klass.__name__ in HANDLERS:
            return HANDLERS[klass.__name__]
    return None


def _static_problem(op):
    """Why no handler can take this operation at all (None when one can)."""
    import keras
    cls = type(op).__name__
    if not isinstance(op, keras.layers.Layer):
        return f"a keras.ops call ({type(op).__module__}.{cls}), not a layer; use the keras.layers equivalent"
    if _handler_for(op) is None:
        return "no converter for this layer class"
    if getattr(op, "data_format", None) == "channels_first":
        return "data_format='channels_first' is not supported; build the model with channels_last (NHWC)"
    return None


def _config(op):
    try:
        return op.get_config()
    except Exception as err:   # custom objects inside a layer can make Keras' serialization raise anything
        raise UnsupportedLayerError(f"its configuration cannot be read ({type(err).__name__}: {err})") from None


class _Walker:
    """Maps Keras tensors to graph tensor names (None: not convertible), converting each layer call once."""

    def __init__(self, graph, problems, seeded=None, stand_ins=None):
        self.graph = graph
        self.problems = problems
        self.names = dict(seeded or {})
        self.nested = {}
        self.stand_ins = [] if stand_ins is None else stand_ins

    def _stand_in(self, t):
        """After a problem: a graph input of the layer's output shape, so that the layers after it are still
        converted and a platform can check them too (every problem in one error); None for a dynamic shape."""
        shape = tuple(t.shape[1:])
        if any(d is None for d in shape):
            return None
        name = self.graph.add_input(shape, f"{t._keras_history[0].name}~unconverted")
        self.stand_ins.append(name)
        return name

    def tensor(self, t):
        key = id(t)
        if key not in self.names:
            self.names[key] = self._produce(t)
        return self.names[key]

    def _problem(self, op, reason):
        self.problems.append(f"'{op.name}' ({type(op).__name__}): {reason}")

    def _produce(self, t):
        op, node_index, tensor_index = t._keras_history
        if type(op).__name__ == "InputLayer":
            shape = tuple(t.shape[1:])
            if any(d is None for d in shape):
                raise ModelLoadError(f"input '{op.name}' has a dynamic shape {tuple(t.shape)}: build the model "
                                     f"with a fixed input shape, e.g. keras.Input(shape=(32, 32, 3))")
            return self.graph.add_input(shape, op.name)
        node = op._inbound_nodes[node_index]
        inputs = [self.tensor(x) for x in node.input_tensors]
        if _is_model(op):
            key = (id(op), node_index)
            if key not in self.nested:
                self.nested[key] = _Walker(self.graph, self.problems, dict(zip(map(id, op.inputs), inputs)),
                                           self.stand_ins)
            return self.nested[key].tensor(op.outputs[tensor_index])
        reason = _static_problem(op)
        if reason:
            self._problem(op, reason)
            return self._stand_in(t)
        if None in inputs:       # fed by a layer of dynamic shape that could not be converted: nothing to check
            return None
        try:
            if callable(getattr(op, "activation", None)):
                act_of(op.activation)      # a custom activation first: it may even break get_config()
            return _handler_for(op)(op, _config(op), inputs, self.graph)
        except UnsupportedLayerError as err:
            self._problem(op, str(err))
            return self._stand_in(t)


def _load_file(path):
    import keras
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:   # keras raises many types for missing or unreadable files
        raise ModelLoadError(f"cannot load Keras model {path}: {type(err).__name__}: {err}") from None


def _graph_entry(model):
    """The model's input and output tensors, or a ModelLoadError when it has no layer graph."""
    try:
        outputs, inputs = list(model.outputs or ()), list(model.inputs or ())
    except (AttributeError, ValueError, TypeError):
        outputs, inputs = [], []
    if not outputs:
        raise ModelLoadError(f"Keras model '{getattr(model, 'name', model)}' has no layer graph (an unbuilt "
                             f"Sequential or a subclassed Model): start it with keras.Input(shape=...) of a fixed "
                             f"shape, or rebuild it as a functional model")
    return inputs, outputs


def unsupported_layers(model_name, problems):
    """The UnsupportedLayerError listing every problem (.problems) and the Keras layers emc reads."""
    err = UnsupportedLayerError(
        f"model '{model_name}' has {len(problems)} layer(s) emc cannot convert:\n  - " + "\n  - ".join(problems)
        + f"\nSupported Keras layers (emc.frontends.keras.SUPPORTED_KERAS_LAYERS): {', '.join(SUPPORTED_KERAS_LAYERS)}")
    err.problems = problems
    return err


def _partial(graph, out_names, stand_ins):
    """(graph, stand-in names) of what could be converted, for a platform to check; None if unusable. The
    stand-ins stay input nodes but not model inputs: a platform then checks the layers after them as usual."""
    try:
        graph.set_outputs([n for n in out_names if n is not None])
        graph.inputs = [n for n in graph.inputs if n not in stand_ins]
        return graph, list(stand_ins)
    except Exception:                    # noqa: BLE001 -- only extra information; the frontend's list stands
        return None


def from_keras(model_or_path):
    """Build an emc.Graph from a Keras model or a .keras / .h5 file (every unsupported layer listed at once)."""
    is_path = isinstance(model_or_path, (str, bytes)) or hasattr(model_or_path, "__fspath__")
    model = _load_file(model_or_path) if is_path else model_or_path
    inputs, outputs = _graph_entry(model)
    graph, problems = Graph(model.name), []
    walker = _Walker(graph, problems)
    out_names = [walker.tensor(t) for t in outputs]
    for t in inputs:       # an input no output depends on still belongs to the model's signature
        walker.tensor(t)
    if problems:
        problems = list(dict.fromkeys(problems))
        err = unsupported_layers(model.name, problems)
        err.partial_graph = _partial(graph, out_names, walker.stand_ins)
        err.extended = lambda more: unsupported_layers(model.name, problems + list(more))
        raise err
    graph.inputs = [walker.names[id(t)] for t in inputs]
    graph.set_outputs(out_names)
    log.debug("converted Keras model '%s': %d layers", model.name, len(graph))
    return graph.validate()
