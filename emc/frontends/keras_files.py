"""Keras .h5 and .keras files -> emc.Graph with h5py and the JSON model config alone (TensorFlow never imported).

Layouts read: the legacy HDF5 file of Keras 3, tf.keras 2.x and standalone Keras 2 (`model_config` attribute,
`model_weights/<layer>/<weight names>`), and Keras 3's `.keras` zip (`config.json` + `model.weights.h5`, weights
under `layers/<snake_case class name>[_n]/vars/<i>`). Functional and Sequential models nest to any depth.
"""
import io
import json
import os
import re
import zipfile

import numpy as np

from ..errors import ModelLoadError, UnsupportedLayerError
from ..graph import Graph
from ..layers import same_pads
from ..layers.conv import conv_out_size
from .keras_layers import KerasLayer, config_problem, convert_layer, partial_graph, raise_problems

MODEL_CLASSES = ("Functional", "Model", "Sequential")


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _keras2(version):
    """True for a file written by Keras 2 / tf.keras (version '2.0.5', '2.4.0-tf' ...)."""
    match = re.match(r"\s*(\d+)", _text(version or ""))
    return bool(match) and int(match.group(1)) < 3


def snake_case(name):
    """Keras 3's naming.to_snake_case: how a .keras file names a layer's weight group after its class."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# ---- where a layer's weights are, in each layout ---------------------------------------------------------------
class LegacyScope:
    """Legacy .h5: a top-level layer's weights are its group's `weight_names`, in order; a layer inside a nested
    model takes the names of the top-level group whose owner part (`.../<layer>/<weight>`) is its own name, or,
    when none is, its name with a TensorFlow scope suffix (`conv_1/kernel:0` for `conv`, as Keras 2 wrote them)."""

    def __init__(self, group, path=(), known=frozenset()):
        self.group, self.path, self.known = group, path, known

    def children(self, entries, sequential):
        names = [entry_name(e) for e in entries]
        if not self.path:
            return {name: LegacyScope(self.group.get(name), (name,)) for name in names}
        known = self.known | set(names)
        return {name: LegacyScope(self.group, self.path + (name,), known) for name in names}

    def arrays(self):
        if self.group is None:
            return []
        names = [_text(n) for n in self.group.attrs.get("weight_names", [])]
        if len(self.path) > 1:
            owner = {n: "/".join(n.split("/")[-2:-1]) for n in names}
            mine = [n for n in names if owner[n] == self.path[-1]]
            if not mine:
                suffixed = re.compile(re.escape(self.path[-1]) + r"_\d+")
                mine = [n for n in names if suffixed.fullmatch(owner[n]) and owner[n] not in self.known]
            names = mine
        return [np.asarray(self.group[n]) for n in names]


class NativeScope:
    """.keras: weights under `layers/<snake_case class>[_n]/vars/<i>`, named by the class and the position in
    model.layers (a Sequential leaves its InputLayer out), as Keras' saving_lib names them."""

    def __init__(self, store, path=""):
        self.store, self.path = store, path

    def children(self, entries, sequential):
        slots, used = {}, {}
        for entry in entries:
            if sequential and entry["class_name"] == "InputLayer":
                continue
            slot = snake_case(entry["class_name"])
            if slot in used:
                used[slot] += 1
                slot = f"{slot}_{used[slot]}"
            else:
                used[slot] = 0
            slots[entry_name(entry)] = NativeScope(self.store, f"{self.path}/layers/{slot}".lstrip("/"))
        return slots

    def arrays(self):
        """The layer's own vars; a recurrent layer (SimpleRNN, GRU, LSTM) keeps them in its cell's."""
        group = self.store.get(f"{self.path}/vars")
        if (group is None or len(group) == 0) and self.store.get(f"{self.path}/cell/vars") is not None:
            group = self.store.get(f"{self.path}/cell/vars")
        return [] if group is None else [np.asarray(group[str(i)]) for i in range(len(group))]


# ---- the model config --------------------------------------------------------------------------------------------
def entry_name(entry):
    return entry.get("name") or entry["config"]["name"]


def _is_model(entry):
    config = entry.get("config")
    return entry["class_name"] in MODEL_CLASSES or isinstance(config, list) or (
        isinstance(config, dict) and "layers" in config)


