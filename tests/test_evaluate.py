"""emc.evaluate / export_test_bin / export_c_array against independent references (numpy, scikit-learn, TF Lite,
a reader of NNoM's test-bin layout written here, and gcc compiling the generated header)."""
import math
import os
import shutil
import subprocess

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, top_k_accuracy_score

import emc
from emc import layers as L
from emc.errors import EmcError
from conftest import reference_path


def dense_graph(n_in=6, n_out=5, seed=0):
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(n_in, n_out)).astype(np.float32)
    bias = rng.normal(size=n_out).astype(np.float32)
    g = emc.Graph("dense")
    x = g.add_input((n_in,))
    g.set_outputs([g.add(L.Dense(kernel, bias), [x])])
    return g, kernel, bias


def test_graph_accuracy_and_confusion_match_sklearn():
    g, kernel, bias = dense_graph()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = rng.integers(0, 5, 200)
    logits = x.astype(np.float64) @ kernel + bias                       # plain numpy reference
    result = emc.evaluate(g, x, y, top_k=(1, 3))
    assert result["samples"] == 200 and result["classes"] == 5
    assert result["top1"] == pytest.approx(np.mean(np.argmax(logits, 1) == y))
    assert result["top3"] == pytest.approx(top_k_accuracy_score(y, logits, k=3, labels=range(5)))
    np.testing.assert_array_equal(result["confusion"], confusion_matrix(y, np.argmax(logits, 1), labels=range(5)))
    one_hot = np.eye(5)[y]
    assert emc.evaluate(g, x, one_hot, top_k=(1,))["top1"] == result["top1"]


def test_topk_beyond_the_class_count_counts_everything_and_timing_is_per_sample():
    g, _, _ = dense_graph(n_out=3)
    x = np.random.default_rng(2).normal(size=(7, 6)).astype(np.float32)
    result = emc.evaluate(g, x, np.zeros(7, int), top_k=(1, 5), timing=True)
    assert result["top5"] == 1.0
    assert result["time_per_inference"] > 0 and result["time_median"] > 0


@pytest.mark.parametrize("labels, text", [(np.zeros(3, int), "labels"), (-np.ones(10, int), "non-negative")])
def test_bad_labels_are_named(labels, text):
    g, _, _ = dense_graph()
    with pytest.raises(EmcError, match=text):
        emc.evaluate(g, np.zeros((10, 6), np.float32), labels)


@pytest.mark.parametrize("folder", ["kmodel-v3", "kmodel-v4"])
def test_kmodel_path_accuracy_equals_tflite_on_iris(folder):
    if folder == "kmodel-v4":
        pytest.importorskip("emc.platforms.k210.v4.simulator", reason="the kmodel v4 simulator is not written yet")
    import tensorflow as tf
    from sklearn.datasets import load_iris
    iris = load_iris()
    x, y = iris.data.astype(np.float32), iris.target
    interp = tf.lite.Interpreter(model_path=str(reference_path("float-models", "nncase_iris.tflite")))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    tflite = []
    for sample in x:
        interp.set_tensor(inp["index"], sample[None])
        interp.invoke()
        tflite.append(interp.get_tensor(out["index"])[0])
    expected = np.mean(np.argmax(tflite, 1) == y)
    result = emc.evaluate(str(reference_path(folder, "nncase_iris.kmodel")), x, y, top_k=(1,))
    assert result["top1"] == pytest.approx(expected)
    assert result["top1"] > 0.9


def test_k210_artefact_is_evaluated_through_its_simulator():
    rng = np.random.default_rng(3)
    g = emc.Graph("tiny")
    x = g.add_input((8, 8, 3))
    c = g.add(L.Conv2D(rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32), np.zeros(8, np.float32),
                       pads=(1, 1, 1, 1), activation=L.Act("relu")), [x])
    p = g.add(L.GlobalPool2D("avg", keepdims=False), [c])
    g.set_outputs([g.add(L.Dense(rng.normal(size=(8, 4)).astype(np.float32), None), [p])])
    data = rng.integers(0, 256, (40, 8, 8, 3)).astype(np.float32) / 255.0
    artefact = emc.convert(g, platform="k210", dataset=data)
    y = rng.integers(0, 4, 40)
    simulated = artefact.simulate(data)[0]
    result = emc.evaluate(artefact, data, y, top_k=(1, 2))
    assert result["top1"] == pytest.approx(np.mean(np.argmax(simulated, 1) == y))
    assert result["top2"] == pytest.approx(top_k_accuracy_score(y, simulated, k=2, labels=range(4)))


# ---- NNoM test bin --------------------------------------------------------------------------------------------
def read_nnom_bin(data, sample_bytes, count):
    """NNoM's layout, read independently: per block of 128, 128 label bytes then up to 128 samples."""
    labels, samples, pos = [], [], 0
    while len(labels) < count:
        n = min(128, count - len(labels))
        block_labels = np.frombuffer(data[pos:pos + 128], np.int8)
        pos += 128
        labels += list(block_labels[:n])
        assert not block_labels[n:].any(), "padding labels must be zero"
        samples.append(np.frombuffer(data[pos:pos + n * sample_bytes], np.int8).reshape(n, sample_bytes))
        pos += n * sample_bytes
    assert pos == len(data), "no bytes beyond the last block"
    return np.array(labels), np.concatenate(samples)


