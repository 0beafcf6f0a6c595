"""A tiny example platform, the one README's "Adding a platform" walks through.

The "device" runs vector networks (dense layers with relu or no activation) in float16. The artefact is
one JSON file holding the layer program and the float16 weights; simulate() computes in float16 as the
device would. Register it with `emc.platforms.register("example", this_module)`.
"""
import base64
import json

import numpy as np

from emc.artefact import Artefact
from emc.errors import PlatformLimitError
from emc.report import Report

PLATFORM = "example"
ACTIVATIONS = {"linear", "relu"}
TABLE = {}


def handles(kind):
    """Register a generator: (node, graph, problems) -> one program step, or None after noting a problem."""
    def wrap(fn):
        TABLE[kind] = fn
        return fn
    return wrap


def _f16(array):
    return base64.b64encode(np.asarray(array, np.float16).tobytes()).decode("ascii")


@handles("input")
def input_step(node, graph, problems):
    if len(node.shape) != 1:
        problems.append(f"layer '{node.name}' (input): shape {node.shape}; the example device takes vectors only -- "
                        f"flatten the input before converting")
        return None
    return {"op": "input", "size": node.shape[0]}


@handles("dense")
def dense_step(node, graph, problems):
    act = node.op.activation.name
    if act not in ACTIVATIONS:
        problems.append(f"layer '{node.name}' (dense): activation {act}; the example device has "
                        f"{', '.join(sorted(ACTIVATIONS))} -- apply {act} on the host")
        return None
    kernel = node.op.kernel
    bias = np.zeros(kernel.shape[1]) if node.op.bias is None else node.op.bias
    return {"op": "dense", "in": kernel.shape[0], "out": kernel.shape[1], "act": act,
            "kernel": _f16(kernel), "bias": _f16(bias)}


@handles("flatten")
def flatten_step(node, graph, problems):
    return {"op": "flatten"}


def convert(graph, calibration, quant_bit=8, input_transform=None, name="model", **options):
    """graph -> ExampleArtefact; every problem of the model is listed in one PlatformLimitError."""
    problems, program = [], []
    if options:
        problems.append(f"unknown option(s) {', '.join(sorted(options))}; the example platform takes name")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1 or graph.outputs[0] != list(graph.nodes)[-1]:
        problems.append("the example device runs a chain: one input, one output, the last layer")
    for node in graph:
        step = TABLE.get(node.op.kind)
        if step is None:
            problems.append(f"layer '{node.name}' ({node.op.kind}): not in the example platform's TABLE "
                            f"({', '.join(sorted(TABLE))})")
            continue
        if len(node.inputs) > 1 or (node.inputs and list(graph.nodes).index(node.inputs[0]) !=
                                    list(graph.nodes).index(node.name) - 1):
            problems.append(f"layer '{node.name}': the example device runs a chain of layers, not a DAG")
        entry = step(node, graph, problems)
        if entry is not None:
            program.append(dict(entry, name=node.name))
    if problems:
        raise PlatformLimitError(problems, platform=PLATFORM)
    report = Report(f"example device '{name}'", ["#", "layer", "op", "output", "weights (bytes)"])
    for i, step in enumerate(program):
        out = step.get("out", step.get("size", ""))
        report.add(**{"#": i, "layer": step["name"], "op": step["op"], "output": out,
                      "weights (bytes)": 2 * (step["in"] * step["out"] + step["out"]) if step["op"] == "dense" else 0})
    report.totals["weights (bytes)"] = sum(r["weights (bytes)"] for r in report.rows)
    text = json.dumps({"name": name, "program": program}, indent=1, sort_keys=True)
    return ExampleArtefact(name, {f"{name}.json": text.encode("utf-8")}, report, program,
                           graph[graph.outputs[0]].shape)


class ExampleArtefact(Artefact):
    """One JSON file; simulate() runs the program in float16."""

    platform = PLATFORM

    def __init__(self, name, files, report, program, output_shape):
        super().__init__(name, files, report)
        self.program = program
        self.output_shape = tuple(output_shape)

    def simulate(self, x):
        h = np.asarray(x, np.float16).reshape(len(x), -1)
        for step in self.program:
            if step["op"] != "dense":
                continue
            kernel = np.frombuffer(base64.b64decode(step["kernel"]), np.float16).reshape(step["in"], step["out"])
            bias = np.frombuffer(base64.b64decode(step["bias"]), np.float16)
            h = (h @ kernel + bias).astype(np.float16)
            if step["act"] == "relu":
                h = np.maximum(h, np.float16(0))
        return [h.astype(np.float32).reshape((-1,) + self.output_shape)]
