"""Round trip of real networks: convert -> kmodel v3 bytes -> parse -> simulate, against emc's float executor
(zoo models, a digits classifier trained here) and against Maix-EMC's own kmodel of the cifar net.
"""
import functools
import sys
import pathlib

import numpy as np
import pytest

from conftest import reference_path
from support import input_dependence, smooth_images

sys.path.insert(0, str(pathlib.Path(__file__).parent))

STOCK_SDK = {1, 2, 5, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 20, 22, 23, 24, 25, 10240, 10241, 10242, 10243}


def cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def keras_cases():
    from zoo import ZOO_INFO
    return sorted(n for n, info in ZOO_INFO.items() if info["kpu_eligible"]) + ["maixemc_cifar"]


def tl_cases():
    from zoo_tl import TL_ZOO_INFO
    return sorted(n for n, info in TL_ZOO_INFO.items() if info["kpu_eligible"])


@functools.lru_cache(maxsize=None)
def built(name):
    if name.startswith("tl_"):
        from zoo_tl import TL_ZOO
        return TL_ZOO[name]()
    from zoo import KERAS_ZOO
    return KERAS_ZOO[name]()


def calibration_data(graph, name):
    """16 seeded images as the model sees them (pixels / 255, or raw pixels for a model that rescales itself).

    Smooth images (zoo.smooth_images) rather than pixel noise: global pooling averages noise away, and a
    model whose output does not vary with its input would pass any cosine test."""
    shape = graph.input_shapes[0]
    rng = np.random.default_rng(0)
    if len(shape) == 1:
        return rng.uniform(0, 8, (16,) + shape).astype(np.float32), "img_0_1"
    pixels = np.round(smooth_images(shape, 16, rng) * 255).astype(np.float32)
    if name == "rescaling_input":
        return pixels, "img_0_255"
    return pixels / 255.0, "img_0_1"


@pytest.mark.parametrize("quant_func", ["minmax", "kld"])
@pytest.mark.parametrize("name", keras_cases() + tl_cases())
def test_zoo_model_round_trip(name, quant_func):
    from emc.convert import convert
    from emc.frontends import load_model
    from emc.platforms.k210.kmodel import load_kmodel
    model = built(name)
    data, dataset_func = calibration_data(load_model(model), name)
    art = convert(model, dataset=data, dataset_func=dataset_func, quant_func=quant_func)
    parsed = load_kmodel(art.kmodel)
    assert parsed.layers[0].code in (10240, 18) and {layer.code for layer in parsed.layers} <= STOCK_SDK
    assert str(parsed)
    reference = art.graph.run(data)
    assert min(map(input_dependence, reference)) > 1e-3          # else the cosine below could not fail
    simulated = art.simulate(data)
    cosines = [cosine(ref, sim) for ref, sim in zip(reference, simulated)]
    assert min(cosines) >= 0.99, cosines
    if quant_func == "minmax":
        as_close_as_c(model, data, dataset_func, reference, simulated)


def top1_agreement(reference, outputs):
    return sum(int(np.sum(r.reshape(len(r), -1).argmax(1) == o.reshape(len(o), -1).argmax(1)))
               for r, o in zip(reference, outputs))


def as_close_as_c(model, data, dataset_func, reference, simulated):
    """Issue 14's target: the K210's cosine to float >= emc's int8 C's minus 0.005 on every output, and top-1
    agreement no worse than C's -- but for one sample: on these random-weight models a near tie (float top-2
    within a few per cent) flips either way at the same error level (mobilenet_v1_025: K210 15, C 16 of 16)."""
    from emc.convert import convert
    c_out = convert(model, platform="c", dataset=data, dataset_func=dataset_func).simulate(data)
    for ref, k210_out, c in zip(reference, simulated, c_out):
        assert cosine(ref, k210_out) >= cosine(ref, c) - 0.005, (cosine(ref, k210_out), cosine(ref, c))
    assert top1_agreement(reference, simulated) >= top1_agreement(reference, c_out) - 1


def test_digits_classifier_keeps_its_accuracy():
    keras = pytest.importorskip("keras")
    from sklearn.datasets import load_digits
    from emc.convert import convert
    digits = load_digits()
    pixels = (digits.images * 15).astype(np.float32)[..., None]          # 0..240, exact camera pixels
    labels = digits.target
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[:1437], order[1437:]
    keras.utils.set_random_seed(0)
    k = keras.layers
    model = keras.Sequential([keras.Input((8, 8, 1)), k.Rescaling(1 / 240.0),
                              k.Conv2D(16, 3, padding="same", activation="relu"), k.MaxPooling2D(2),
                              k.Conv2D(32, 3, padding="same", activation="relu"), k.Flatten(), k.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(pixels[train], labels[train], epochs=8, batch_size=64, verbose=0)
    art = convert(model, dataset=pixels[train], dataset_func="img_0_255", max_samples=200)
    float_acc = float(np.mean(art.graph.run(pixels[test])[0].argmax(1) == labels[test]))
    quant_acc = float(np.mean(art.simulate(pixels[test])[0].argmax(1) == labels[test]))
    print(f"digits: float top-1 {float_acc:.4f}, K210 top-1 {quant_acc:.4f}")
    assert float_acc > 0.9
    assert abs(quant_acc - float_acc) <= 0.01


def test_maixemc_cifar_net_is_at_least_as_close_to_float_as_maixemcs_kmodel(tmp_path):
    import emc
    from emc.datasets import load_dataset
    from emc.platforms.k210.kmodel import run_kmodel
    h5 = reference_path("float-models", "maixemc_cifar10.h5")
    board = reference_path("kmodel-v3", "maixemc_cifar10_board.kmodel")
    folder = reference_path("images", "cifar10")
    graph = emc.load_model(h5)
    data = load_dataset(folder, (32, 32, 3), dataset_func="img_0_1")
    reference = graph.run(data)[0]
    target = tmp_path / "cifar10.kmodel"
    report = emc.save_kmodel(str(h5), target, str(folder))
    assert report.rows[0]["type"] == "K210_CONV"
    pixels = np.round(data * 255).astype(np.uint8)
    ours = run_kmodel(str(target), pixels)[0]
    theirs = run_kmodel(str(board), pixels)[0]
    ours_mae, theirs_mae = np.abs(ours - reference).mean(), np.abs(theirs - reference).mean()
    print(f"cifar mean abs logit error vs float: emc {ours_mae:.4f}, Maix-EMC board kmodel {theirs_mae:.4f}")
    assert np.all(ours.argmax(1) == reference.argmax(1))
    assert ours_mae <= theirs_mae
