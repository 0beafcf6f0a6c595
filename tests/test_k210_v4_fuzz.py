"""Fuzzing the v4 reader and simulator: any mutation of a real v4 file parses or raises KModelFormatError, and a
parsed model prints, and runs on a zero input or raises an EmcError -- never an IndexError, a hang or a huge
allocation. About 3,500 mutated files in all, 600 of them from a file emc wrote."""
import functools
import struct as pystruct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import emc
from conftest import REFERENCE
from emc.platforms.k210.v4.reader import KModelV4
from emc.platforms.k210.v4.simulator import input_spec

BIG = ["nncase_yolo20.kmodel", "nncase_ulffd_landmark.kmodel", "nncase_rfb320.kmodel", "nncase_slim320.kmodel"]


def seeds():
    found = {}
    for name in ["nncase_iris.kmodel"] + BIG:
        path = REFERENCE / "kmodel-v4" / name
        if path.is_file():
            found[name] = path.read_bytes()
    return found


SEEDS = seeds()
pytestmark = pytest.mark.skipif("nncase_iris.kmodel" not in SEEDS, reason="../shared/reference is absent")


def fuzz(examples):
    """Deterministic hypothesis settings (the same mutations every run)."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))

OPS = st.lists(st.tuples(st.sampled_from(["flip", "byte", "word", "truncate", "insert"]),
                         st.integers(0, 2 ** 20), st.integers(0, 2 ** 32 - 1)), min_size=1, max_size=4)
EXTREMES = st.sampled_from([0, 1, 3, 7, 8, 255, 2 ** 15, 2 ** 16 - 1, 2 ** 20, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1])


def tables_end(data):
    """Where the node bodies of a v4 file start (header, ranges, shapes, constants, node headers before)."""
    constants, _, nodes, inputs, outputs = pystruct.unpack_from("<5I", data, 16)
    return 40 + 32 * inputs + 16 * outputs + constants + 8 * nodes


def mutate(data, ops, limit=None):
    data = bytearray(data)
    limit = limit or len(data)
    for kind, pos, value in ops:
        if not data:
            break
        pos = pos % max(1, min(limit, len(data)))
        if kind == "flip":
            data[pos] ^= 1 << (value % 8)
        elif kind == "byte":
            data[pos] = value % 256
        elif kind == "word":
            data[pos:pos + 4] = (value % 2 ** 32).to_bytes(4, "little")
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = bytes([value % 256]) * (value % 9 + 1)
    return bytes(data)


def check(data, run=True):
    """Parse, print and run a (mutated) file; only the two documented error types may come out."""
    try:
        model = KModelV4.from_bytes(data)
    except emc.KModelFormatError as e:
        assert "offset" in str(e) or "field" in str(e)
        return "format"
    assert str(model) and len(model.summary()) == len(model.nodes)
    if not run:
        return "parsed"
    try:
        kind, shape = input_spec(model)
        outputs = emc.run_kmodel(model, np.zeros(shape, np.uint8 if kind == "kpu" else np.float32))
    except emc.EmcError:
        return "run error"
    assert len(outputs) == len(model.outputs)
    return "ran"


@fuzz(900)
@given(OPS)
def test_random_mutations_of_iris(ops):
    check(mutate(SEEDS["nncase_iris.kmodel"], ops))


@fuzz(600)
@given(st.integers(0, 179), EXTREMES)
def test_iris_fields_overwritten_with_extreme_values(word, value):
    data = bytearray(SEEDS["nncase_iris.kmodel"])
    data[4 * word:4 * word + 4] = value.to_bytes(4, "little")
    check(bytes(data))


def test_every_truncation_of_iris():
    data = SEEDS["nncase_iris.kmodel"]
    results = [check(data[:cut]) for cut in range(len(data) + 1)]
    assert results[-1] == "ran" and results.count("format") >= len(data) - 8   # the last body's padding may go


@pytest.mark.skipif(len(SEEDS) < 5, reason="the bigger v4 reference files are absent")
@fuzz(600)
@given(st.sampled_from(BIG), OPS, st.booleans())
def test_headers_and_tables_of_the_big_files(name, ops, first_body):
    data = SEEDS[name]
    limit = tables_end(data) + (1400 if first_body else 0)    # optionally the first kpu_conv2d body as well
    check(mutate(data, ops, limit), run=False)


@pytest.mark.skipif(len(SEEDS) < 5, reason="the bigger v4 reference files are absent")
@fuzz(8)
@given(st.sampled_from(["nncase_yolo20.kmodel", "nncase_slim320.kmodel"]), st.integers(0, 2 ** 16), EXTREMES)
def test_big_files_with_a_broken_table_entry_still_run_or_fail_cleanly(name, pos, value):
    data = bytearray(SEEDS[name])
    pos = 4 * (pos % (tables_end(data) // 4))
    data[pos:pos + 4] = value.to_bytes(4, "little")
    check(bytes(data))


@functools.lru_cache(maxsize=None)
def emc_written():
    """A small kmodel v4 written by emc with many of its node kinds: kpu_conv2d, conv2d, dequantize, quantize,
    reduce_window2d, quantized_binary, concat, reduce, matmul, nnil sigmoid, binary with a constant, softmax."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(4)
    k = keras.layers
    x = keras.Input((8, 8, 3))
    a = k.Conv2D(4, 3, padding="same", activation="relu")(x)
    b = k.Conv2D(4, 5, padding="same", activation="relu")(x)
    y = k.Concatenate()([k.Add()([a, b]), k.MaxPooling2D(3, 1, padding="same")(a)])
    y = k.PReLU(alpha_initializer=keras.initializers.RandomUniform(0.1, 0.3))(k.Conv2D(4, 1)(y))
    y = k.Dense(6, activation="sigmoid")(k.GlobalAveragePooling2D()(y))
    model = keras.Model(x, k.Dense(3, activation="softmax")(y))
    data = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 3)).astype(np.float32)
    return emc.convert(model, dataset=data, version=4).kmodel


def test_the_emc_written_fuzz_seed_has_many_node_kinds():
    names = {node.name for node in KModelV4.from_bytes(emc_written()).nodes}
    assert {"kpu_conv2d", "conv2d", "quantized_binary", "concat", "matmul", "nnil_unary_method", "binary",
            "reduce_window2d", "softmax"} <= names, names


@fuzz(600)
@given(OPS)
def test_random_mutations_of_an_emc_written_file(ops):
    check(mutate(emc_written(), ops))
