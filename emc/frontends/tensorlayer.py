"""TensorLayer 2.x static models and their .h5 files -> emc.Graph, without TensorLayer's broken Model.load.

Both paths share one description: the model's `config` (a dict; in a file a Python-repr string, parsed safely
with `ast`, never eval) plus each layer's weights keyed by their short names ('filters', 'biases' ...).
"""
import ast
import logging
import os
import re

import numpy as np

from .. import layers as L
from ..errors import EmcError, ModelLoadError, UnsupportedLayerError
from ..graph import Graph

log = logging.getLogger(__name__)

INPUT_CLASSES = ("_InputLayer", "Input")
HANDLERS = {}          # TensorLayer class name -> handler(args, weights, inputs, graph, name, act, live)
TAKES_ACT = set()      # classes whose act= emc honours
CHECKS = {}            # class name -> [check(args, name, live)] raising UnsupportedLayerError before any building

# TensorLayer / tf.nn activation names as they appear in a config -> (emc name, parameter).
# tf.nn.leaky_relu's default slope is 0.2; TensorLayer's strings 'lrelu0.1' / 'leaky_relu0.1' carry their own.
ACT_NAMES = {"relu": ("relu", None), "relu6": ("relu6", None), "leaky_relu": ("leaky_relu", 0.2),
             "lrelu": ("leaky_relu", 0.2), "sigmoid": ("sigmoid", None), "tanh": ("tanh", None),
             "softmax": ("softmax", None), "softmax_v2": ("softmax", None), "identity": ("linear", None),
             "linear": ("linear", None), "elu": ("elu", 1.0), "softplus": ("softplus", None),
             "softsign": ("softsign", None), "swish": ("swish", None), "silu": ("swish", None),
             "hard_sigmoid": ("hard_sigmoid", None)}
LEAKY_WITH_SLOPE = re.compile(r"^(?:lrelu|leaky_relu)(-?\d+(?:\.\d*)?(?:e-?\d+)?)$")

# Elementwise combine_fn names (tf.add ...) -> emc Elementwise op.
COMBINE_FNS = {"add": "add", "add_v2": "add", "subtract": "sub", "sub": "sub", "multiply": "mul", "mul": "mul",
               "maximum": "max", "minimum": "min"}


def handler(*class_names, act=False):
    """Register a builder for TensorLayer layer classes; act=True when the class takes an act= emc applies."""
    def wrap(fn):
        for name in class_names:
            HANDLERS[name] = fn
            if act:
                TAKES_ACT.add(name)
        return fn
    return wrap


def check(*class_names):
    """Register a configuration check, run on every layer first so that all problems are reported at once."""
    def wrap(fn):
        for name in class_names:
            CHECKS.setdefault(name, []).append(fn)
        return fn
    return wrap


# ---- safe parsing of a saved config --------------------------------------------------------------------------
def _literal(node):
    """Python literal of an ast node; attribute chains such as tf.float32 become the string 'tf.float32'."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_literal(node.value)}.{node.attr}"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)):
            return -value if isinstance(node.op, ast.USub) else value
    raise ValueError(f"unexpected {type(node).__name__} at column {getattr(node, 'col_offset', '?')}")


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, np.bytes_)) else str(value)


def parse_config(text, source="model_config"):
    """Parse TensorLayer's Python-repr model_config (str or bytes) into a dict, evaluating nothing."""
    try:
        config = _literal(ast.parse(_text(text), mode="eval").body)
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError) as err:
        raise ModelLoadError(f"{source}: the TensorLayer model_config cannot be read ({err}); the file is damaged "
                             f"or was not written by TensorLayer 2.x Model.save") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_architecture"), list):
        raise ModelLoadError(f"{source}: model_config has no 'model_architecture' list; is this a TensorLayer 2.x "
                             f"file saved with Model.save(path, save_weights=True)?")
    return config


def _short(name):
    """'conv1/filters:0' -> 'filters'."""
    return name.split("/")[-1].split(":")[0]


# ---- reading the two sources -------------------------------------------------------------------------------------
def _read_layer_weights(f, lname, path):
    group = f[lname]
    found = {}
    for wname in map(_text, group.attrs.get("weight_names", [])):
        for key in (wname, f"{lname}/{wname}"):
            if key in group:
                found[_short(wname)] = np.asarray(group[key])
                break
        else:
            raise ModelLoadError(f"{path}: weight '{wname}' of layer '{lname}' is listed but missing; the file is "
                                 f"incomplete, save the model again")
    return found


