"""Each KPU layer's output SNR against the float graph on calibration data, for the K210 conversion report.

The SNR is end to end: the device's codes at that layer (after every earlier layer's error) against the float
tensor, so a low value says where the model loses accuracy, not only which layer adds it.
"""
import numpy as np

from ...graph import preact_name
from .lowering.ir import U8

SNR_SAMPLES = 8          # calibration samples simulated for the report
LOW_SNR_DB = 30.0        # layers under this are named in a note


def snr_targets(layers, graph):
    """{KPU layer index: (index of the layer whose uint8 output holds it, graph tensor, Quant, every other row and
    column?)}: for each KPU conv, the first layer from it up to the next KPU conv that writes what its graph node (or
    the pool fused into it, or the logits before a softmax) computes, in device order -- a stride-2 selection or a
    crop may come first; else the conv's own full-size map of a stride-2 depthwise (left-top picked)."""
    targets = {}
    for n, layer in enumerate(layers):
        if not layer.on_kpu or layer.node not in graph.nodes:
            continue
        names = _candidates(graph, layer.node)
        for j in range(n, len(layers)):
            if j > n and layers[j].on_kpu:
                break
            buf = layers[j].outputs[0]
            name = next((m for m, shape in names if _holds(buf, shape)), None)
            if name is not None:
                targets[layer.index] = (layers[j].index, name, buf.quant, False)
                break
        else:
            continue
        if layer.index not in targets:
            buf = layer.outputs[0]
            name = next((m for m, shape in names if _holds(buf, shape, 2)), None)
            if name is not None:
                targets[layer.index] = (layer.index, name, buf.quant, True)
    return targets


def _candidates(graph, name):
    """(tensor, shape) of the node and of a pool reading only it; of a softmax layer, its pre-activation only (the
    KPU computes the logits; the graph reports them under preact_name)."""
    act = graph[name].op.attrs.get("activation")
    if act is not None and act.name == "softmax":
        return [(preact_name(name), graph[name].shape)]
    names = [(name, graph[name].shape)]
    readers = graph.consumers(name)
    if len(readers) == 1 and graph[readers[0]].op.kind == "pool2d":
        names.append((readers[0], graph[readers[0]].shape))
    return names


def _holds(buf, shape, step=1):
    """Whether a uint8 buffer is the graph tensor of `shape` (HWC or flat), or for step 2 the full-size map whose
    even rows and columns it is."""
    if buf.dtype != U8 or buf.quant is None:
        return False
    if step == 1:
        if buf.count != int(np.prod(shape)):
            return False
        return len(buf.shape) != 3 or len(shape) != 3 or buf.shape == (shape[2], shape[0], shape[1])
    return len(buf.shape) == 3 and len(shape) == 3 and buf.shape == (shape[2], 2 * shape[0], 2 * shape[1])


def float_tensors(graph, x, names):
    """{name: float array (N, ...)} of the graph's tensors `names` (pre-activations too) for the input x."""
    wanted, seen = set(names), {}

    def observe(name, value):
        if name in wanted:
            seen.setdefault(name, []).append(np.asarray(value, np.float64))
    graph.run(x, observer=observe)
    return {name: np.concatenate(parts) for name, parts in seen.items()}


def layer_snr(artefact, graph, x):
    """{KPU layer index: SNR in dB} of the artefact's layers (see snr_targets) on the float inputs x."""
    from .kmodel import run_kmodel
    targets = artefact.snr_targets
    if not targets or x is None or len(x) == 0:
        return {}
    x = np.asarray(x, np.float32)[:SNR_SAMPLES]
    floats = float_tensors(graph, x, {t[1] for t in targets.values()})
    device_in = artefact.to_pixels(x) if artefact.input_kind == "kpu" else x.reshape(len(x), -1)
    signal, noise = {}, {}
    for k, sample in enumerate(device_in):
        _, steps = run_kmodel(artefact.model, sample, trace=True)
        by_index = {index: array for index, _, array in steps}
        for conv, (index, name, quant, picked) in targets.items():
            if name not in floats or index not in by_index:
                continue
            ref = floats[name][k]
            ref = ref.transpose(2, 0, 1) if ref.ndim == 3 else ref
            got = np.asarray(by_index[index])
            got = got.reshape(ref.shape[0], 2 * ref.shape[1], 2 * ref.shape[2])[:, ::2, ::2] if picked else got
            got = quant.dequantize(got.reshape(ref.shape)).astype(np.float64)
            if name in artefact.channel_scales:          # a rescaled map (equalize.py): back to the graph's units
                got = got / artefact.channel_scales[name].reshape((-1,) + (1,) * (got.ndim - 1))
            signal[conv] = signal.get(conv, 0.0) + float(np.sum(ref * ref))
            noise[conv] = noise.get(conv, 0.0) + float(np.sum((got - ref) ** 2))
    return {conv: (99.0 if noise[conv] <= 1e-20 * max(signal[conv], 1e-30)
                   else float(10 * np.log10(max(signal[conv], 1e-30) / noise[conv]))) for conv in signal}


def add_snr_to_report(report, snr):
    """The 'SNR dB' cell of every measured KPU row, and a note naming the layers under LOW_SNR_DB."""
    if not snr:
        return
    if "SNR dB" not in report.columns:
        report.columns.append("SNR dB")
    low = []
    for row in report.rows:
        value = snr.get(row["#"])
        if value is not None:
            row["SNR dB"] = round(value, 1)
            if value < LOW_SNR_DB:
                low.append(f"{row['layer']} {value:.1f}")
    report.notes.append(f"SNR dB: each KPU layer's output against float on {SNR_SAMPLES} calibration samples at "
                        f"most (end to end, so errors of earlier layers count)")
    if low:
        report.notes.append(f"KPU layers under {LOW_SNR_DB:.0f} dB (layer, dB): {'; '.join(low)}")
