"""One handler per Keras layer class, working from the layer's config dict and weights alone.

Both Keras paths feed these handlers: a live Keras object (its get_config() and get_weights()) and a saved
.keras / .h5 file read without TensorFlow (its JSON config and HDF5 weights), so a layer is converted by one
piece of code whichever way it arrives.
"""
import numpy as np

from .. import layers as L
from ..errors import ModelLoadError, UnsupportedLayerError

HANDLERS = {}
IDENTITY_LAYERS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                   "GaussianDropout", "AlphaDropout", "ActivityRegularization")
KERAS_EPSILON = 1e-7          # keras.config.epsilon() unless a user changed it; Normalization's floor on std


class KerasLayer:
    """A Keras layer as handlers see it: class name, layer name, config dict, weights in Keras' order
    (trainable then non-trainable, as get_weights() and both file formats give them)."""

    __slots__ = ("cls", "name", "config", "weights", "keras2")

    def __init__(self, cls, name, config, weights, keras2=False):
        self.cls, self.name, self.config = cls, name, config
        self.weights = [np.asarray(w) for w in weights]
        self.keras2 = keras2            # saved by Keras 2 / tf.keras: some names meant other functions then

    def weight(self, index, optional=False):
        """The index-th weight; None for a missing optional one (a bias), an error for a missing required one."""
        if index < len(self.weights):
            return self.weights[index]
        if optional:
            return None
        raise ModelLoadError(f"layer '{self.name}' ({self.cls}) has {len(self.weights)} weight array(s) in the "
                             f"model, weight {index} is missing; save the model again with its weights")


def handler(*class_names):
    """Register fn(spec: KerasLayer, inputs, graph) -> output tensor name for these Keras layer classes.
    For settings emc cannot express it raises UnsupportedLayerError(reason); the walker names the layer."""
    def wrap(fn):
        for name in class_names:
            HANDLERS[name] = fn
        return fn
    return wrap


def config_value(value):
    """A config entry as plain data: Keras 3 writes numpy arrays as {'class_name': '__numpy__', ...}."""
    if isinstance(value, dict) and isinstance(value.get("config"), dict) and "value" in value["config"]:
        return value["config"]["value"]
    return value


def act_from_config(value, keras2=False):
    """emc Act of a serialized Keras activation: a name, None, or Keras 3's dict form of a built-in function."""
    if value is None:
        return L.LINEAR
    if isinstance(value, dict):
        module, name = str(value.get("module") or ""), value.get("config")
        if not (module.startswith(("keras", "tf_keras", "tensorflow")) and isinstance(name, str)):
            shown = name if isinstance(name, str) else value.get("class_name")
            raise UnsupportedLayerError(f"custom activation function '{shown}' is not supported; use a built-in "
                                        f"one: {', '.join(sorted(L.ACTIVATIONS))}")
        value = name
    if keras2 and value == "hard_sigmoid":
        raise UnsupportedLayerError("Keras 2's hard_sigmoid (clip(0.2x + 0.5, 0, 1)) is not the Keras 3 one emc "
                                    "runs (relu6(x + 3) / 6); retrain or re-save the model with Keras 3")
    return L.Act(value)


def _act(spec):
    return act_from_config(spec.config.get("activation"), spec.keras2)


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
def conv2d(spec, inputs, graph):
    strides, dilation, pads = _conv_geometry(spec.config, graph, inputs)
    op = L.Conv2D(spec.weight(0), spec.weight(1, True), strides, dilation, pads, _act(spec))
    return graph.add(op, inputs, spec.name)


@handler("DepthwiseConv2D")
def depthwise_conv2d(spec, inputs, graph):
    strides, dilation, pads = _conv_geometry(spec.config, graph, inputs)
    op = L.DepthwiseConv2D(spec.weight(0), spec.weight(1, True), strides, dilation, pads, _act(spec))
    return graph.add(op, inputs, spec.name)


@handler("SeparableConv2D")
def separable_conv2d(spec, inputs, graph):
    """A depthwise conv (no bias) followed by a 1x1 conv that carries the bias and the activation."""
    strides, dilation, pads = _conv_geometry(spec.config, graph, inputs)
    act = _act(spec)
    dw = graph.add(L.DepthwiseConv2D(spec.weight(0), None, strides, dilation, pads), inputs,
                   spec.name + "/depthwise")
    return graph.add(L.Conv2D(spec.weight(1), spec.weight(2, True), activation=act), [dw], spec.name)


