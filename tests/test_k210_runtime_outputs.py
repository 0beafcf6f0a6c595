"""emc's simulators against what the vendors' own code computed on the shared kmodels (reference/runtime-outputs):
Kendryte's kpu.c on a software KPU with the chip's arithmetic for v3 (Maix-EMC's variant for Maix-EMC's files),
nncase v0.2.0-beta4's runtime for v4. Bit for bit, every output of every input."""
import numpy as np
import pytest

from conftest import reference_path

from emc.platforms.k210.kmodel import load_kmodel, run_kmodel

CASES = [("kmodel-v3", "maixemc_cifar10_board"), ("kmodel-v3", "maixemc_mbnetv1_0.75"), ("kmodel-v3", "nncase_iris"),
         ("kmodel-v3", "nncase_yolo20"), ("kmodel-v4", "nncase_iris"), ("kmodel-v4", "nncase_rfb320"),
         ("kmodel-v4", "nncase_slim320"), ("kmodel-v4", "nncase_ulffd_landmark"), ("kmodel-v4", "nncase_yolo20")]


@pytest.mark.parametrize("folder,name", CASES)
def test_simulator_equals_the_vendor_runtime(folder, name):
    recorded = np.load(reference_path("runtime-outputs", folder, f"{name}.npz"))
    model = load_kmodel(reference_path(folder, f"{name}.kmodel"))
    options = {"sdk": "maixemc"} if name.startswith("maixemc") else {}
    inputs = recorded["inputs"]
    layout = "chw" if inputs.dtype == np.uint8 else "hwc"
    if inputs.dtype != np.uint8 and model.version == 4:
        inputs = inputs.reshape((len(inputs),) + tuple(model.input_shapes[0]))
    outputs = run_kmodel(model, inputs, layout=layout, **options)
    expected = [recorded[k] for k in sorted(recorded.files) if k.startswith("output")]
    got = np.concatenate([np.asarray(o, np.float32).reshape(len(inputs), -1) for o in outputs], axis=1)
    want = np.concatenate([e.reshape(len(inputs), -1) for e in expected], axis=1)
    assert got.shape == want.shape
    differing = int(np.sum(got.view(np.uint32) != want.view(np.uint32)))
    assert differing == 0, f"{differing} of {want.size} values differ (max {np.abs(got - want).max():g})"
