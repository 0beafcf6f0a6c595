"""Range functions by name (minmax, kld, l2, percentile, minmax98, meanminmax): TensorStats -> (lo, hi)."""
from ..errors import QuantizationError
from . import ranges as _ranges

_FUNCS = {}


def register(name, fn=None):
    """Register fn(stats) -> (lo, hi) under name; usable as a decorator."""
    if fn is None:
        return lambda f: register(name, f)
    _FUNCS[name] = fn
    return fn


def get(name_or_fn):
    if callable(name_or_fn):
        return name_or_fn
    try:
        return _FUNCS[name_or_fn]
    except KeyError:
        raise QuantizationError(f"unknown quant function '{name_or_fn}'; known: {', '.join(names())}, "
                                f"or pass a callable f(stats) -> (lo, hi)") from None


def names():
    return sorted(_FUNCS)


for _name in ("minmax", "kld", "l2", "percentile", "minmax98", "meanminmax"):
    register(_name, getattr(_ranges, _name))
