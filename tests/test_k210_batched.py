"""Batched simulation (samples in lockstep, KPU and dense layers batched over them) against sample-by-sample runs,
which test_k210_runtime_outputs and /work/refs' executors check bit for bit: a batch must not mix its samples."""
import numpy as np
import pytest

import emc
from conftest import reference_path
from emc.platforms.k210.v3 import simulator as v3_simulator
from emc.platforms.k210.v4 import simulator as v4_simulator

RNG = np.random.default_rng(11)
FILES = [("kmodel-v3", "maixemc_cifar10.kmodel", {"sdk": "maixemc"}),        # K210_CONV, FULLY_CONNECTED
         ("kmodel-v3", "nncase_iris.kmodel", {}),                            # float input, FULLY_CONNECTED first
         ("kmodel-v4", "nncase_iris.kmodel", {}),                            # matmul
         ("kmodel-v4", "nncase_ulffd_landmark.kmodel", {})]                  # kpu_conv2d, CPU ops


def inputs(model, count):
    if model.version == 3:
        kind, shape = v3_simulator.input_spec(model)
    else:
        kind, shape = v4_simulator.input_spec(model)
        if kind == "main":
            return RNG.uniform(-4, 4, (count,) + tuple(shape)).astype(np.float32)
        return RNG.integers(0, 256, (count,) + tuple(shape), dtype=np.uint8)
    if kind == "kpu":
        c, h, w = shape
        return RNG.integers(0, 256, (count, h, w, c), dtype=np.uint8)
    return RNG.uniform(-4, 4, (count,) + tuple(shape)).astype(np.float32)


@pytest.mark.parametrize("folder,name,options", FILES)
def test_a_batch_equals_its_samples_run_one_by_one(monkeypatch, folder, name, options):
    model = emc.load_kmodel(str(reference_path(folder, name)))
    monkeypatch.setattr(v3_simulator if model.version == 3 else v4_simulator, "SAMPLES_PER_PASS", 2)
    x = inputs(model, 3)                                     # two passes: 2 samples in lockstep, then 1
    batch, trace = emc.run_kmodel(model, x, trace=True, **options)
    for i, sample in enumerate(x):
        alone = emc.run_kmodel(model, sample, **options)
        for got, want in zip(batch, alone):
            np.testing.assert_array_equal(got[i], want)
    if model.version == 3:                                   # v3 traces every sample, v4 the first
        for _, _, values in trace:
            assert len(values) == 3
        alone = emc.run_kmodel(model, x[2], trace=True, **options)[1]
        for (_, _, values), (_, _, want) in zip(trace, alone):
            np.testing.assert_array_equal(values[2], want)
