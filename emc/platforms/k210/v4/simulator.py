"""Runs a kmodel v4 as nncase v0.2's runtime does: input 0 in, nodes in file order (one function per opcode:
the CPU ones in ops_tensor / ops_math / ops_conv, the two KPU ones here on chip/kpu.py), every output out.
A batch runs in lockstep, a machine per sample, with kpu_conv2d and matmul computed once over all of them.
"""
import logging

import numpy as np

from ....errors import EmcError, KModelFormatError
from . import ops_conv, ops_math, ops_tensor
from .ops_common import BATCHED, EXECUTORS, executes, executes_batched, prod
from ..chip.device_input import to_device_layout
from ..chip.kpu import kpu_conv, kpu_download, kpu_rows, kpu_upload
from .reader import KModelV4
from .structs import KPU_RAM_BYTES

log = logging.getLogger(__name__)
OP_MODULES = (ops_tensor, ops_math, ops_conv)      # importing them fills EXECUTORS
MAX_WORK = 1 << 31            # element operations one node may ask for before we refuse (fuzzed files)
SAMPLES_PER_PASS = 8          # samples run in lockstep (each has its own memories: ~2 MiB KPU RAM + main memory)


class Machine:
    """The three memories of one run (const image, main memory, KPU RAM) with bounds-checked access."""

    def __init__(self, model, arg_x_mode="per_channel"):
        self.memories = {0: np.frombuffer(model.constants, np.uint8).copy(),
                         1: np.zeros(model.header.main_mem, np.uint8),
                         2: np.zeros(KPU_RAM_BYTES, np.uint8)}
        self.arg_x_mode = arg_x_mode
        self.node = None

    @property
    def kpu(self):
        return self.memories[2]

    def fail(self, message, field):
        node = self.node
        if node is None:
            raise KModelFormatError(message, None, field)
        raise KModelFormatError(f"node {node.index} ({node.name}): {message}", node.offset,
                                f"nodes[{node.index}].{field}")

    def span(self, r, nbytes, field):
        """The memory holding range r and the slice of nbytes from its start; KModelFormatError when outside."""
        mem = self.memories[r.memory_type]
        if nbytes < 0 or r.start + nbytes > len(mem):
            self.fail(f"{field} {r} needs {nbytes} bytes, beyond the {len(mem)} bytes of {r.memory} memory", field)
        return mem, slice(r.start, r.start + nbytes)

    def read(self, r, dtype, count, field):
        dtype = np.dtype(dtype)
        mem, where = self.span(r, count * dtype.itemsize, field)
        return mem[where].view(dtype).copy()

    def write(self, r, values, field):
        raw = np.ascontiguousarray(values).reshape(-1).view(np.uint8)
        mem, where = self.span(r, raw.size, field)
        mem[where] = raw
        return values

    def reserve(self, r, nbytes, field):
        """Check an output's extent before computing it (so a broken shape never allocates)."""
        self.span(r, nbytes, field)

    def work(self, amount, what):
        if amount > MAX_WORK:
            self.fail(f"{what} would take {amount:.3g} element operations; the shapes are implausible", "body")


# ---- K210 ops ----------------------------------------------------------------------------------------------------
def _kpu_bytes(shape):
    """Bytes of N consecutive C x H x W maps in the KPU RAM layout."""
    n, c, h, w = shape
    return n * kpu_rows(w, h, c) * 64


@executes("kpu_upload")
def kpu_upload_op(m, node):
    shape = node.shape("in_shape")
    out = node.range("output")
    x = m.read(node.range("input"), "u1", prod(shape), "input").reshape(shape)
    mem, _ = m.span(out, _kpu_bytes(shape), "output")
    kpu_upload(mem[out.start:], 0, x)
    return x


@executes_batched("kpu_conv2d")
def kpu_conv2d(machines, node):
    """kpu_conv2d of one node in every machine of a lockstep run: one kpu_conv call over all their maps."""
    a, n = node.arg, node.body.batches
    c, h, w = a.in_shape
    if n == 0:
        return [np.zeros((0,) + a.out_shape, np.uint8) for _ in machines]
    x = np.concatenate([kpu_download(m.kpu, a.image_src_addr, c, h, w, n).reshape(n, c, h, w) for m in machines])
    y = kpu_conv(a, x, node.weights, node.bn, node.act, machines[0].arg_x_mode)
    outs = list(y.reshape((len(machines), n) + y.shape[1:]))
    main_out = node.range("main_mem_output")
    for m, out in zip(machines, outs):
        kpu_upload(m.kpu, a.image_dst_addr, out)
        if main_out.size:
            m.write(main_out, out, "main_mem_output")
    return outs


# ---- running a model ---------------------------------------------------------------------------------------------
def input_spec(model):
    """('kpu', HWC image shape) for a uint8 image in KPU RAM, ('main', N C H W tensor shape) for main memory."""
    if not model.inputs:
        raise EmcError("the kmodel has no inputs; nothing to run")
    r = model.inputs[0]
    n, c, h, w = model.input_shapes[0]
    if r.memory_type == 2:
        return "kpu", ((h, w, c) if n == 1 else (n, h, w, c))
    return "main", (n, c, h, w)


