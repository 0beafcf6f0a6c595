"""emc.Graph: a DAG of float ops in NHWC with static per-sample shapes, and its numpy executor."""
import copy as _copy

import numpy as np

from .errors import GraphError
from .layers import Input


def preact_name(name):
    """Key under which calibration sees the pre-activation output of a node with a fused activation."""
    return name + ":preact"


class Node:
    """One op in the graph. Its single output tensor has the node's name and a per-sample shape."""

    __slots__ = ("name", "op", "inputs", "shape")

    def __init__(self, name, op, inputs, shape):
        self.name, self.op, self.inputs, self.shape = name, op, list(inputs), tuple(shape)

    def __repr__(self):
        return f"Node({self.name!r}, {self.op!r}, inputs={self.inputs}, shape={self.shape})"


class Graph:
    """Nodes are kept in topological order (a node is added after its inputs)."""

    def __init__(self, name="model"):
        self.name = name
        self.nodes = {}
        self.inputs = []
        self.outputs = []

    # ---- building -------------------------------------------------------------------------------------
    def add(self, op, inputs=(), name=None):
        """Add an op fed by the named tensors; returns the new node's name (unique)."""
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        name = self._unique(name or op.kind)
        for src in inputs:
            if src not in self.nodes:
                raise GraphError(f"layer '{name}' reads '{src}', which is not (yet) in the graph")
        if op.arity is not None and len(inputs) != op.arity:
            raise GraphError(f"layer '{name}' ({op.kind}) takes {op.arity} input(s), got {len(inputs)}")
        if op.arity is None and len(inputs) < 2:
            raise GraphError(f"layer '{name}' ({op.kind}) takes two or more inputs, got {len(inputs)}")
        op.check_finite(name)
        try:
            shape = op.output_shape([self.nodes[s].shape for s in inputs])
        except GraphError as err:
            raise GraphError(f"layer '{name}': {err}") from None
        self.nodes[name] = Node(name, op, inputs, shape)
        if isinstance(op, Input):
            self.inputs.append(name)
        return name

    def add_input(self, shape, name=None):
        return self.add(Input(shape), (), name or "input")

    def set_outputs(self, names):
        names = [names] if isinstance(names, str) else list(names)
        for name in names:
            if name not in self.nodes:
                raise GraphError(f"output '{name}' is not a layer of the graph")
        self.outputs = names

    def _unique(self, base):
        if base not in self.nodes:
            return base
        i = 1
        while f"{base}_{i}" in self.nodes:
            i += 1
        return f"{base}_{i}"

    # ---- queries ----------------------------------------------------------------------------------------
    def __iter__(self):
        return iter(self.nodes.values())

    def __len__(self):
        return len(self.nodes)

    def __getitem__(self, name):
        try:
            return self.nodes[name]
        except KeyError:
            raise GraphError(f"no layer named '{name}' in graph '{self.name}'") from None

    def consumers(self, name):
        return [n.name for n in self.nodes.values() if name in n.inputs]

    @property
    def input_shapes(self):
        return [self.nodes[n].shape for n in self.inputs]

    @property
    def output_shapes(self):
        return [self.nodes[n].shape for n in self.outputs]

    # ---- editing (used by passes) -----------------------------------------------------------------------
    def remove(self, name, replacement=None):
        """Delete a node; its consumers and graph outputs read `replacement` (default: its only input)."""
        node = self[name]
        if replacement is None:
            if len(node.inputs) != 1:
                raise GraphError(f"cannot remove '{name}': it has {len(node.inputs)} inputs and no replacement")
            replacement = node.inputs[0]
        for other in self.nodes.values():
            other.inputs = [replacement if s == name else s for s in other.inputs]
        self.outputs = [replacement if s == name else s for s in self.outputs]
        del self.nodes[name]
        if name in self.inputs:
            self.inputs.remove(name)

    def replace_op(self, name, op):
        """Swap a node's op, keeping its inputs; re-infers the shape (it must stay the same)."""
        node = self[name]
        shape = op.output_shape([self.nodes[s].shape for s in node.inputs])
        if tuple(shape) != node.shape:
            raise GraphError(f"replacing the op of '{name}' changes its shape {node.shape} -> {shape}")
        op.check_finite(name)
        node.op = op

    def copy(self):
        return _copy.deepcopy(self)

    def validate(self):
        """Re-check order, arity and shapes of every node; returns self."""
        seen = set()
        for node in self.nodes.values():
            for src in node.inputs:
                if src not in seen:
                    raise GraphError(f"layer '{node.name}' reads '{src}' before it is computed")
            shape = node.op.output_shape([self.nodes[s].shape for s in node.inputs])
            if tuple(shape) != node.shape:
                raise GraphError(f"layer '{node.name}': stored shape {node.shape} != inferred {tuple(shape)}")
            seen.add(node.name)
        if not self.outputs:
            raise GraphError(f"graph '{self.name}' has no outputs")
        return self

    # ---- execution --------------------------------------------------------------------------------------
    def _prepare_inputs(self, x):
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(self.inputs):
            raise GraphError(f"graph '{self.name}' has {len(self.inputs)} input(s), got {len(xs)} array(s)")
        out = []
        for name, value in zip(self.inputs, xs):
            value = np.asarray(value, dtype=np.float32)
            shape = self.nodes[name].shape
            if value.shape == shape:
                value = value[None]
            if value.shape[1:] != shape:
                raise GraphError(f"input '{name}' expects per-sample shape {shape} (batch first), "
                                 f"got an array of shape {value.shape}")
            out.append(value)
        if len({v.shape[0] for v in out}) != 1:
            raise GraphError("all inputs must have the same batch size")
        return out

    def run(self, x, observer=None, batch_size=32):
        """Run the float graph on x (one NHWC array or a list, batch axis first; a single sample is accepted).

        Returns the list of outputs, each with a batch axis. `observer(name, array)` is called with every
        node's output of every batch (used by calibration and layer-by-layer comparison).
        """
        xs = self._prepare_inputs(x)
        total = xs[0].shape[0]
        pieces = [[] for _ in self.outputs]
        for start in range(0, total, batch_size):
            batch = [v[start:start + batch_size] for v in xs]
            for i, value in enumerate(self._run_batch(batch, observer)):
                pieces[i].append(value)
        return [np.concatenate(p, axis=0) if len(p) > 1 else p[0] for p in pieces]

    def _run_batch(self, xs, observer):
        last_use = {}
        for node in self.nodes.values():
            for src in node.inputs:
                last_use[src] = node.name
        keep = set(self.outputs)
        values = dict(zip(self.inputs, xs))
        for node in self.nodes.values():
            if node.name not in values:
                values[node.name] = self._forward(node, [values[s] for s in node.inputs], observer)
            if observer is not None:
                observer(node.name, values[node.name])
            for src in set(node.inputs):
                if last_use.get(src) == node.name and src not in keep:
                    del values[src]
        return [values[name] for name in self.outputs]

    @staticmethod
    def _forward(node, inputs, observer):
        """One op; with an observer, ops with a fused activation also report their pre-activation output."""
        act = node.op.attrs.get("activation")
        if observer is None or act is None or act.is_linear or not hasattr(node.op, "forward_linear"):
            return node.op.forward(inputs)
        linear = node.op.forward_linear(inputs)
        observer(preact_name(node.name), linear)
        return act(linear)

    # ---- reporting --------------------------------------------------------------------------------------
    def rows(self):
        """Per-layer facts: name, op, output shape, parameters, MACs, inputs."""
        rows = []
        for node in self.nodes.values():
            in_shapes = [self.nodes[s].shape for s in node.inputs]
            rows.append({"name": node.name, "op": node.op.kind, "detail": node.op.describe(),
                         "shape": node.shape, "params": node.op.params(),
                         "macs": int(node.op.macs(in_shapes, node.shape)), "inputs": list(node.inputs)})
        return rows

    def summary(self):
        rows = self.rows()
        lines = [f"Graph '{self.name}': {len(rows)} layers, inputs {self.inputs}, outputs {self.outputs}",
                 f"{'#':>3}  {'name':<28} {'op':<18} {'detail':<24} {'output':<16} {'params':>9} {'MACs':>12}"]
        for i, r in enumerate(rows):
            shape = "x".join(map(str, r["shape"]))
            lines.append(f"{i:>3}  {r['name'][:28]:<28} {r['op']:<18} {r['detail'][:24]:<24} {shape:<16} "
                         f"{r['params']:>9,} {r['macs']:>12,}")
        lines.append(f"total: {sum(r['params'] for r in rows):,} parameters, {sum(r['macs'] for r in rows):,} MACs")
        return "\n".join(lines)

    def __str__(self):
        return self.summary()
