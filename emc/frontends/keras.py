"""Keras 3 (and tf.keras) models and .keras/.h5 files -> emc.Graph: one small handler per layer class."""
import numpy as np

from .. import layers as L
from ..errors import ModelLoadError, UnsupportedLayerError
from ..graph import Graph

HANDLERS = {}
IDENTITY_LAYERS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
                   "AlphaDropout", "ActivityRegularization")


def handler(*class_names):
    """Register fn(layer, config, inputs, graph) -> output tensor name for these Keras layer classes."""
    def wrap(fn):
        for name in class_names:
            HANDLERS[name] = fn
        return fn
    return wrap


def act_of(activation):
    """emc Act of a Keras activation given as a function, a string or None."""
    import keras
    if activation is None:
        return L.LINEAR
    name = activation if isinstance(activation, str) else keras.activations.serialize(activation)
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    return L.Act(str(name))


def _weights(layer):
    return [np.asarray(w) for w in layer.get_weights()]


def _spatial_pads(layer, config, in_shape, kernel, strides, dilation):
    if config.get("padding", "valid") == "valid":
        return (0, 0, 0, 0)
    if config["padding"] != "same":
        raise UnsupportedLayerError(f"layer '{layer.name}' ({type(layer).__name__}): padding "
                                    f"'{config['padding']}' is not supported; use 'same' or 'valid'")
    return (L.same_pads(in_shape[0], kernel[0], strides[0], dilation[0])
            + L.same_pads(in_shape[1], kernel[1], strides[1], dilation[1]))


def _conv_geometry(layer, config, graph, inputs):
    kernel = tuple(config["kernel_size"])
    strides = tuple(config["strides"])
    dilation = tuple(config.get("dilation_rate", (1, 1)))
    pads = _spatial_pads(layer, config, graph[inputs[0]].shape, kernel, strides, dilation)
    return strides, dilation, pads


@handler("Conv2D")
def conv2d(layer, config, inputs, graph):
    if config.get("groups", 1) != 1:
        raise UnsupportedLayerError(f"layer '{layer.name}' (Conv2D): grouped convolution (groups="
                                    f"{config['groups']}) is not supported; use DepthwiseConv2D or groups=1")
    w = _weights(layer)
    strides, dilation, pads = _conv_geometry(layer, config, graph, inputs)
    op = L.Conv2D(w[0], w[1] if len(w) > 1 else None, strides, dilation, pads, act_of(layer.activation))
    return graph.add(op, inputs, layer.name)


@handler("DepthwiseConv2D")
def depthwise_conv2d(layer, config, inputs, graph):
    w = _weights(layer)
    strides, dilation, pads = _conv_geometry(layer, config, graph, inputs)
    op = L.DepthwiseConv2D(w[0], w[1] if len(w) > 1 else None, strides, dilation, pads, act_of(layer.activation))
    return graph.add(op, inputs, layer.name)


@handler("SeparableConv2D")
def separable_conv2d(layer, config, inputs, graph):
    w = _weights(layer)
    strides, dilation, pads = _conv_geometry(layer, config, graph, inputs)
    dw = graph.add(L.DepthwiseConv2D(w[0], None, strides, dilation, pads), inputs, layer.name + "/depthwise")
    op = L.Conv2D(w[1], w[2] if len(w) > 2 else None, activation=act_of(layer.activation))
    return graph.add(op, [dw], layer.name)


@handler("Conv1D")
def conv1d(layer, config, inputs, graph):
    """A Conv1D over (L, C) runs as a Conv2D over a (1, L, C) view."""
    length, channels = graph[inputs[0]].shape
    w = _weights(layer)
    k, s, d = config["kernel_size"][0], config["strides"][0], config["dilation_rate"][0]
    if config["padding"] == "causal":
        pads = (0, 0, (k - 1) * d, 0)
    else:
        pads = (0, 0) + (L.same_pads(length, k, s, d) if config["padding"] == "same" else (0, 0))
    view = graph.add(L.Reshape((1, length, channels)), inputs, layer.name + "/as2d")
    conv = graph.add(L.Conv2D(w[0][None], w[1] if len(w) > 1 else None, (1, s), (1, d), pads,
                              act_of(layer.activation)), [view], layer.name + "/conv2d")
    out = graph[conv].shape
    return graph.add(L.Reshape((out[1], out[2])), [conv], layer.name)


@handler("Dense")
def dense(layer, config, inputs, graph):
    w = _weights(layer)
    return graph.add(L.Dense(w[0], w[1] if len(w) > 1 else None, act_of(layer.activation)), inputs, layer.name)


@handler("BatchNormalization")
def batch_norm(layer, config, inputs, graph):
    rank = len(graph[inputs[0]].shape) + 1
    axis = config["axis"]
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if not isinstance(axis, int) or axis % rank != rank - 1:
        raise UnsupportedLayerError(f"layer '{layer.name}' (BatchNormalization): axis {config['axis']} is not "
                                    f"supported; emc works channels-last (axis=-1)")
    weights = iter(_weights(layer))
    gamma = next(weights) if config["scale"] else None
    beta = next(weights) if config["center"] else None
    mean, var = next(weights), next(weights)
    return graph.add(L.BatchNorm.from_stats(gamma, beta, mean, var, config["epsilon"]), inputs, layer.name)


@handler("Activation")
def activation(layer, config, inputs, graph):
    return graph.add(L.Activation(act_of(layer.activation)), inputs, layer.name)


