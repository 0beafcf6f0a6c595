"""Buffer lifetimes and first-fit placement of lifetime intervals, shared by every platform's memory planner.

A program is a list of steps, each reading some buffers and writing others; a buffer lives from the first step
that touches it to the last. Buffers whose lifetimes overlap get disjoint address ranges.
"""


def live_ranges(steps, pinned_start=(), pinned_end=()):
    """{key: (first, last)} step indices for steps given as (inputs, outputs) key lists, in order of first use
    (a step's outputs before its inputs); keys in pinned_start live from -1, those in pinned_end to len(steps)."""
    spans = {}
    for index, (inputs, outputs) in enumerate(steps):
        for key in list(outputs) + list(inputs):
            first, last = spans.get(key, (index, index))
            spans[key] = (min(first, index), max(last, index))
    for key in pinned_start:
        spans[key] = (-1, spans.get(key, (-1, -1))[1])
    end = len(steps)
    for key in pinned_end:
        spans[key] = (spans.get(key, (end, end))[0], end)
    return spans


def first_fit(intervals, order):
    """Offsets for (key, size, first, last, ...) intervals: each, in `order` (a sort key of the interval), takes
    the lowest offset free of every placed interval alive at the same time. Returns {key: offset}."""
    placed = []
    offsets = {}
    for item in sorted(intervals, key=order):
        key, size, first, last = item[:4]
        busy = sorted((offsets[k], offsets[k] + s) for k, s, f, l, *_ in placed if f <= last and first <= l)
        offset = 0
        for start, stop in busy:
            if offset + size <= start:
                break
            offset = max(offset, stop)
        offsets[key] = offset
        placed.append(item)
    return offsets


# Orders for first_fit over (key, size, first, last, ...) intervals: the planners try each and keep the smallest.
ORDERS = {
    "first use": lambda t: (t[2], t[3]),
    "size": lambda t: (-t[1], t[2]),
    "start, larger first": lambda t: (t[2], -t[1]),
    "size x lifetime": lambda t: (-(t[3] - t[2] + 1) * t[1], t[2]),
    "lifetime": lambda t: (-(t[3] - t[2]), -t[1], t[2]),
}


def live_peak(intervals):
    """The largest total size of intervals alive at one step: no placement can use less."""
    events = sorted({t[2] for t in intervals})
    return max((sum(t[1] for t in intervals if t[2] <= step <= t[3]) for step in events), default=0)


def best_first_fit(intervals, orders=tuple(ORDERS)):
    """(extent, {key: offset}, order name) of the first_fit order (names of ORDERS) that needs the least space."""
    best = None
    for name in orders:
        offsets = first_fit(intervals, ORDERS[name])
        extent = max((offsets[t[0]] + t[1] for t in intervals), default=0)
        if best is None or extent < best[0]:
            best = (extent, offsets, name)
    return best


EXACT_LIMIT = 12            # intervals up to which searched_fit tries orders beyond the heuristic ones
SEARCH_BUDGET = 100_000     # first-fit steps the search may take before it keeps the best placement found


def _lowest_free(item, placed):
    """The lowest offset where `item` overlaps no placed (offset, interval) alive at the same time."""
    _, size, first, last = item[:4]
    offset = 0
    for start, stop in sorted((o, o + t[1]) for o, t in placed if t[2] <= last and first <= t[3]):
        if offset + size <= start:
            break
        offset = max(offset, stop)
    return offset


def searched_fit(intervals, limit=EXACT_LIMIT, budget=SEARCH_BUDGET):
    """(extent, {key: offset}, order name) at least as small as best_first_fit's; for at most `limit` intervals, a
    branch-and-bound over first-fit orders that is exact when it ends within `budget` steps (order name 'search').

    Exact because first-fit in the order of an optimal placement's offsets puts every interval at or below its
    place there (each one placed before it ends below that place), so some order reaches the optimum.
    """
    best = list(best_first_fit(intervals))
    if len(intervals) > limit or best[0] <= live_peak(intervals):
        return tuple(best)
    items = sorted(intervals, key=lambda t: -t[1])
    floor, steps = live_peak(intervals), [0]

    def descend(placed, extent, rest):
        if steps[0] >= budget or best[0] <= floor:
            return
        if not rest:
            best[:] = [extent, {t[0]: o for o, t in placed}, "search"]
            return
        for i, item in enumerate(rest):
            steps[0] += 1
            offset = _lowest_free(item, placed)
            reach = max(extent, offset + item[1])
            if reach < best[0]:
                descend(placed + [(offset, item)], reach, rest[:i] + rest[i + 1:])

    descend([], 0, items)
    return tuple(best)
