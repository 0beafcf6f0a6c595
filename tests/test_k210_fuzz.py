"""Fuzzing the kmodel readers and simulators: any mutation parses or raises KModelFormatError, and a parsed
model runs or raises an EmcError -- never an IndexError, a hang or a huge allocation."""
import glob
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import emc
from conftest import REFERENCE

SMALL = ["kmodel-v3/nncase_iris.kmodel", "kmodel-v3/maixemc_cifar10.kmodel"]


def seeds():
    found = {}
    for rel in SMALL:
        path = REFERENCE / rel
        if path.is_file():
            found[rel] = path.read_bytes()
    return found


SEEDS = seeds()
pytestmark = pytest.mark.skipif(not SEEDS, reason="../shared/reference is absent: no kmodels to mutate")


def mutate(data, ops, header_only):
    data = bytearray(data)
    limit = min(len(data), 512) if header_only else len(data)
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


OPS = st.lists(st.tuples(st.sampled_from(["flip", "byte", "word", "truncate", "insert"]),
                         st.integers(0, 2 ** 20), st.integers(0, 2 ** 32 - 1)), min_size=1, max_size=4)
EXTREMES = st.sampled_from([0, 1, 7, 255, 2 ** 15, 2 ** 16 - 1, 2 ** 31, 2 ** 32 - 1])


def check(data):
    try:
        model = emc.load_kmodel(data)
    except emc.KModelFormatError:
        return
    try:
        x = zero_input(model)
        emc.run_kmodel(model, x)
    except emc.EmcError:
        pass


def zero_input(model):
    if model.version == 3:
        from emc.platforms.k210.simulator_v3 import input_spec
        kind, shape = input_spec(model)
        return np.zeros((shape[1], shape[2], shape[0]) if kind == "kpu" else shape, np.uint8 if kind == "kpu" else np.float32)
    from emc.platforms.k210.simulator_v4 import input_spec as spec4
    kind, shape = spec4(model)
    return np.zeros(shape, np.uint8 if kind == "kpu" else np.float32)


@settings(max_examples=700, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(SEEDS)), OPS)
def test_random_mutations(name, ops):
    check(mutate(SEEDS[name], ops, header_only="cifar" in name))


@settings(max_examples=700, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(SEEDS)), st.integers(0, 400), EXTREMES)
def test_field_overwrites_with_extreme_values(name, word, value):
    data = bytearray(SEEDS[name])
    pos = (4 * word) % max(4, min(len(data), 1700) - 4)
    data[pos:pos + 4] = value.to_bytes(4, "little")
    check(bytes(data))


@settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(SEEDS)), st.integers(0, 2 ** 20))
def test_truncations(name, cut):
    data = SEEDS[name]
    check(data[:cut % (len(data) + 1)])
