"""K210 writer benchmark: MobileNet v1 (alpha 1.0, 224x224, 1000 classes) converted with 64 calibration images to
kmodel v3 and v4, and keras.applications' TF-'same' MobileNet too: conversion time and peak memory, simulator
time per image; and the Maix-EMC cifar comparison (emc's v3 and v4 against Maix-EMC's board kmodel).

Targets: conversion < 60 s and < 3 GB, simulation < 3 s per image. Run: python bench/bench_k210.py
(`--mobilenet-v2`: only the keras.applications MobileNetV2 alpha 0.35 / 1.0 rows, v3 and v4).

Accuracy (issue 14): `--accuracy` prints, for the trained mini-Xception on the shared faces and MobileNet v1
1.0/224 (both forms), K210 v3 / v4 against float and against emc's int8 C (cosine mean (min), top-1 agreement),
the KPU RAM peak and the main memory; `--calibration` compares minmax, kld, l2 and percentile on the trained
models (the mini-Xception, and the MobileNet that bench/train_mobilenet_digits.py trains once).
"""
import os
import pathlib
import resource
import sys
import tempfile
import time
import tracemalloc

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from support import input_dependence, randomise_keras_batchnorm as randomise_batchnorm  # noqa: E402 (tests/)
REFERENCE = ROOT.parent / "shared" / "reference"


def mobilenet_v1(probe, alpha=1.0, size=224, classes=1000, seed=0):
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
    return randomise_batchnorm(model, seed, probe)


def calibration_images(size=224, count=64):
    """The 26 ImageNet and 20 face images of the shared reference, plus horizontal flips up to `count`."""
    from emc.datasets import load_dataset
    parts = [load_dataset(REFERENCE / "images" / d, (size, size, 3)) for d in ("imagenet", "faces")]
    images = np.concatenate(parts)
    images = np.concatenate([images, images[:, :, ::-1]])[:count]
    return np.ascontiguousarray(images)


def keras_applications_mobilenet(probe, alpha=1.0, seed=0):
    """keras.applications.MobileNet at 224 (TF-'same' stride 2: pool 6 and CPU selections), seeded weights."""
    import keras
    keras.utils.set_random_seed(seed)
    return randomise_batchnorm(keras.applications.MobileNet(alpha=alpha, weights=None), seed, probe)


def bench_conversion(model, data, version, label, show_report=False):
    """Convert with 64 calibration images, then simulate 3 of them; prints the figures, returns them."""
    from emc.convert import convert
    print(f"{label}, kmodel v{version}: {model.count_params():,} parameters, {len(data)} calibration images")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    tracemalloc.start()
    start = time.perf_counter()
    art = convert(model, dataset=data, quant_func="minmax", max_samples=64, version=version)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if show_report:
        print(art.report)
    totals = art.report.totals
    print(f"  {totals['layers']} device layers, {totals['file size (bytes)']:,} bytes, MACs on the KPU "
          f"{totals['MACs on the KPU']}, KPU RAM peak {totals['KPU RAM peak (bytes)']:,} bytes")
    print(f"  conversion: {seconds:.1f} s (target < 60 s); python allocations peak {traced_peak / 2**20:.0f} MiB, "
          f"process max RSS {rss:.0f} MiB incl. TensorFlow (target < 3 GB; {rss_before:.0f} MiB before converting, "
          f"from building the models)")
    sample = data[:8]
    start = time.perf_counter()
    simulated = art.simulate(sample)[0]
    per_image = (time.perf_counter() - start) / len(sample)
    reference = art.graph.run(sample)[0]
    cos = float(np.sum(reference * simulated) / np.linalg.norm(reference) / np.linalg.norm(simulated))
    print(f"  simulation: {per_image:.2f} s per image (target < 3 s); float vs K210 cosine {cos:.5f}, "
          f"same top-1 on {int(np.sum(reference.argmax(1) == simulated.argmax(1)))}/{len(sample)} "
          f"(input dependence of the float output {input_dependence(reference):.3f}, distinct top-1 classes "
          f"{len(set(reference.argmax(1)))})")
    return seconds, rss, per_image


def keras_applications_mobilenet_v2(probe, alpha, seed=0):
    """keras.applications.MobileNetV2 at 224 (1280-channel Conv_1 and a 1280x1000 head), seeded weights,
    BatchNorm statistics from the probe images as the model sees them (x / 127.5 - 1)."""
    import keras
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(alpha=alpha, input_shape=(224, 224, 3), weights=None)
    return randomise_batchnorm(model, seed, probe * 2.0 - 1.0)


