"""examples/cifar: the training script runs end to end on synthetic data and its files convert; the
conversion script turns the shared Maix-EMC net into a kmodel that agrees with float; the MaixPy script parses."""
import ast
import os
import struct
import subprocess
import sys

import pytest

from conftest import REPO, reference_path

CIFAR = REPO / "examples" / "cifar"


def run(script, *args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(CIFAR / script), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_to_kmodel_converts_the_shared_maixemc_net(tmp_path):
    model, images = reference_path("float-models", "maixemc_cifar10.h5"), reference_path("images", "cifar10")
    result = run("cifar10_to_kmodel.py", model, "--dataset", images, "--out", tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    kmodel = (tmp_path / "maixemc_cifar10_v3.kmodel").read_bytes()
    assert struct.unpack_from("<I", kmodel, 0)[0] == 3
    assert "same top-1 on 100.0% of samples" in result.stdout
    assert (tmp_path / "maixemc_cifar10_v4.kmodel").read_bytes()[:4] == b"LDMK"
    assert result.stdout.count("same top-1 on 100.0% of samples") == 2     # v3 and v4 against float


def test_to_kmodel_names_a_missing_model(tmp_path):
    result = run("cifar10_to_kmodel.py", tmp_path / "none.h5", "--dataset", tmp_path, cwd=tmp_path)
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_train_runs_on_synthetic_data_and_its_models_load(tmp_path):
    result = run("cifar10_train.py", "--synthetic", "64", "--epochs", "1", "--batch-size", "32", "--out", tmp_path,
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    import emc
    for name in ("cifar10_tl.h5", "cifar10_keras.keras"):
        graph = emc.load_model(tmp_path / name)
        assert graph.input_shapes == [(32, 32, 3)] and graph.output_shapes == [(10,)]


def test_maixpy_script_is_valid_python_using_the_kpu_api():
    source = (CIFAR / "maixpy_cifar10.py").read_text()
    tree = ast.parse(source)
    calls = {f"{n.func.value.id}.{n.func.attr}" for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)}
    assert {"kpu.load", "kpu.forward", "fmap.to_float_list", "sensor.snapshot"} <= calls
    assert "CHW" in source


@pytest.mark.parametrize("script", ["cifar10_train.py", "cifar10_to_kmodel.py"])
def test_help(script, tmp_path):
    assert run(script, "--help", cwd=tmp_path).returncode == 0