def test_export_test_bin_layout_and_quantization(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.uniform(-2.7, 3.1, (300, 4, 4, 2))
    y = rng.integers(0, 10, 300)
    path = tmp_path / "test.bin"
    dec_bits = emc.export_test_bin(x, np.eye(10)[y], path)
    assert dec_bits == 7 - math.ceil(math.log2(3.1)) == 5
    data = path.read_bytes()
    assert len(data) == 3 * 128 + 300 * 32
    labels, samples = read_nnom_bin(data, 32, 300)
    np.testing.assert_array_equal(labels, y)
    expected = np.clip(np.round(x * 2 ** 5), -128, 127).reshape(300, -1)
    np.testing.assert_array_equal(samples, expected)


def test_export_test_bin_int8_passthrough_and_clipping(tmp_path):
    x = np.arange(-128, 128, dtype=np.int8).reshape(2, 128)
    assert emc.export_test_bin(x, [1, 2], tmp_path / "a.bin") is None
    _, samples = read_nnom_bin((tmp_path / "a.bin").read_bytes(), 128, 2)
    np.testing.assert_array_equal(samples, x)
    emc.export_test_bin(np.array([[1.0, -1.0, 0.5]]), [0], tmp_path / "b.bin")   # max 1.0 -> dec_bits 7
    _, samples = read_nnom_bin((tmp_path / "b.bin").read_bytes(), 3, 1)
    assert list(samples[0]) == [127, -128, 64]
    with pytest.raises(EmcError, match="one byte per label"):
        emc.export_test_bin(np.zeros((1, 2)), [300], tmp_path / "c.bin")
    assert not (tmp_path / "c.bin").exists()


# ---- kmodel as a C array --------------------------------------------------------------------------------------
C_MAIN = r"""
#include <stdint.h>
#include <stdio.h>
#include "model.h"
int main(void) {
    if (((uintptr_t)my_model) % 128u != 0) { return 3; }
    fwrite(my_model, 1, MY_MODEL_SIZE, stdout);
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_export_c_array_compiles_aligned_and_holds_the_bytes(tmp_path):
    kmodel = reference_path("kmodel-v3", "nncase_iris.kmodel")
    header = tmp_path / "model.h"
    assert emc.export_c_array(str(kmodel), header, name="my_model") == os.path.getsize(kmodel)
    (tmp_path / "main.c").write_text(C_MAIN)
    exe = tmp_path / "main"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(tmp_path / "main.c"),
                    "-I", str(tmp_path)], check=True, capture_output=True)
    run = subprocess.run([str(exe)], capture_output=True)
    assert run.returncode == 0, "the array is not 128-byte aligned"
    assert run.stdout == kmodel.read_bytes()


def test_export_c_array_takes_bytes_and_artefacts_and_rejects_bad_names(tmp_path):
    emc.export_c_array(b"\x03\x00\x00\x00abc", tmp_path / "a.h")
    text = (tmp_path / "a.h").read_text()
    assert "0x03, 0x00, 0x00, 0x00, 0x61, 0x62, 0x63" in text and "aligned(128)" in text
    with pytest.raises(EmcError, match="C identifier"):
        emc.export_c_array(b"abc", tmp_path / "b.h", name="9lives")
    with pytest.raises(EmcError, match="power of two"):
        emc.export_c_array(b"abc", tmp_path / "b.h", align=48)
    with pytest.raises(EmcError, match="does not exist"):
        emc.export_c_array(str(tmp_path / "missing.kmodel"), tmp_path / "b.h")
    assert not (tmp_path / "b.h").exists()


def test_c_artefact_is_evaluated_through_its_compiled_code():
    c = emc.platforms.get("c")
    if not hasattr(c, "convert"):
        pytest.skip("the C platform is not available yet")
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler")
    g, _, _ = dense_graph(n_in=6, n_out=4, seed=5)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(30, 6)).astype(np.float32)
    artefact = emc.convert(g, platform="c", dataset=x)
    y = rng.integers(0, 4, 30)
    compiled = artefact.predict(x)[0]
    result = emc.evaluate(artefact, x, y, top_k=(1,))
    assert result["top1"] == pytest.approx(np.mean(np.argmax(compiled, 1) == y))
    np.testing.assert_array_equal(result["scores"], compiled.reshape(30, -1))


def test_public_functions_stay_callable_after_their_modules_are_imported():
    import importlib
    for name in ("convert", "compare", "evaluate"):
        importlib.import_module(f"emc.{name}")
        assert callable(getattr(emc, name)), f"emc.{name} was replaced by its module"
    from emc.convert import input_transform   # the modules themselves stay importable
    assert input_transform("img_0_1") == (1 / 255.0, 0.0)
