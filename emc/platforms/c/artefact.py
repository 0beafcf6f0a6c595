"""What the C platform returns: generated C sources, a report, the Python twin of the integer arithmetic
(simulate / simulate_int8) and the real C built with the host compiler (compile / predict)."""
import ctypes
import logging
import os

import numpy as np

from ...artefact import Artefact
from ...errors import EmcError
from ...fileio import check_not_input, write_folder_atomic
from ...report import Report
from .build import build_shared
from .cmsis import widened_weight_bytes
from .codegen import c_identifier
from .columns import column_bytes
from .kernels import KERNELS

log = logging.getLogger(__name__)
REPORT_COLUMNS = ["#", "layer", "kernel", "output", "MACs", "weights", "buffer", "in place"]


def build_report(title, program, plan, notes=()):
    """Per kernel call: graph layer, kernel, output shape, MACs, constant bytes and where the output lives."""
    report = Report(title, REPORT_COLUMNS)
    for i, step in enumerate(program.steps):
        out = program.tensors[step.output]
        region, offset = plan.where(step.output)
        shared = plan.roots[step.output] != step.output or (
            region == "arena" and any(plan.where(s) == (region, offset) for s in step.inputs))
        report.add(**{"#": i, "layer": step.node, "kernel": step.kind, "output": out.shape, "MACs": step.macs,
                      "weights": step.weight_bytes, "buffer": f"{region}@{offset}+{out.size}",
                      "in place": bool(shared)})
    report.totals.update({
        "kernel calls": len(program.steps),
        "MACs": program.macs,
        "weights (const bytes)": program.weight_bytes,
        "arena (bytes)": plan.arena_bytes,
        "conv column buffer (bytes)": column_bytes(program.steps),
        "CMSIS-NN builds: extra flash for widened conv weights (bytes)": widened_weight_bytes(program.steps),
        "live-tensor lower bound (bytes)": plan.lower_bound,
        "input buffer (bytes)": plan.input_bytes,
        "output buffer (bytes)": plan.output_bytes,
    })
    report.notes.extend(notes)
    return report


class CArtefact(Artefact):
    """A generated C99 deployment: files (.h/.c + runtime), .report, .simulate(x), .compile(), .predict(x)."""

    platform = "c"

    def __init__(self, name, files, report, program, plan):
        super().__init__(c_identifier(name), files, report)
        self.program = program
        self.plan = plan
        self._lib = None

    # ---- shapes and quantisation of the model's inputs and outputs -------------------------------------------------
    @property
    def input_tensors(self):
        return [self.program.tensors[n] for n in self.program.inputs]

    @property
    def output_tensors(self):
        return [self.program.tensors[n] for n in self.program.outputs]

    def _batched(self, x, dtype):
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(self.input_tensors):
            raise EmcError(f"model '{self.name}' has {len(self.input_tensors)} input(s), got {len(xs)} array(s)")
        out = []
        for value, t in zip(xs, self.input_tensors):
            value = np.asarray(value, dtype)
            if value.shape == t.shape:
                value = value[None]
            if value.shape[1:] != t.shape:
                raise EmcError(f"input '{t.name}' expects per-sample shape {t.shape} (batch first), got an array "
                               f"of shape {value.shape}")
            out.append(value)
        if len({v.shape[0] for v in out}) != 1:
            raise EmcError("all inputs must have the same batch size")
        return out

    def quantize_inputs(self, x):
        """Float inputs -> int8 codes, rounding exactly as the generated <name>_quantize_input does."""
        return [t.quantize(v) for t, v in zip(self.input_tensors, self._batched(x, np.float32))]

    def dequantize_outputs(self, qs):
        return [t.dequantize(q) for t, q in zip(self.output_tensors, qs)]

    # ---- the Python twin -------------------------------------------------------------------------------------------------
    def simulate_int8(self, q, observer=None):
        """The int8 outputs the generated C computes for int8 input codes (batch first); a list per output."""
        values = dict(zip(self.program.inputs, self._batched(q, np.int8)))
        n = len(next(iter(values.values())))
        tensors = self.program.tensors
        for name, t in tensors.items():
            if t.view_of is not None and t.view_of in values:
                values[name] = values[t.view_of].reshape((n,) + t.shape)
        for step in self.program.steps:
            xs = [self._value(values, name, n) for name in step.inputs]
            out = tensors[step.output]
            values[step.output] = KERNELS[step.kind](step, xs, out.shape).reshape((n,) + out.shape).astype(np.int8)
            if observer is not None:
                observer(step, values[step.output])
        return [self._value(values, name, n) for name in self.program.outputs]

    def _value(self, values, name, n):
        if name not in values:
            t = self.program.tensors[name]
            values[name] = values[t.view_of].reshape((n,) + t.shape)
        return values[name]

    def simulate(self, x):
        """Float input (batch first) -> the float outputs the device computes, shaped like the graph's outputs."""
        return self.dequantize_outputs(self.simulate_int8(self.quantize_inputs(x)))

    # ---- the real C ---------------------------------------------------------------------------------------------------------
    def compile(self, extra_flags=()):
        """Build the generated C with the host compiler into a shared library (cached); returns its path."""
        path = build_shared(self.files, self.name, extra=tuple(extra_flags))
        lib = ctypes.CDLL(path)
        for suffix, argtype in (("run", ctypes.c_int8), ("run_float", ctypes.c_float)):
            fn = getattr(lib, f"{self.name}_{suffix}")
            fn.argtypes = [ctypes.POINTER(argtype), ctypes.POINTER(argtype)]
            fn.restype = ctypes.c_int
        self._lib = lib
        return path

    def _call(self, suffix, inputs, dtype, ctype):
        if self._lib is None:
            self.compile()
        fn = getattr(self._lib, f"{self.name}_{suffix}")
        flat = np.ascontiguousarray(np.concatenate([v.reshape(len(v), -1) for v in inputs], axis=1), dtype)
        out = np.zeros((len(flat), self.plan.output_bytes), dtype)
        for i in range(len(flat)):
            rc = fn(flat[i].ctypes.data_as(ctypes.POINTER(ctype)), out[i].ctypes.data_as(ctypes.POINTER(ctype)))
            if rc != 0:
                raise EmcError(f"{self.name}_{suffix} returned {rc}")
        results, offset = [], 0
        for t in self.output_tensors:
            results.append(out[:, offset:offset + t.size].reshape((len(flat),) + t.shape).copy())
            offset += t.size
        return results

    def predict_int8(self, q):
        """int8 outputs of the compiled <name>_run for int8 input codes (batch first)."""
        return self._call("run", self._batched(q, np.int8), np.int8, ctypes.c_int8)

    def predict(self, x):
        """Float outputs of the compiled <name>_run_float (the C quantises, runs int8, dequantises)."""
        return self._call("run_float", self._batched(x, np.float32), np.float32, ctypes.c_float)

    # ---- files ----------------------------------------------------------------------------------------------------------------
    def save(self, path):
        """Write every file (model .h/.c and the kernel library) as the folder `path`, swapped in whole."""
        path = os.fspath(path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise EmcError(f"{path} is a file; the C platform writes a folder of sources")
        check_not_input(path, getattr(self, "sources", ()))
        import json

        from ... import sidecar
        tensors = {i: step.node for i, step in enumerate(self.program.steps)}
        doc = sidecar.document(self.platform, self.name, self.report, tensors)
        files = dict(self.files)
        files[self.name + sidecar.SUFFIX] = json.dumps(doc, indent=1) + "\n"
        return write_folder_atomic(path, files)
