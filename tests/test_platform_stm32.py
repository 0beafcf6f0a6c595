"""The STM32 platform: zoo models cross-compiled for a Cortex-M4 (-O2, hard float, newlib) and run under
qemu-system-arm -M mps2-an386 with semihosting give the Python simulator's int8 outputs byte for byte;
the report carries arm-none-eabi-size's counts; the Makefile fragment builds; limits use the measured sizes."""
import shutil
import subprocess

import numpy as np
import pytest

import emc
from emc.calibrate import calibrate
from emc.errors import PlatformLimitError
from emc.passes import optimize
from emc.platforms import stm32
from emc.platforms.stm32 import toolchain

pytestmark = pytest.mark.skipif(
    not (toolchain.have_cross_compiler() and toolchain.have_qemu()),
    reason="arm-none-eabi-gcc / arm-none-eabi-size or qemu-system-arm is not installed "
           "(apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)")

QEMU_MODELS = ("maixemc_cifar", "mobilenet_v2_style", "activations", "unet_like", "detector_two_heads",
               "tl_separable_pools")


def zoo(name):
    from zoo import KERAS_ZOO
    from zoo_tl import TL_ZOO
    return {**KERAS_ZOO, **TL_ZOO}[name]()


def converted(name):
    graph = optimize(emc.load_model(zoo(name)))
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 1, (48,) + graph.input_shapes[0]).astype(np.float32)
    return stm32.convert(graph, calibrate(graph, data), input_transform=(1 / 255, 0.0), name=name), graph


def test_zoo_models_on_qemu_equal_the_simulator(tmp_path):
    arts, inputs = [], []
    for k, name in enumerate(QEMU_MODELS):
        art, graph = converted(name)
        x = np.random.default_rng(10 + k).uniform(0, 1, (2,) + graph.input_shapes[0]).astype(np.float32)
        arts.append(art)
        inputs.append(art.quantize_inputs(x))
    results, ticks = toolchain.run_on_qemu(arts, inputs, folder=str(tmp_path), timeout=150)
    for art, q, outs in zip(arts, inputs, results):
        sim = art.simulate_int8(q)
        assert len(outs) == len(sim)
        for device, expected in zip(outs, sim):
            assert device.tobytes() == expected.tobytes(), f"{art.name}: qemu output differs from the simulator"
        assert art.sizes["flash"] > art.program.weight_bytes
        assert art.sizes["ram"] >= art.plan.arena_bytes
        assert art.report.totals["flash (arm-none-eabi-size: text+data)"] == art.sizes["flash"]
    assert all(len(t) == 2 for t in ticks.values())


def test_single_model_run_qemu_helper():
    art, graph = converted("tl_mlp")
    q = [np.random.default_rng(3).integers(-128, 128, (3, 4)).astype(np.int8)]
    for device, expected in zip(art.run_qemu(q), art.simulate_int8(q)):
        np.testing.assert_array_equal(device, expected)


def test_build_fragments_and_warning_free_cross_compile(tmp_path):
    art, _ = converted("maixemc_cifar")
    art.save(tmp_path)
    assert (tmp_path / "emc_maixemc_cifar.mk").exists() and (tmp_path / "emc_maixemc_cifar.cmake").exists()
    cmake = (tmp_path / "emc_maixemc_cifar.cmake").read_text()
    assert "add_library(emc_maixemc_cifar STATIC" in cmake and "EMC_USE_CMSIS_NN" in cmake
    sources = sorted(p.name for p in tmp_path.glob("*.c"))
    proc = subprocess.run(["arm-none-eabi-gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-mcpu=cortex-m4",
                           "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-c", *sources],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if shutil.which("make"):
        (tmp_path / "Makefile").write_text(
            "include emc_maixemc_cifar.mk\n"
            "OBJS := $(notdir $(C_SOURCES:.c=.o))\n"
            "all: $(OBJS)\n"
            "%.o: %.c\n\tarm-none-eabi-gcc $(EMC_MAIXEMC_CIFAR_CFLAGS) $(C_INCLUDES) -c $< -o $@\n")
        proc = subprocess.run(["make", "-s"], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "maixemc_cifar.o").exists()


def test_limits_use_measured_sizes():
    art, graph = converted("lenet")
    data = np.random.default_rng(0).uniform(0, 1, (16, 28, 28, 1)).astype(np.float32)
    cal = calibrate(graph, data)
    with pytest.raises(PlatformLimitError, match=f"{art.sizes['ram']:,} bytes of RAM"):
        stm32.convert(graph, cal, input_transform=(1 / 255, 0.0), name="lenet", ram_limit=art.sizes["ram"] - 1)
    with pytest.raises(PlatformLimitError, match=f"{art.sizes['flash']:,} bytes of flash"):
        stm32.convert(graph, cal, input_transform=(1 / 255, 0.0), name="lenet", flash_limit=1000)


def test_report_says_not_measured_without_toolchain(monkeypatch):
    monkeypatch.setattr(toolchain, "have_cross_compiler", lambda: False)
    art, _ = converted("tl_mlp")
    assert art.sizes is None
    assert art.report.totals["flash (arm-none-eabi-size)"] == "not measured"


def test_convert_pipeline_reaches_stm32():
    x = np.random.default_rng(0).uniform(0, 1, (32, 4)).astype(np.float32)
    art = emc.convert(zoo("mlp_iris"), platform="stm32", dataset=x, dataset_func="img_0_1", name="iris")
    assert art.platform == "stm32" and "iris.c" in art.files and art.sizes["flash"] > 0
