"""TensorLayer 2.x static models and their .h5 files -> emc.Graph, without TensorLayer's broken Model.load.

Both paths share one description: the model's `config` (a dict; in the file a Python-repr string, parsed
safely with `ast`, never eval) plus each layer's weights keyed by their short names ('filters', 'biases' ...).
"""
import ast
import os

import numpy as np

from .. import layers as L
from ..errors import ModelLoadError, UnsupportedLayerError
from ..graph import Graph

HANDLERS = {}

# TensorLayer / tf.nn activation names as they appear in a saved config.
ACT_NAMES = {"relu": "relu", "relu6": "relu6", "leaky_relu": "leaky_relu", "lrelu": "leaky_relu",
             "leaky_relu6": None, "sigmoid": "sigmoid", "tanh": "tanh", "softmax": "softmax",
             "softmax_v2": "softmax", "identity": "linear", "linear": "linear", "elu": "elu",
             "softplus": "softplus", "softsign": "softsign", "swish": "swish", "silu": "swish",
             "hard_sigmoid": "hard_sigmoid"}


def handler(*class_names):
    def wrap(fn):
        for name in class_names:
            HANDLERS[name] = fn
        return fn
    return wrap


# ---- safe parsing of the saved config ------------------------------------------------------------------------
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


def parse_config(text, source="model_config"):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        config = _literal(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, RecursionError) as err:
        raise ModelLoadError(f"{source}: the TensorLayer model_config cannot be read ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_architecture"), list):
        raise ModelLoadError(f"{source}: model_config has no 'model_architecture' list; is this a TensorLayer 2.x "
                             f"file saved with Model.save(..., save_weights=True)?")
    return config


def _short(name):
    """'conv1/filters:0' -> 'filters'."""
    return name.split("/")[-1].split(":")[0]


def _read_h5(path):
    import h5py
    try:
        with h5py.File(path, "r") as f:
            config = parse_config(f.attrs.get("model_config", ""), path)
            weights = {}
            for lname in f.keys():
                group = f[lname]
                names = group.attrs.get("weight_names", [])
                found = {}
                for wname in names:
                    wname = wname.decode() if isinstance(wname, bytes) else str(wname)
                    if wname in group:
                        found[_short(wname)] = np.asarray(group[wname])
                    elif f"{lname}/{wname}" in group:
                        found[_short(wname)] = np.asarray(group[f"{lname}/{wname}"])
                    else:
                        raise ModelLoadError(f"{path}: weight '{wname}' of layer '{lname}' is missing")
                weights[lname] = found
    except OSError as err:
        raise ModelLoadError(f"{path} is not a readable HDF5 file ({err})") from None
    return config, weights, {}


def _from_object(model):
    try:
        config = model.config
    except Exception as err:    # TensorLayer raises plain Exceptions for dynamic models
        raise ModelLoadError(f"cannot read the TensorLayer model's config ({err}); emc needs a static model "
                             f"(tl.models.Model(inputs, outputs))") from None
    weights, acts = {}, {}
    for layer in model.all_layers:
        weights[layer.name] = {_short(w.name): np.asarray(w.numpy()) for w in (layer.all_weights or [])}
        if getattr(layer, "act", None) is not None:
            acts[layer.name] = layer.act
    return config, weights, acts


# ---- activations ---------------------------------------------------------------------------------------------
_PROBE = np.array([-3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 3.0, 7.0], np.float32)


def _probe_callable(fn, where):
    """Identify an activation given as a Python function by its values (e.g. lambda x: tl.act.lrelu(x, 0.1))."""
    try:
        y = np.asarray(fn(_PROBE), np.float32)
    except Exception as err:
        raise UnsupportedLayerError(f"{where}: its activation function cannot be evaluated ({err})") from None
    if np.allclose(y[_PROBE >= 0], _PROBE[_PROBE >= 0], atol=1e-6):
        alpha = y[0] / _PROBE[0]
        if np.allclose(y[_PROBE < 0], alpha * _PROBE[_PROBE < 0], atol=1e-6):
            return L.Act("leaky_relu", float(alpha)) if alpha else L.Act("relu")
    for name in ("relu6", "sigmoid", "tanh", "elu", "swish", "softplus", "hard_sigmoid", "hard_swish"):
        act = L.Act(name)
        if np.allclose(act(_PROBE), y, atol=1e-5):
            return act
    raise UnsupportedLayerError(f"{where}: its activation function is not one emc knows; use a named activation")


def _act(args, layer_name, acts):
    value = args.get("act")
    where = f"layer '{layer_name}'"
    if value is None:
        return L.LINEAR
    if isinstance(value, str):
        name = value.split(".")[-1]
        if ACT_NAMES.get(name) is None:
            raise UnsupportedLayerError(f"{where}: activation '{value}' is not supported; supported: "
                                        f"{', '.join(sorted(k for k, v in ACT_NAMES.items() if v))}")
        return L.Act(ACT_NAMES[name])
    if layer_name in acts:
        return _probe_callable(acts[layer_name], where)
    raise UnsupportedLayerError(f"{where}: its activation is a pickled Python function, which emc does not "
                                f"unpickle; rebuild the layer with a named activation (e.g. act=tf.nn.relu)")