@handler("ReLU")
def relu(layer, config, inputs, graph):
    if config.get("threshold", 0.0):
        raise UnsupportedLayerError(f"layer '{layer.name}' (ReLU): threshold={config['threshold']} is not "
                                    f"supported; use threshold=0")
    slope, max_value = config.get("negative_slope", 0.0), config.get("max_value")
    if max_value is None:
        act = L.Act("leaky_relu", slope) if slope else L.Act("relu")
    elif max_value == 6.0 and not slope:
        act = L.Act("relu6")
    else:
        raise UnsupportedLayerError(f"layer '{layer.name}' (ReLU): max_value={max_value} with negative_slope="
                                    f"{slope} is not supported; use max_value None or 6 without a slope")
    return graph.add(L.Activation(act), inputs, layer.name)


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
    axis = config.get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if axis not in (-1, len(graph[inputs[0]].shape)):
        raise UnsupportedLayerError(f"layer '{layer.name}' (Softmax): axis {axis} is not supported; use -1")
    return graph.add(L.Activation("softmax"), inputs, layer.name)


def _pool(mode):
    def build(layer, config, inputs, graph):
        size, strides = tuple(config["pool_size"]), tuple(config["strides"] or config["pool_size"])
        pads = _spatial_pads(layer, config, graph[inputs[0]].shape, size, strides, (1, 1))
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
    (top, bottom), (left, right) = [(v, v) if isinstance(v, int) else tuple(v) for v in
                                    ((value, value) if isinstance(value, int) else value)]
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
        raise UnsupportedLayerError(f"layer '{layer.name}' (UpSampling2D): interpolation "
                                    f"'{config['interpolation']}' is not supported; use 'nearest'")
    return graph.add(L.Upsample2D(tuple(config["size"])), inputs, layer.name)


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
    return graph.add(L.Concat(axis - 1 if axis > 0 else axis), inputs, layer.name)


@handler(*IDENTITY_LAYERS)
def identity(layer, config, inputs, graph):
    return graph.add(L.Identity(type(layer).__name__), inputs, layer.name)


@handler("Rescaling")
def rescaling(layer, config, inputs, graph):
    return graph.add(L.Rescale(np.float32(config["scale"]), np.float32(config["offset"])), inputs, layer.name)


@handler("Normalization")
def normalization(layer, config, inputs, graph):
    if config.get("invert"):
        raise UnsupportedLayerError(f"layer '{layer.name}' (Normalization): invert=True is not supported")
    mean = np.asarray(layer.mean, np.float64).reshape(-1)
    std = np.sqrt(np.maximum(np.asarray(layer.variance, np.float64).reshape(-1), 1e-7))
    return graph.add(L.Rescale(1.0 / std, -mean / std), inputs, layer.name)


SUPPORTED_KERAS_LAYERS = sorted(HANDLERS) + ["InputLayer"]


# ---- walking the functional graph ---------------------------------------------------------------------------
def _is_model(op):
    return hasattr(op, "inputs") and hasattr(op, "outputs") and hasattr(op, "layers")


def _handler_for(layer):
    for klass in type(layer).__mro__:
        if klass.__name__ in HANDLERS:
            return HANDLERS[klass.__name__]
    return None


def _problems(model, found):
    """Every layer (nested models included) that no handler takes or that is channels-first."""
    for layer in model.layers:
        if _is_model(layer):
            _problems(layer, found)
            continue
        cls = type(layer).__name__
        if cls == "InputLayer":
            continue
        if _handler_for(layer) is None:
            found.append(f"'{layer.name}' ({cls})")
        elif layer.get_config().get("data_format") == "channels_first":
            found.append(f"'{layer.name}' ({cls}, data_format='channels_first': use channels_last)")
    return found


class _Walker:
    """Maps Keras tensors to graph tensor names, converting each producing layer once."""

    def __init__(self, graph, seeded=None):
        self.graph = graph
        self.names = dict(seeded or {})

    def tensor(self, t):
        key = id(t)
        if key not in self.names:
            self.names[key] = self._produce(t)
        return self.names[key]

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
            inner = _Walker(self.graph, {id(i): name for i, name in zip(op.inputs, inputs)})
            return inner.tensor(op.outputs[tensor_index])
        config = op.get_config()
        return _handler_for(op)(op, config, inputs, self.graph)


def _load_file(path):
    import keras
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:   # keras raises many types for unreadable files
        raise ModelLoadError(f"cannot load Keras model {path}: {type(err).__name__}: {err}") from None


def from_keras(model_or_path):
    """Build an emc.Graph from a Keras model or a .keras / .h5 file (every unsupported layer listed at once)."""
    model = _load_file(model_or_path) if isinstance(model_or_path, (str, bytes)) or hasattr(
        model_or_path, "__fspath__") else model_or_path
    if not getattr(model, "built", True) or not getattr(model, "outputs", None):
        raise ModelLoadError(f"Keras model '{model.name}' is not built: give it an Input with a fixed shape")
    problems = _problems(model, [])
    if problems:
        raise UnsupportedLayerError(f"model '{model.name}' has {len(problems)} layer(s) emc cannot convert: "
                                    f"{', '.join(problems)}. Supported Keras layers: emc.frontends.keras."
                                    f"SUPPORTED_KERAS_LAYERS ({', '.join(SUPPORTED_KERAS_LAYERS)})")
    graph = Graph(model.name)
    walker = _Walker(graph)
    outputs = [walker.tensor(t) for t in model.outputs]
    missing = [t for t in model.inputs if id(t) not in walker.names]
    for t in missing:      # an input no output depends on still belongs to the model's signature
        walker.tensor(t)
    graph.inputs = [walker.names[id(t)] for t in model.inputs]
    graph.set_outputs(outputs)
    return graph.validate()
