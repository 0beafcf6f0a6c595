"""Evaluation helpers in the spirit of NNoM's: accuracy and confusion matrix of any emc model or artefact,
NNoM's test-bin file for on-device validation, and a kmodel as an aligned C array for firmware."""
import logging
import os
import re
import sys
import time

import numpy as np

from .errors import EmcError
from .fileio import write_atomic

log = logging.getLogger(__name__)

KMODEL_V4_MAGIC = b"LDMK"
NNOM_BLOCK = 128          # NNoM's test bin: 128 labels, then the 128 samples they belong to
C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---- what runs a model ---------------------------------------------------------------------------------------
def is_kmodel_bytes(head):
    """True for the first bytes of a kmodel v3 (uint32 version 3) or v4 ('KMDL' stored as LDMK)."""
    head = bytes(head[:4])
    return head == KMODEL_V4_MAGIC or (len(head) == 4 and int.from_bytes(head, "little") == 3)


def is_kmodel_file(path):
    """True when the file at path starts like a kmodel (v3 or v4)."""
    try:
        with open(path, "rb") as f:
            return is_kmodel_bytes(f.read(4))
    except OSError:
        return False


def is_parsed_kmodel(obj):
    """True for what emc.load_kmodel returns (KModelV3 / KModelV4)."""
    return type(obj).__module__.startswith("emc.platforms.k210.") and hasattr(obj, "version")


def to_pixels(x, input_transform):
    """Float model input -> the uint8 pixels a camera gives: round((x - offset) / scale), clipped to 0..255."""
    scale, offset = input_transform
    return np.clip(np.round((np.asarray(x, np.float64) - offset) / scale), 0, 255).astype(np.uint8)


class Predictor:
    """One callable front for every kind of model: predict(x) -> list of batched float outputs."""

    def __init__(self, kind, fn, graph=None):
        self.kind = kind          # 'float' | 'k210' | 'kmodel' | 'c' | artefact platform name
        self.fn = fn
        self.graph = graph

    def __call__(self, x):
        return [np.asarray(o, np.float32) for o in self.fn(x)]


def _kmodel_predictor(model, input_transform):
    from .platforms.k210.kmodel import run_kmodel

    def run(x):
        x = np.asarray(x)
        if input_transform is not None and x.dtype != np.uint8 and x.ndim >= 3:
            x = to_pixels(x, input_transform)
        outs = run_kmodel(model, x)
        return [np.asarray(o, np.float32).reshape(len(x), -1) for o in outs]
    return Predictor("kmodel", run)


def _artefact_runner(artefact):
    """The artefact's compiled code (predict) when it has and can build it, else its simulator."""
    predict = getattr(artefact, "predict", None)
    if predict is None:
        return artefact.simulate
    state = {"compiled": True}

    def run(x):
        if state["compiled"]:
            try:
                return predict(x)
            except (EmcError, OSError) as err:
                log.warning("%s: cannot run the compiled code (%s); using the simulator", artefact.name, err)
                state["compiled"] = False
        return artefact.simulate(x)
    return run


def predictor(model, input_transform=None):
    """A Predictor for an emc.Graph / Keras / TensorLayer model or file (float), a K210Artefact (simulated),
    a CArtefact (its compiled C when it can be built, else its simulator), or a kmodel (path, bytes, parsed).

    input_transform=(scale, offset) lets a kmodel take float inputs: pixels = round((x - offset) / scale).
    """
    from .artefact import Artefact
    from .graph import Graph
    if isinstance(model, Artefact):
        return Predictor(model.platform, _artefact_runner(model), getattr(model, "graph", None))
    if isinstance(model, (bytes, bytearray, memoryview)):
        from .platforms.k210.kmodel import load_kmodel
        return _kmodel_predictor(load_kmodel(model), input_transform)
    if is_parsed_kmodel(model):
        return _kmodel_predictor(model, input_transform)
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise EmcError(f"model file {path} does not exist")
        if os.path.isfile(path) and is_kmodel_file(path):
            from .platforms.k210.kmodel import load_kmodel
            return _kmodel_predictor(load_kmodel(path), input_transform)
    if not isinstance(model, Graph):
        from .frontends import load_model
        model = load_model(model)
    graph = model
    return Predictor("float", lambda x: graph.run(x), graph)


# ---- evaluate ----------------------------------------------------------------------------------------------
def _labels(y, n):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        y = np.argmax(y, axis=1)                  # one-hot (or scores) -> class index
    y = y.reshape(-1)
    if len(y) != n:
        raise EmcError(f"{n} samples but {len(y)} labels; give one label (or one-hot row) per sample")
    if not np.all(np.equal(np.mod(y, 1), 0)) or (y.size and y.min() < 0):
        raise EmcError("labels must be non-negative class indices or one-hot rows")
    return y.astype(np.int64)


