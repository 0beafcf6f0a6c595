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
