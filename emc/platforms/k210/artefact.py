"""What the K210 platform returns: the kmodel bytes, an NNoM-style report, and the bit-exact simulation of it."""
import numpy as np

from ...artefact import Artefact
from ...errors import EmcError
from ...report import Report
from .lowering.ir import F32, KPU

REPORT_COLUMNS = ["#", "type", "unit", "layer", "output", "MACs", "mem in", "mem out", "weights"]


def _bytes(buf):
    return buf.alloc_size * 64 if buf.where == KPU else buf.nbytes


def build_report(name, lowering, layers, memory, kmodel, version=3):
    """Per device layer: index, type, KPU/CPU, graph layer, output shape, MACs, bytes in/out, weight bytes."""
    report = Report(f"K210 kmodel v{version} '{name}'", REPORT_COLUMNS)
    for layer in layers:
        out = layer.outputs[0]
        report.add(**{"#": layer.index, "type": layer.type_name, "unit": "KPU" if layer.on_kpu else "CPU",
                      "layer": layer.node, "output": "x".join(map(str, out.shape)) + f" {out.dtype}",
                      "MACs": layer.macs, "mem in": sum(_bytes(b) for b in layer.inputs),
                      "mem out": sum(_bytes(b) for b in layer.outputs), "weights": layer.weight_bytes})
    macs = sum(layer.macs for layer in layers)
    kpu_macs = sum(layer.macs for layer in layers if layer.on_kpu)
    report.totals.update({
        "layers": len(layers),
        "KPU RAM peak (bytes)": memory.kpu_lines * 64,
        "main memory (bytes)": memory.main_bytes,
        "file size (bytes)": len(kmodel),
        "MACs": macs,
        "MACs on the KPU": f"{100.0 * kpu_macs / macs:.1f}%" if macs else "-",
    })
    for node, act, method, error in lowering.act_errors:
        if method == "fit" or error > 1:
            report.notes.append(f"activation table of '{node}' ({act}, {method}): max error {error} LSB")
    exact = [f"{n} {act} {error}" for n, act, method, error in lowering.act_errors if method == "exact" and error <= 1]
    if exact:
        report.notes.append(f"piecewise-linear activation tables, exact up to rounding (layer, activation, max error "
                            f"in LSB): {'; '.join(exact)}")
    for out_name, buf, info in lowering.outputs:
        layout = "C x H x W (CHW order)" if info["layout"] == "chw" else "flat"
        report.notes.append(f"output '{out_name}' at main memory {buf.address}: {buf.count} {info['dtype']} values, "
                            f"{layout}")
    report.notes.extend(lowering.notes)
    return report


class K210Artefact(Artefact):
    """A kmodel (v3 or v4) for the K210: .kmodel bytes, .report, .simulate(float NHWC input), .run(uint8 image)."""

    platform = "k210"

    def __init__(self, name, kmodel, report, input_kind, input_shape, input_transform, outputs):
        super().__init__(name, {f"{name}.kmodel": kmodel}, report)
        self.kmodel = kmodel
        self.input_kind = input_kind              # 'kpu' (uint8 image) or 'float' (float vector)
        self.input_shape = tuple(input_shape)     # the graph's per-sample input shape
        self.input_transform = input_transform    # (scale, offset): float input = pixel * scale + offset
        self.outputs = outputs                    # [(graph name, shape, layout, dtype, quant, producer index)]
        self._model = None
        self.snr_targets = {}                     # KPU layer -> where its output is and which float tensor it is

    def measure(self, graph, x):
        """Add each KPU layer's output SNR against the float `graph` on inputs x (calibration data) to the report."""
        from .layer_snr import add_snr_to_report, layer_snr
        add_snr_to_report(self.report, layer_snr(self, graph, x))

    @property
    def model(self):
        """The kmodel parsed back by emc's reader."""
        if self._model is None:
            from .kmodel import load_kmodel
            self._model = load_kmodel(self.kmodel)
        return self._model

    def to_pixels(self, x):
        """Float NHWC input -> the uint8 camera pixels the device gets (inverse input transform, round, clip)."""
        scale, offset = self.input_transform
        return np.clip(np.round((np.asarray(x, np.float64) - offset) / scale), 0, 255).astype(np.uint8)

    def run(self, x, layout="hwc"):
        """Raw device outputs for a uint8 image (HWC; layout='chw' for device order) or a float vector input."""
        from .kmodel import run_kmodel
        return run_kmodel(self.model, x, layout=layout)

    def simulate(self, x):
        """What the K210 computes for the model's float input x (batch first), shaped like the graph's outputs."""
        x = np.asarray(x, np.float32)
        if x.shape == self.input_shape:
            x = x[None]
        if x.shape[1:] != self.input_shape:
            raise EmcError(f"simulate() takes the model's float input of per-sample shape {self.input_shape} "
                           f"(batch first); got {x.shape}")
        device_in = self.to_pixels(x) if self.input_kind == "kpu" else x.reshape(len(x), -1)
        if self.model.version == 4:                 # v4 outputs are read as stored: float32 or uint8 codes
            raw = [out if dtype == F32 else quant.dequantize(out) for out, (_, _, _, dtype, quant, _)
                   in zip(self.run(device_in), self.outputs)]
        elif all(dtype == F32 for _, _, _, dtype, _, _ in self.outputs):
            raw = self.run(device_in)
        else:
            raw = self._run_u8_outputs(device_in)
        return [self._shape(out, info) for out, info in zip(raw, self.outputs)]

    def _run_u8_outputs(self, device_in):
        """Outputs left as uint8 codes (dequantize=False): read them from the layer trace, sample by sample."""
        from .kmodel import run_kmodel
        per_output = [[] for _ in self.outputs]
        for sample in device_in:
            floats, steps = run_kmodel(self.model, sample, trace=True)
            by_layer = {index: array for index, _, array in steps}
            for k, (_, _, _, dtype, quant, producer) in enumerate(self.outputs):
                if dtype == F32:
                    per_output[k].append(floats[k])
                else:
                    per_output[k].append(quant.dequantize(np.asarray(by_layer[producer]).reshape(-1)))
        return [np.stack(p) for p in per_output]

    @staticmethod
    def _shape(flat, info):
        _, shape, layout, _, _, _ = info
        flat = np.asarray(flat, np.float32).reshape(len(flat), -1)
        if layout == "chw":
            h, w, c = shape
            return np.ascontiguousarray(flat.reshape(-1, c, h, w).transpose(0, 2, 3, 1))
        return flat.reshape((-1,) + tuple(shape))
