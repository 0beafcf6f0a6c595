"""The shaped C kernels (folded input zero point, gathered windows, 4-channel dot products, depthwise fast path):
bit-exact with the Python simulator on the host (gcc) and on a Cortex-M4 under QEMU, portable and with
EMC_USE_ARM_DSP, over valid/same padding, stride 1/2, dilation, in_c 1..64, 1x1 / 1x3 / 3x3, depthwise and
dense, always with nonzero input zero points and inputs that include -128 and 127. With CMSIS_NN_DIR set to a
CMSIS-NN checkout, the CMSIS-NN build too, and its scratch equals what CMSIS-NN's *_get_buffer_size ask."""
import os
import shutil

import numpy as np
import pytest

from emc.calibrate import calibrate
from emc.errors import EmcError
from emc.graph import Graph
from emc.layers import Act, Conv2D, Dense, DepthwiseConv2D, Pool2D
from emc.platforms import c as cplat
from emc.platforms.c.columns import column_bytes, folded_bias, needs_column
from emc.platforms.c.ir import Step
from emc.platforms.stm32 import toolchain

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="the host C compiler gcc is not installed")

# (name, input shape, kernel, stride, padding, out_c, dilation); in_c 1..64, out_c around multiples of 4
CONVS = [
    ("c1_3x3_s2_valid", (13, 12, 1), 3, 2, "valid", 4, 1),
    ("c1_3x3_s1_same", (7, 6, 1), 3, 1, "same", 5, 1),
    ("c3_3x3_s2_same", (9, 8, 3), 3, 2, "same", 7, 1),
    ("c4_3x3_s1_valid", (6, 7, 4), 3, 1, "valid", 8, 1),
    ("c8_3x3_s2_valid", (8, 8, 8), 3, 2, "valid", 16, 1),
    ("c17_3x3_s1_same", (5, 6, 17), 3, 1, "same", 6, 1),
    ("c64_3x3_s2_same", (6, 5, 64), 3, 2, "same", 9, 1),
    ("c16_1x1_s1_valid", (5, 4, 16), 1, 1, "valid", 12, 1),
    ("c5_1x1_s2_valid", (7, 6, 5), 1, 2, "valid", 3, 1),
    ("c6_1x3_s1_same", (5, 7, 6), (1, 3), 1, "same", 4, 1),
    ("c2_3x3_d2_same", (8, 9, 2), 3, 1, "same", 5, 2),
]
DEPTHWISE = [
    ("dw8_3x3_s1_same", (6, 7, 8), 3, 1, "same", 1),
    ("dw16_3x3_s2_same", (8, 8, 16), 3, 2, "same", 1),
    ("dw3_3x3_s2_valid_m2", (7, 7, 3), 3, 2, "valid", 2),
    ("dw64_3x3_s1_valid", (5, 5, 64), 3, 1, "valid", 1),
    ("dw5_1x1_s1_valid", (4, 4, 5), 1, 1, "valid", 1),
]
DENSE = [("dense_64x10", (64,), 10), ("dense_3x20x7", (3, 20), 7)]
RANGES = [(0.0, 1.0), (-0.3, 1.0)]      # zero points -128 and about -89: both nonzero


