"""Platform registry: a platform is a package with TABLE (op kind -> handler) and convert(graph, calibration, **opts)."""
import importlib

from ..errors import EmcError

_PLATFORMS = {
    "k210": "emc.platforms.k210",
    "c": "emc.platforms.c",
    "stm32": "emc.platforms.stm32",
}


def registrar(table):
    """A decorator factory filling a platform's TABLE: @lowers('conv2d', ...) registers a handler."""
    def lowers(*kinds):
        def wrap(fn):
            for kind in kinds:
                table[kind] = fn
            return fn
        return wrap
    return lowers


def register(name, module):
    """Make a platform known: `module` is a module object or its import path."""
    _PLATFORMS[name] = module


def names():
    return sorted(_PLATFORMS)


def get(name):
    """The platform module; an unknown name raises EmcError listing the known ones."""
    try:
        module = _PLATFORMS[name]
    except KeyError:
        raise EmcError(f"unknown platform '{name}'; known platforms: {', '.join(names())}") from None
    if isinstance(module, str):
        module = importlib.import_module(module)
        _PLATFORMS[name] = module
    return module