def _read_h5(path):
    import h5py
    try:
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs:
                raise ModelLoadError(f"{path} holds TensorLayer weights only (no model_config); save the model with "
                                     f"Model.save(path, save_weights=True) or pass the TensorLayer Model object")
            config = parse_config(f.attrs["model_config"], path)
            names = [_text(n) for n in f.attrs.get("layer_names", list(f.keys()))]
            weights = {lname: _read_layer_weights(f, lname, path) for lname in names if lname in f}
    except OSError as err:
        raise ModelLoadError(f"{path} is not a readable HDF5 file ({err})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ModelLoadError(f"{path}: the TensorLayer weights cannot be read ({type(err).__name__}: {err}); the "
                             f"file is damaged, save the model again") from None
    log.debug("read %s: %d layers, %d with weights", path, len(config["model_architecture"]), len(weights))
    return config, weights, {}


def _from_object(model):
    if not hasattr(model, "all_layers") or not hasattr(model, "all_weights"):
        raise ModelLoadError(f"cannot convert a TensorLayer {type(model).__name__}: give a static "
                             f"tl.models.Model(inputs=..., outputs=...)")
    if getattr(model, "outputs", None) is None or getattr(model, "inputs", None) is None:
        raise ModelLoadError(f"TensorLayer model '{getattr(model, 'name', '?')}' is a dynamic model (no fixed "
                             f"inputs/outputs); build it as a static tl.models.Model(inputs=..., outputs=...)")
    try:
        config = model.config
        weights, live = {}, {}
        for layer in model.all_layers:
            weights[layer.name] = {_short(w.name): np.asarray(w.numpy()) for w in (layer.all_weights or [])}
            live[layer.name] = {key: getattr(layer, key) for key in ("act", "combine_fn")
                                if callable(getattr(layer, key, None))}
    except EmcError:
        raise
    except Exception as err:      # TensorLayer raises plain Exceptions for unbuilt or odd models
        raise ModelLoadError(f"cannot read the TensorLayer model's layers ({type(err).__name__}: {err}); emc needs "
                             f"a built static model (tl.models.Model(inputs, outputs))") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_architecture"), list):
        raise ModelLoadError("the TensorLayer model has no model_architecture in its config; give a static Model")
    return config, weights, live


# ---- activations and combine functions given as live Python callables (object path only) ------------------------
_PROBE = np.array([-3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 3.0, 7.0], np.float32)


def _probe_act(fn):
    """Identify an activation given as a Python function by its values (e.g. lambda x: tl.act.lrelu(x, 0.1))."""
    try:
        y = np.asarray(fn(_PROBE), np.float32)
    except Exception as err:
        raise UnsupportedLayerError(f"its activation function cannot be evaluated ({err})") from None
    if y.shape == _PROBE.shape and np.allclose(y[_PROBE >= 0], _PROBE[_PROBE >= 0], atol=1e-6):
        alpha = float(y[0] / _PROBE[0])
        if np.allclose(y[_PROBE < 0], alpha * _PROBE[_PROBE < 0], atol=1e-6):
            return L.Act("leaky_relu", alpha) if alpha else L.Act("relu")
    for name in ("relu6", "sigmoid", "tanh", "elu", "swish", "softplus", "softsign", "hard_sigmoid", "hard_swish"):
        act = L.Act(name)
        if y.shape == _PROBE.shape and np.allclose(act(_PROBE), y, atol=1e-5):
            return act
    raise UnsupportedLayerError(f"its activation function is not one emc knows; use a named activation "
                                f"(act=tf.nn.relu, 'relu6', 'lrelu0.1', tf.nn.sigmoid ...)")


def _probe_combine(fn):
    a = np.array([[-2.0, 0.5, 3.0, 1.0]], np.float32)
    b = np.array([[1.0, -1.5, 2.0, 4.0]], np.float32)
    try:
        y = np.asarray(fn(a, b, name="emc_probe"), np.float32)      # TensorLayer passes name= too
    except Exception as err:
        raise UnsupportedLayerError(f"its combine_fn cannot be evaluated ({err})") from None
    for name, ref in (("add", a + b), ("sub", a - b), ("mul", a * b), ("max", np.maximum(a, b)),
                      ("min", np.minimum(a, b))):
        if y.shape == ref.shape and np.allclose(y, ref):
            return name
    raise UnsupportedLayerError(f"its combine_fn is not add/subtract/multiply/maximum/minimum")