def pads(in_hw, kernel, stride, padding, dilation):
    """(top, bottom, left, right) as Keras pads 'same' / 'valid'."""
    if padding == "valid":
        return (0, 0, 0, 0)
    out = []
    for size, k, s in zip(in_hw, kernel, stride):
        total = max((-(-size // s) - 1) * s + (k - 1) * dilation + 1 - size, 0)
        out += [total // 2, total - total // 2]
    return tuple(out)


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def one_layer(name, shape, make, rng, data_range, n_cal=32):
    """A one-op graph calibrated on data in data_range; (C artefact, int8 inputs with both extremes)."""
    g = Graph(name)
    x = g.add_input(shape, "in")
    g.set_outputs([g.add(make(), [x], name="op")])
    data = rng.uniform(*data_range, (n_cal,) + shape).astype(np.float32)
    art = cplat.convert(g, calibrate(g, data), name=name)
    q = rng.integers(-128, 128, (3,) + shape).astype(np.int8)
    q[0].flat[::2] = -128
    q[1].flat[::3] = 127
    return art, [q]


def build_all():
    rng = np.random.default_rng(16)
    cases = []
    for i, (name, shape, k, s, padding, out_c, d) in enumerate(CONVS):
        k, s = pair(k), pair(s)
        w = rng.normal(0, 0.3, k + (shape[2], out_c))
        p = pads(shape[:2], k, s, padding, d)
        act = Act("relu") if i % 2 else Act("linear")
        cases.append(one_layer(name, shape, lambda: Conv2D(w, rng.normal(0, 0.2, out_c), s, d, p, act), rng,
                               RANGES[i % 2]))
    for i, (name, shape, k, s, padding, mult) in enumerate(DEPTHWISE):
        k, s = pair(k), pair(s)
        w = rng.normal(0, 0.4, k + (shape[2], mult))
        p = pads(shape[:2], k, s, padding, 1)
        cases.append(one_layer(name, shape, lambda: DepthwiseConv2D(w, rng.normal(0, 0.2, shape[2] * mult), s, 1, p,
                                                                    Act("relu6")), rng, RANGES[i % 2]))
    for i, (name, shape, out_f) in enumerate(DENSE):
        w = rng.normal(0, 0.3, (shape[-1], out_f))
        cases.append(one_layer(name, shape, lambda: Dense(w, rng.normal(0, 0.1, out_f), Act("linear")), rng,
                               RANGES[i % 2]))
    for mode in ("avg", "max"):                 # CMSIS-NN's scratch covers pooling too
        cases.append(one_layer(f"{mode}_pool_3x3_s2", (7, 8, 12), lambda: Pool2D(mode, 3, 2, (1, 1, 1, 1)), rng,
                               RANGES[0]))
    return cases


@pytest.fixture(scope="module")
def cases():
    return build_all()


def linear_step(art):
    return next(s for s in art.program.steps if s.node == "op")


def test_every_case_has_a_nonzero_input_zero_point(cases):
    for art, _ in cases:
        if "pool" not in art.name:
            assert linear_step(art).params["in_zp"] != 0, art.name


def test_host_c_equals_the_simulator(cases):
    for art, q in cases:
        c_out = art.predict_int8(q)[0]
        np.testing.assert_array_equal(c_out, art.simulate_int8(q)[0], err_msg=art.name)


def test_folded_bias_is_the_bias_minus_the_zero_point_times_the_weight_sums(cases):
    for art, _ in cases:
        step = linear_step(art)
        if "pool" in step.kind:
            continue
        w = step.arrays["weights"].astype(np.int64)
        if step.kind == "depthwise_conv2d":
            sums = w.sum(axis=(0, 1))
        else:
            sums = w.reshape(w.shape[0], -1).sum(axis=1)
        want = step.arrays["bias"].astype(np.int64) - step.params["in_zp"] * sums
        np.testing.assert_array_equal(folded_bias(step), want)


def test_folded_bias_outside_int32_is_an_error():
    step = Step("dense", "big", ["x"], "y", {"in_zp": -128},
                {"weights": np.full((1, 4), 127, np.int8), "bias": np.array([2**31 - 100], np.int32)})
    with pytest.raises(EmcError, match="leaves int32"):
        folded_bias(step)


def test_column_buffer_is_the_largest_gathered_window_and_is_reported(cases):
    by_name = {art.name: art for art, _ in cases}
    assert not needs_column(linear_step(by_name["c16_1x1_s1_valid"]))
    assert needs_column(linear_step(by_name["c6_1x3_s1_same"]))          # padded: gathers at the borders
    assert not needs_column(linear_step(by_name["dw8_3x3_s1_same"]))     # depthwise reads in place
    art = by_name["c64_3x3_s2_same"]
    assert column_bytes(art.program.steps) == 3 * 3 * 64
    assert art.report.totals["conv column buffer (bytes)"] == 3 * 3 * 64
    assert "static int8_t c64_3x3_s2_same_col[C64_3X3_S2_SAME_COLUMN_SIZE]" in art.files["c64_3x3_s2_same.c"]
    assert by_name["c16_1x1_s1_valid"].report.totals["conv column buffer (bytes)"] == 0


def test_portable_builds_carry_only_the_folded_bias(cases):
    art = cases[0][0]
    source = art.files[f"{art.name}.c"]
    assert "L0_kbias" in source
    plain = source.split("#ifdef EMC_USE_CMSIS_NN\nstatic const int32_t L0_bias")
    assert len(plain) == 2, "the unfolded bias is declared only for CMSIS-NN builds"


CMSIS_NN_DIR = os.environ.get("CMSIS_NN_DIR")


def build_options(build):
    if build == "portable":
        return {}
    if build == "arm-dsp":
        return {"defines": ("EMC_USE_ARM_DSP",)}
    if not CMSIS_NN_DIR:
        pytest.skip("CMSIS_NN_DIR is not set: point it at a CMSIS-NN checkout (github.com/ARM-software/CMSIS-NN) "
                    "to check emc's CMSIS-NN build")
    return toolchain.cmsis_nn_build(CMSIS_NN_DIR)


@pytest.mark.skipif(not (toolchain.have_cross_compiler() and toolchain.have_qemu()),
                    reason="arm-none-eabi-gcc or qemu-system-arm is not installed")
@pytest.mark.parametrize("build", ["portable", "arm-dsp", "cmsis-nn"])
def test_cortex_m4_equals_the_simulator(cases, build):
    options = build_options(build)
    arts = [art for art, _ in cases]
    inputs = [q for _, q in cases]
    results = toolchain.measure_on_qemu(arts, inputs, timeout=300, profile=False, **options)
    for art, q, got in zip(arts, inputs, results):
        assert got["outputs"][0].tobytes() == art.simulate_int8(q)[0].tobytes(), f"{art.name} {build}"
        if build == "cmsis-nn":
            asked, reserved = got["cmsis_scratch"]
            assert asked == reserved, f"{art.name}: CMSIS-NN asks {asked} B of scratch, emc reserved {reserved} B"


# ---- CMSIS-NN builds: convolutions run as emc_conv2d_pairs_s8, its buffer in free arena bytes ----------------------
# (name, second conv: kernel, stride, padding, out_c, dilation, activation, weight spread). A 3x3 conv of 3 channels
# (27-byte windows, padded to 28 with zero weights) fills the arena, a 2x2 max pool shrinks it, so each conv finds
# free arena bytes for its buffer; 5x5 and 3x3 outputs leave a last pixel without a partner, 7 and 5 output channels
# channels outside the blocks of four. A sigmoid (a table) and large weights under relu6 (requantisation shifts
# above -2) take the general requantisation instead of the shortcut.
GEMM_CONVS = [
    ("g_3x3_s1_same", 3, 1, "same", 7, 1, "linear", 0.3),
    ("g_3x3_s2_same", 3, 2, "same", 8, 1, "linear", 0.3),
    ("g_3x3_d2_same", 3, 1, "same", 7, 2, "linear", 0.3),
    ("g_1x3_s1_same", (1, 3), 1, "same", 8, 1, "linear", 0.3),
    ("g_1x1_s2_valid", 1, 2, "valid", 5, 1, "linear", 0.3),
    ("g_3x3_s1_sigmoid", 3, 1, "same", 6, 1, "sigmoid", 0.3),
    ("g_1x1_s2_relu6", 1, 2, "valid", 8, 1, "relu6", 35.0),
]


def gemm_model(name, k, s, padding, out_c, d, act, spread, rng):
    g = Graph(name)
    x = g.add_input((10, 10, 3), "in")
    w1 = rng.normal(0, 0.3, (3, 3, 3, 16))
    x = g.add(Conv2D(w1, rng.normal(0, 0.2, 16), 1, 1, pads((10, 10), (3, 3), (1, 1), "same", 1), Act("relu")),
              [x], name="first")
    x = g.add(Pool2D("max", 2, 2), [x], name="pool")
    k, s = pair(k), pair(s)
    w2 = rng.normal(0, spread, k + (16, out_c))
    g.set_outputs([g.add(Conv2D(w2, rng.normal(0, 0.2, out_c), s, d, pads((5, 5), k, s, padding, d), Act(act)),
                         [x], name="op")])
    data = rng.uniform(-0.3, 1.0, (32, 10, 10, 3)).astype(np.float32)
    art = cplat.convert(g, calibrate(g, data), name=name)
    q = rng.integers(-128, 128, (3, 10, 10, 3)).astype(np.int8)
    q[0].flat[::2] = -128
    q[1].flat[::3] = 127
    return art, [q]


@pytest.mark.skipif(not (toolchain.have_cross_compiler() and toolchain.have_qemu()),
                    reason="arm-none-eabi-gcc or qemu-system-arm is not installed")
@pytest.mark.parametrize("cpu", ["cortex-m4", "cortex-m3"])   # SMLAD / SXTB16, and their portable C stand-ins
def test_cortex_m4_cmsis_gemm_convolutions_equal_the_simulator(cpu):
    options = build_options("cmsis-nn")
    rng = np.random.default_rng(11)
    cases = [gemm_model(*case, rng) for case in GEMM_CONVS]
    for art, _ in cases:
        source = art.files[f"{art.name}.c"]
        assert source.count(".gemm_pairs = ") == 2, f"{art.name}: both convolutions should take the pairs kernel"
        assert ".gemm_taps = 28," in source, f"{art.name}: the first conv's 27 taps are padded to 28"
    # 16 channels x 28 taps and 7 x 144 as int16 words, less the int8 weights (16 x 27, 7 x 144)
    assert cases[0][0].report.totals["CMSIS-NN builds: extra flash for widened conv weights (bytes)"] == \
        16 * 28 * 2 - 16 * 27 + 7 * 144
    second = {art.name: art.program.steps[-1] for art, _ in cases}
    assert "lut" in second["g_3x3_s1_sigmoid"].arrays
    assert second["g_1x1_s2_relu6"].arrays["shift"].max() >= -1, "some channel beyond the requantisation shortcut"
    arts, inputs = [a for a, _ in cases], [q for _, q in cases]
    results = toolchain.measure_on_qemu(arts, inputs, timeout=300, profile=False, cpu=cpu, **options)
    for art, q, got in zip(arts, inputs, results):
        assert got["outputs"][0].tobytes() == art.simulate_int8(q)[0].tobytes(), f"{art.name} {cpu}"
        asked, reserved = got["cmsis_scratch"]
        assert asked == reserved, f"{art.name}: CMSIS-NN asks {asked} B of scratch, emc reserved {reserved} B"


PAIRS_HARNESS = """
#include <stdio.h>
#include "emc_pairs.c"
int main(void)
{
    long a, m, right1, zp;
    while (scanf("%ld %ld %ld %ld", &a, &m, &right1, &zp) == 4)
        printf("%ld\\n", (long)emc_pairs_requantize((int32_t)a, (int32_t)m,
                                                   ((int32_t)1 << (right1 - 1)) + (int32_t)zp * ((int32_t)1 << right1),
                                                   (int32_t)right1));
    return 0;
}
"""


def test_pairs_requantisation_shortcut_equals_requantize(tmp_path):
    """emc_pairs.c's one-SMLAL requantisation (zero point inside) against fixedpoint.requantize on the host, over the
    shifts it takes (-23..-2), positive multipliers, int32 extremes and both zero point extremes."""
    import subprocess
    from emc.platforms.c.build import runtime_files
    from emc.platforms.c.fixedpoint import requantize
    for name, text in runtime_files().items():
        (tmp_path / name).write_text(text)
    (tmp_path / "harness.c").write_text(PAIRS_HARNESS)
    exe = tmp_path / "harness"
    proc = subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-DEMC_USE_CMSIS_NN", "-o", str(exe),
                           str(tmp_path / "harness.c")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rng = np.random.default_rng(5)
    n = 20000
    a = np.concatenate([rng.integers(-2**31, 2**31, n), rng.integers(-2**16, 2**16, n),
                        [-2**31, 2**31 - 1, -1, 0, 1] * 8])
    m = np.concatenate([rng.integers(1, 2**31, 2 * n), [1, 2**31 - 1, 2**30, 1518500250, 7] * 8])
    right1 = rng.integers(1, 23, a.size)
    right1[-40:] = np.repeat([1, 22, 7, 12, 2, 21, 1, 22], 5)
    zp = rng.integers(-128, 128, a.size)
    zp[-20:] = -128
    zp[-40:-20] = 127
    text = "\n".join(f"{v} {w} {r} {z}" for v, w, r, z in zip(a, m, right1, zp))
    out = subprocess.run([str(exe)], input=text, capture_output=True, text=True, check=True).stdout.split()
    np.testing.assert_array_equal(np.array(out, np.int64), requantize(a, m, -(right1 + 1)) + zp)