def _refs(spec):
    """input_layers / output_layers -> [(layer, node, tensor)]: Keras 3 writes one flat triple for one tensor."""
    if spec and isinstance(spec[0], str):
        spec = [spec]
    return [tuple(ref[:3]) for ref in spec]


def _node_refs(node):
    """The (layer, node, tensor) references a call reads: Keras 3's {'args': ...} or Keras 2's [[l, n, t, {}]]."""
    if isinstance(node, dict):
        found = []

        def collect(value):
            if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
                found.append(tuple(value["config"]["keras_history"]))
            elif isinstance(value, (list, tuple)):
                for item in value:
                    collect(item)
        collect(node.get("args", []))
        return found
    return [tuple(ref[:3]) for ref in node]


def _input_shape(name, config):
    shape = config.get("batch_shape") or config.get("batch_input_shape") or config.get("build_input_shape")
    if shape is None:
        raise ModelLoadError(f"input '{name}' has no shape in the model config: build the model with "
                             f"keras.Input(shape=...) of a fixed shape and save it again")
    if any(d is None for d in shape[1:]):
        raise ModelLoadError(f"input '{name}' has a dynamic shape {tuple(shape)}: build the model with a fixed "
                             f"input shape, e.g. keras.Input(shape=(32, 32, 3))")
    return tuple(int(d) for d in shape[1:])


def _node_shift(config):
    """{nested model: 1} where tf.keras 2.4+ counted the nested model's own first call (from its Input) in the
    node indices that read it but left that call out of its inbound_nodes; seen as an index one past the list."""
    reads = _refs(config["output_layers"])
    for entry in config["layers"]:
        for node in entry.get("inbound_nodes") or []:
            reads += _node_refs(node)
    entries = {entry_name(e): e for e in config["layers"]}
    shift = {}
    for layer, node, _ in reads:
        entry = entries.get(layer)
        if entry is not None and _is_model(entry) and node >= len(entry.get("inbound_nodes") or []):
            shift[layer] = 1
    return shift


def _ops_call(entry, keras2):
    """Why an entry is a keras.ops call rather than a layer (Keras 3 saves both alike; ops.average is 'Average',
    like the merge layer): its module says so in a .keras file; in an .h5 its config lacks a layer's 'trainable'."""
    module = str(entry.get("module") or "")
    config = entry.get("config")
    if module.startswith(("keras.src.ops", "keras.ops")) or (
            not module and not keras2 and isinstance(config, dict) and "trainable" not in config):
        return (f"a keras.ops call ({module or 'keras.ops'}.{entry['class_name']}), not a layer; use the "
                f"keras.layers equivalent")
    return None


# Layers whose output has their input's shape: a stand-in after their failure needs no recorded shape.
SHAPE_KEEPING = {"LayerNormalization", "GroupNormalization", "UnitNormalization", "Activation", "Dropout",
                 "BatchNormalization", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "ThresholdedReLU"}


def _recorded_shapes(layers):
    """{(layer, node, index): per-sample shape} of the tensors a Keras 3 config records in its inbound nodes
    (Keras 2 configs record none): the output shapes of layers emc cannot convert."""
    shapes = {}

    def visit(value):
        if isinstance(value, dict):
            config = value.get("config")
            if value.get("class_name") == "__keras_tensor__" and isinstance(config, dict):
                history, shape = config.get("keras_history"), config.get("shape")
                if isinstance(history, list) and len(history) == 3 and isinstance(shape, list) and shape:
                    shapes[tuple(history)] = tuple(shape[1:])
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    for entry in layers:
        visit(entry.get("inbound_nodes") or [])
    return shapes