def _act(args, name, live):
    """The emc Act for a layer's act= (a name in the config, or a live callable on the object path)."""
    value = args.get("act")
    if value is None:
        return L.LINEAR
    if isinstance(value, str):
        slope = LEAKY_WITH_SLOPE.match(value)
        key = value.split(".")[-1]
        if slope:
            return L.Act("leaky_relu", float(slope.group(1)))
        if key not in ACT_NAMES:
            raise UnsupportedLayerError(f"activation '{value}' is not supported; supported: "
                                        f"{', '.join(sorted(ACT_NAMES))}, lrelu<slope>")
        return L.Act(*ACT_NAMES[key])
    if "act" in live.get(name, {}):
        return _probe_act(live[name]["act"])
    raise UnsupportedLayerError(f"its activation is a pickled Python function, which emc does not "
                                f"unpickle; use a named activation (e.g. act=tf.nn.relu or act='lrelu0.1') or "
                                f"pass the TensorLayer Model object instead of the file")


@check("Elementwise")
def _combine(args, name, live):
    value = args.get("combine_fn", "minimum")
    if isinstance(value, str):
        key = value.split(".")[-1]
        if key not in COMBINE_FNS:
            raise UnsupportedLayerError(f"combine_fn '{value}' is not supported; use tf.add, tf.subtract, "
                                        f"tf.multiply, tf.maximum or tf.minimum")
        return COMBINE_FNS[key]
    if "combine_fn" in live.get(name, {}):
        return _probe_combine(live[name]["combine_fn"])
    raise UnsupportedLayerError(f"its combine_fn is a pickled Python function; use tf.add, tf.subtract, "
                                f"tf.multiply, tf.maximum or tf.minimum")


# ---- handlers: fn(args, w, inputs, graph, name, act, live) -> tensor name ---------------------------------------
def _pair(value, default):
    value = default if value is None else value
    return (int(value), int(value)) if isinstance(value, (int, float)) else tuple(int(v) for v in value)


@check("Conv2d", "DepthwiseConv2d", "SeparableConv2d", "MaxPool2d", "MeanPool2d")
def _padding(args, name, live):
    padding = str(args.get("padding", "SAME")).upper()
    if padding not in ("SAME", "VALID"):
        raise UnsupportedLayerError(f"padding '{args.get('padding')}' is not supported; use 'SAME' or 'VALID'")
    return padding


def _pads(args, graph, inputs, kernel, strides, dilation):
    if _padding(args, "?", {}) == "VALID":
        return (0, 0, 0, 0)
    h, w = graph[inputs[0]].shape[:2]
    return L.same_pads(h, kernel[0], strides[0], dilation[0]) + L.same_pads(w, kernel[1], strides[1], dilation[1])


def _geometry(args, graph, inputs):
    kernel = _pair(args.get("filter_size"), (3, 3))
    strides = _pair(args.get("strides"), (1, 1))
    dilation = _pair(args.get("dilation_rate"), (1, 1))
    return strides, dilation, _pads(args, graph, inputs, kernel, strides, dilation)


@handler("Conv2d", act=True)
def conv2d(args, w, inputs, graph, name, act, live):
    strides, dilation, pads = _geometry(args, graph, inputs)
    return graph.add(L.Conv2D(w["filters"], w.get("biases"), strides, dilation, pads, act), inputs, name)


@handler("DepthwiseConv2d", act=True)
def depthwise(args, w, inputs, graph, name, act, live):
    strides, dilation, pads = _geometry(args, graph, inputs)
    return graph.add(L.DepthwiseConv2D(w["filters"], w.get("biases"), strides, dilation, pads, act), inputs, name)


@handler("SeparableConv2d", act=True)
def separable(args, w, inputs, graph, name, act, live):
    """TensorLayer wraps Keras' SeparableConv2D: depthwise (no bias) then a 1x1 conv with bias and act."""
    strides, dilation, pads = _geometry(args, graph, inputs)
    dw = graph.add(L.DepthwiseConv2D(w["depthwise_kernel"], None, strides, dilation, pads), inputs,
                   name + "/depthwise")
    return graph.add(L.Conv2D(w["pointwise_kernel"], w.get("bias"), activation=act), [dw], name)


@handler("Dense", act=True)
def dense(args, w, inputs, graph, name, act, live):
    return graph.add(L.Dense(w["weights"], w.get("biases"), act), inputs, name)


def _then_act(graph, out, name, act):
    return out if act.is_linear else graph.add(L.Activation(act), [out], name + "/act")