# ---- handlers: fn(args, weights, inputs, graph, name, act) -> tensor name ------------------------------------
def _pads(args, graph, inputs, kernel, strides, dilation):
    padding = str(args.get("padding", "SAME")).upper()
    if padding == "VALID":
        return (0, 0, 0, 0)
    if padding != "SAME":
        raise UnsupportedLayerError(f"padding '{args.get('padding')}' is not supported; use 'SAME' or 'VALID'")
    h, w = graph[inputs[0]].shape[:2]
    return L.same_pads(h, kernel[0], strides[0], dilation[0]) + L.same_pads(w, kernel[1], strides[1], dilation[1])


def _geometry(args, graph, inputs):
    kernel = tuple(args.get("filter_size", (3, 3)))
    strides = tuple(args.get("strides", (1, 1)))
    dilation = tuple(args.get("dilation_rate", (1, 1)))
    return strides, dilation, _pads(args, graph, inputs, kernel, strides, dilation)


@handler("Conv2d")
def conv2d(args, w, inputs, graph, name, act):
    strides, dilation, pads = _geometry(args, graph, inputs)
    return graph.add(L.Conv2D(w["filters"], w.get("biases"), strides, dilation, pads, act), inputs, name)


@handler("DepthwiseConv2d")
def depthwise(args, w, inputs, graph, name, act):
    strides, dilation, pads = _geometry(args, graph, inputs)
    return graph.add(L.DepthwiseConv2D(w["filters"], w.get("biases"), strides, dilation, pads, act), inputs, name)


@handler("SeparableConv2d")
def separable(args, w, inputs, graph, name, act):
    strides, dilation, pads = _geometry(args, graph, inputs)
    dw = graph.add(L.DepthwiseConv2D(w["depthwise_kernel"], None, strides, dilation, pads), inputs,
                   name + "/depthwise")
    return graph.add(L.Conv2D(w["pointwise_kernel"], w.get("bias"), activation=act), [dw], name)


@handler("Dense")
def dense(args, w, inputs, graph, name, act):
    return graph.add(L.Dense(w["weights"], w.get("biases"), act), inputs, name)


@handler("BatchNorm", "BatchNorm2d")
def batch_norm(args, w, inputs, graph, name, act):
    get = (lambda k: None if k not in w else np.asarray(w[k]).reshape(-1))
    op = L.BatchNorm.from_stats(get("gamma"), get("beta"), get("moving_mean"), get("moving_var"),
                                float(args.get("epsilon", 1e-5)))
    out = graph.add(op, inputs, name)
    return out if act.is_linear else graph.add(L.Activation(act), [out], name + "/act")


def _pool(mode):
    def build(args, w, inputs, graph, name, act):
        size = tuple(args.get("filter_size", (3, 3)))
        strides = tuple(args.get("strides", (2, 2)))
        pads = _pads(args, graph, inputs, size, strides, (1, 1))
        return graph.add(L.Pool2D(mode, size, strides, pads), inputs, name)
    return build


handler("MaxPool2d")(_pool("max"))
handler("MeanPool2d")(_pool("avg"))


def _global(mode):
    def build(args, w, inputs, graph, name, act):
        return graph.add(L.GlobalPool2D(mode, args.get("keepdims", False)), inputs, name)
    return build


handler("GlobalMaxPool2d")(_global("max"))
handler("GlobalMeanPool2d")(_global("avg"))


@handler("ZeroPad2d")
def zero_pad(args, w, inputs, graph, name, act):
    p = args["padding"]
    if isinstance(p, int):
        pads = (p, p, p, p)
    else:
        (t, b), (l, r) = [(v, v) if isinstance(v, int) else tuple(v) for v in p]
        pads = (t, b, l, r)
    return graph.add(L.Pad2D(pads), inputs, name)


@handler("UpSampling2d")
def upsampling(args, w, inputs, graph, name, act):
    method = str(args.get("method", "bilinear")).split(".")[-1].lower()
    scale = args.get("scale", (2, 2))
    scale = (scale, scale) if isinstance(scale, (int, float)) else tuple(scale)
    if method not in ("nearest", "nearest_neighbor") or any(float(s) != int(s) for s in scale):
        raise UnsupportedLayerError(f"layer '{name}' (UpSampling2d): method '{method}' with scale {scale} is not "
                                    f"supported; use method='nearest' with an integer scale")
    return graph.add(L.Upsample2D(tuple(int(s) for s in scale)), inputs, name)


@handler("Flatten")
def flatten(args, w, inputs, graph, name, act):
    return graph.add(L.Flatten(), inputs, name)


