"""Memory planning: KPU RAM (in 64-byte lines) and the main buffer (in bytes), reusing space by lifetime.

A buffer (a view: its parent) lives from the layer that writes it to the last layer that reads it (the model input from the start,
the model outputs to the end). A layer's inputs and outputs are live at the same time, so a KPU conv never
reads and writes overlapping lines. Main-memory sizes are rounded up to 8 bytes: the KPU's DMA stream-out and
QUANTIZED_ADD work in groups of 8 bytes and write up to 7 bytes past a tensor.
"""
from ....lifetimes import live_peak, live_ranges, searched_fit
from .ir import KPU, MAIN, storage
from ..chip.kpu import KPU_LINES

K210_SRAM = 6 * 1024 * 1024         # general-purpose SRAM for the model and the main buffer


class MemoryPlan:
    """Addresses are written into the buffers; this holds the totals and the problems found."""

    def __init__(self):
        self.kpu_lines = 0            # highest KPU line used + 1
        self.kpu_min_line = KPU_LINES
        self.main_bytes = 0
        self.problems = []
        self.kpu_order = self.main_order = None     # the first-fit orders that placed them


def lifetimes(layers, pinned_start=(), pinned_end=()):
    """{buffer id: (buffer, first, last)} over the layer list; pinned buffers live from -1 / to the end."""
    buffers = {id(storage(buf)): storage(buf) for layer in layers for buf in list(layer.outputs) + list(layer.inputs)}
    buffers.update((id(buf), buf) for buf in list(pinned_start) + list(pinned_end))
    steps = [([id(storage(b)) for b in layer.inputs], [id(storage(b)) for b in layer.outputs]) for layer in layers]
    spans = live_ranges(steps, [id(b) for b in pinned_start], [id(b) for b in pinned_end])
    return {key: (buffers[key], first, last) for key, (first, last) in spans.items()}


def _place(items):
    """Give every (buffer, first, last) the address of the best first-fit order (searched over every order for a
    few buffers); returns (extent, order name)."""
    intervals = [(id(b), b.alloc_size, f, l) for b, f, l in items]
    extent, offsets, order = searched_fit(intervals)
    for buf, _, _ in items:
        buf.address = offsets[id(buf)]
    return extent, order


def _units(n, unit):
    return f"{n * unit / 1024:,.0f} KiB"


def plan_memory(layers, input_buffers=(), output_buffers=()):
    """Place every buffer of the layer list (the best of several first-fit orders, an exact search for a few
    buffers); when none fits the KPU RAM, a problem gives the peak of the maps alive at one time against the
    2 MiB and the layer where it happens."""
    plan = MemoryPlan()
    spans = lifetimes(layers, input_buffers, output_buffers)
    kpu = [s for s in spans.values() if s[0].where == KPU]
    main = [s for s in spans.values() if s[0].where == MAIN]
    extent, plan.kpu_order = _place(kpu)
    if extent > KPU_LINES:
        peak = live_peak([(id(b), b.alloc_size, f, l) for b, f, l in kpu])
        step = max(range(len(layers)), key=lambda i: sum(b.alloc_size for b, f, l in kpu if f <= i <= l))
        layer = layers[step]
        if peak > KPU_LINES:
            why = (f"the maps alive at layer {layer.index} ({layer.type_name} of '{layer.node}') need "
                   f"{_units(peak, 64)} together, more than the KPU's {_units(KPU_LINES, 64)}")
        else:
            why = (f"the maps alive at one time need at most {_units(peak, 64)} of the KPU's "
                   f"{_units(KPU_LINES, 64)}, but no placement tried fits them without gaps ({_units(extent, 64)})")
        plan.problems.append(f"KPU RAM overflow: {why}; use smaller maps or fewer channels there")
    if kpu:
        plan.kpu_lines = extent
        plan.kpu_min_line = min(b.address for b, _, _ in kpu)
    plan.main_bytes, plan.main_order = _place(main)
    return plan
