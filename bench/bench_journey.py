"""The user's journey from a shell: wall time and max RSS of `emc inspect / convert / run` on a Keras CIFAR-10 CNN
saved as .h5 and on keras.applications.MobileNet (alpha 1.0, 224x224) saved as .keras.

Each command runs as `python -m emc ...` in its own process (rusage from os.wait4, so RSS is that process's own
peak); `-X importtime` of `emc inspect` tells whether TensorFlow was imported. Issue 13 targets: inspect of the
.h5 <= 1.5 s and <= 200 MB, convert of the cifar net <= 5 s on 2 cores.
Run: python bench/bench_journey.py [--keep DIR]   (building the two models needs Keras; emc's commands do not)
"""
import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

from common import randomise_batchnorm

ROOT = pathlib.Path(__file__).resolve().parent.parent
REFERENCE = pathlib.Path(os.environ.get("EMC_REFERENCE") or ROOT.parent / "shared" / "reference")


def cifar_cnn():
    """A Maix-EMC-style CIFAR-10 CNN: three conv / BN / ReLU / pool stages and two dense layers."""
    import keras
    k = keras.layers
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = inp
    for filters in (32, 64, 128):
        x = k.MaxPooling2D(2)(k.ReLU()(k.BatchNormalization()(k.Conv2D(filters, 3, padding="same")(x))))
    x = k.Dense(128, activation="relu")(k.Flatten()(x))
    return randomise_batchnorm(keras.Model(inp, k.Dense(10)(x), name="cifar_cnn"))


def mobilenet():
    import keras
    model = keras.applications.MobileNet(input_shape=(224, 224, 3), alpha=1.0, weights=None, classes=1000)
    return randomise_batchnorm(model)


def images(folder, shape, work, name):
    """A calibration source: the shared reference images when present, else seeded random .npy inputs."""
    found = REFERENCE / "images" / folder
    if found.is_dir():
        pictures = sorted(p for p in found.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
        return str(found), str(pictures[0])
    x = np.random.default_rng(0).uniform(0, 1, (16,) + shape).astype(np.float32)
    np.save(work / f"{name}.npy", x)
    np.save(work / f"{name}_one.npy", x[:1])
    return str(work / f"{name}.npy"), str(work / f"{name}_one.npy")


def measure(args, cwd, python_flags=()):
    """(wall seconds, max RSS MB, stderr) of `python [flags] -m emc args` in its own process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *python_flags, "-m", "emc", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"emc {' '.join(map(str, args))} failed ({proc.returncode}):\n{stderr[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0, stderr


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="write the models and outputs here instead of a temporary folder")
    parser.add_argument("--build", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.build:             # in a child process: Linux carries a parent's peak RSS into the processes it forks
        cifar_cnn().save(pathlib.Path(opts.build) / "cifar.h5")
        mobilenet().save(pathlib.Path(opts.build) / "mobilenet.keras")
        return
    work = pathlib.Path(opts.keep or tempfile.mkdtemp(prefix="emc-journey-"))
    work.mkdir(parents=True, exist_ok=True)
    cifar_h5, mbn_keras = work / "cifar.h5", work / "mobilenet.keras"
    if not (cifar_h5.exists() and mbn_keras.exists()):
        subprocess.run([sys.executable, __file__, "--build", str(work)], check=True)
    cifar_data, cifar_one = images("cifar10", (32, 32, 3), work, "cifar")
    mbn_data, mbn_one = images("imagenet", (224, 224, 3), work, "imagenet")
    steps = [
        ("inspect cifar.h5", ["inspect", cifar_h5]),
        ("convert cifar.h5 -> kmodel v3", ["convert", cifar_h5, "-o", work / "cifar.kmodel", "--dataset", cifar_data,
                                           "--max-samples", "32", "-q"]),
        ("convert cifar.h5 -> C", ["convert", cifar_h5, "-o", work / "cifar_c", "--platform", "c", "--dataset",
                                   cifar_data, "--max-samples", "32", "-q"]),
        ("run cifar.kmodel", ["run", work / "cifar.kmodel", cifar_one]),
        ("run cifar.h5 (float)", ["run", cifar_h5, cifar_one]),
        ("inspect mobilenet.keras", ["inspect", mbn_keras]),
        ("convert mobilenet.keras -> kmodel v3", ["convert", mbn_keras, "-o", work / "mobilenet.kmodel", "--dataset",
                                                  mbn_data, "--max-samples", "8", "-q"]),
        ("run mobilenet.keras (float)", ["run", mbn_keras, mbn_one]),
    ]
    print(f"{'command':40s} {'wall s':>8s} {'max RSS MB':>11s}")
    for title, args in steps:
        wall, rss, _ = measure(args, work)
        print(f"{title:40s} {wall:8.2f} {rss:11.0f}", flush=True)
    _, _, trace = measure(["inspect", cifar_h5], work, ("-X", "importtime"))
    imported = sorted({line.split("|")[-1].strip().split(".")[0] for line in trace.splitlines()
                       if line.startswith("import time")} & {"tensorflow", "keras", "tensorlayer", "matplotlib"})
    print(f"frameworks imported by `emc inspect cifar.h5`: {', '.join(imported) or 'none'}")
    print(f"files in {work}")


if __name__ == "__main__":
    main()
