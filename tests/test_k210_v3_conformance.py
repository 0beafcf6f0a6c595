"""emc's v3 simulator on real kmodels, against their float sources and against a real board's printout."""
import numpy as np
import pytest
from PIL import Image

import emc
from conftest import reference_path
from emc.datasets import load_dataset


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
    got = emc.run_kmodel(reference_path("kmodel-v3", "nncase_iris.kmodel"), x)[0]
    assert got.shape == ref.shape
    assert np.array_equal(got.argmax(1), ref.argmax(1))
    assert np.abs(got - ref).max() <= 0.05
    board = np.array([16.077795, 5.607656, -2.071745])    # nncase v0.1 iris example Readme, printed by a K210
    single = emc.run_kmodel(reference_path("kmodel-v3", "nncase_iris.kmodel"), [5.1, 3.8, 1.9, 0.4])[0]
    assert np.abs(single - board).max() <= 1e-6


def mbnet_counts(mode):
    model = emc.load_kmodel(reference_path("kmodel-v3", "maixemc_mbnetv1_0.75.kmodel"))
    folder = reference_path("images", "imagenet")
    labels = (folder / "labels.txt").read_text().splitlines()
    classes = {"n01440764": labels.index(next(l for l in labels if l.startswith("tench"))),
               "n01742172": labels.index(next(l for l in labels if l.startswith("boa constrictor")))}
    files = sorted(folder.glob("n*.JPEG"))
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR)) for f in files])
    out = emc.run_kmodel(model, images, arg_x_mode=mode)[0]
    truth = np.array([classes[f.name.split("_")[0]] for f in files])
    return int((out.argmax(1) == truth).sum()), len(files)


def test_maixemc_mobilenet_names_16_of_26():
    right, total = mbnet_counts("per_channel")
    print(f"maixemc_mbnetv1_0.75 on {total} ImageNet images: {right} right (Kendryte's emulation: 16)")
    assert (right, total) == (16, 26)


def cifar_images():
    return load_dataset(reference_path("images", "cifar10"), (32, 32, 3), "img_0_1")


def test_maixemc_cifar_models_run_and_the_broken_one_says_8():
    x = np.rint(cifar_images() * 255).astype(np.uint8)
    board = emc.run_kmodel(reference_path("kmodel-v3", "maixemc_cifar10_board.kmodel"), x)[0]
    broken = emc.run_kmodel(reference_path("kmodel-v3", "maixemc_cifar10.kmodel"), x)[0]
    assert board.shape == (10, 10) and np.all(np.isfinite(board)) and np.all(np.isfinite(broken))
    assert np.all(broken.argmax(1) == 8)


def test_board_kmodel_follows_the_float_h5():
    graph = emc.load_model(str(reference_path("float-models", "maixemc_cifar10.h5")))
    x = cifar_images()
    ref = graph.run(x)[0]
    got = emc.run_kmodel(reference_path("kmodel-v3", "maixemc_cifar10_board.kmodel"),
                         np.rint(x * 255).astype(np.uint8))[0]
    mae = float(np.abs(got - ref).mean())
    print(f"maixemc_cifar10_board.kmodel vs float h5: mean abs logit error {mae:.4f} (nncase emulation: 0.065)")
    assert np.array_equal(got.argmax(1), ref.argmax(1))
    assert mae < 0.1


def test_yolo20_runs_end_to_end():
    img = Image.open(reference_path("images", "imagenet", "tiger.jpg")).convert("RGB").resize((320, 240))
    out, trace = emc.run_kmodel(reference_path("kmodel-v3", "nncase_yolo20.kmodel"), np.asarray(img), trace=True)
    assert out[0].shape == (125 * 7 * 10,) and np.all(np.isfinite(out[0]))
    assert len(trace) == 17 and trace[0][1] == "K210_CONV" and trace[0][2].shape == (16, 120, 160)


def test_input_errors():
    path = reference_path("kmodel-v3", "maixemc_cifar10_board.kmodel")
    with pytest.raises(emc.EmcError, match="32x32x3"):
        emc.run_kmodel(path, np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(emc.EmcError, match="uint8"):
        emc.run_kmodel(path, np.full((32, 32, 3), 0.5))
    assert emc.run_kmodel(path, np.zeros((3, 32, 32), np.uint8), layout="chw")[0].shape == (10,)