def _output_shape(cls, config, shape):
    """A layer's per-sample output shape from its config, for the layers that keep their input's shape and the
    channels-last convolutions (what files without recorded shapes need after a refused layer); else None."""
    if cls in SHAPE_KEEPING:
        return tuple(shape)
    if not cls.endswith(("Conv1D", "Conv2D", "DepthwiseConv2D")) or config.get("data_format") == "channels_first":
        return None
    rank = len(shape) - 1
    try:
        kernel, strides, dilation = (_per_axis(config.get(key, 1), rank)
                                     for key in ("kernel_size", "strides", "dilation_rate"))
        same = config.get("padding") == "same"
        spatial = [conv_out_size(n, k, s, d, *(same_pads(n, k, s, d) if same else (0, 0)))
                   for n, k, s, d in zip(shape[:-1], kernel, strides, dilation)]
        channels = config.get("filters") or shape[-1] * int(config.get("depth_multiplier", 1))
    except (TypeError, ValueError):
        return None
    return tuple(spatial) + (int(channels),) if min(spatial) > 0 else None


def _per_axis(value, rank):
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * rank


def _built_input_shape(entry):
    """The per-sample input shape a Keras 3 config records for a layer once built, or None."""
    shape = ((entry.get("build_config") or {}).get("input_shape")) if isinstance(entry, dict) else None
    return tuple(shape[1:]) if isinstance(shape, list) and shape and not isinstance(shape[0], list) else None


class _Builder:
    """Adds the layers of a model config to one graph, listing every layer it cannot convert."""

    def __init__(self, graph, keras2):
        self.graph, self.keras2, self.problems, self.stand_ins = graph, keras2, [], []

    def model(self, entry, scope, inputs=None):
        """Build a (possibly nested) model; returns (input tensor names, output tensor names)."""
        config = entry["config"]
        if entry["class_name"] == "Sequential" or isinstance(config, list):
            return self._sequential(config, scope, inputs)
        return self._functional(config, scope, inputs)

    def layer(self, entry, inputs, scope, out_shape=None):
        """The layer's output tensor; after a problem, a stand-in input of its output shape (out_shape as the
        file records it, else the input's for a shape-keeping layer) so the layers after it are still checked."""
        cls, name, config = entry["class_name"], entry_name(entry), entry["config"]
        reason = _ops_call(entry, self.keras2) or config_problem(cls, config)
        if reason is None and None in inputs:     # fed by a layer that could not be converted
            return None
        try:
            if reason is None:
                return convert_layer(KerasLayer(cls, name, config, scope.arrays(), self.keras2), inputs, self.graph)
        except UnsupportedLayerError as err:
            reason = str(err)
        self.problems.append(f"'{name}' ({cls}): {reason}")
        if out_shape is None and len(inputs) == 1 and inputs[0] is not None:
            out_shape = _output_shape(cls, config, self.graph[inputs[0]].shape)
        if out_shape is None or any(d is None for d in out_shape):
            return None
        stand_in = self.graph.add_input(tuple(out_shape), f"{name}~unconverted")
        self.stand_ins.append(stand_in)
        return stand_in

    def _call(self, entry, inputs, scope, out_shape=None):
        """One call of a layer, or of a nested model: the list of its outputs (None: not convertible)."""
        if not _is_model(entry):
            return [self.layer(entry, inputs, scope, out_shape)]
        return None if None in inputs else self.model(entry, scope, inputs)[1]

    def _sequential(self, config, scope, inputs):
        entries = config if isinstance(config, list) else config["layers"]
        slots = scope.children(entries, sequential=True)
        inputs = list(inputs or [])
        x, started = (inputs[0] if inputs else None), bool(inputs)
        for entry in entries:
            name, layer_config = entry_name(entry), entry["config"]
            is_input = entry["class_name"] == "InputLayer"
            if not started:       # the model's own input: an InputLayer, or the first layer's batch_input_shape
                own = is_input or layer_config.get("batch_input_shape") or layer_config.get("batch_shape")
                shaped = layer_config if own else (config if isinstance(config, dict) else {})
                x = self.graph.add_input(_input_shape(name, shaped), name if is_input else name + "_input")
                inputs, started = [x], True
            if is_input:
                continue
            following = entries[entries.index(entry) + 1:]
            outputs = self._call(entry, [x], slots[name], _built_input_shape(following[0]) if following else None)
            x = None if outputs is None else outputs[0]
        return inputs, [x]

    def _functional(self, config, scope, inputs):
        entries = {entry_name(e): e for e in config["layers"]}
        slots = scope.children(config["layers"], sequential=False)
        input_refs, output_refs = _refs(config["input_layers"]), _refs(config["output_layers"])
        seeded = dict(zip((ref[0] for ref in input_refs), inputs)) if inputs is not None else {}
        made, calls, shift, shapes = {}, {}, _node_shift(config), _recorded_shapes(config["layers"])

        def tensor(ref):
            layer, node, index = ref
            if ref not in made:
                entry = entries.get(layer)
                if entry is None:
                    raise ModelLoadError(f"the model config reads layer '{layer}', which it does not define")
                if entry["class_name"] == "InputLayer":
                    made[ref] = seeded[layer] if layer in seeded else \
                        self.graph.add_input(_input_shape(layer, entry["config"]), layer)
                else:
                    if (layer, node) not in calls:
                        nodes, at = entry.get("inbound_nodes") or [], node - shift.get(layer, 0)
                        if not 0 <= at < len(nodes):
                            raise ModelLoadError(f"the model config reads call {node} of layer '{layer}', "
                                                 f"which has {len(nodes)}")
                        reads = [tensor(r) for r in _node_refs(nodes[at])]
                        calls[(layer, node)] = self._call(entry, reads, slots[layer], shapes.get((layer, node, 0)))
                    made[ref] = None if calls[(layer, node)] is None else calls[(layer, node)][index]
            return made[ref]

        for ref in input_refs:
            tensor(ref)
        for name, entry in entries.items():       # in the config's (topological) order: keeps recursion shallow
            for node in range(len(entry.get("inbound_nodes") or [])):
                if entry["class_name"] != "InputLayer":
                    tensor((name, node + shift.get(name, 0), 0))
        return [tensor(r) for r in input_refs], [tensor(r) for r in output_refs]


