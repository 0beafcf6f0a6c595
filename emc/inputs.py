"""Checks of what users hand to emc.run_kmodel and `emc run`: the model, the input array and the options.

Every wrong argument becomes an EmcError saying what was expected, before a simulator sees it (a TypeError
deep inside numpy tells a user nothing).
"""
import inspect
import os

import numpy as np

from .errors import EmcError

REFUSED_KINDS = {"O": "Python objects", "U": "strings", "S": "byte strings", "V": "raw records",
                 "c": "complex numbers", "m": "time deltas", "M": "dates"}
KMODEL_ARGUMENT = "a kmodel path, the file's bytes or the result of emc.load_kmodel"


def kmodel_argument(model):
    """The parsed kmodel for run_kmodel's first argument (path, bytes or a parsed model)."""
    from .graph import Graph
    if isinstance(model, Graph):
        raise EmcError("run_kmodel takes " + KMODEL_ARGUMENT + ", not an emc.Graph; run a float graph with "
                       "graph.run(x), or convert it first: emc.convert(graph, ...).simulate(x)")
    if isinstance(model, (bytes, bytearray, memoryview, str, os.PathLike)):
        from .platforms.k210.kmodel import load_kmodel
        return load_kmodel(model)
    if getattr(model, "version", None) in (3, 4) and (hasattr(model, "layers") or hasattr(model, "nodes")):
        return model
    raise EmcError(f"run_kmodel takes {KMODEL_ARGUMENT}, not {type(model).__name__}")


def input_array(x, what="the kmodel input"):
    """x as a numeric numpy array; dicts, ragged lists, strings, objects and complex values are EmcErrors."""
    if isinstance(x, dict):
        raise EmcError(f"{what} is one array (an image, a vector or a batch of them), not a dict "
                       f"(keys {', '.join(map(str, list(x)[:4]))}); kmodels have a single input")
    if isinstance(x, (str, bytes)):
        raise EmcError(f"{what} is an array of numbers, not {type(x).__name__} {x[:40]!r}; load files with "
                       f"`emc run` or numpy / PIL first")
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as err:       # numpy >= 1.24 refuses ragged nesting
        raise EmcError(f"{what} must be a rectangular array of numbers; got a {type(x).__name__} that numpy "
                       f"cannot make one array of (rows of different lengths?): {err}") from None
    if arr.dtype.kind in REFUSED_KINDS:
        kind = REFUSED_KINDS[arr.dtype.kind]
        hint = "a ragged nesting (rows of different lengths) or " if arr.dtype.kind == "O" else ""
        raise EmcError(f"{what} must be real numbers (uint8 pixels or floats); got {hint}{kind} "
                       f"(dtype {arr.dtype}, shape {arr.shape})")
    return arr


def _runner(version):
    if version == 4:
        from .platforms.k210.v4.simulator import run_v4
        return run_v4
    from .platforms.k210.v3.simulator import run_v3
    return run_v3


def run_options(version, options):
    """EmcError for a keyword the kmodel's simulator does not take, listing the ones it does."""
    accepted = [name for name, p in inspect.signature(_runner(version)).parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in ("model", "x")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise EmcError(f"unknown option(s) {', '.join(unknown)} for a kmodel v{version}: run_kmodel takes "
                       f"{', '.join(accepted)}")


def run_arguments(model, x, options):
    """(parsed model, numeric x) for emc.run_kmodel, every argument checked."""
    model = kmodel_argument(model)
    run_options(model.version, options)
    return model, input_array(x)