@handler("Reshape")
def reshape(args, w, inputs, graph, name, act):
    shape = list(args["shape"])
    if shape and (shape[0] is None or shape[0] == -1) and len(shape) > 1:
        shape = shape[1:]      # TensorLayer keeps the batch axis in the target shape
    return graph.add(L.Reshape(shape), inputs, name)


@handler("Concat")
def concat(args, w, inputs, graph, name, act):
    axis = int(args.get("concat_dim", -1))
    return graph.add(L.Concat(axis - 1 if axis > 0 else axis), inputs, name)


ELEMENTWISE_FNS = {"add": "add", "subtract": "sub", "multiply": "mul", "maximum": "max", "minimum": "min"}


@handler("Elementwise")
def elementwise(args, w, inputs, graph, name, act):
    fn = str(args.get("combine_fn", "minimum")).split(".")[-1]
    if fn not in ELEMENTWISE_FNS:
        raise UnsupportedLayerError(f"layer '{name}' (Elementwise): combine_fn '{fn}' is not supported; use "
                                    f"{', '.join(sorted(ELEMENTWISE_FNS))}")
    out = graph.add(L.Elementwise(ELEMENTWISE_FNS[fn]), inputs, name)
    return out if act.is_linear else graph.add(L.Activation(act), [out], name + "/act")


@handler("Dropout")
def dropout(args, w, inputs, graph, name, act):
    return graph.add(L.Identity("Dropout"), inputs, name)


SUPPORTED_TENSORLAYER_LAYERS = sorted(HANDLERS) + ["Input"]
FUSED_ACT = {"Conv2d", "DepthwiseConv2d", "SeparableConv2d", "Dense"}


# ---- building the graph ----------------------------------------------------------------------------------------
def _node_name(ref):
    return ref[:-len("_node_0")] if isinstance(ref, str) and ref.endswith("_node_0") else ref


def _prev(entry):
    prev = entry.get("prev_layer")
    if prev is None:
        return []
    flat = []
    for item in prev:
        flat.extend(item if isinstance(item, (list, tuple)) else [item])
    return [_node_name(p) for p in flat]


def build_graph(config, weights, acts, source):
    arch = config["model_architecture"]
    problems = []
    for entry in arch:
        cls = entry.get("class")
        if cls not in HANDLERS and cls not in ("_InputLayer", "Input"):
            problems.append(f"'{entry.get('args', {}).get('name', '?')}' ({cls})")
        elif str(entry.get("args", {}).get("data_format", "channels_last")) == "channels_first":
            problems.append(f"'{entry['args'].get('name')}' ({cls}, data_format='channels_first')")
    if problems:
        raise UnsupportedLayerError(f"{source}: {len(problems)} layer(s) emc cannot convert: {', '.join(problems)}."
                                    f" Supported TensorLayer layers: emc.frontends.tensorlayer."
                                    f"SUPPORTED_TENSORLAYER_LAYERS ({', '.join(SUPPORTED_TENSORLAYER_LAYERS)})")
    graph = Graph(str(config.get("name", "tensorlayer_model")))
    tensors = {}
    for entry in arch:
        args, cls = entry.get("args", {}), entry["class"]
        name = args.get("name", cls)
        if cls in ("_InputLayer", "Input"):
            shape = list(args.get("shape", []))[1:]
            if not shape or any(d is None for d in shape):
                raise ModelLoadError(f"{source}: input '{name}' has shape {args.get('shape')}: emc needs a fixed "
                                     f"input shape such as [None, 32, 32, 3]")
            tensors[name] = graph.add_input(shape, name)
            continue
        try:
            inputs = [tensors[p] for p in _prev(entry)]
        except KeyError as err:
            raise ModelLoadError(f"{source}: layer '{name}' reads {err}, which is not defined before it") from None
        act = _act(args, name, acts)
        if cls not in FUSED_ACT | {"BatchNorm", "BatchNorm2d", "Elementwise"} and not act.is_linear:
            raise UnsupportedLayerError(f"layer '{name}' ({cls}): an act= on this layer type is not supported")
        try:
            tensors[name] = HANDLERS[cls](args, weights.get(name, {}), inputs, graph, name, act)
        except KeyError as err:
            raise ModelLoadError(f"{source}: layer '{name}' ({cls}) lacks its weight {err}") from None
    outputs = config.get("outputs")
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    graph.set_outputs([tensors[_node_name(o)] for o in outputs])
    inputs = config.get("inputs")
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    graph.inputs = [tensors[_node_name(i)] for i in inputs]
    return graph.validate()


def from_tensorlayer(model_or_path):
    """Build an emc.Graph from a TensorLayer static Model or a TensorLayer 2.x .h5 file."""
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        config, weights, acts = _read_h5(path)
        source = path
    else:
        config, weights, acts = _from_object(model_or_path)
        source = f"TensorLayer model '{config.get('name', '?')}'"
    return build_graph(config, weights, acts, source)
