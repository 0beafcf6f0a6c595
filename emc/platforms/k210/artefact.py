"""What the K210 platform returns: the kmodel bytes, an NNoM-style report, and the bit-exact simulation of it."""
import logging

import numpy as np

from ...artefact import Artefact
from ...errors import EmcError
from ...report import Report
from .lowering.ir import F32, KPU

# MACs are the multiply-accumulates of weighted layers (convolutions, dense); pools and element-wise ops are not
# counted, in the conversion report and in `emc inspect` of the file alike.
MAC_TYPES = {"K210_CONV", "FULLY_CONNECTED", "kpu_conv2d", "matmul", "quantized_matmul", "conv2d", "cpu_conv2d",
             "QUANTIZED_CONV2D", "CONV2D", "cpu_quantized_conv2d", "cpu_quantized_depthwise_conv2d", "DEPTHWISE_CONV2D"}
UNPADDING = ("K210_REMOVE_PADDING", "strided_slice")
log = logging.getLogger(__name__)
REPORT_COLUMNS = ["#", "type", "unit", "layer", "path", "output", "MACs", "mem in", "mem out", "weights"]


def _bytes(buf):
    return buf.alloc_size * 64 if buf.where == KPU else buf.nbytes


METHODS = {"exact": "piecewise-linear form", "fit": "fitted curve"}


def activation_notes(act_errors):
    """The KPU activation tables folded to what a user acts on: how many are within 1 LSB of the float activation,
    how many are not and the worst of those (the full list is a debug message)."""
    notes = []
    good = [e for e in act_errors if e[3] <= 1]
    bad = sorted((e for e in act_errors if e[3] > 1), key=lambda e: -e[3])
    for node, act, method, error in act_errors:
        log.debug("activation table of '%s' (%s, %s): max error %d LSB", node, act, METHODS.get(method, method), error)
    if bad:
        node, act, method, error = bad[0]
        why = ("the KPU's table cannot encode its slope at these scales -- check the calibrated ranges"
               if method == "exact" else "the curve is approximated by the KPU's 16 linear pieces")
        notes.append(f"{len(bad)} activation table(s) deviate from the float activation by more than 1 LSB; worst "
                     f"'{node}' ({act}, {METHODS.get(method, method)}): {error} LSB ({why}; all with --debug)")
    if good:
        notes.append(f"{len(good)} activation table(s) within 1 LSB of the float activation (rounding only)")
    return notes


CONVERSIONS = {"DEQUANTIZE", "QUANTIZE", "K210_UPLOAD", "dequantize", "quantize", "kpu_upload"}


def graph_layer(name, graph):
    """The graph layer a device layer works for: its name, or the name before the last ':suffix' (':pad', ':sel',
    ':sum' ...) that the lowering gives the helper layers of a node."""
    while name not in graph.nodes and ":" in name:
        name = name.rsplit(":", 1)[0]
    return name


def _selects(kpu_layer, node):
    """Whether a KPU conv computed the full-size map of a strided graph layer (its rows / columns picked later)."""
    out = kpu_layer.outputs[0].shape
    strides = node.op.attrs.get("strides", (1, 1)) if node is not None else (1, 1)
    if max(strides) == 1 or len(out) != 3 or len(node.shape) != 3:
        return False
    return out[1] * out[2] > node.shape[0] * node.shape[1]


def layer_paths(layers, graph):
    """{graph layer: how the device runs it} -- 'KPU', 'KPU stride-2 via pool 6' (nncase's shifted pool, one row
    dropped on the CPU), 'KPU + pool' (a pool fused into the conv), 'KPU + CPU selection' (the full-size map
    computed, every other row and column picked on the CPU), 'CPU float' or 'CPU quantized' (by what the layer's
    own CPU op computes in, not the (de)quantisation around it)."""
    steps = {}
    for layer in layers:
        steps.setdefault(graph_layer(layer.node, graph), []).append(layer)
    paths = {}
    for name, group in steps.items():
        kpu = [layer for layer in group if layer.on_kpu]
        pools = {layer.params.get("pool", 0) for layer in kpu}
        node = graph.nodes.get(name)
        own = [layer for layer in group if layer.type_name not in CONVERSIONS] or group
        if kpu and 6 in pools:
            paths[name] = "KPU stride-2 via pool 6"
        elif any(_selects(layer, node) for layer in kpu):
            paths[name] = "KPU + CPU selection"
        elif kpu:
            paths[name] = "KPU + pool" if pools - {0} else "KPU"
        elif any(buf.dtype == F32 for layer in own for buf in layer.outputs):
            paths[name] = "CPU float"
        else:
            paths[name] = "CPU quantized"
    return paths


