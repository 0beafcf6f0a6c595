"""What emc writes next to its artefacts so that later commands need not guess: `<file>.kmodel.emc.json` beside
a kmodel, `<name>.emc.json` inside a C / STM32 folder. The chip never reads it; the kmodel bytes stay as written.

It holds the conversion report (so `emc inspect` prints the same rows and totals), the graph tensor each
device layer computes (so `emc compare` pairs layers by name, not by shape), the input mapping and the outputs.
A sidecar whose recorded size / hash do not match the file next to it is ignored.
"""
import hashlib
import json
import logging
import os

from .fileio import write_atomic
from .report import Report

log = logging.getLogger(__name__)
FORMAT = "emc-artefact"
SUFFIX = ".emc.json"


def digest(data):
    return hashlib.sha256(bytes(data)).hexdigest()


def _plain(value):
    """JSON-friendly copy: numpy scalars -> Python numbers, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def document(platform, name, report, layer_tensors, data=None, **extra):
    """The sidecar dict: platform, name, report (as_dict), {device layer index: graph tensor or None}, extras."""
    doc = {"format": FORMAT, "version": 1, "platform": platform, "name": name,
           "report": _plain(report.as_dict()) if report is not None else None,
           "layers": {str(k): v for k, v in sorted(layer_tensors.items())}}
    if data is not None:
        doc.update(size=len(data), sha256=digest(data))
    doc.update(_plain(extra))
    return doc


def write(path, doc):
    write_atomic(path, json.dumps(doc, indent=1) + "\n")
    return path


def kmodel_sidecar_path(kmodel_path):
    return os.fspath(kmodel_path) + SUFFIX


def read(path, data=None):
    """The sidecar dict at path, or None when absent, unreadable or not for `data` (the artefact's bytes)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as err:
        log.warning("ignoring %s: not readable JSON (%s)", path, err)
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return None
    if data is not None and (doc.get("size") != len(data) or doc.get("sha256") != digest(data)):
        log.warning("ignoring %s: it describes another version of the file next to it (re-run emc convert)", path)
        return None
    return doc


def for_kmodel(path):
    """The sidecar of the kmodel file at path (checked against its bytes), or None."""
    path = os.fspath(path)
    side = kmodel_sidecar_path(path)
    if not os.path.isfile(side):
        return None
    with open(path, "rb") as f:
        return read(side, f.read())


def report_of(doc):
    """The Report saved in a sidecar dict, or None."""
    saved = (doc or {}).get("report")
    if not saved:
        return None
    return Report(saved["title"], saved["columns"], saved["rows"], saved["totals"], saved["notes"])


def layer_tensors(doc):
    """{device layer index: graph tensor name or None} from a sidecar dict ({} when there is none)."""
    return {int(k): v for k, v in ((doc or {}).get("layers") or {}).items()}