def mobilenet_v2_rows(images, alphas=(0.35, 1.0), versions=(3, 4)):
    """One row per (alpha, version): conversion time, max RSS, file, KPU RAM peak, main memory, KPU share of
    MACs, float-vs-device cosine on 8 images (img_neg1_1, 32 calibration images)."""
    from emc.convert import convert
    from emc.errors import PlatformLimitError
    data = (images[:32] * 2.0 - 1.0).astype(np.float32)
    print("MobileNetV2 224, img_neg1_1, 32 calibration images")
    print(f"{'model':<22}{'v':>2}{'convert s':>11}{'max RSS MiB':>13}{'file B':>12}{'KPU RAM B':>12}"
          f"{'main mem B':>12}{'KPU MACs':>10}{'cosine':>9}")
    for alpha in alphas:
        model = keras_applications_mobilenet_v2(data[:8], alpha)
        for version in versions:
            start = time.perf_counter()
            try:
                art = convert(model, dataset=data, dataset_func="img_neg1_1", max_samples=32, version=version)
            except PlatformLimitError as err:
                print(f"{'MobileNetV2 ' + str(alpha):<22}{version:>2}  refused: {err}", flush=True)
                continue
            seconds = time.perf_counter() - start
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            t = art.report.totals
            sample = data[:8]
            ref, sim = art.graph.run(sample)[0], art.simulate(sample)[0]
            cos = float(np.sum(ref * sim) / np.linalg.norm(ref) / np.linalg.norm(sim))
            print(f"{'MobileNetV2 ' + str(alpha):<22}{version:>2}{seconds:>11.1f}{rss:>13.0f}"
                  f"{t['file size (bytes)']:>12,}{t['KPU RAM peak (bytes)']:>12,}{t['main memory (bytes)']:>12,}"
                  f"{t['MACs on the KPU']:>10}{cos:>9.4f}", flush=True)


def bench_cifar():
    import emc
    from emc.datasets import load_dataset
    from emc.platforms.k210.kmodel import run_kmodel
    h5 = REFERENCE / "float-models" / "maixemc_cifar10.h5"
    folder = REFERENCE / "images" / "cifar10"
    data = load_dataset(folder, (32, 32, 3))
    reference = emc.load_model(str(h5)).run(data)[0]
    pixels = np.round(data * 255).astype(np.uint8)
    outputs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for version in (3, 4):
            target = os.path.join(tmp, f"cifar10_v{version}.kmodel")
            emc.save_kmodel(str(h5), target, str(folder), version=version)
            outputs[f"emc v{version}"] = run_kmodel(target, pixels)[0]
    outputs["Maix-EMC board kmodel"] = run_kmodel(str(REFERENCE / "kmodel-v3" / "maixemc_cifar10_board.kmodel"),
                                                  pixels)[0]
    print("cifar (10 images, img_0_1): mean abs logit error vs float -- " + ", ".join(
        f"{name} {np.abs(out - reference).mean():.4f}" for name, out in outputs.items()) + "; top-1 equal to "
        "float: " + ", ".join(f"{name} {int(np.sum(out.argmax(1) == reference.argmax(1)))}/10"
                              for name, out in outputs.items()))


def cosines(a, b):
    a, b = (np.asarray(v, np.float64).reshape(len(v), -1) for v in (a, b))
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def accuracy_rows(model, calib, test, dataset_func, label, quant_func="minmax", versions=(3, 4)):
    """K210 v3/v4 and C on `test` after calibrating on `calib`: prints one line per platform, returns them."""
    from emc.convert import convert
    from emc.errors import PlatformLimitError
    runs = {}
    for platform, version in [("c", None)] + [("k210", v) for v in versions]:
        name = "C" if platform == "c" else f"K210 v{version}"
        try:
            opts = {} if version is None else {"version": version}
            art = convert(model, platform=platform, dataset=calib, dataset_func=dataset_func, quant_func=quant_func,
                          max_samples=64, **opts)
        except PlatformLimitError as err:
            print(f"  {label} {name} [{quant_func}]: does not convert: {str(err).splitlines()[-1][:200]}")
            continue
        if "ref" not in runs:
            runs["ref"] = art.graph.run(test)[0]
        runs[name] = (art, art.simulate(test)[0])
    ref, rows = runs.pop("ref", None), {}
    c_out = runs.get("C", (None, None))[1]
    for name, (art, out) in runs.items():
        cos = cosines(ref, out)
        agree = int(np.sum(ref.argmax(1) == out.argmax(1)))
        row = f"  {label} {name:8s} [{quant_func}]: vs float cosine {cos.mean():.4f} ({cos.min():.4f}), " \
              f"top-1 {agree}/{len(ref)}"
        if name != "C" and c_out is not None:
            row += f"; vs C cosine {cosines(c_out, out).mean():.4f}, top-1 {int(np.sum(c_out.argmax(1) == out.argmax(1)))}"
            totals = art.report.totals
            row += f"; KPU RAM peak {totals['KPU RAM peak (bytes)']:,}, main memory {totals['main memory (bytes)']:,}"
        print(row, flush=True)
        rows[name] = (cos.mean(), cos.min(), agree, len(ref))
    return rows