def _batches(n, batch_size, progress):
    starts = range(0, n, batch_size)
    if progress and sys.stderr.isatty():
        from tqdm import tqdm
        starts = tqdm(starts, desc="evaluating", unit="batch", leave=False)
    return starts


def evaluate(model, x, y, top_k=(1, 5), timing=False, batch_size=32, input_transform=None, progress=False):
    """Top-k accuracy and confusion matrix of model's first output on (x, y); optional time per inference.

    model: anything predictor() takes (Graph, Keras/TL model or file, K210Artefact, CArtefact, kmodel).
    x: the model's input, batch first (float for graphs and artefacts; uint8 HWC images or float vectors for a
    kmodel, or float with input_transform). y: class indices or one-hot rows. A top-k larger than the number of
    classes counts every sample as right. With timing=True, samples run one at a time and the wall time of
    each inference is measured (host time of the simulator or the compiled C, not device time).
    Returns {'samples', 'classes', 'top1', 'top5', ..., 'confusion' (true x predicted counts), 'predictions',
    'scores', 'time_per_inference' and 'time_median' in seconds when timing}.
    """
    run = model if isinstance(model, Predictor) else predictor(model, input_transform)
    if isinstance(x, (list, tuple)):
        raise EmcError("evaluate() takes one input array (batch first); multi-input models are not supported")
    x = np.asarray(x)
    n = len(x)
    if n == 0:
        raise EmcError("evaluate() needs at least one sample")
    labels = _labels(y, n)
    scores, times = [], []
    step = 1 if timing else max(1, int(batch_size))
    for start in _batches(n, step, progress):
        batch = x[start:start + step]
        begin = time.perf_counter()
        out = run(batch)[0]
        times.append(time.perf_counter() - begin)
        scores.append(np.asarray(out, np.float32).reshape(len(batch), -1))
    scores = np.concatenate(scores)
    classes = max(scores.shape[1], int(labels.max()) + 1)
    predictions = np.argmax(scores, axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")
    result = {"samples": n, "classes": scores.shape[1]}
    for k in top_k:
        k = int(k)
        if k < 1:
            raise EmcError(f"top_k values must be >= 1, got {k}")
        hits = np.any(order[:, :k] == labels[:, None], axis=1)
        result[f"top{k}"] = float(hits.mean())
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    result.update(confusion=confusion, predictions=predictions, scores=scores)
    if timing:
        result["time_per_inference"] = float(np.mean(times))
        result["time_median"] = float(np.median(times))
    log.info("evaluated %d samples: %s", n, ", ".join(f"top-{k} {result[f'top{k}']:.4f}" for k in top_k))
    return result


def format_evaluation(result, labels=None):
    """A printable summary of evaluate()'s result: top-k lines, timing, and the confusion matrix."""
    lines = []
    for key in sorted((k for k in result if re.fullmatch(r"top\d+", k)), key=lambda k: int(k[3:])):
        right = int(round(result[key] * result["samples"]))
        lines.append(f"top-{key[3:]} accuracy: {result[key]:.4f} ({right}/{result['samples']})")
    if "time_per_inference" in result:
        lines.append(f"time per inference: {1000 * result['time_per_inference']:.3f} ms (median "
                     f"{1000 * result['time_median']:.3f} ms, host)")
    confusion = result["confusion"]
    names = [str(labels[i]) if labels is not None and i < len(labels) else str(i) for i in range(len(confusion))]
    width = max([len(n) for n in names] + [len(str(int(confusion.max()))) if confusion.size else 1, 4])
    lines.append("confusion matrix (rows: true class, columns: predicted):")
    lines.append(" " * (width + 1) + " ".join(n[:width].rjust(width) for n in names))
    for name, row in zip(names, confusion):
        lines.append(name[:width].rjust(width) + " " + " ".join(str(int(v)).rjust(width) for v in row))
    return "\n".join(lines)


# ---- NNoM test bin -----------------------------------------------------------------------------------------
def nnom_dec_bits(x, bits=8):
    """NNoM's power-of-two input format: fractional bits so that max |x| fits in a signed `bits` integer."""
    peak = float(np.max(np.abs(x))) if np.size(x) else 0.0
    if peak == 0.0:
        return bits - 1
    return int((bits - 1) - int(np.ceil(np.log2(peak))))


def export_test_bin(x, y, path, dec_bits=None):
    """Write (x, y) as NNoM's test-bin file for checking a model on the MCU; returns the input's dec_bits.

    Layout (NNoM's scripts): blocks of 128 samples; each block is 128 one-byte labels followed by the 128
    samples' int8 data, each sample flattened in its own order (NHWC arrays give HWC bytes). The last block's
    labels are zero-padded to 128, but only its real samples follow. Float x is quantized as NNoM does,
    q = round(x * 2**dec_bits) with dec_bits = 7 - ceil(log2(max|x|)), but clipped to -128..127 (NNoM's own
    cast wraps a maximum of exactly a power of two around to -128). int8 x is written as it is (dec_bits None).
    """
    x = np.asarray(x)
    n = len(x)
    if n == 0:
        raise EmcError("export_test_bin() needs at least one sample")
    labels = _labels(y, n)
    if labels.max() > 255:
        raise EmcError(f"NNoM's test bin stores one byte per label; label {int(labels.max())} does not fit")
    if x.dtype == np.int8:
        data, dec_bits = x, None
    else:
        x = x.astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise EmcError("the test data holds NaN or inf values")
        dec_bits = nnom_dec_bits(x) if dec_bits is None else int(dec_bits)
        data = np.clip(np.round(x * 2.0 ** dec_bits), -128, 127).astype(np.int8)
    data = data.reshape(n, -1)
    pieces = []
    for start in range(0, n, NNOM_BLOCK):
        block_labels = np.zeros(NNOM_BLOCK, np.uint8)
        chunk = labels[start:start + NNOM_BLOCK]
        block_labels[:len(chunk)] = chunk
        pieces += [block_labels.tobytes(), data[start:start + NNOM_BLOCK].tobytes()]
    write_atomic(path, b"".join(pieces))
    log.info("wrote %s: %d samples of %d bytes, dec_bits %s", path, n, data.shape[1], dec_bits)
    return dec_bits


# ---- kmodel as a C array -------------------------------------------------------------------------------------
def _kmodel_bytes(kmodel):
    if isinstance(kmodel, (bytes, bytearray, memoryview)):
        return bytes(kmodel)
    if isinstance(getattr(kmodel, "kmodel", None), (bytes, bytearray)):
        return bytes(kmodel.kmodel)                       # a K210Artefact
    if isinstance(getattr(kmodel, "data", None), (bytes, bytearray)):
        return bytes(kmodel.data)                         # a parsed kmodel
    if isinstance(kmodel, (str, os.PathLike)):
        path = os.fspath(kmodel)
        if not os.path.isfile(path):
            raise EmcError(f"kmodel file {path} does not exist")
        with open(path, "rb") as f:
            return f.read()
    raise EmcError(f"export_c_array() takes kmodel bytes, a path, a parsed kmodel or a K210Artefact, "
                   f"not {type(kmodel).__name__}")


def c_array_text(data, name="kmodel", align=128, source=""):
    """The text of a C header defining `const uint8_t name[]`, aligned to `align` bytes, and its size."""
    if not C_IDENTIFIER.match(name or ""):
        raise EmcError(f"'{name}' is not a C identifier; use letters, digits and '_' (not first a digit)")
    if not isinstance(align, int) or align < 1 or align & (align - 1):
        raise EmcError(f"align must be a power of two (e.g. 8, 64, 128), not {align!r}")
    guard = f"EMC_{name.upper()}_H"
    size_macro = f"{name.upper()}_SIZE"
    rows = [", ".join(f"0x{b:02x}" for b in data[i:i + 16]) for i in range(0, len(data), 16)]
    lines = [
        f"/* {name}: {len(data):,} bytes{' from ' + source if source else ''}, made by emc.export_c_array. */",
        "/* Include this header in ONE .c file; elsewhere declare: extern const uint8_t " + name + "[]; */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "#include <stdint.h>",
        "",
        f"#define {size_macro} {len(data)}u",
        "",
        "#if defined(_MSC_VER)",
        f"#define {guard}_ALIGN_PRE __declspec(align({align}))",
        f"#define {guard}_ALIGN_POST",
        "#else",
        f"#define {guard}_ALIGN_PRE",
        f"#define {guard}_ALIGN_POST __attribute__((aligned({align})))",
        "#endif",
        "",
        f"extern const uint8_t {name}[{size_macro}];",
        f"{guard}_ALIGN_PRE const uint8_t {name}[{size_macro}] {guard}_ALIGN_POST = {{",
    ]
    lines += [f"    {row}," for row in rows]
    lines += ["};", "", f"#endif /* {guard} */", ""]
    return "\n".join(lines)


def export_c_array(kmodel, path, name="kmodel", align=128):
    """Write a kmodel (bytes, path, parsed model or K210Artefact) as a C header with an aligned const array.

    The K210 SDK's loader reads the model in place, and its KPU DMA wants the weights aligned: 128 bytes is
    what Kendryte's examples use. The file is written atomically; returns the number of bytes embedded.
    """
    data = _kmodel_bytes(kmodel)
    if not data:
        raise EmcError("the kmodel is empty")
    source = os.path.basename(os.fspath(kmodel)) if isinstance(kmodel, (str, os.PathLike)) else ""
    write_atomic(path, c_array_text(data, name, align, source))
    log.info("wrote %s: %d bytes as %s[]", path, len(data), name)
    return len(data)