@handler("BatchNorm", "BatchNorm1d", "BatchNorm2d", act=True)
def batch_norm(args, w, inputs, graph, name, act, live):
    """Inference form; TensorLayer 2.1 files store the parameters as (1, 1, 1, C), flattened here."""
    def get(key):
        return None if w.get(key) is None else np.asarray(w[key]).reshape(-1)
    op = L.BatchNorm.from_stats(get("gamma"), get("beta"), w["moving_mean"].reshape(-1),
                                w["moving_var"].reshape(-1), float(args.get("epsilon", 1e-5)))
    return _then_act(graph, graph.add(op, inputs, name), name, act)


@handler("PRelu")
def prelu(args, w, inputs, graph, name, act, live):
    """TensorLayer's PRelu slope is sigmoid(alpha), kept in (0, 1)."""
    alpha = np.asarray(w["alpha"], np.float64).reshape(-1)
    return graph.add(L.PReLU(1.0 / (1.0 + np.exp(-alpha))), inputs, name)


def _pool(mode):
    def build(args, w, inputs, graph, name, act, live):
        size = _pair(args.get("filter_size"), (3, 3))
        strides = _pair(args.get("strides"), (2, 2))
        pads = _pads(args, graph, inputs, size, strides, (1, 1))
        return graph.add(L.Pool2D(mode, size, strides, pads), inputs, name)
    return build


handler("MaxPool2d")(_pool("max"))
handler("MeanPool2d")(_pool("avg"))


def _global(mode):
    def build(args, w, inputs, graph, name, act, live):
        return graph.add(L.GlobalPool2D(mode, bool(args.get("keepdims", False))), inputs, name)
    return build


handler("GlobalMaxPool2d")(_global("max"))
handler("GlobalMeanPool2d")(_global("avg"))


@handler("ZeroPad2d")
def zero_pad(args, w, inputs, graph, name, act, live):
    """padding: int, (rows, cols) or ((top, bottom), (left, right)), as Keras' ZeroPadding2D."""
    p = args["padding"]
    if isinstance(p, int):
        pads = (p, p, p, p)
    else:
        (t, b), (l, r) = [(v, v) if isinstance(v, int) else tuple(v) for v in p]
        pads = (t, b, l, r)
    return graph.add(L.Pad2D(pads), inputs, name)


@check("PadLayer")
def _constant_hw_pads(args, name, live):
    """tf.pad with a [[0, 0], [top, bottom], [left, right], [0, 0]] list in CONSTANT mode -> (t, b, l, r)."""
    mode, p = str(args.get("mode", "CONSTANT")).upper(), [tuple(int(v) for v in row) for row in args["padding"]]
    if mode != "CONSTANT" or len(p) != 4 or p[0] != (0, 0) or p[3] != (0, 0):
        raise UnsupportedLayerError(f"only CONSTANT padding of height and width is "
                                    f"supported, got mode {mode} padding {p}; use ZeroPad2d")
    return p[1] + p[2]


@handler("PadLayer")
def pad_layer(args, w, inputs, graph, name, act, live):
    return graph.add(L.Pad2D(_constant_hw_pads(args, name, live)), inputs, name)


@check("UpSampling2d")
def _upsample_factor(args, name, live):
    method = str(args.get("method", "bilinear")).split(".")[-1].lower()
    scale = args.get("scale", (2, 2))
    scale = (scale, scale) if isinstance(scale, (int, float)) else tuple(scale)
    if method not in ("nearest", "nearest_neighbor") or any(float(s) != int(s) or s < 1 for s in scale):
        raise UnsupportedLayerError(f"method '{method}' with scale {scale} is not supported; use "
                                    f"method='nearest' with an integer scale")
    return tuple(int(s) for s in scale)


@handler("UpSampling2d")
def upsampling(args, w, inputs, graph, name, act, live):
    return graph.add(L.Upsample2D(_upsample_factor(args, name, live)), inputs, name)


@handler("Flatten")
def flatten(args, w, inputs, graph, name, act, live):
    return graph.add(L.Flatten(), inputs, name)


@check("Reshape")
def _per_sample_shape(args, name, live):
    """TensorLayer's target shape includes the batch axis ([-1, ...] or [None, ...]), dropped here."""
    shape = list(args["shape"])
    if len(shape) < 2 or shape[0] not in (None, -1):
        raise UnsupportedLayerError(f"shape {args['shape']} must keep the batch axis first as -1, e.g. [-1, 256]")
    return [-1 if d is None else int(d) for d in shape[1:]]


