"""The K210 platform: graph -> kmodel v3 or v4 (KPU convolutions, CPU layers for the rest), report and simulator.

TABLE (graph op kind -> generator) is the source of the supported-layers list; check(graph) lists every
problem a model has on the K210 before anything is written; convert() returns a K210Artefact.
"""
import functools
import logging

from ...errors import EmcError, PlatformLimitError
from ...passes.channels import split_channels
from .artefact import K210Artefact, build_report, device_tensors
from .equalize import equalize_depthwise
from .layer_snr import snr_targets
from .lowering.lower import Lowering
from .lowering.planner import K210_SRAM, plan_memory
from .lowering.table import TABLE, supported_kinds
from .v3.writer import KModelV3Writer
from .v4.writer import KModelV4Writer, stored_input_shape, to_v4

log = logging.getLogger(__name__)
PLATFORM = "k210"
# before calibration: a KPU layer takes at most 1024 channels, and a conv whose map takes over 1 MiB of the KPU's
# 2 MiB is split in channel ranges when a conv after it sums them (MobileNetV2 1.0's 96x112x112 expansions)
GRAPH_PASSES = (functools.partial(split_channels, max_map_bytes=1 << 20),)


class _Ranges:
    """A stand-in calibration for check() without data: every tensor in [0, 1] (zero point 0, so only the
    structure of the model, not its data, can raise a problem)."""

    def __init__(self):
        self.ranges = _AnyRange()


class _AnyRange(dict):
    def __missing__(self, key):
        return (0.0, 1.0)

    def get(self, key, default=None):
        return (0.0, 1.0)

    def __contains__(self, key):
        return True


def _lower(graph, calibration, input_transform, softmax, dequantize, dense, version=3):
    """(lowering, device layers, memory plan): kmodel v3 layers, or for version 4 the v4 nodes made of them."""
    low = Lowering(graph, calibration, input_transform=input_transform, softmax=softmax,
                   dequantize=dequantize, dense=dense, version=version).run()
    layers = low.layers
    if version == 4 and not low.problems:
        layers = to_v4(low.layers)
    memory = plan_memory(layers, [b for b in [low.input_buffer] if b is not None],
                         [buf for _, buf, _ in low.outputs])
    low.problems.extend(p for p in memory.problems if p not in low.problems)
    return low, layers, memory


def _biggest(layers, count=3):
    """The layers with the most weight bytes and the biggest main-memory tensors, as one phrase."""
    weights = sorted((layer for layer in layers if layer.weight_bytes), key=lambda la: -la.weight_bytes)[:count]
    tensors = {}
    for layer in layers:
        for buf in layer.outputs:
            if buf.where == "main":
                tensors[buf.name] = max(tensors.get(buf.name, 0), buf.nbytes)
    big = sorted(tensors.items(), key=lambda kv: -kv[1])[:count]
    return ("biggest weights: " + ", ".join(f"'{la.node}' ({la.type_name}) {la.weight_bytes:,} B" for la in weights)
            + "; biggest main-memory tensors: " + ", ".join(f"'{n}' {b:,} B" for n, b in big))


def check(graph, calibration=None, input_transform=None, softmax=False, dequantize=True, dense="auto", version=3):
    """Every problem the K210 (kmodel v3 for the stock SDK, or v4 for nncase v0.2's runtime) has with this
    optimized graph (GRAPH_PASSES are applied to a copy first, as convert's caller does); [] when it converts."""
    graph = graph.copy()
    for rewrite in GRAPH_PASSES:
        rewrite(graph)
    low, _, _ = _lower(graph, calibration or _Ranges(), input_transform, softmax, dequantize, dense, version)
    return list(low.problems)


def convert(graph, calibration, quant_bit=8, input_transform=None, version=3, softmax=False, dequantize=True,
            name="model", dense="auto", ram_limit=K210_SRAM, **options):
    """Lower, plan and write a kmodel v3 (or v4); raises PlatformLimitError listing every problem before writing.

    softmax: append SOFTMAX to every (vector) output; dequantize: float32 outputs (else uint8 codes);
    dense: 'auto' | 'kpu' | 'cpu' -- where dense layers on vectors run (auto: the KPU from 64K weights);
    ram_limit: bytes of SRAM for the model and its main buffer (the K210 has 6 MiB besides the KPU's 2 MiB);
    None means no limit.
    """
    if options:
        raise EmcError(f"unknown K210 option(s) {', '.join(sorted(options))}; the K210 takes version, softmax, "
                       f"dequantize, name, dense, ram_limit")
    if dense not in ("auto", "kpu", "cpu"):
        raise EmcError(f"dense must be 'auto', 'kpu' or 'cpu', not {dense!r}")
    if version not in (3, 4):
        raise EmcError(f"kmodel version must be 3 or 4, not {version!r}")
    if quant_bit != 8:
        raise PlatformLimitError([f"quant_bit={quant_bit}: the K210 writer uses the KPU's 8-bit mode (16-bit "
                                  f"weights are unverified on hardware); use quant_bit=8"], platform=PLATFORM)
    graph, calibration, scales = equalize_depthwise(graph, calibration)
    low, layers, memory = _lower(graph, calibration, input_transform, softmax, dequantize, dense, version)
    if low.problems:
        raise PlatformLimitError(low.problems, platform=PLATFORM)
    output_buffers = [buf for _, buf, _ in low.outputs]
    if version == 4:
        kmodel = KModelV4Writer(layers, low.input_buffer, stored_input_shape(low.input_buffer), output_buffers,
                                memory.main_bytes).to_bytes()
    else:
        kmodel = KModelV3Writer(layers, output_buffers, memory.main_bytes, memory.kpu_min_line).to_bytes()
    report = build_report(name, low, layers, memory, kmodel, version, graph)
    if ram_limit is not None and len(kmodel) + memory.main_bytes > ram_limit:
        err = PlatformLimitError([f"the kmodel ({len(kmodel):,} bytes) and its main buffer "
                                  f"({memory.main_bytes:,} bytes) exceed the {int(ram_limit):,} bytes of SRAM; "
                                  f"{_biggest(layers)}; use a smaller model (fewer channels, smaller dense layers)"],
                                 platform=PLATFORM)
        err.report = report                       # the CLI prints it before the error line
        raise err
    producers = {id(buf): layer.index for layer in layers for buf in layer.outputs}
    outputs = [(out_name, info["shape"], info["layout"], info["dtype"], info.get("quant"), producers.get(id(buf)))
               for out_name, buf, info in low.outputs]
    input_shape = graph[graph.inputs[0]].shape
    log.debug("k210: kmodel v%d, %d layers, %d bytes", version, len(layers), len(kmodel))
    artefact = K210Artefact(name, kmodel, report, low.input_kind, input_shape, low.input_quant, outputs)
    artefact.layer_tensors = {index: (None if name in scales else name)       # rescaled maps: not the graph's
                              for index, name in device_tensors(low, layers, graph).items()}
    artefact.snr_targets = snr_targets(layers, graph)
    artefact.channel_scales = scales
    return artefact


__all__ = ["TABLE", "convert", "check", "supported_kinds", "K210Artefact", "PLATFORM"]
