"""The user's journey, measured (issue 13): wall time and max RSS of `emc inspect / convert / run` on the
Maix-EMC cifar `.h5` and a MobileNet `.keras`, each command a fresh process as a user runs it; then simulation
throughput: the K210 simulation of MobileNet v1 1.0/224 batched, the cifar net's C (the Python twin and the
compiled C), and emc.evaluate with and without timing.

Targets (issue 13): K210 MobileNet <= 0.15 s per image batched on 2 cores, C cifar <= 5 ms per image, timing
costs nothing. Simulation figures are wall and CPU (process_time) seconds per image, since other processes may
share the cores; OpenBLAS threads spin while they wait, so on a loaded machine OPENBLAS_NUM_THREADS=1 gives the
truer CPU figure. Run: python bench/bench_journey.py [--skip-mobilenet] [--throughput-only]
"""
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
REFERENCE = ROOT.parent / "shared" / "reference"
CIFAR_H5 = REFERENCE / "float-models" / "maixemc_cifar10.h5"
CIFAR_IMAGES = REFERENCE / "images" / "cifar10"
IMAGENET = REFERENCE / "images" / "imagenet"


def emc_command(*args):
    """Run `emc ARGS` in a fresh process: (wall seconds, max RSS MiB, exit code, stderr). The bench process
    stays small (no TensorFlow), since Linux keeps a forked child's pre-exec high-water mark in its max RSS."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-c", "import sys; from emc.cli import main; sys.exit(main())", *map(str, args)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024.0, proc.returncode, err


def show(label, figures):
    wall, rss, code, err = figures
    state = "" if code == 0 else f"  (exit {code}: {err.strip().splitlines()[-1] if err.strip() else ''})"
    print(f"  {label:<44} {wall:7.2f} s  {rss:7.0f} MiB{state}", flush=True)


def mobilenet_keras(folder):
    """keras.applications.MobileNet 1.0/224 (seeded weights) saved as .keras, once."""
    path = folder / "mobilenet_v1_1.0_224.keras"
    if not path.exists():                 # in its own process: this one stays small, so children's RSS is theirs
        code = ("import keras; keras.utils.set_random_seed(0); "
                f"keras.applications.MobileNet(alpha=1.0, weights=None).save({str(path)!r})")
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return path


def commands(out, skip_mobilenet):
    print("commands (fresh process each; wall time, max RSS):")
    image = sorted(p for p in CIFAR_IMAGES.iterdir() if p.suffix == ".png" or p.suffix == ".jpg")[0]
    show("emc inspect cifar.h5", emc_command("inspect", CIFAR_H5))
    show("emc convert cifar.h5 (k210 v3)", emc_command("convert", CIFAR_H5, "-o", out / "cifar.kmodel",
                                                       "--dataset", CIFAR_IMAGES, "-q"))
    show("emc convert cifar.h5 (c)", emc_command("convert", CIFAR_H5, "-o", out / "cifar_c", "--platform", "c",
                                                 "--dataset", CIFAR_IMAGES, "-q"))
    show("emc run cifar.h5 image", emc_command("run", CIFAR_H5, image))
    show("emc run cifar.kmodel image", emc_command("run", out / "cifar.kmodel", image))
    show("emc run cifar_c image", emc_command("run", out / "cifar_c", image))
    show("emc inspect cifar.kmodel", emc_command("inspect", out / "cifar.kmodel"))
    if skip_mobilenet:
        return None
    keras_file = mobilenet_keras(out)
    photo = sorted(p for p in IMAGENET.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))[0]
    show("emc inspect mobilenet.keras", emc_command("inspect", keras_file))
    show("emc convert mobilenet.keras (k210 v4)", emc_command("convert", keras_file, "-o", out / "mobilenet.kmodel",
                                                              "--version", "4", "--dataset", IMAGENET, "-q"))
    show("emc convert mobilenet.keras (k210 v3)", emc_command("convert", keras_file, "-o", out / "mobilenet_v3.kmodel",
                                                              "--version", "3", "--dataset", IMAGENET, "-q"))
    show("emc run mobilenet.keras photo", emc_command("run", keras_file, photo))
    show("emc run mobilenet.kmodel photo", emc_command("run", out / "mobilenet.kmodel", photo))
    return out / "mobilenet.kmodel"


def mobilenet_kmodels(out):
    """The MobileNet kmodels v4 and v3 the commands part writes, converted here when it did not run."""
    keras_file = mobilenet_keras(out)
    for version, name in (("4", "mobilenet.kmodel"), ("3", "mobilenet_v3.kmodel")):
        if not (out / name).exists():
            emc_command("convert", keras_file, "-o", out / name, "--version", version, "--dataset", IMAGENET, "-q")
    return out / "mobilenet.kmodel"


def per_image(fn, x, repeat=1):
    """(wall, CPU) seconds per image of fn on the batch x, after a warm-up on one image."""
    fn(x[:1])                                            # warm-up (caches, compiled library)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        fn(x)
    return (time.perf_counter() - wall) / (repeat * len(x)), (time.process_time() - cpu) / (repeat * len(x))


def figures(seconds, unit=1000, digits=2):
    """'wall W, CPU C' of a (wall, CPU) pair, in ms (unit 1000) or s (unit 1)."""
    wall, cpu = (unit * v for v in seconds)
    suffix = " ms" if unit == 1000 else " s"
    return f"wall {wall:.{digits}f}{suffix}, CPU {cpu:.{digits}f}{suffix}"


def throughput(out, mobilenet_kmodel):
    import emc
    from emc.c_folder import CFolder
    from emc.datasets import load_dataset
    print(f"simulation throughput (host, this process; load average {os.getloadavg()[0]:.1f} at the start):")
    cifar = load_dataset(CIFAR_IMAGES, (32, 32, 3))
    batch = np.concatenate([cifar] * 4)
    c_artefact = emc.convert(str(CIFAR_H5), platform="c", dataset=str(CIFAR_IMAGES))
    print(f"  C cifar, Python twin (simulate), batch {len(batch)}: {figures(per_image(c_artefact.simulate, batch))} "
          f"per image (target <= 5 ms)")
    folder = CFolder(str(out / "cifar_c"))
    print(f"  C cifar, compiled C (emc run / evaluate on the folder): "
          f"{figures(per_image(folder.predict, batch), digits=3)} per image")
    k_cifar = emc.convert(str(CIFAR_H5), dataset=str(CIFAR_IMAGES))
    print(f"  K210 cifar v3, simulate batch {len(batch)}: {figures(per_image(k_cifar.simulate, batch))} per image")
    graph = k_cifar.graph
    labels = np.arange(len(batch)) % 10
    for timing in (False, True):
        start = time.perf_counter()
        emc.evaluate(graph, batch, labels, timing=timing)
        print(f"  evaluate(float graph, {len(batch)} images, timing={timing}): "
              f"{1000 * (time.perf_counter() - start) / len(batch):.3f} ms per image")
    if mobilenet_kmodel is not None and mobilenet_kmodel.exists():
        photos = load_dataset(IMAGENET, (224, 224, 3), dataset_func="img_0_255").astype(np.uint8)[:8]
        for version, path in (("v4", mobilenet_kmodel), ("v3", mobilenet_kmodel.with_name("mobilenet_v3.kmodel"))):
            if path.exists():
                model = emc.load_kmodel(str(path))
                seconds = per_image(lambda x: emc.run_kmodel(model, x), photos)
                print(f"  K210 MobileNet v1 1.0/224 (kmodel {version}), run_kmodel batch {len(photos)}: "
                      f"{figures(seconds, 1, 3)} per image (target <= 0.15 s)")
        labels = np.zeros(len(photos), int)
        result = emc.evaluate(str(mobilenet_kmodel), photos, labels, timing=True, batch_size=4)
        print(f"  K210 MobileNet v4 through emc.evaluate(timing=True, batch 4): {result['time_per_inference']:.3f} s "
              f"per image")
        start = time.perf_counter()
        emc.evaluate(str(mobilenet_kmodel), photos, labels, batch_size=2, workers=2)
        print(f"  K210 MobileNet v4 through emc.evaluate(workers=2, batch 2): "
              f"{(time.perf_counter() - start) / len(photos):.3f} s per image wall (2 processes; fork and loading "
              f"included)")
    print(f"  (load average during the bench: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    skip = "--skip-mobilenet" in sys.argv
    cache = pathlib.Path(os.environ.get("EMC_BENCH_DIR") or tempfile.gettempdir()) / "emc-bench-journey"
    cache.mkdir(parents=True, exist_ok=True)
    if "--throughput-only" in sys.argv:
        if not (cache / "cifar_c").exists():
            emc_command("convert", CIFAR_H5, "-o", cache / "cifar_c", "--platform", "c", "--dataset", CIFAR_IMAGES, "-q")
        kmodel = None if skip else mobilenet_kmodels(cache)
    else:
        kmodel = commands(cache, skip)
    throughput(cache, kmodel)
