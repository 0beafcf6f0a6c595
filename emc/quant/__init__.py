"""Range functions by name (minmax, kld, l2, percentile, minmax98, meanminmax): TensorStats -> (lo, hi).

Users add their own with register(name, fn) (or @register(name)) or pass a callable wherever a name goes;
'percentile:Q' names the percentile clip at Q (e.g. 'percentile:99.9').
"""
from ..errors import QuantizationError
from . import ranges as _ranges

_FUNCS = {}
_FAMILIES = {"percentile": _ranges.percentile_of}     # 'name:parameter' -> factory(parameter)


def register(name, fn=None):
    """Register fn(stats) -> (lo, hi) under name; usable as a decorator."""
    if fn is None:
        return lambda f: register(name, f)
    if not isinstance(name, str) or not name or ":" in name:
        raise QuantizationError(f"a quant function name must be a non-empty string without ':', not {name!r}")
    if not callable(fn):
        raise QuantizationError(f"quant function '{name}' must be callable as fn(stats) -> (lo, hi)")
    _FUNCS[name] = fn
    return fn


def _unknown(name):
    return QuantizationError(f"unknown quant function {name!r}; known: {', '.join(names())} (or "
                             f"'percentile:Q'), or pass a callable f(stats) -> (lo, hi)")


def get(name_or_fn):
    """The range function registered under a name, or the callable itself."""
    if callable(name_or_fn):
        return name_or_fn
    if not isinstance(name_or_fn, str):
        raise _unknown(name_or_fn)
    if name_or_fn in _FUNCS:
        return _FUNCS[name_or_fn]
    family, sep, param = name_or_fn.partition(":")
    if sep and family in _FAMILIES:
        try:
            value = float(param)
        except ValueError:
            raise QuantizationError(f"quant function {name_or_fn!r}: '{param}' is not a number "
                                    f"(write e.g. '{family}:99.9')") from None
        return _FAMILIES[family](value)
    raise _unknown(name_or_fn)


def names():
    """Registered names, sorted."""
    return sorted(_FUNCS)


for _name in ("minmax", "kld", "l2", "percentile", "minmax98", "meanminmax"):
    register(_name, getattr(_ranges, _name))
