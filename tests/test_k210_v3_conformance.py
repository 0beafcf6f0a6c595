"""emc's v3 simulator on real kmodels, against their float sources, a real board's printout and Kendryte's count."""
import importlib

import numpy as np
import pytest
from PIL import Image

from conftest import reference_path
from emc.errors import EmcError
from emc.platforms.k210.kmodel import load_kmodel, run_kmodel


def v3(name):
    return reference_path("kmodel-v3", name)


def test_nncase_iris_matches_tflite_and_the_board():
    tf = pytest.importorskip("tensorflow")
    from sklearn.datasets import load_iris
    x = load_iris().data.astype(np.float32)
    interp = tf.lite.Interpreter(model_path=str(reference_path("float-models", "nncase_iris.tflite")))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    ref = []
    for sample in x:
        interp.set_tensor(inp["index"], sample.reshape(inp["shape"]))
        interp.invoke()
        ref.append(interp.get_tensor(out["index"]).reshape(-1))
    ref = np.array(ref)
    got = run_kmodel(v3("nncase_iris.kmodel"), x)[0]
    assert got.shape == ref.shape == (150, 3) and got.dtype == np.float32
    assert np.array_equal(got.argmax(1), ref.argmax(1))
    err = np.abs(got - ref).max()
    print(f"nncase_iris.kmodel vs TF Lite on 150 iris samples: max abs error {err:.2e}")
    assert err <= 0.05
    board = np.array([16.077795, 5.607656, -2.071745])    # nncase v0.1 iris example Readme, printed by a K210
    single = run_kmodel(v3("nncase_iris.kmodel"), [5.1, 3.8, 1.9, 0.4])[0]
    assert single.shape == (3,) and np.abs(single - board).max() <= 1e-6


def imagenet():
    folder = reference_path("images", "imagenet")
    labels = (folder / "labels.txt").read_text().splitlines()
    classes = {"n01440764": labels.index(next(l for l in labels if l.startswith("tench"))),
               "n01742172": labels.index(next(l for l in labels if l.startswith("boa constrictor")))}
    assert classes == {"n01440764": 0, "n01742172": 61}
    files = sorted(folder.glob("n*.JPEG"))
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR)) for f in files])
    return images, np.array([classes[f.name.split("_")[0]] for f in files])


def test_maixemc_mobilenet_names_16_of_26_and_the_nncase_formula_is_available():
    model = load_kmodel(v3("maixemc_mbnetv1_0.75.kmodel"))
    images, truth = imagenet()
    out = run_kmodel(model, images)[0]
    assert out.shape == (26, 1000) and np.all(np.isfinite(out))
    right = int((out.argmax(1) == truth).sum())
    print(f"maixemc_mbnetv1_0.75 on 26 ImageNet images: {right} right (Kendryte's emulation: 16)")
    assert right == 16
    assert np.allclose(out.sum(1), 1, atol=1e-4)               # the model ends in SOFTMAX
    total = run_kmodel(model, images[:2], arg_x_mode="sum")[0]   # nncase's total-sum arg_x formula
    assert total.shape == (2, 1000) and np.all(np.isfinite(total))
    assert not np.array_equal(total, out[:2])                   # Maix-EMC's fractional arg_x: the formulas differ


def cifar_images():
    from emc.datasets import load_dataset
    return load_dataset(reference_path("images", "cifar10"), (32, 32, 3), "img_0_1")


def test_maixemc_cifar_models_run_and_the_broken_one_says_8():
    x = np.rint(cifar_images() * 255).astype(np.uint8)
    board = run_kmodel(v3("maixemc_cifar10_board.kmodel"), x)[0]
    broken = run_kmodel(v3("maixemc_cifar10.kmodel"), x)[0]
    assert board.shape == broken.shape == (len(x), 10) == (10, 10)
    assert np.all(np.isfinite(board)) and np.all(np.isfinite(broken))
    assert np.all(broken.argmax(1) == 8)
    fork = run_kmodel(v3("maixemc_cifar10_board.kmodel"), x, sdk="maixemc")[0]    # the loader the board ran
    assert np.abs(fork - board).max() < 0.1


def test_board_kmodel_follows_the_float_h5():
    load_model = getattr(importlib.import_module("emc"), "load_model", None)
    if load_model is None:
        pytest.skip("emc.load_model is not available yet")
    graph = load_model(str(reference_path("float-models", "maixemc_cifar10.h5")))
    x = cifar_images()
    ref = graph.run(x)[0]
    got = run_kmodel(v3("maixemc_cifar10_board.kmodel"), np.rint(x * 255).astype(np.uint8))[0]
    mae = float(np.abs(got - ref.reshape(got.shape)).mean())
    print(f"maixemc_cifar10_board.kmodel vs float h5: mean abs logit error {mae:.4f} (Kendryte's emulation: 0.065)")
    assert np.array_equal(got.argmax(1), ref.reshape(got.shape).argmax(1))
    assert mae < 0.1


def test_yolo20_runs_end_to_end_with_a_trace():
    img = Image.open(reference_path("images", "imagenet", "tiger.jpg")).convert("RGB").resize((320, 240),
                                                                                              Image.BILINEAR)
    out, trace = run_kmodel(v3("nncase_yolo20.kmodel"), np.asarray(img), trace=True)
    assert len(out) == 1 and out[0].shape == (125 * 7 * 10,) and np.all(np.isfinite(out[0]))
    assert [t[0] for t in trace] == list(range(17)) and trace[0][1] == "K210_CONV"
    assert trace[0][2].shape == (16, 120, 160) and trace[0][2].dtype == np.uint8
    assert np.array_equal(trace[-1][2], out[0])
    chw = run_kmodel(v3("nncase_yolo20.kmodel"), np.asarray(img).transpose(2, 0, 1), layout="chw")[0]
    assert np.array_equal(chw, out[0])


def test_batches_traces_and_input_errors():
    path = v3("maixemc_cifar10_board.kmodel")
    x = np.rint(cifar_images()[:3] * 255).astype(np.uint8)
    outs, trace = run_kmodel(path, x, trace=True)
    assert outs[0].shape == (3, 10) and trace[0][2].shape == (3, 32, 32, 32)
    assert np.array_equal(run_kmodel(path, x[1])[0], outs[0][1])
    with pytest.raises(EmcError, match="32x32x3"):
        run_kmodel(path, np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(EmcError, match="uint8"):
        run_kmodel(path, np.full((32, 32, 3), 0.5))
    with pytest.raises(EmcError, match="layout"):
        run_kmodel(path, x[0], layout="nhwc")
    assert run_kmodel(path, np.zeros((3, 32, 32), np.uint8), layout="chw")[0].shape == (10,)
    with pytest.raises(EmcError, match="4 float inputs"):
        run_kmodel(v3("nncase_iris.kmodel"), np.zeros(5, np.float32))
    with pytest.raises(EmcError, match="not run by"):           # Maix-EMC's fork has no CHANNELWISE_DEQUANTIZE
        run_kmodel(v3("nncase_yolo20.kmodel"), np.zeros((240, 320, 3), np.uint8), sdk="maixemc")
    with pytest.raises(EmcError, match="starts a model only at K210_CONV"):
        run_kmodel(v3("nncase_iris.kmodel"), np.zeros(4, np.float32), sdk="maixemc")
