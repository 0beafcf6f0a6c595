"""Evaluation helpers in the spirit of NNoM's: accuracy and confusion matrix of any emc model or artefact,
NNoM's test-bin file for on-device validation, and a kmodel as an aligned C array for firmware."""
import logging
import os
import re
import sys
import time

import numpy as np

from .errors import EmcError
from .evaluate_data import format_evaluation  # noqa: F401 -- part of this module's API (emc.format_evaluation)
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

    def __init__(self, kind, fn, graph=None, input_shape=None):
        self.kind = kind          # 'float' | 'k210' | 'kmodel' | 'c' | artefact platform name
        self.fn = fn
        self.graph = graph
        self.input_shape = input_shape    # per-sample input (H, W, C) when there is no graph to tell it

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
    kind, shape = kmodel_input(model)
    return Predictor("kmodel", run, input_shape=(shape[1], shape[2], shape[0]) if kind == "kpu" else shape)


def kmodel_input(model):
    """('kpu', (C, H, W)) for an image-input kmodel (uint8 pixels), ('float', (n,)) for a float-vector one."""
    if model.version == 3:
        from .platforms.k210.v3.simulator import input_spec
        return input_spec(model)
    if len(model.inputs) != 1:
        raise EmcError(f"emc runs single-input kmodels; this one has {len(model.inputs)} inputs")
    _, c, h, w = model.input_shapes[0]
    if model.inputs[0].dtype == "u8":
        return "kpu", (c, h, w)
    return "float", (c * h * w,)


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


def sidecar_transform(path):
    """The pixel mapping (scale, offset) emc recorded next to its kmodel at path, or None."""
    from .sidecar import for_kmodel
    transform = (for_kmodel(path) or {}).get("input_transform")
    return tuple(transform) if transform else None


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
            return _kmodel_predictor(load_kmodel(path), input_transform or sidecar_transform(path))
        if os.path.isdir(path):
            from .c_folder import CFolder
            folder = CFolder(path)
            return Predictor(folder.platform, folder.predict, input_shape=folder.input_shape)
    if not isinstance(model, Graph):
        from .frontends import load_model
        from .quiet import quiet_frameworks
        quiet_frameworks()
        model = load_model(model)
    graph = model
    return Predictor("float", lambda x: graph.run(x), graph)


# ---- evaluate ----------------------------------------------------------------------------------------------
_WORK = {}                # what forked workers inherit: the predictor and the source (no pickling)


def _run_range(bounds):
    """Worker body: scores of samples start..stop in batches, with the summed wall time of whole batches."""
    start, stop, batch_size = bounds
    run, source = _WORK["run"], _WORK["source"]
    out, elapsed = [], 0.0
    for s in range(start, stop, batch_size):
        x, _ = source.batch(s, min(stop, s + batch_size))
        begin = time.perf_counter()
        scores = run(x)[0]
        elapsed += time.perf_counter() - begin
        out.append(np.asarray(scores, np.float32).reshape(len(x), -1))
    return start, np.concatenate(out), elapsed


def _progress_bar(total, progress):
    if progress and sys.stderr.isatty():
        from tqdm import tqdm
        return tqdm(total=total, desc="evaluating", unit="sample", leave=False, file=sys.stderr)
    return None