# ---- opening the files ---------------------------------------------------------------------------------------
def _open(path):
    """(model config entry, weight scope, keras2, file handles to close) of a .keras or .h5 file."""
    import h5py
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise ModelLoadError(f"cannot load Keras model {path}: a zip without config.json is not a .keras "
                                     f"file; save it with model.save('model.keras')")
            config = json.loads(archive.read("config.json"))
            meta = json.loads(archive.read("metadata.json")) if "metadata.json" in names else {}
            weights = archive.read("model.weights.h5") if "model.weights.h5" in names else None
        store = h5py.File(io.BytesIO(weights), "r") if weights is not None else {}
        return config, NativeScope(store), _keras2(meta.get("keras_version", "3")), [store]
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise ModelLoadError(f"cannot load Keras model {path}: neither a .keras zip nor a readable HDF5 file "
                             f"({err})") from None
    raw = handle.attrs.get("model_config")
    if raw is None:
        handle.close()
        raise ModelLoadError(f"cannot load Keras model {path}: the file holds weights but no model config; save "
                             f"the whole model (model.save), not model.save_weights")
    root = handle["model_weights"] if "model_weights" in handle else handle
    version = handle.attrs.get("keras_version", root.attrs.get("keras_version", ""))
    return json.loads(_text(raw)), LegacyScope(root), _keras2(version), [handle]


def read_keras_file(path):
    """Build an emc.Graph from a Keras .keras or .h5 file (every unsupported layer listed at once)."""
    path = os.fsdecode(path)
    if not os.path.isfile(path):
        raise ModelLoadError(f"cannot load Keras model {path}: the file does not exist")
    try:
        entry, scope, keras2, handles = _open(path)
    except (ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ModelLoadError(f"cannot load Keras model {path}: {type(err).__name__}: {err}") from None
    try:
        name = entry_name(entry) if isinstance(entry.get("config"), dict) else "sequential"
        graph = Graph(name)
        builder = _Builder(graph, keras2)
        try:
            inputs, outputs = builder.model(entry, scope)
        except (KeyError, TypeError, IndexError) as err:
            raise ModelLoadError(f"cannot load Keras model {path}: unexpected model config "
                                 f"({type(err).__name__}: {err})") from None
        if builder.problems:
            raise_problems(name, builder.problems,
                           partial_graph(graph, list(outputs), builder.stand_ins) if outputs is not None else None)
    finally:
        for handle in handles:
            if hasattr(handle, "close"):
                handle.close()
    graph.inputs = list(inputs)
    graph.set_outputs(outputs)
    return graph.validate()
