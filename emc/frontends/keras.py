"""Keras 3 (and tf.keras) models -> emc.Graph. A live model is walked here; a .keras / .h5 file is read by
keras_files without TensorFlow. Both hand each layer, as config dict + weights, to the handlers of keras_layers."""
import logging

from .. import layers as L
from ..errors import ModelLoadError, UnsupportedLayerError
from ..graph import Graph
from .keras_layers import (HANDLERS, SUPPORTED_KERAS_LAYERS, KerasLayer, config_problem,  # noqa: F401
                           convert_layer, partial_graph, raise_problems)

log = logging.getLogger(__name__)


def check_live_activation(activation):
    """A live layer's activation must be a Keras built-in function (a lambda cannot be converted)."""
    import keras
    if activation is None or isinstance(activation, str):
        return
    name = getattr(activation, "__name__", type(activation).__name__)
    try:
        builtin = keras.activations.get(name) is activation
    except (ValueError, TypeError):
        builtin = False
    if not builtin:
        raise UnsupportedLayerError(f"custom activation function '{name}' is not supported; use a built-in "
                                    f"one: {', '.join(sorted(L.ACTIVATIONS))}")


# ---- walking the functional graph ---------------------------------------------------------------------------
def _is_model(op):
    return hasattr(op, "inputs") and hasattr(op, "outputs") and hasattr(op, "layers")


def _handler_class(layer):
    """The Keras class name whose handler takes this live layer (its own class or a base class)."""
    for klass in type(layer).__mro__:
        if klass.__name__ in HANDLERS:
            return klass.__name__
    return None


def _static_problem(op):
    """Why no handler can take this live operation at all (None when one can)."""
    import keras
    cls = type(op).__name__
    if not isinstance(op, keras.layers.Layer):
        return f"a keras.ops call ({type(op).__module__}.{cls}), not a layer; use the keras.layers equivalent"
    return config_problem(_handler_class(op) or cls, {"data_format": getattr(op, "data_format", None)})


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
                check_live_activation(op.activation)   # a custom activation first: it may break get_config()
            spec = KerasLayer(_handler_class(op), op.name, _config(op), op.get_weights(),
                              type(op).__module__.startswith("tf_keras"))
            return convert_layer(spec, inputs, self.graph)
        except UnsupportedLayerError as err:
            self._problem(op, str(err))
            return self._stand_in(t)


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


def from_keras(model_or_path):
    """Build an emc.Graph from a Keras model or a .keras / .h5 file (every unsupported layer listed at once).
    A file is read with h5py alone: TensorFlow is imported only for a live Keras object."""
    if isinstance(model_or_path, (str, bytes)) or hasattr(model_or_path, "__fspath__"):
        from .keras_files import read_keras_file
        return read_keras_file(model_or_path)
    model = model_or_path
    inputs, outputs = _graph_entry(model)
    graph, problems = Graph(model.name), []
    walker = _Walker(graph, problems)
    out_names = [walker.tensor(t) for t in outputs]
    for t in inputs:       # an input no output depends on still belongs to the model's signature
        walker.tensor(t)
    raise_problems(model.name, problems, partial_graph(graph, out_names, walker.stand_ins) if problems else None)
    graph.inputs = [walker.names[id(t)] for t in inputs]
    graph.set_outputs(out_names)
    log.debug("converted Keras model '%s': %d layers", model.name, len(graph))
    return graph.validate()