@handler("Reshape")
def reshape(args, w, inputs, graph, name, act, live):
    return graph.add(L.Reshape(_per_sample_shape(args, name, live)), inputs, name)


@check("Concat")
def _concat_axis(args, name, live):
    axis = int(args.get("concat_dim", -1))
    if axis == 0:
        raise UnsupportedLayerError("concatenation along the batch axis is not supported")
    return axis - 1 if axis > 0 else axis


@handler("Concat")
def concat(args, w, inputs, graph, name, act, live):
    return graph.add(L.Concat(_concat_axis(args, name, live)), inputs, name)


@handler("Elementwise", act=True)
def elementwise(args, w, inputs, graph, name, act, live):
    out = graph.add(L.Elementwise(_combine(args, name, live)), inputs, name)
    return _then_act(graph, out, name, act)


@handler("Dropout")
def dropout(args, w, inputs, graph, name, act, live):
    return graph.add(L.Identity("Dropout"), inputs, name)


SUPPORTED_TENSORLAYER_LAYERS = tuple(sorted(set(HANDLERS) | {"Input"}))


# ---- the layer graph --------------------------------------------------------------------------------------------
class _Weights(dict):
    """A layer's weights by short name; a missing required one is a ModelLoadError naming layer and weight."""

    def __init__(self, values, where):
        super().__init__(values)
        self.where = where

    def __missing__(self, key):
        raise ModelLoadError(f"{self.where} lacks its weight '{key}'; the model or file is incomplete")


def _node_ref(ref):
    """A config reference to a layer's output: 'conv1_node_0' (a bare 'conv1' means its first node)."""
    return ref if re.search(r"_node_\d+$", ref) else ref + "_node_0"


class _LayerSpec:
    """One entry of model_architecture: class, args, and the input references of each of its nodes."""

    def __init__(self, entry, index, source):
        if not isinstance(entry, dict) or not isinstance(entry.get("class"), str):
            raise ModelLoadError(f"{source}: model_architecture entry {index} is not a layer description")
        self.cls = entry["class"]
        self.args = entry.get("args") or {}
        if not isinstance(self.args, dict):
            raise ModelLoadError(f"{source}: layer {index} ({self.cls}) has no argument dict")
        self.name = str(self.args.get("name") or f"{self.cls}_{index}")
        prev = entry.get("prev_layer")
        if self.cls in INPUT_CLASSES:
            self.nodes = [[]]
        elif isinstance(prev, (list, tuple)):
            self.nodes = [list(p) if isinstance(p, (list, tuple)) else [p] for p in prev]
        else:
            raise ModelLoadError(f"{source}: layer '{self.name}' ({self.cls}) does not say which layer feeds it")
        if not all(isinstance(r, str) for refs in self.nodes for r in refs):
            raise ModelLoadError(f"{source}: layer '{self.name}' has unreadable input references {prev!r}")
        self.nodes = [[_node_ref(r) for r in refs] for refs in self.nodes]


def _channels_first(data_format):
    """TensorLayer spells it 'channels_first', 'channel_first' or 'NCHW' depending on the layer."""
    return data_format is not None and ("first" in str(data_format) or str(data_format).upper().startswith("NC"))


def _check_supported(specs, live, source):
    """Every problem of every layer at once, as one UnsupportedLayerError; returns each layer's Act."""
    problems, acts = [], {}
    for spec in specs:
        label = f"'{spec.name}' ({spec.cls})"
        if spec.cls in INPUT_CLASSES:
            continue
        if spec.cls not in HANDLERS:
            problems.append(label)
            continue
        if _channels_first(spec.args.get("data_format")):
            problems.append(f"{label} with data_format='{spec.args['data_format']}' (emc needs channels_last)")
            continue
        try:
            acts[spec.name] = _act(spec.args, spec.name, live)
        except UnsupportedLayerError as err:
            problems.append(f"{label}: {err}")
            continue
        if spec.cls not in TAKES_ACT and not acts[spec.name].is_linear:
            problems.append(f"{label} with act={acts[spec.name]!r} (this layer type takes no act)")
        for fn in CHECKS.get(spec.cls, []):
            try:
                fn(spec.args, spec.name, live)
            except UnsupportedLayerError as err:
                problems.append(f"{label}: {err}")
            except (KeyError, TypeError, ValueError, IndexError) as err:
                raise ModelLoadError(f"{source}: layer {label} has a configuration emc cannot read "
                                     f"({type(err).__name__}: {err})") from None
    if problems:
        raise UnsupportedLayerError(f"{source}: {len(problems)} layer(s) emc cannot convert: {'; '.join(problems)}. "
                                    f"Supported TensorLayer layers: emc.frontends.tensorlayer."
                                    f"SUPPORTED_TENSORLAYER_LAYERS ({', '.join(SUPPORTED_TENSORLAYER_LAYERS)})")
    return acts