def build_report(name, lowering, layers, memory, kmodel, version, graph):
    """Per device layer: index, type, KPU/CPU, graph layer and the path it took, output shape, MACs, bytes in/out,
    weight bytes."""
    report = Report(f"K210 kmodel v{version} '{name}'", REPORT_COLUMNS)
    paths = layer_paths(layers, graph)
    for layer in layers:
        out = layer.outputs[0]
        layer_macs = layer.macs if layer.type_name in MAC_TYPES else 0
        report.add(**{"#": layer.index, "type": layer.type_name, "unit": "KPU" if layer.on_kpu else "CPU",
                      "layer": layer.node, "path": paths[graph_layer(layer.node, graph)],
                      "output": "x".join(map(str, out.shape)) + f" {out.dtype}",
                      "MACs": layer_macs, "mem in": sum(_bytes(b) for b in layer.inputs),
                      "mem out": sum(_bytes(b) for b in layer.outputs), "weights": layer.weight_bytes})
    macs = sum(row["MACs"] for row in report.rows)
    kpu_macs = sum(row["MACs"] for row in report.rows if row["unit"] == "KPU")
    report.totals.update({
        "layers": len(layers),
        "KPU RAM peak (bytes)": memory.kpu_lines * 64,
        "main memory (bytes)": memory.main_bytes,
        "file size (bytes)": len(kmodel),
        "MACs": macs,
        "MACs on the KPU": f"{100.0 * kpu_macs / macs:.1f}%" if macs else "-",
    })
    report.notes.extend(activation_notes(lowering.act_errors))
    for out_name, buf, info in lowering.outputs:
        layout = "C x H x W (CHW order)" if info["layout"] == "chw" else "flat"
        report.notes.append(f"output '{out_name}' at main memory {buf.address}: {buf.count} {info['dtype']} values, "
                            f"{layout}")
    report.notes.extend(lowering.notes)
    return report


def device_tensors(lowering, layers, graph):
    """{device layer index: the graph tensor its output holds, or None} -- from the lowering's values, whose
    buffers are the graph tensors on the device (a pre-activation or padded intermediate has none)."""
    owner = {}
    for value in lowering.values.values():
        if value.name in graph.nodes:
            for buf in value.forms.values():
                owner.setdefault(id(buf), value.name)
    tensors = {layer.index: owner.get(id(layer.outputs[0])) if layer.outputs else None for layer in layers}
    producer = {id(buf): layer.index for layer in layers for buf in layer.outputs}
    for layer in layers:            # a dense layer on the KPU computes a padded map; its unpadding names it
        if layer.type_name in UNPADDING and tensors[layer.index] and layer.inputs:
            source = producer.get(id(layer.inputs[0]))
            if source is not None and tensors[source] is None:
                tensors[source] = tensors[layer.index]
    return tensors


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
        self.layer_tensors = {}                   # device layer index -> graph tensor it computes (or None)
        self._model = None
        self.snr_targets = {}                     # KPU layer -> where its output is and which float tensor it is
        self.channel_scales = {}                  # graph tensor -> per-channel factor its device map carries

    def measure(self, graph, x):
        """Add each KPU layer's output SNR against the float `graph` on inputs x (calibration data) to the report."""
        from .layer_snr import add_snr_to_report, layer_snr
        add_snr_to_report(self.report, layer_snr(self, graph, x))

    def save(self, path):
        """Write the kmodel, and next to it `<file>.emc.json` (report, layer -> graph tensor map) for emc's own
        inspect / compare; the kmodel bytes are exactly what the chip loads."""
        from ... import sidecar
        written = super().save(path)
        doc = sidecar.document("k210", self.name, self.report, self.layer_tensors, self.kmodel,
                               kmodel_version=self.model.version, input_transform=self.input_transform,
                               outputs=[{"tensor": o[0], "shape": list(o[1]), "layout": o[2]} for o in self.outputs])
        return written + [sidecar.write(sidecar.kmodel_sidecar_path(written[0]), doc)]

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