def _kpu_samples(model, x, layout):
    """(samples (N, n, C, H, W), was_batched) for a model with its n input images in KPU RAM."""
    n, c, h, w = model.input_shapes[0]
    xs, batched = to_device_layout(x, (c, h, w), layout, images=n)
    return (xs[:, None] if n == 1 else xs), batched


def _main_samples(model, x):
    r = model.inputs[0]
    shape = tuple(model.input_shapes[0])
    size = prod(shape)
    dtype = np.float32 if r.datatype == 0 else np.uint8
    try:
        arr = np.asarray(x, np.float64 if dtype is np.uint8 else np.float32)
    except (TypeError, ValueError) as e:
        raise EmcError(f"the kmodel input must be numbers of shape {shape}: {e}") from None
    # one sample: the stored shape, that shape without its leading 1s, or the values flat; a batch: any of these
    singles = {shape[k:] for k in range(4) if all(d == 1 for d in shape[:k])} | {(size,)}
    if arr.shape in singles:
        arr, batched = arr.reshape((1,) + shape), False
    elif arr.ndim >= 2 and arr.shape[1:] in singles:
        arr, batched = arr.reshape((-1,) + shape), True
    else:
        raise EmcError(f"the kmodel takes a {np.dtype(dtype).name} tensor of shape {shape} (or {size} values), or a "
                       f"batch of them; got an array of shape {arr.shape}")
    if dtype is np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255 or not np.all(np.mod(arr, 1) == 0)):
            raise EmcError("the kmodel input is uint8 (0..255); got non-integer or out-of-range values")
        arr = arr.astype(np.uint8)
    return arr, batched


def _feed(m, model, sample):
    """Input 0 into its memory: KPU layout in KPU RAM, dense in main memory (the reader checked it fits)."""
    r = model.inputs[0]
    if r.memory_type == 2:
        mem, _ = m.span(r, _kpu_bytes(model.input_shapes[0]), "inputs[0]")
        kpu_upload(mem[r.start:], 0, sample)
    else:
        m.write(r, sample, "inputs[0]")


def run_lockstep(model, samples, arg_x_mode="per_channel", trace=None):
    """Run samples (already in device layout) node by node, one machine each, KPU layers batched over them;
    returns the outputs as stored, per sample. trace collects the first sample's node outputs."""
    machines = [Machine(model, arg_x_mode) for _ in samples]
    for m, sample in zip(machines, samples):
        _feed(m, model, sample)
    for node in model.nodes:
        for m in machines:
            m.node = node
        batched = BATCHED.get(node.opcode)
        outs = batched(machines, node) if batched else [EXECUTORS[node.opcode](m, node) for m in machines]
        if trace is not None:
            trace.append((node.index, node.name, np.array(outs[0])))
    return [_outputs(m, model) for m in machines]


def _outputs(m, model):
    """Every output of a finished run, as stored: float32 or uint8, flat."""
    m.node = None
    results = []
    for i, r in enumerate(model.outputs):
        if r.datatype == 0:
            results.append(m.read(r, "<f4", r.size // 4, f"outputs[{i}]"))
        else:
            results.append(m.read(r, "u1", r.size, f"outputs[{i}]"))
    return results


def run_v4(model, x, layout="hwc", trace=False, arg_x_mode="per_channel", **options):
    """Every output of the kmodel for input 0 = x: float32 arrays for float outputs, uint8 arrays otherwise, flat as
    stored, with a leading batch axis when x is a batch. trace=True also returns [(node, opcode name, array)] of
    the first sample.

    x: a uint8 HWC image (layout='chw': C H W) or a batch of them when the input is in KPU RAM; the dense tensor
    in the stored N C H W shape (or its values flat), or a batch of them, when the input is in main memory.
    """
    if options:
        raise EmcError(f"unknown option(s) {', '.join(sorted(options))} for a kmodel v4; it takes layout, trace "
                       f"and arg_x_mode")
    if arg_x_mode not in ("per_channel", "sum"):
        raise EmcError(f"arg_x_mode must be 'per_channel' or 'sum', not {arg_x_mode!r}")
    if isinstance(model, (bytes, bytearray, memoryview)):
        model = KModelV4.from_bytes(model)
    kind, _ = input_spec(model)
    samples, batched = _kpu_samples(model, x, layout) if kind == "kpu" else _main_samples(model, x)
    if not len(samples):
        raise EmcError("the input batch is empty")
    steps = [] if trace else None
    outs = []
    for start in range(0, len(samples), SAMPLES_PER_PASS):
        outs += run_lockstep(model, samples[start:start + SAMPLES_PER_PASS], arg_x_mode, steps if start == 0 else None)
    results = [np.stack([o[k] for o in outs]) if batched else outs[0][k] for k in range(len(model.outputs))]
    log.debug("ran a kmodel v4 of %d nodes on %d sample(s)", len(model.nodes), len(samples))
    return (results, steps) if trace else results
