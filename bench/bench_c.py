"""C / STM32 platform benchmark: MobileNet v1 alpha 0.25 at 128x128 and the Maix-EMC cifar net.

For each: arena bytes vs the live-tensor lower bound, constant bytes, flash/RAM as arm-none-eabi-size counts
them, host inference time of the compiled C, and instructions of one inference under qemu-system-arm
(-icount shift=0: one instruction per virtual ns, read through SysTick at 25 MHz, so +-40 instructions).
For the cifar net also the mean absolute logit error vs float and top-1 agreement on images/cifar10.

Issue targets (cifar): arena <= 43,008 B, error <= 0.1, top-1 10/10 (NNoM: 57,344 B, 0.35, 8/10).
Run: python bench/bench_c.py
"""
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from support import input_dependence, randomise_keras_batchnorm as randomise_batchnorm  # noqa: E402 (tests/)
REFERENCE = ROOT.parent / "shared" / "reference"
TICK_INSTRUCTIONS = 40           # -icount shift=0 runs 1 instruction per ns; SysTick counts at 25 MHz


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


def host_time(art, q, repeats=20):
    art.compile()
    art.predict_int8(q)
    start = time.perf_counter()
    for _ in range(repeats):
        art.predict_int8(q)
    return (time.perf_counter() - start) / repeats / len(q[0])


def qemu_instructions(art, q):
    from emc.platforms.stm32 import toolchain
    if not (toolchain.have_cross_compiler() and toolchain.have_qemu()):
        return None, None
    outs, ticks = toolchain.run_on_qemu([art], [[v[:1] for v in q]], icount=True, timeout=600)
    same = all(np.array_equal(a, b[:1]) for a, b in zip(outs[0], art.simulate_int8([v[:1] for v in q])))
    return ticks[0][0] * TICK_INSTRUCTIONS, same


def describe(title, art, q):
    sizes = art.sizes or {}
    per_image = host_time(art, q)
    instructions, same = qemu_instructions(art, q)
    print(f"== {title}")
    print(f"  MACs                       : {art.program.macs:,}")
    print(f"  arena                      : {art.plan.arena_bytes:,} B")
    print(f"  live-tensor lower bound    : {art.plan.lower_bound:,} B  "
          f"(arena / bound = {art.plan.arena_bytes / max(art.plan.lower_bound, 1):.3f})")
    print(f"  constant weights + tables  : {art.program.weight_bytes:,} B")
    print(f"  flash (arm-none-eabi-size) : {sizes.get('flash', 'not measured'):,}" if sizes else
          "  flash (arm-none-eabi-size) : not measured")
    print(f"  RAM   (arm-none-eabi-size) : {sizes.get('ram', 0):,} B (arena + I/O buffers + libc data)" if sizes else
          "  RAM   (arm-none-eabi-size) : not measured")
    print(f"  host inference (gcc -O2)   : {per_image * 1e3:.2f} ms per image")
    if instructions is None:
        print("  qemu instructions          : not measured (arm-none-eabi-gcc or qemu-system-arm missing)")
    else:
        print(f"  qemu instructions          : {instructions:,} per inference (Cortex-M4, -O2, portable kernels; "
              f"output == simulator: {same})")


def main():
    import emc
    from emc.datasets import load_dataset

    images = load_dataset(REFERENCE / "images" / "imagenet", (128, 128, 3), dataset_func="img_0_1")
    net = mobilenet_v1(images[:16])
    t0 = time.perf_counter()
    art = emc.convert(net, platform="stm32", dataset=images, dataset_func="img_0_1", name="mobilenet")
    print(f"MobileNet v1 0.25 128x128: converted in {time.perf_counter() - t0:.1f} s")
    q = art.quantize_inputs(images[:4])
    describe("MobileNet v1 alpha 0.25, 128x128, 1000 classes (seeded weights)", art, q)
    ref = art.graph.run(images[:8])[0]
    got = art.predict(images[:8])[0]
    cos = float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got))
    print(f"  float vs C cosine (8 images): {cos:.4f}; input dependence of the float output "
          f"{input_dependence(ref):.3f}, distinct top-1 classes {len(set(ref.argmax(1)))}")

    h5 = REFERENCE / "float-models" / "maixemc_cifar10.h5"
    folder = REFERENCE / "images" / "cifar10"
    art = emc.convert(str(h5), platform="stm32", dataset=str(folder), dataset_func="img_0_1", name="cifar")
    data = load_dataset(folder, (32, 32, 3), dataset_func="img_0_1")
    describe("Maix-EMC cifar net (shared .h5, calibrated on images/cifar10)", art, art.quantize_inputs(data))
    reference = art.graph.run(data)[0]
    ours = art.predict(data)[0]
    error = float(np.abs(ours - reference).mean())
    agree = int(np.sum(ours.argmax(1) == reference.argmax(1)))
    print(f"  mean abs logit error vs float : {error:.4f}   (target <= 0.1; NNoM 0.35)")
    print(f"  top-1 agreement with float    : {agree}/{len(data)}   (target 10/10; NNoM 8/10)")
    print(f"  arena                         : {art.plan.arena_bytes:,} B (target <= 43,008; NNoM 57,344; "
          f"bound {art.plan.lower_bound:,})")


if __name__ == "__main__":
    main()