@handler("Conv1D")
def conv1d(spec, inputs, graph):
    """A Conv1D over (L, C) runs as a Conv2D over a (1, L, C) view."""
    config = spec.config
    if config.get("groups", 1) != 1:
        raise UnsupportedLayerError(f"grouped convolution (groups={config['groups']}) is not supported")
    length, channels = graph[inputs[0]].shape
    k, s = _pair(config["kernel_size"])[0], _pair(config["strides"])[0]
    d = _pair(config.get("dilation_rate", 1))[0]
    pads_1d = {"valid": lambda: (0, 0), "same": lambda: L.same_pads(length, k, s, d),
               "causal": lambda: ((k - 1) * d, 0)}
    if config["padding"] not in pads_1d:
        raise UnsupportedLayerError(f"padding '{config['padding']}' is not supported")
    act = _act(spec)
    view = graph.add(L.Reshape((1, length, channels)), inputs, spec.name + "/as2d")
    conv = graph.add(L.Conv2D(spec.weight(0)[None], spec.weight(1, True), (1, s), (1, d),
                              (0, 0) + pads_1d[config["padding"]](), act), [view], spec.name + "/conv2d")
    out = graph[conv].shape
    return graph.add(L.Reshape((out[1], out[2])), [conv], spec.name)


def _transpose_crops(kernel, stride, padding, output_padding):
    """Crop (before, after) of the full transposed-conv output for one axis, as Keras 3 pads it (negative after:
    rows only the bias reaches). Keras: 'valid' adds max(k, s) - k (or output_padding) at the end; 'same' pads
    the stride-dilated input by pad_len = s + k - 2 (or k + k % 2 - 2 + output_padding), min(ceil(pad_len / 2),
    k - 1) of it first."""
    if padding == "valid":
        extra = max(kernel, stride) - kernel if output_padding is None else output_padding
        return 0, -extra
    pad_len = stride + kernel - 2 if output_padding is None else kernel + kernel % 2 - 2 + output_padding
    first = min(pad_len // 2 + pad_len % 2, kernel - 1)
    return kernel - 1 - first, kernel - 1 - (pad_len - first)


@handler("Conv2DTranspose", "Convolution2DTranspose")
def conv2d_transpose(spec, inputs, graph):
    """Keras' kernel (kh, kw, C_out, C_in) becomes emc's (kh, kw, C_in, C_out); padding becomes crops."""
    config = spec.config
    if _pair(config.get("dilation_rate", 1)) != (1, 1):
        raise UnsupportedLayerError(f"dilation_rate={config['dilation_rate']} is not supported; use 1")
    if config.get("padding", "valid") not in ("valid", "same"):
        raise UnsupportedLayerError(f"padding '{config['padding']}' is not supported; use 'same' or 'valid'")
    kernel = spec.weight(0).transpose(0, 1, 3, 2)
    strides = _pair(config["strides"])
    extra = config.get("output_padding")
    extra = (None, None) if extra is None else _pair(extra)
    crops = sum((_transpose_crops(kernel.shape[i], strides[i], config.get("padding", "valid"), extra[i])
                 for i in range(2)), ())
    op = L.Conv2DTranspose(kernel, spec.weight(1, True), strides, crops, _act(spec))
    return graph.add(op, inputs, spec.name)


@handler("Dense")
def dense(spec, inputs, graph):
    return graph.add(L.Dense(spec.weight(0), spec.weight(1, True), _act(spec)), inputs, spec.name)


def _last_axis_only(axis, rank, what):
    """Accept an axis (or one-element list) that names the last axis of a tensor of this batched rank."""
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if not isinstance(axis, int) or axis % rank != rank - 1:
        raise UnsupportedLayerError(f"{what} axis {axis} is not supported; emc works channels-last (axis=-1)")


@handler("BatchNormalization")
def batch_norm(spec, inputs, graph):
    config = spec.config
    _last_axis_only(config.get("axis", -1), len(graph[inputs[0]].shape) + 1, "normalization")
    scale, center = config.get("scale", True), config.get("center", True)
    index = iter(range(4))
    gamma = spec.weight(next(index)) if scale else None
    beta = spec.weight(next(index)) if center else None
    mean, var = spec.weight(next(index)), spec.weight(next(index))
    return graph.add(L.BatchNorm.from_stats(gamma, beta, mean, var, config.get("epsilon", 1e-3)), inputs, spec.name)


@handler("Activation")
def activation(spec, inputs, graph):
    return graph.add(L.Activation(_act(spec)), inputs, spec.name)


def _relu_act(slope, max_value):
    """relu / leaky_relu / relu6 from Keras' ReLU settings (the only combinations emc runs)."""
    if max_value is None:
        return L.Act("leaky_relu", slope) if slope else L.Act("relu")
    if float(max_value) == 6.0 and not slope:
        return L.Act("relu6")
    raise UnsupportedLayerError(f"max_value={max_value} with negative_slope={slope} is not supported; use "
                                f"max_value None, or 6 without a slope")


@handler("ReLU")
def relu(spec, inputs, graph):
    config = spec.config
    if config.get("threshold", 0.0):
        raise UnsupportedLayerError(f"threshold={config['threshold']} is not supported; use threshold=0")
    act = _relu_act(config.get("negative_slope", 0.0), config.get("max_value"))
    return graph.add(L.Activation(act), inputs, spec.name)


@handler("ReLU6")
def relu6(spec, inputs, graph):
    return graph.add(L.Activation("relu6"), inputs, spec.name)


@handler("LeakyReLU")
def leaky_relu(spec, inputs, graph):
    slope = spec.config.get("negative_slope", spec.config.get("alpha", 0.3))
    return graph.add(L.Activation(L.Act("leaky_relu", slope)), inputs, spec.name)


@handler("ELU")
def elu(spec, inputs, graph):
    return graph.add(L.Activation(L.Act("elu", spec.config.get("alpha", 1.0))), inputs, spec.name)


@handler("PReLU")
def prelu(spec, inputs, graph):
    return graph.add(L.PReLU(spec.weight(0)), inputs, spec.name)


@handler("Softmax")
def softmax(spec, inputs, graph):
    _last_axis_only(spec.config.get("axis", -1), len(graph[inputs[0]].shape) + 1, "softmax")
    return graph.add(L.Activation("softmax"), inputs, spec.name)


def _pool(mode):
    def build(spec, inputs, graph):
        config = spec.config
        size = _pair(config["pool_size"])
        strides = _pair(config["strides"]) if config.get("strides") is not None else size
        pads = _spatial_pads(config, graph[inputs[0]].shape, size, strides, (1, 1))
        return graph.add(L.Pool2D(mode, size, strides, pads), inputs, spec.name)
    return build


handler("MaxPooling2D", "MaxPool2D")(_pool("max"))
handler("AveragePooling2D", "AvgPool2D")(_pool("avg"))


def _global_pool(mode):
    def build(spec, inputs, graph):
        return graph.add(L.GlobalPool2D(mode, spec.config.get("keepdims", False)), inputs, spec.name)
    return build


handler("GlobalMaxPooling2D", "GlobalMaxPool2D")(_global_pool("max"))
handler("GlobalAveragePooling2D", "GlobalAvgPool2D")(_global_pool("avg"))


def _as_2d(spec, inputs, graph):
    """A (L, C) tensor viewed as a (1, L, C) image, so 1-D layers run on the 2-D ops and kernels."""
    length, channels = graph[inputs[0]].shape
    return graph.add(L.Reshape((1, length, channels)), inputs, spec.name + "/as2d"), length


def _pool1d(mode):
    def build(spec, inputs, graph):
        """MaxPooling1D / AveragePooling1D over (L, C): a 1 x k Pool2D over the (1, L, C) view."""
        config = spec.config
        size = _pair(config["pool_size"])[0]
        stride = _pair(config["strides"])[0] if config.get("strides") is not None else size
        view, length = _as_2d(spec, inputs, graph)
        pads = (0, 0) + _spatial_pads(config, (length, length), (size, size), (stride, stride), (1, 1))[:2]
        pool = graph.add(L.Pool2D(mode, (1, size), (1, stride), pads), [view], spec.name + "/pool2d")
        out = graph[pool].shape
        return graph.add(L.Reshape((out[1], out[2])), [pool], spec.name)
    return build


def _global_pool1d(mode):
    def build(spec, inputs, graph):
        """GlobalMax/AveragePooling1D over (L, C): GlobalPool2D of the (1, L, C) view; keepdims gives (1, C)."""
        view, _ = _as_2d(spec, inputs, graph)
        if not spec.config.get("keepdims", False):
            return graph.add(L.GlobalPool2D(mode), [view], spec.name)
        pooled = graph.add(L.GlobalPool2D(mode), [view], spec.name + "/pool2d")
        return graph.add(L.Reshape((1, graph[pooled].shape[0])), [pooled], spec.name)
    return build


handler("MaxPooling1D", "MaxPool1D")(_pool1d("max"))
handler("AveragePooling1D", "AvgPool1D")(_pool1d("avg"))
handler("GlobalMaxPooling1D", "GlobalMaxPool1D")(_global_pool1d("max"))
handler("GlobalAveragePooling1D", "GlobalAvgPool1D")(_global_pool1d("avg"))


def _two_sided(value):
    """Keras' int / (h, w) / ((top, bottom), (left, right)) -> (top, bottom, left, right)."""
    (top, bottom), (left, right) = [_pair(v) for v in _pair(value)]
    return (top, bottom, left, right)


@handler("ZeroPadding2D")
def zero_padding(spec, inputs, graph):
    return graph.add(L.Pad2D(_two_sided(spec.config["padding"])), inputs, spec.name)


@handler("Cropping2D")
def cropping(spec, inputs, graph):
    return graph.add(L.Crop2D(_two_sided(spec.config["cropping"])), inputs, spec.name)


@handler("UpSampling2D")
def upsampling(spec, inputs, graph):
    interpolation = spec.config.get("interpolation", "nearest")
    if interpolation != "nearest":
        raise UnsupportedLayerError(f"interpolation '{interpolation}' is not supported; use 'nearest'")
    return graph.add(L.Upsample2D(_pair(spec.config["size"])), inputs, spec.name)


@handler("Flatten")
def flatten(spec, inputs, graph):
    return graph.add(L.Flatten(), inputs, spec.name)


@handler("Reshape")
def reshape(spec, inputs, graph):
    return graph.add(L.Reshape(tuple(spec.config["target_shape"])), inputs, spec.name)


def _merge(op):
    def build(spec, inputs, graph):
        return graph.add(L.Elementwise(op), inputs, spec.name)
    return build


for _cls, _op in (("Add", "add"), ("Subtract", "sub"), ("Multiply", "mul"), ("Average", "avg"),
                  ("Maximum", "max"), ("Minimum", "min")):
    handler(_cls)(_merge(_op))


@handler("Concatenate")
def concatenate(spec, inputs, graph):
    axis = spec.config.get("axis", -1)
    if axis == 0:
        raise UnsupportedLayerError("concatenation along the batch axis is not supported")
    return graph.add(L.Concat(axis - 1 if axis > 0 else axis), inputs, spec.name)


@handler(*IDENTITY_LAYERS)
def identity(spec, inputs, graph):
    return graph.add(L.Identity(spec.cls), inputs, spec.name)


@handler("Rescaling")
def rescaling(spec, inputs, graph):
    scale = np.asarray(config_value(spec.config["scale"]), np.float32).reshape(-1)
    offset = np.asarray(config_value(spec.config.get("offset", 0.0)), np.float32).reshape(-1)
    return graph.add(L.Rescale(scale, offset), inputs, spec.name)


@handler("Normalization")
def normalization(spec, inputs, graph):
    """(x - mean) / max(sqrt(var), 1e-7), as Keras computes it, for statistics per last-axis channel.
    The statistics are in the config when given to the constructor, in the weights when adapted."""
    config = spec.config
    if config.get("invert"):
        raise UnsupportedLayerError("invert=True is not supported")
    rank = len(graph[inputs[0]].shape) + 1
    axis = config.get("axis", -1)
    axis = () if axis is None else (axis,) if isinstance(axis, int) else tuple(axis)
    if tuple(sorted(a % rank for a in axis)) not in ((), (rank - 1,)):
        raise UnsupportedLayerError(f"statistics over axis {config.get('axis')} are not supported; use axis=-1")
    mean, variance = config_value(config.get("mean")), config_value(config.get("variance"))
    if mean is None or variance is None:
        mean, variance = spec.weight(0), spec.weight(1)
    mean = np.asarray(mean, np.float64).reshape(-1)
    std = np.maximum(np.sqrt(np.asarray(variance, np.float64).reshape(-1)), KERAS_EPSILON)
    return graph.add(L.Rescale(1.0 / std, -mean / std), inputs, spec.name)


def _recurrent(op_class, recurrent_activation):
    def build(spec, inputs, graph):
        """SimpleRNN / GRU / LSTM with Keras' default activations, starting from a zero state."""
        config = spec.config
        refused = [key for key in ("go_backwards", "stateful", "return_state") if config.get(key)]
        if refused:
            raise UnsupportedLayerError(f"{', '.join(f'{k}=True' for k in refused)} is not supported; emc runs "
                                        f"one forward pass from a zero state (wrap a reversed copy for go_backwards)")
        acts = {"activation": "tanh", "recurrent_activation": recurrent_activation}
        for key, want in acts.items():
            if want is not None and config.get(key, want) != want:
                raise UnsupportedLayerError(f"{key}='{config[key]}' is not supported; the int8 kernels tabulate "
                                            f"{key}='{want}' (Keras' default)")
        if spec.cls == "GRU" and not config.get("reset_after", True):
            raise UnsupportedLayerError("reset_after=False is not supported; use Keras 3's default reset_after=True")
        bias = spec.weight(2, True) if config.get("use_bias", True) else None
        op = op_class(spec.weight(0), spec.weight(1), bias, config.get("return_sequences", False))
        return graph.add(op, inputs, spec.name)
    return build


handler("SimpleRNN")(_recurrent(L.SimpleRNN, None))
handler("GRU")(_recurrent(L.GRU, "sigmoid"))
handler("LSTM")(_recurrent(L.LSTM, "sigmoid"))


SUPPORTED_KERAS_LAYERS = sorted(set(HANDLERS) | {"InputLayer"})


def config_problem(cls, config):
    """Why no handler can take a layer of this class and config at all (None when one can)."""
    if cls not in HANDLERS:
        return "no converter for this layer class"
    if isinstance(config, dict) and config.get("data_format") == "channels_first":
        return "data_format='channels_first' is not supported; build the model with channels_last (NHWC)"
    return None


def convert_layer(spec, inputs, graph):
    """Run the handler of spec.cls; UnsupportedLayerError carries the reason for the walker to list."""
    return HANDLERS[spec.cls](spec, inputs, graph)


def unsupported_layers(model_name, problems):
    """The UnsupportedLayerError listing every problem and the Keras layers emc reads; .extended(more) gives
    the same error with more problems (a platform's, found in the layers the frontend did convert)."""
    err = UnsupportedLayerError(
        f"model '{model_name}' has {len(problems)} layer(s) emc cannot convert:\n  - " + "\n  - ".join(problems)
        + f"\nSupported Keras layers (emc.frontends.keras.SUPPORTED_KERAS_LAYERS): {', '.join(SUPPORTED_KERAS_LAYERS)}")
    err.problems = problems
    err.extended = lambda more: unsupported_layers(model_name, problems + list(more))
    return err


def partial_graph(graph, out_names, stand_ins):
    """(graph, stand-in names) of what could be converted, for a platform to check; None if unusable. The
    stand-ins stay input nodes but not model inputs: a platform then checks the layers after them as usual."""
    try:
        graph.set_outputs([n for n in out_names if n is not None])
        graph.inputs = [n for n in graph.inputs if n not in stand_ins]
        return graph, list(stand_ins)
    except Exception:                    # noqa: BLE001 -- only extra information; the frontend's list stands
        return None


def raise_problems(model_name, problems, partial=None):
    """One UnsupportedLayerError listing every layer emc cannot convert (nothing when the list is empty);
    partial = (graph, stand-in names) of what could be converted, kept on the error for a platform check."""
    if problems:
        err = unsupported_layers(model_name, list(dict.fromkeys(problems)))
        err.partial_graph = partial
        raise err
