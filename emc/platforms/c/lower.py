"""Graph -> int8 device program: walk the optimized graph in order and call the TABLE handler of each op.

Handlers report what the C platform cannot take through ctx.problem() and carry on, so every problem of a
model is listed at once before anything is written.
"""
import logging

import numpy as np

from .ir import QTensor, Step
from .quantize import activation_params

log = logging.getLogger(__name__)


class Lowering:
    """The state the TABLE handlers share: graph, calibration ranges, int8 tensors, steps and problems."""

    def __init__(self, graph, calibration, table, input_transform=None):
        self.graph = graph
        self.ranges = getattr(calibration, "ranges", calibration)
        self.table = table
        self.input_transform = input_transform
        self.tensors = {}        # tensor name -> QTensor (graph tensors plus extra ones such as pre-activations)
        self.steps = []
        self.problems = []
        self.notes = []

    # ---- driving ------------------------------------------------------------------------------------------
    def run(self):
        for node in self.graph:
            handler = self.table.get(node.op.kind)
            if handler is None:
                self.problem(node, f"no int8 C kernel for op '{node.op.kind}'; supported ops: "
                                   f"{', '.join(sorted(self.table))}; replace the layer or fold it into another")
                continue
            if any(src not in self.tensors for src in node.inputs):
                continue                    # an input already failed and was reported
            handler(self, node)
        return self

    def problem(self, node, text):
        self.problems.append(f"layer '{node.name}' ({node.op.kind}): {text}")

    # ---- tensors --------------------------------------------------------------------------------------------
    def tensor(self, name):
        return self.tensors[name]

    def range(self, name, node=None):
        """Calibrated (lo, hi) of a tensor, or None (with a problem) when the calibration lacks it."""
        value = self.ranges.get(name) if hasattr(self.ranges, "get") else None
        if value is None:
            if node is not None:
                self.problem(node, f"the calibration has no range for tensor '{name}'; calibrate the optimized "
                                   f"graph with emc.calibrate.calibrate (emc.convert does it)")
            return None
        lo, hi = float(value[0]), float(value[1])
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
            if node is not None:
                self.problem(node, f"invalid calibrated range ({lo}, {hi}) for tensor '{name}'")
            return None
        return lo, hi

    def calibrated(self, node, name=None, shape=None):
        """A new tensor quantised from the calibrated range of `name` (default: the node's output)."""
        key = name or node.name
        rng = self.range(key, node)
        if rng is None:
            rng = (-1.0, 1.0)
        scale, zero_point = activation_params(*rng)
        return self.add_tensor(QTensor(key, shape or node.shape, scale, zero_point))

    def same_quant(self, node, src, shape=None):
        """A new tensor for the node's output with the quantisation of tensor `src` (max pool, pad, crop ...)."""
        return self.add_tensor(QTensor(node.name, shape or node.shape, src.scale, src.zero_point))

    def view(self, node, src):
        """The node's output is src's bytes unchanged (flatten, reshape, identity)."""
        base = src.view_of or src.name
        return self.add_tensor(QTensor(node.name, node.shape, src.scale, src.zero_point, view_of=base))

    def add_tensor(self, tensor):
        self.tensors[tensor.name] = tensor
        return tensor

    def emit(self, kind, node, inputs, output, params=None, arrays=None, macs=0, inplace=False):
        step = Step(kind, node.name, [t.name for t in inputs], output.name, params, arrays, macs, inplace)
        self.steps.append(step)
        return step
