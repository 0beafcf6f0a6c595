"""emc's v4 simulator on nncase v0.2's real kmodels, against their float TF Lite sources and nncase's own outputs."""
import numpy as np
import pytest
from PIL import Image

import emc
from conftest import reference_path

FACE_CLASS = 1                  # ULFD detectors: class 0 background, class 1 face
VOC_PERSON = 14                 # the 20-class YOLO's VOC class order: ..., motorbike, person, pottedplant, ...


def tflite(name):
    tf = pytest.importorskip("tensorflow")
    interp = tf.lite.Interpreter(model_path=str(reference_path("float-models", name)))
    interp.allocate_tensors()
    return interp


def images(folder, size=(320, 240), names="*.jpg"):
    files = sorted(reference_path("images", folder).glob(names))
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize(size, Image.BILINEAR)) for f in files])


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_iris_matches_tflite_and_nncase():
    from sklearn.datasets import load_iris
    x = load_iris().data.astype(np.float32)
    interp = tflite("nncase_iris.tflite")
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    ref = []
    for sample in x:
        interp.set_tensor(inp["index"], sample.reshape(inp["shape"]))
        interp.invoke()
        ref.append(interp.get_tensor(out["index"]).reshape(-1))
    ref = np.array(ref)
    path = reference_path("kmodel-v4", "nncase_iris.kmodel")
    got = emc.run_kmodel(path, x)[0]
    assert got.shape == (150, 3) and got.dtype == np.float32
    assert np.array_equal(got.argmax(1), ref.argmax(1))
    assert np.abs(got - ref).max() <= 0.05
    # nncase v0.2's own runtime on the example's input (spec 9.2, printed with 6 decimals)
    single = emc.run_kmodel(path, [5.1, 3.8, 1.9, 0.4])[0]
    assert single.shape == (3,)
    assert np.abs(single - [16.077797, 5.607656, -2.071746]).max() <= 1e-6
    assert np.array_equal(emc.run_kmodel(path, np.array([5.1, 3.8, 1.9, 0.4]).reshape(1, 1, 1, 4))[0], single)


def test_ulffd_landmark_follows_its_tflite_on_the_faces():
    interp = tflite("nncase_ulffd_landmark.tflite")
    inp, outs = interp.get_input_details()[0], interp.get_output_details()
    faces = images("faces")
    assert len(faces) == 20
    got = emc.run_kmodel(reference_path("kmodel-v4", "nncase_ulffd_landmark.kmodel"), faces)
    assert [g.shape for g in got] == [(20, 3160 * 4), (20, 3160 * 10), (20, 3160 * 2)]
    by_size = {int(np.prod(o["shape"])): o for o in outs}         # 1x3160x4, 1x3160x10, 1x3160x2
    cosines = np.zeros((20, 3))
    for i, img in enumerate(faces):
        x = ((img.astype(np.float32) / 255.0) - 0.5) / 1.0       # nncase: [0, 1], then (x - mean) / std
        interp.set_tensor(inp["index"], x[None])
        interp.invoke()
        for k, g in enumerate(got):
            # the kmodel transposes each head to NHWC and concatenates: the tflite's flat order
            ref = interp.get_tensor(by_size[g.shape[1]]["index"]).reshape(-1)
            cosines[i, k] = cosine(g[i], ref)
    print("ulffd_landmark cosine per output (boxes, landmarks, scores): min", cosines.min(0).round(4),
          "mean", cosines.mean(0).round(4))
    assert cosines.min() >= 0.98


@pytest.mark.parametrize("name, scores", [("nncase_slim320.kmodel", 0), ("nncase_rfb320.kmodel", 1)])
def test_face_detectors_find_faces(name, scores):
    faces = images("faces")[::5]
    model = emc.load_kmodel(reference_path("kmodel-v4", name))
    out = emc.run_kmodel(model, faces)
    boxes = out[1 - scores]
    assert out[scores].shape == (4, 4420 * 2) and boxes.shape == (4, 4420 * 4)
    assert all(np.isfinite(o).all() for o in out)
    probs = out[scores].reshape(4, 4420, 2)
    assert np.abs(probs.sum(-1) - 1).max() < 0.02             # the graph ends with a (quantized) softmax
    best = probs[:, :, FACE_CLASS].max(axis=1)
    print(f"{name}: best face score per photo {best.round(3)}")
    assert (best > 0.5).all()


def test_yolo20_runs_and_sees_people():
    faces = images("faces")
    out = emc.run_kmodel(reference_path("kmodel-v4", "nncase_yolo20.kmodel"), faces)[0]
    assert out.shape == (20, 125 * 7 * 10) and np.isfinite(out).all()
    grid = out.reshape(20, 5, 25, 7, 10)                        # 5 anchors x (x, y, w, h, obj, 20 classes)
    obj = 1 / (1 + np.exp(-grid[:, :, 4]))
    cls = np.exp(grid[:, :, 5:] - grid[:, :, 5:].max(axis=2, keepdims=True))
    score = obj[:, :, None] * cls / cls.sum(axis=2, keepdims=True)
    best_class = score.reshape(20, 5, 20, 70).max(axis=(1, 3)).argmax(axis=1)
    print("yolo20 best class per face photo:", best_class.tolist())
    assert (best_class == VOC_PERSON).sum() >= 10


def test_nncase_files_give_the_same_result_in_both_kpu_modes_and_trace():
    img = images("imagenet", names="tiger.jpg")[0]
    path = reference_path("kmodel-v4", "nncase_slim320.kmodel")
    chip, trace = emc.run_kmodel(path, img, trace=True)
    nncase = emc.run_kmodel(path, img, arg_x_mode="sum")
    assert all(np.array_equal(a, b) for a, b in zip(chip, nncase))   # integer arg_x: both groupings agree
    assert len(trace) == 73 and [t[0] for t in trace] == list(range(73))
    assert trace[0][1] == "kpu_conv2d" and trace[0][2].shape == (1, 16, 120, 160) and trace[0][2].dtype == np.uint8
    assert trace[17][1] == "transpose" and trace[18][1] == "dequantize" and trace[18][2].dtype == np.float32
    chw = emc.run_kmodel(path, img.transpose(2, 0, 1), layout="chw")
    assert all(np.array_equal(a, b) for a, b in zip(chip, chw))


def test_input_errors_name_the_expected_shape():
    path = reference_path("kmodel-v4", "nncase_yolo20.kmodel")
    with pytest.raises(emc.EmcError, match="240x320x3"):
        emc.run_kmodel(path, np.zeros((224, 224, 3), np.uint8))
    with pytest.raises(emc.EmcError, match="uint8"):
        emc.run_kmodel(path, np.full((240, 320, 3), 0.5))
    iris = reference_path("kmodel-v4", "nncase_iris.kmodel")
    with pytest.raises(emc.EmcError, match=r"\(1, 1, 1, 4\)"):
        emc.run_kmodel(iris, [1.0, 2.0, 3.0])
    with pytest.raises(emc.EmcError, match="arg_x_mode"):
        emc.run_kmodel(iris, [1.0, 2.0, 3.0, 4.0], arg_x_mode="round")
