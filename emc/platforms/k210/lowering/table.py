"""The K210 mapping table: graph op kind -> generator of device layers (one small function per row).

The rows live in the handlers_* modules, grouped by what they lower; TABLE joins them and is also the source of
the "supported layers" list. Generators call ctx.problem() for what the K210 cannot take and return without a
value; the lowering then continues, so every problem is listed at once.
"""
from . import handlers_conv, handlers_merge, handlers_pointwise, handlers_shape

TABLE = {}
for _rows in (handlers_shape.HANDLERS, handlers_conv.HANDLERS, handlers_pointwise.HANDLERS, handlers_merge.HANDLERS):
    TABLE.update(_rows)


def supported_kinds():
    """Graph op kinds the K210 writer lowers (some with conditions, see the messages of check())."""
    return sorted(TABLE)


__all__ = ["TABLE", "supported_kinds"]
