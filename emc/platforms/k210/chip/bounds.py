"""Load-time bounds on every shape a kmodel declares or implies, so that the simulators never allocate or loop
over an impossible size: each dimension counts, a zero beside a huge one included (issue 15)."""
from ....errors import KModelFormatError

MAX_ELEMENTS = 8 << 20          # the K210's 8 MiB of SRAM: no tensor of the chip has more (uint8) elements
MAX_MACS = 1 << 36              # ~100x the largest K210 network; bounds the simulated time of one layer


def span(shape):
    """The product of the dimensions with zeros counted as 1 (what index arrays over the shape would hold),
    capped just above MAX_ELEMENTS."""
    total = 1
    for d in shape:
        total = min(total * max(int(d), 1), MAX_ELEMENTS + 1)
    return total


def check_shape(what, field, shape, offset, sizes=False):
    """KModelFormatError unless every dimension is >= 0 and the shape spans at most MAX_ELEMENTS. With sizes
    (a concat's input sizes), each entry is a size of its own."""
    if shape is None:
        return
    dims = tuple(int(d) for d in shape)
    shown = dims if len(dims) <= 6 else dims[:6] + ("...",)
    if any(d < 0 for d in dims):
        raise KModelFormatError(f"{what}: {field} {shown} has a negative dimension", offset, field)
    if max((span((d,)) for d in dims) if sizes else [span(dims)], default=1) > MAX_ELEMENTS:
        raise KModelFormatError(f"{what}: {field} {shown} spans more than {MAX_ELEMENTS:,} elements (zero "
                                f"dimensions counted as 1): no tensor on the K210 holds that many", offset, field)


def check_described(what, info, offset, extra=()):
    """Check the input / output shapes and MACs of a layer's description, plus (field, shape) pairs in extra."""
    check_shape(what, "input sizes" if info.get("input_sizes") else "input shape", info.get("input"), offset,
                sizes=bool(info.get("input_sizes")))
    for field, shape in [("output shape", info.get("output"))] + list(extra):
        check_shape(what, field, shape, offset)
    if int(info.get("macs") or 0) > MAX_MACS:
        raise KModelFormatError(f"{what}: {int(info['macs']):,} multiply-accumulates, more than {MAX_MACS:,}; the "
                                f"shapes are implausible", offset, "macs")
