"""Memory planning: KPU RAM (in 64-byte lines) and the main buffer (in bytes), reusing space by lifetime.

A buffer lives from the layer that writes it to the last layer that reads it (the model input from the start,
the model outputs to the end). A layer's inputs and outputs are live at the same time, so a KPU conv never
reads and writes overlapping lines. Main-memory sizes are rounded up to 8 bytes: the KPU's DMA stream-out and
QUANTIZED_ADD work in groups of 8 bytes and write up to 7 bytes past a tensor.
"""
from ....lifetimes import first_fit, live_ranges
from .ir import KPU, MAIN
from ..chip.kpu import KPU_LINES

K210_SRAM = 6 * 1024 * 1024         # general-purpose SRAM for the model and the main buffer


class MemoryPlan:
    """Addresses are written into the buffers; this holds the totals and the problems found."""

    def __init__(self):
        self.kpu_lines = 0            # highest KPU line used + 1
        self.kpu_min_line = KPU_LINES
        self.main_bytes = 0
        self.problems = []


def lifetimes(layers, pinned_start=(), pinned_end=()):
    """{buffer id: (buffer, first, last)} over the layer list; pinned buffers live from -1 / to the end."""
    buffers = {id(buf): buf for layer in layers for buf in list(layer.outputs) + list(layer.inputs)}
    buffers.update((id(buf), buf) for buf in list(pinned_start) + list(pinned_end))
    steps = [([id(b) for b in layer.inputs], [id(b) for b in layer.outputs]) for layer in layers]
    spans = live_ranges(steps, [id(b) for b in pinned_start], [id(b) for b in pinned_end])
    return {key: (buffers[key], first, last) for key, (first, last) in spans.items()}


def _first_fit(items, limit=None):
    """Assign the lowest free address to each (buffer, first, last), in order of first use; with a limit, also
    [(buffer, first, units held by the buffers placed before it and alive with it)] for each one past the limit."""
    ordered = sorted(items, key=lambda t: (t[1], t[2]))
    offsets = first_fit([(id(b), b.alloc_size, f, l) for b, f, l in ordered], order=lambda t: (t[2], t[3]))
    failures = []
    for n, (buf, first, last) in enumerate(ordered):
        buf.address = offsets[id(buf)]
        if limit is not None and buf.address + buf.alloc_size > limit:
            held = sum(b.alloc_size for b, f, l in ordered[:n] if f <= last and first <= l)
            failures.append((buf, first, held))
    return ordered, failures


def plan_memory(layers, input_buffers=(), output_buffers=()):
    """Place every buffer of the layer list; KPU overflow becomes a problem naming the layer and the sizes."""
    plan = MemoryPlan()
    spans = lifetimes(layers, input_buffers, output_buffers)
    kpu = [s for s in spans.values() if s[0].where == KPU]
    main = [s for s in spans.values() if s[0].where == MAIN]
    placed, failures = _first_fit(kpu, KPU_LINES)
    for buf, first, busy in failures:
        layer = layers[max(first, 0)]
        c, h, w = buf.chw
        plan.problems.append(
            f"KPU RAM overflow at layer {layer.index} ({layer.type_name} of '{layer.node}'): its {c}x{h}x{w} map "
            f"needs {buf.alloc_size * 64 // 1024} KiB while {busy * 64 // 1024} KiB are held by maps still in use, "
            f"of the KPU's {KPU_LINES * 64 // 1024} KiB; use smaller maps or fewer channels there")
    if placed:
        plan.kpu_lines = max(b.address + b.alloc_size for b, _, _ in placed)
        plan.kpu_min_line = min(b.address for b, _, _ in placed)
    placed, _ = _first_fit(main)
    plan.main_bytes = max((b.address + b.alloc_size for b, _, _ in placed), default=0)
    return plan
