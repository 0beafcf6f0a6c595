"""K210 writer benchmark: MobileNet v1 (alpha 1.0, 224x224, 1000 classes) converted with 64 calibration images;
conversion time and peak memory, simulator time per image; and the Maix-EMC cifar comparison.

Targets: conversion < 60 s and < 3 GB, simulation < 3 s per image. Run: python bench/bench_k210.py
"""
import os
import pathlib
import resource
import sys
import tempfile
import time
import tracemalloc

import numpy as np

from common import randomise_batchnorm

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
REFERENCE = ROOT.parent / "shared" / "reference"


def mobilenet_v1(alpha=1.0, size=224, classes=1000, seed=0):
    """MobileNet v1 with the stride-2 layers in the ZeroPadding2D(1) + 'valid' form the KPU runs exactly
    (keras.applications pads (0, 1), which kmodel v3 cannot shift); seeded weights, randomised BatchNorm."""
    import keras
    k = keras.layers
    keras.utils.set_random_seed(seed)

    def conv_bn(x, filters, kernel, stride):
        if stride == 2:
            x = k.Conv2D(filters, kernel, strides=2, padding="valid", use_bias=False)(k.ZeroPadding2D(1)(x))
        else:
            x = k.Conv2D(filters, kernel, padding="same", use_bias=False)(x)
        return k.ReLU(6.0)(k.BatchNormalization()(x))

    inp = keras.Input((size, size, 3))
    x = conv_bn(inp, int(32 * alpha), 3, 2)
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for filters, stride in blocks:
        if stride == 2:
            x = k.ZeroPadding2D(1)(x)
        x = k.DepthwiseConv2D(3, strides=stride, padding="valid" if stride == 2 else "same", use_bias=False)(x)
        x = k.ReLU(6.0)(k.BatchNormalization()(x))
        x = conv_bn(x, int(filters * alpha), 1, 1)
    x = k.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, k.Dense(classes, activation="softmax")(x), name="mobilenet_v1")
    return randomise_batchnorm(model, seed)


def calibration_images(size=224, count=64):
    """The 26 ImageNet and 20 face images of the shared reference, plus horizontal flips up to `count`."""
    from emc.datasets import load_dataset
    parts = [load_dataset(REFERENCE / "images" / d, (size, size, 3)) for d in ("imagenet", "faces")]
    images = np.concatenate(parts)
    images = np.concatenate([images, images[:, :, ::-1]])[:count]
    return np.ascontiguousarray(images)


def bench_mobilenet():
    from emc.convert import convert
    model = mobilenet_v1()
    data = calibration_images()
    print(f"MobileNet v1 1.0 224: {model.count_params():,} parameters, {len(data)} calibration images")
    tracemalloc.start()
    start = time.perf_counter()
    art = convert(model, dataset=data, quant_func="minmax", max_samples=64)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(art.report)
    print(f"conversion: {seconds:.1f} s (target < 60 s); python allocations peak {traced_peak / 2**20:.0f} MiB, "
          f"process max RSS {rss:.0f} MiB incl. TensorFlow (target < 3 GB)")
    sample = data[:3]
    start = time.perf_counter()
    simulated = art.simulate(sample)[0]
    per_image = (time.perf_counter() - start) / len(sample)
    reference = art.graph.run(sample)[0]
    cos = float(np.sum(reference * simulated) / np.linalg.norm(reference) / np.linalg.norm(simulated))
    print(f"simulation: {per_image:.2f} s per image (target < 3 s); float vs K210 cosine {cos:.5f}, "
          f"same top-1 on {int(np.sum(reference.argmax(1) == simulated.argmax(1)))}/{len(sample)}")
    return seconds, rss, per_image


def bench_cifar():
    import emc
    from emc.datasets import load_dataset
    from emc.platforms.k210.kmodel import run_kmodel
    h5 = REFERENCE / "float-models" / "maixemc_cifar10.h5"
    folder = REFERENCE / "images" / "cifar10"
    data = load_dataset(folder, (32, 32, 3))
    reference = emc.load_model(str(h5)).run(data)[0]
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, "cifar10.kmodel")
        emc.save_kmodel(str(h5), target, str(folder))
        pixels = np.round(data * 255).astype(np.uint8)
        ours = run_kmodel(target, pixels)[0]
    board = run_kmodel(str(REFERENCE / "kmodel-v3" / "maixemc_cifar10_board.kmodel"), pixels)[0]
    print(f"cifar (10 images, img_0_1): mean abs logit error vs float -- emc {np.abs(ours - reference).mean():.4f}, "
          f"Maix-EMC board kmodel {np.abs(board - reference).mean():.4f}; top-1 equal to float: "
          f"emc {int(np.sum(ours.argmax(1) == reference.argmax(1)))}/10, "
          f"Maix-EMC {int(np.sum(board.argmax(1) == reference.argmax(1)))}/10")


if __name__ == "__main__":
    bench_mobilenet()
    bench_cifar()
