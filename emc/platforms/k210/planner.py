"""Memory planning: KPU RAM (in 64-byte lines) and the main buffer (in bytes), reusing space by lifetime.

A buffer lives from the layer that writes it to the last layer that reads it (the model input from the start,
the model outputs to the end). A layer's inputs and outputs are live at the same time, so a KPU conv never
reads and writes overlapping lines. Main-memory sizes are rounded up to 8 bytes: the KPU's DMA stream-out and
QUANTIZED_ADD work in groups of 8 bytes and write up to 7 bytes past a tensor.
"""
from .ir import KPU, MAIN
from .kpu import KPU_LINES

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
    spans = {}
    for layer in layers:
        for buf in layer.outputs:
            first, last = spans.get(id(buf), (buf, layer.index, layer.index))[1:]
            spans[id(buf)] = (buf, min(first, layer.index), max(last, layer.index))
        for buf in layer.inputs:
            if id(buf) in spans:
                b, first, last = spans[id(buf)]
                spans[id(buf)] = (b, first, max(last, layer.index))
            else:
                spans[id(buf)] = (buf, -1 if buf in pinned_start else layer.index, layer.index)
    for buf in pinned_start:
        b, first, last = spans.get(id(buf), (buf, -1, -1))
        spans[id(buf)] = (b, -1, last)
    end = len(layers)
    for buf in pinned_end:
        b, first, last = spans.get(id(buf), (buf, end, end))
        spans[id(buf)] = (b, first, end)
    return spans


def _first_fit(items, limit=None):
    """Assign the lowest free address to each (buffer, first, last), in order of first use."""
    placed = []
    failures = []
    for buf, first, last in sorted(items, key=lambda t: (t[1], t[2])):
        size = buf.alloc_size
        busy = sorted((b.address, b.address + b.alloc_size) for b, f, l in placed if f <= last and first <= l)
        address = 0
        for start, stop in busy:
            if address + size <= start:
                break
            address = max(address, stop)
        buf.address = address
        placed.append((buf, first, last))
        if limit is not None and address + size > limit:
            failures.append((buf, first, sum(stop - start for start, stop in busy)))
    return placed, failures


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