def mini_xception():
    """(model path, faces as grayscale x / 127.5 - 1) of the shared trained mini-Xception."""
    from emc.datasets import load_dataset
    data = load_dataset(REFERENCE / "images" / "faces", (64, 64, 1), dataset_func="img_neg1_1")
    return str(REFERENCE / "float-models" / "fer_mini_xception_64.h5"), data


def trained_mobilenet():
    """(model, calibration images, test images) of bench/train_mobilenet_digits.py, or None before it ran."""
    folder = ROOT / "out" / "bench"
    if not (folder / "mobilenet_digits.keras").exists():
        print("  (no trained MobileNet: run python bench/train_mobilenet_digits.py once)")
        return None
    import keras
    arrays = np.load(folder / "digits_test.npz")
    model = keras.models.load_model(folder / "mobilenet_digits.keras")
    return model, arrays["calib"].astype(np.float32) / 127.5 - 1, arrays["images"].astype(np.float32) / 127.5 - 1


def digits_held_out(count=400):
    """`count` digit images the trained MobileNet's calibration never saw (its training images after the 200 the
    calibration draws from), x / 127.5 - 1: agreement with float needs no labels, and 60 test images leave the
    top-1 comparison to 3 or 4 near-ties."""
    sys.path.insert(0, str(ROOT / "bench"))
    from train_mobilenet_digits import digit_images
    images, labels = digit_images()
    order = np.random.default_rng(1).permutation(len(labels))      # the split train_mobilenet_digits.py made
    return images[order[60 + 200:60 + 200 + count]].astype(np.float32) / 127.5 - 1


def bench_accuracy(images):
    print("accuracy: K210 against float and against emc's int8 C")
    path, faces = mini_xception()
    accuracy_rows(path, faces, faces, "img_neg1_1", "mini-Xception 64 gray (20 faces)")
    trained = trained_mobilenet()
    if trained is not None:
        model, calib, test = trained
        accuracy_rows(model, calib, test, "img_neg1_1", "MobileNet 0.25/128 digits (60 test images)")
        accuracy_rows(model, calib, digits_held_out(), "img_neg1_1", "MobileNet 0.25/128 digits (400 held out)")
    mobilenet = mobilenet_v1(images[:8])
    accuracy_rows(mobilenet, images, images[:8], "img_0_1", "MobileNet v1 1.0/224 ZeroPadding form, 8 images")
    keras_mobilenet = keras_applications_mobilenet(images[:8])
    signed = images * 2.0 - 1.0                     # its own preprocessing, x / 127.5 - 1: pixel zero point 128
    accuracy_rows(keras_mobilenet, signed, signed[:8], "img_neg1_1",
                  "keras.applications.MobileNet 1.0/224 (TF-same, x/127.5-1), 8 images")


def bench_calibration():
    print("calibration strategies on trained networks (K210 v3; v4 has the same KPU arithmetic)")
    path, faces = mini_xception()
    trained = trained_mobilenet()
    for quant_func in ("minmax", "kld", "l2", "percentile:99.99"):
        accuracy_rows(path, faces, faces, "img_neg1_1", "mini-Xception", quant_func, versions=(3,))
        if trained is not None:
            model, calib, test = trained
            accuracy_rows(model, calib, test, "img_neg1_1", "MobileNet digits", quant_func, versions=(3,))


if __name__ == "__main__" and {"--accuracy", "--calibration"} & set(sys.argv[1:]):
    if "--accuracy" in sys.argv:
        bench_accuracy(calibration_images())
    if "--calibration" in sys.argv:
        bench_calibration()
elif __name__ == "__main__":
    images = calibration_images()
    if sys.argv[1:] == ["--mobilenet-v2"]:
        mobilenet_v2_rows(images)
        sys.exit(0)
    mobilenet = mobilenet_v1(images[:8])
    bench_conversion(mobilenet, images, 3, "MobileNet v1 1.0 224 (ZeroPadding2D form)", show_report=True)
    bench_conversion(mobilenet, images, 4, "MobileNet v1 1.0 224 (ZeroPadding2D form)")
    keras_mobilenet = keras_applications_mobilenet(images[:8])
    for version in (3, 4):
        bench_conversion(keras_mobilenet, images, version, "keras.applications.MobileNet 1.0 224 (TF-same)")
    bench_cifar()