def _add_input(spec, graph, source):
    shape = spec.args.get("shape")
    dims = list(shape)[1:] if isinstance(shape, (list, tuple)) else []
    if not dims or any(not isinstance(d, int) or d <= 0 for d in dims):
        raise ModelLoadError(f"{source}: input '{spec.name}' has shape {shape}: emc needs a fixed input shape "
                             f"(only the batch axis may be None), e.g. Input([None, 32, 32, 3])")
    return graph.add_input(dims, spec.name)


def _add_node(spec, index, inputs, graph, weights, act, live, source):
    name = spec.name if index == 0 else f"{spec.name}_node_{index}"
    w = _Weights(weights.get(spec.name, {}), f"{source}: layer '{spec.name}' ({spec.cls})")
    try:
        return HANDLERS[spec.cls](spec.args, w, inputs, graph, name, act, live)
    except EmcError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise ModelLoadError(f"{source}: layer '{spec.name}' ({spec.cls}) has a configuration or weights emc "
                             f"cannot read ({type(err).__name__}: {err}); save the model again with TensorLayer "
                             f"2.x") from None


def _refs(value, what, source):
    refs = value if isinstance(value, (list, tuple)) else [value]
    if not refs or not all(isinstance(r, str) for r in refs):
        raise ModelLoadError(f"{source}: the model config names no {what}; give a static Model(inputs, outputs)")
    return [_node_ref(r) for r in refs]


def build_graph(config, weights, live, source):
    """Graph from a TensorLayer config dict and weights {layer: {short name: array}}; live callables optional."""
    specs = [_LayerSpec(entry, i, source) for i, entry in enumerate(config["model_architecture"])]
    acts = _check_supported(specs, live, source)
    graph = Graph(str(config.get("name") or "tensorlayer_model"))
    tensors = {}                 # TensorLayer node name ('conv1_node_0') -> graph tensor
    pending = [(spec, i, refs) for spec in specs for i, refs in enumerate(spec.nodes)]
    while pending:               # a shared layer's later nodes may read layers listed after it
        waiting = []
        for spec, i, refs in pending:
            if not all(r in tensors for r in refs):
                waiting.append((spec, i, refs))
            elif spec.cls in INPUT_CLASSES:
                tensors[f"{spec.name}_node_0"] = _add_input(spec, graph, source)
            else:
                tensors[f"{spec.name}_node_{i}"] = _add_node(spec, i, [tensors[r] for r in refs], graph, weights,
                                                            acts[spec.name], live, source)
        if len(waiting) == len(pending):
            missing = sorted({r for _, _, refs in waiting for r in refs if r not in tensors})
            raise ModelLoadError(f"{source}: layer(s) {', '.join(sorted({s.name for s, _, _ in waiting}))} read "
                                 f"{', '.join(missing)}, which no layer produces; the model config is inconsistent")
        pending = waiting
    ends = {}
    for what in ("inputs", "outputs"):
        refs = _refs(config.get(what), what, source)
        unknown = [r for r in refs if r not in tensors]
        if unknown:
            raise ModelLoadError(f"{source}: model {what} {', '.join(unknown)} are not layers of the model")
        ends[what] = [tensors[r] for r in refs]
    graph.set_outputs(ends["outputs"])
    graph.inputs = ends["inputs"] + [n for n in graph.inputs if n not in ends["inputs"]]
    log.debug("%s: %d TensorLayer layers -> %d graph nodes", source, len(specs), len(graph.nodes))
    return graph.validate()


def from_tensorlayer(model_or_path):
    """Build an emc.Graph from a TensorLayer 2.x static Model or a TensorLayer .h5 file (read without TL)."""
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        if not os.path.isfile(path):
            raise ModelLoadError(f"TensorLayer model file {path} does not exist")
        config, weights, live = _read_h5(path)
        source = path
    else:
        config, weights, live = _from_object(model_or_path)
        source = f"TensorLayer model '{config.get('name', '?')}'"
    return build_graph(config, weights, live, source)
