"""Static memory plan: every int8 tensor gets bytes in the caller's input/output buffers or in one arena.

Graph inputs are read where the caller keeps them; graph outputs are written straight into the caller's
output buffer. All other tensors share the arena: views (flatten, reshape) reuse their source's bytes,
in-place kernels (activations, element-wise ops, softmax) write over an input that dies there, and the rest
get offsets from a greedy-by-size first-fit placement of lifetime intervals, the best of a few orders.
The live-tensor lower bound (the largest sum of simultaneously live arena buffers) is computed alongside.
"""
from ...lifetimes import first_fit, live_ranges
from .ir import QTensor, Step

ALIGN = 1      # int8 kernels (and CMSIS-NN) read bytes; no padding between buffers


class Buffer:
    """A block of arena bytes shared by one or more storage roots over the interval [start, end] of steps."""

    __slots__ = ("roots", "size", "start", "end", "offset")

    def __init__(self, root, size, start, end):
        self.roots, self.size, self.start, self.end, self.offset = [root], size, start, end, None

    def overlaps(self, other):
        return self.start <= other.end and other.start <= self.end


class MemoryPlan:
    """Where each tensor lives: place[root] = ('arena' | 'input' | 'output', byte offset)."""

    def __init__(self, place, roots, arena_bytes, lower_bound, buffers, input_bytes, output_bytes):
        self.place = place
        self.roots = roots
        self.arena_bytes = arena_bytes
        self.lower_bound = lower_bound
        self.buffers = buffers
        self.input_bytes = input_bytes
        self.output_bytes = output_bytes

    def where(self, tensor_name):
        """(region, byte offset) of a tensor's first byte."""
        return self.place[self.roots[tensor_name]]


def _align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _root(tensors, name):
    return tensors[name].view_of or name


def route_outputs(steps, tensors, inputs, outputs):
    """Graph output names, with a copy step added where an output shares storage with an input or another
    output (each output needs its own bytes in the caller's buffer)."""
    routed, taken = [], set(_root(tensors, n) for n in inputs)
    for name in outputs:
        root = _root(tensors, name)
        if root in taken:
            src = tensors[name]
            copy = QTensor(f"{name}:copy", src.shape, src.scale, src.zero_point)
            tensors[copy.name] = copy
            steps.append(Step("copy", name, [name], copy.name, {"count": src.size}))
            name, root = copy.name, copy.name
        taken.add(root)
        routed.append(name)
    return routed


def plan_memory(steps, tensors, inputs, outputs, orders=("size", "start", "span")):
    """Place every tensor of the program; `outputs` must already be routed (see route_outputs)."""
    roots = {name: _root(tensors, name) for name in tensors}
    place = {}
    offset = 0
    for name in inputs:
        place[name] = ("input", offset)
        offset += tensors[name].size
    input_bytes = offset
    offset = 0
    for name in outputs:
        place[roots[name]] = ("output", offset)
        offset += tensors[name].size
    output_bytes = offset

    buffers = _lifetimes(steps, tensors, roots, place)
    _merge_inplace(steps, tensors, roots, buffers)
    groups = list({id(b): b for b in buffers.values()}.values())
    bound = _live_bound(groups, len(steps))
    best = None
    for order in orders:
        size = _place(groups, order)
        if best is None or size < best[0]:
            best = (size, {id(g): g.offset for g in groups})
    arena_bytes, offsets = best
    for g in groups:
        g.offset = offsets[id(g)]
        for root in g.roots:
            place[root] = ("arena", g.offset)
    return MemoryPlan(place, roots, arena_bytes, bound, groups, input_bytes, output_bytes)


def _lifetimes(steps, tensors, roots, place):
    """A Buffer per storage root that a step writes into the arena (not the caller's input/output bytes)."""
    spans = live_ranges([([roots[n] for n in step.inputs], [roots[step.output]]) for step in steps])
    written = {roots[step.output] for step in steps}
    return {root: Buffer(root, tensors[root].size, first, last) for root, (first, last) in spans.items()
            if root in written and root not in place}


def _merge_inplace(steps, tensors, roots, buffers):
    """Let an in-place kernel's output share the buffer of an input of the same size whose life ends there."""
    for i, step in enumerate(steps):
        out = buffers.get(roots[step.output])
        if not step.inplace or out is None or len(out.roots) != 1 or out.start != i:
            continue
        for name in step.inputs:
            src = buffers.get(roots[name])
            if src is None or src is out or src.end != i or src.size != out.size:
                continue
            if any(roots[other] in src.roots for other in step.inputs if other != name):
                continue
            src.roots.extend(out.roots)
            src.end = out.end
            for root in out.roots:
                buffers[root] = src
            break


def _live_bound(groups, n_steps):
    bound = 0
    for t in range(n_steps):
        bound = max(bound, sum(g.size for g in groups if g.start <= t <= g.end))
    return bound


ORDER_KEYS = {
    "size": lambda g: (-g.size, g.start),
    "start": lambda g: (g.start, -g.size),
    "span": lambda g: (-(g.end - g.start + 1) * g.size, g.start),
}


def _place(groups, order):
    """First-fit by offset in the given order; returns the arena size and sets each group's offset."""
    offsets = first_fit([(id(g), _align(g.size), g.start, g.end, g) for g in groups],
                        order=lambda t: ORDER_KEYS[order](t[4]))
    for g in groups:
        g.offset = offsets[id(g)]
    return max((g.offset + _align(g.size) for g in groups), default=0)


def free_range(plan, index):
    """(offset, bytes) of the largest 4-byte-aligned arena range that no tensor live at step `index` uses."""
    used = sorted((g.offset, g.offset + g.size) for g in plan.buffers if g.start <= index <= g.end)
    best, cursor = (0, 0), 0
    for lo, hi in used + [(plan.arena_bytes, plan.arena_bytes)]:
        start = (cursor + 3) // 4 * 4
        if lo - start > best[1]:
            best = (start, lo - start)
        cursor = max(cursor, hi)
    return best