def evaluate(model, x, y=None, top_k=(1, 5), timing=False, batch_size=32, input_transform=None, progress=False,
             workers=1, dataset_func="img_0_1", mean=None, std=None, labels=None):
    """Top-k accuracy and confusion matrix of model's first output on a labelled dataset; returns an Evaluation
    (a dict that prints NNoM-style and renders as HTML tables in notebooks).

    model: anything predictor() takes (Graph, Keras/TL model or file, K210Artefact, CArtefact, kmodel, C folder).
    x: the model's input, batch first, with labels y (class indices or one-hot rows); or a folder with one
    subfolder of images per class (sorted names = class indices; images read a batch at a time with
    dataset_func, then (x - mean) / std). A kmodel takes uint8 HWC images or float vectors, or float input with
    input_transform (for a folder, taken from dataset_func / mean / std). A top-k larger than the number of
    classes counts every sample as right. timing=True: host time of whole batches, per sample (not device time).
    workers=N: N processes (forked) share the samples. progress: a bar when stderr is a terminal.
    Returns {'samples', 'classes', 'top1', 'top5', ..., 'confusion' (true x predicted counts), 'predictions',
    'scores' (when not huge), 'time_per_inference' and 'time_median' (per sample) when timing}.
    """
    from .evaluate_data import ArraySource, FolderSource, Tally
    if isinstance(x, (str, os.PathLike)):
        if y is not None:
            raise EmcError("give labels either as y or as the folder's class subfolders, not both")
        if input_transform is None and not isinstance(model, Predictor):
            input_transform = _pixel_mapping(dataset_func, mean, std)
        run = model if isinstance(model, Predictor) else predictor(model, input_transform)
        source = FolderSource(x, _input_shape(model, run), dataset_func, mean, std, labels)
        labels = source.classes
    else:
        run = model if isinstance(model, Predictor) else predictor(model, input_transform)
        source = ArraySource(x, y)
    n = len(source)
    batch_size = max(1, int(batch_size))
    tally = Tally(n, top_k)
    bar = _progress_bar(n, progress)
    _WORK.update(run=run, source=source)
    chunks = _chunks(n, batch_size, workers)
    times = []
    try:
        for start, scores, elapsed in _map(chunks, workers):
            tally.add(start, scores, source.y[start:start + len(scores)])
            times.append((elapsed, len(scores)))
            if bar is not None:
                bar.update(len(scores))
    finally:
        _WORK.clear()
        if bar is not None:
            bar.close()
    result = tally.result()
    result.labels = labels
    if timing:
        per_sample = [t / k for t, k in times if k]
        result["time_per_inference"] = float(sum(t for t, _ in times) / n)
        result["time_median"] = float(np.median(per_sample))
    log.info("evaluated %d samples: %s", n, ", ".join(f"top-{k} {result[f'top{k}']:.4f}" for k in top_k))
    return result


def _chunks(n, batch_size, workers):
    """(start, stop, batch) ranges: one batch each in one process, or about 4 ranges per worker."""
    if workers <= 1:
        return [(s, min(n, s + batch_size), batch_size) for s in range(0, n, batch_size)]
    step = max(batch_size, -(-n // (4 * workers)))
    return [(s, min(n, s + step), batch_size) for s in range(0, n, step)]


def _map(chunks, workers):
    if workers <= 1:
        return map(_run_range, chunks)
    import multiprocessing
    if "fork" not in multiprocessing.get_all_start_methods():
        raise EmcError("evaluate(workers=N) needs the 'fork' start method (Linux, macOS); use workers=1")
    pool = multiprocessing.get_context("fork").Pool(int(workers))
    return _pooled(pool, chunks)


def _pooled(pool, chunks):
    try:
        yield from pool.imap_unordered(_run_range, chunks)
    finally:
        pool.terminate()


def _pixel_mapping(dataset_func, mean, std):
    from .convert import input_transform
    try:
        return input_transform(dataset_func, mean, std)
    except EmcError:
        return None


def _input_shape(model, run):
    """Per-sample NHWC input shape of what `run` computes, for loading images."""
    for candidate in (getattr(run, "graph", None), getattr(model, "graph", None)):
        if candidate is not None:
            return candidate.input_shapes[0]
    shape = getattr(model, "input_shape", None) or getattr(run, "input_shape", None)
    if shape is not None:
        return tuple(shape)
    raise EmcError("cannot tell the model's input shape to load the images; give arrays x, y instead")


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
    from .evaluate_data import labels_of
    labels = labels_of(y, n)
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
