"""Fuzzing the kmodel v3 reader and simulator with hypothesis: every mutation of a real file parses or raises
KModelFormatError, and a parsed model runs on a zero input or raises an EmcError -- never an IndexError, a
struct.error, a numpy traceback, a hang or a huge allocation."""
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import REFERENCE
from emc.errors import EmcError, KModelFormatError
from emc.platforms.k210.kmodel import load_kmodel, run_kmodel

SMALL = ["nncase_iris.kmodel", "maixemc_cifar10.kmodel", "maixemc_cifar10_board.kmodel"]
BIG = ["nncase_yolo20.kmodel", "maixemc_mbnetv1_0.75.kmodel"]
SECONDS_PER_EXAMPLE = 20          # far above any real run (< 1 s); a hang or runaway loop would exceed it


def read_seeds(names):
    folder = REFERENCE / "kmodel-v3"
    return {n: (folder / n).read_bytes() for n in names if (folder / n).is_file()}


SEEDS = read_seeds(SMALL)
BIG_SEEDS = read_seeds(BIG)
pytestmark = pytest.mark.skipif(not SEEDS, reason="../shared/reference is absent: no kmodels to mutate")


def structure_of(data):
    """(end of header and tables, byte ranges of every body structure and KPU block) of an intact file --
    computed with plain integer reads here, so the mutations target the fields the reader must check."""
    u32 = lambda at: int.from_bytes(data[at:at + 4], "little")
    n_out, n_layers = u32(24), u32(12)
    pos = 28 + 8 * n_out + 8 * n_layers
    ranges = [(0, pos)]
    for i in range(n_layers):
        code, size = u32(28 + 8 * n_out + 8 * i), u32(28 + 8 * n_out + 8 * i + 4)
        ranges.append((pos, pos + min(size, 64)))
        if code == 10240:                                       # layer argument, bn and act tables
            ranges += [(u32(pos + 8), u32(pos + 8) + 96), (u32(pos + 16), u32(pos + 16) + 16),
                       (u32(pos + 20), u32(pos + 20) + 144)]
        pos += size
    return pos, [(a, min(b, len(data))) for a, b in ranges if a < len(data)]


STRUCTURE = {name: structure_of(data) for name, data in {**SEEDS, **BIG_SEEDS}.items()}
EXTREMES = [0, 1, 2, 3, 7, 8, 15, 16, 63, 64, 255, 256, 1023, 1024, 32767, 32768, 65535, 2 ** 20, 2 ** 23,
            2 ** 24 - 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 63, 2 ** 64 - 1]


def zero_input(model):
    from emc.platforms.k210.v3.simulator import input_spec
    kind, (a, *rest) = input_spec(model)
    return np.zeros((rest[0], rest[1], a), np.uint8) if kind == "kpu" else np.zeros(a, np.float32)


def check(data):
    """The property: parse -> KModelFormatError or a model; run -> EmcError or outputs; bounded time."""
    start = time.perf_counter()
    try:
        model = load_kmodel(data)
    except KModelFormatError:
        return
    try:
        outputs = run_kmodel(model, zero_input(model))
        assert all(o.dtype == np.float32 for o in outputs)
    except EmcError:
        pass
    assert time.perf_counter() - start < SECONDS_PER_EXAMPLE


OPERATIONS = ["flip"] * 3 + ["byte"] * 2 + ["u32"] * 3 + ["u64", "truncate", "insert", "delete"]


def position(draw, name, structural):
    data = SEEDS.get(name) or BIG_SEEDS[name]
    if structural or name in BIG_SEEDS:
        tables_end, ranges = STRUCTURE[name]
        if name in BIG_SEEDS:                                   # big files: header and tables only
            return draw(st.integers(0, tables_end - 1))
        a, b = draw(st.sampled_from(ranges))
        return draw(st.integers(a, max(a, b - 1)))
    return draw(st.integers(0, len(data) - 1))


@st.composite
def mutations(draw, names):
    """(file name, [(operation, position, value)]): printable, so a failing example reads as a recipe."""
    name = draw(st.sampled_from(sorted(names)))
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(OPERATIONS))
        pos = position(draw, name, draw(st.booleans()))
        width = {"u32": 4, "u64": 8}.get(kind, 1)
        value = draw(st.sampled_from(EXTREMES) | st.integers(0, 2 ** (8 * width) - 1)) % 2 ** (8 * width)
        if kind == "truncate" and name in BIG_SEEDS:
            kind = "byte"
        ops.append((kind, pos, value if kind != "insert" else draw(st.binary(min_size=1, max_size=12))))
    return name, ops


def apply(name, ops):
    data = bytearray(SEEDS.get(name) or BIG_SEEDS[name])
    for kind, pos, value in ops:
        pos = min(pos, max(0, len(data) - 1))
        if kind == "flip" and data:
            data[pos] ^= 1 << (value % 8)
        elif kind == "byte" and data:
            data[pos] = value % 256
        elif kind in ("u32", "u64"):
            width = 4 if kind == "u32" else 8
            pos -= pos % width
            data[pos:pos + width] = value.to_bytes(width, "little")
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = value
        elif kind == "delete":
            del data[pos:pos + 1 + value % 12]
    return bytes(data)


def fuzz(examples):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


@fuzz(1300)
@given(mutations(SEEDS))
def test_mutations_of_small_files(mutation):
    check(apply(*mutation))


@fuzz(500)
@given(st.sampled_from(sorted(SEEDS)), st.data())
def test_extreme_values_in_every_structure_field(name, draw):
    _, ranges = STRUCTURE[name]
    a, b = draw.draw(st.sampled_from(ranges))
    pos = draw.draw(st.integers(a, max(a, b - 4)))
    check(apply(name, [("u32", pos, draw.draw(st.sampled_from(EXTREMES)) % 2 ** 32)]))


@fuzz(200)
@given(st.sampled_from(sorted(SEEDS)), st.integers(0, 2 ** 24))
def test_truncations(name, cut):
    data = SEEDS[name]
    check(data[:cut % (len(data) + 1)])


@pytest.mark.skipif(not BIG_SEEDS, reason="the big reference kmodels are absent")
@fuzz(60)
@given(mutations(BIG_SEEDS))
def test_header_and_table_mutations_of_big_files(mutation):
    check(apply(*mutation))
