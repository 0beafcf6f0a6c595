"""The layers the C platform gained for issue 11 (1-D pooling, Conv2DTranspose, ...): the int8 kernels against
scalar integer references written here, the float ops against Keras, and the C against the simulator."""
import shutil

import numpy as np
import pytest

from emc.layers import Act, Conv2DTranspose
import test_platform_c
from test_platform_c import check_against, ref_requant, sat

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="the host C compiler gcc is not installed")
RNG = np.random.default_rng(11)


def one_op(op_factory, in_shapes):
    """test_platform_c.one_op drawing from this module's generator, so that test_platform_c's own tests see the
    same random data whether or not these tests ran first."""
    saved, test_platform_c.RNG = test_platform_c.RNG, RNG
    try:
        return test_platform_c.one_op(op_factory, in_shapes)
    finally:
        test_platform_c.RNG = saved


def conv_transpose_reference(step, xs):
    """Scatter loops over Python ints: out[oy][ox] gathers x[iy][ix] * w[ky][kx] where iy*s + ky = oy + top."""
    p, a = step.params, step.arrays
    x = xs[0]
    (h, w, cin), (oh, ow, cout) = p["in_shape"], p["out_shape"]
    (kh, kw), (sh, sw), (top, left) = p["kernel"], p["stride"], p["pad"]
    acc = [[[int(a["bias"][o]) for o in range(cout)] for _ in range(ow)] for _ in range(oh)]
    for iy in range(h):
        for ix in range(w):
            for ky in range(kh):
                for kx in range(kw):
                    oy, ox = iy * sh + ky - top, ix * sw + kx - left
                    if 0 <= oy < oh and 0 <= ox < ow:
                        for o in range(cout):
                            acc[oy][ox][o] += sum((int(x[iy, ix, c]) - p["in_zp"]) * int(a["weights"][o, ky, kx, c])
                                                  for c in range(cin))
    out = [[[sat(ref_requant(acc[y][xx][o], a["mult"][o], a["shift"][o]) + p["out_zp"], p["act_min"], p["act_max"])
             for o in range(cout)] for xx in range(ow)] for y in range(oh)]
    return out


@pytest.mark.parametrize("kernel, strides, crops, act", [
    (3, 2, (0, 1, 0, 1), "linear"),          # Keras 'same', k=3 s=2
    (4, 2, (1, 1, 1, 1), "relu"),            # Keras 'same', k=4 s=2
    (2, 3, (0, -1, 0, -2), "linear"),        # 'valid' with the stride above the kernel: bias-only rows
    (3, 1, (1, 1, 0, 2), "relu6"),
])
def test_conv_transpose_kernel(kernel, strides, crops, act):
    w = RNG.normal(0, 0.4, (kernel, kernel, 3, 4))
    art, q = one_op(lambda: Conv2DTranspose(w, RNG.normal(0, 0.2, 4), strides, crops, Act(act)), [(4, 5, 3)])
    check_against(art, q, conv_transpose_reference)


# ---- recurrent layers: a scalar reference of the integer scheme described in emc/platforms/c/recurrent.py ----------
def table_value(table, q):
    u = int(q) + 32768
    lo, hi = int(table[u // 128]), int(table[u // 128 + 1])
    return lo + ((hi - lo) * (u % 128) + 64) // 128


def sat16(v):
    return max(-32768, min(32767, int(v)))


def rnn_reference(step, xs):
    """One sample, Python ints, one unit at a time: gates, state update, output requantisation."""
    p, a = step.params, step.arrays
    units, cell = p["units"], p["cell"]
    sig, tanh = a["sigmoid"], a["tanh"]
    h, c, outs = [0] * units, [0] * units, []
    for t in range(p["steps"]):
        px, ph = [], []
        for j in range(p["gates"] * units):
            ax = int(a["bias_x"][j]) + sum((int(v) - p["in_zp"]) * int(w) for v, w in zip(xs[0][t], a["w_x"][j]))
            ah = int(a["bias_h"][j]) + sum(hv * int(w) for hv, w in zip(h, a["w_h"][j]))
            px.append(ref_requant(ax, a["mult_x"][j], a["shift_x"][j]))
            ph.append(ref_requant(ah, a["mult_h"][j], a["shift_h"][j]))
        new_h = []
        for k in range(units):
            g = [k + m * units for m in range(p["gates"])]
            if cell == 0:
                new_h.append(table_value(tanh, sat16(px[k] + ph[k])))
            elif cell == 2:
                i, f, o = (table_value(sig, sat16(px[j] + ph[j])) for j in (g[0], g[1], g[3]))
                cand = table_value(tanh, sat16(px[g[2]] + ph[g[2]]))
                c[k] = sat16((f * c[k] + 2**14) // 2**15 + (i * cand + 2**17) // 2**18)
                new_h.append((o * table_value(tanh, c[k]) + 2**14) // 2**15)
            else:
                z, r = (table_value(sig, sat16(px[j] + ph[j])) for j in (g[0], g[1]))
                cand = sat16(sat16(px[g[2]]) + (r * sat16(ph[g[2]]) + 2**14) // 2**15)
                new_h.append((z * h[k] + (2**15 - z) * table_value(tanh, cand) + 2**14) // 2**15)
        h = new_h
        if p["return_sequences"] or t == p["steps"] - 1:
            outs.append([sat(ref_requant(v, p["out_mult"], p["out_shift"]) + p["out_zp"]) for v in h])
    return outs


@pytest.mark.parametrize("kind", ["SimpleRNN", "GRU", "LSTM"])
@pytest.mark.parametrize("sequences", [False, True])
def test_recurrent_kernels(kind, sequences):
    import emc.layers as L
    gates, units, features = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}[kind], 5, 3
    kernel, recurrent = RNG.normal(0, 0.8, (features, gates * units)), RNG.normal(0, 0.6, (units, gates * units))
    bias = RNG.normal(0, 0.3, (2, gates * units) if kind == "GRU" else (gates * units,))
    art, q = one_op(lambda: getattr(L, kind)(kernel, recurrent, bias, sequences), [(6, features)])
    check_against(art, q, rnn_reference)


def test_recurrent_activation_tables_are_the_functions():
    from emc.platforms.c.recurrent import SIGMOID_TABLE, TANH_TABLE
    codes = np.arange(-32768, 32768, 37)
    x = codes / 4096.0
    assert max(abs(table_value(SIGMOID_TABLE, q) / 32768 - 1 / (1 + np.exp(-v))) for q, v in zip(codes, x)) < 2e-4
    assert max(abs(table_value(TANH_TABLE, q) / 32768 - np.tanh(v)) for q, v in zip(codes, x)) < 5e-4


# ---- the zoo nets of these layers on a Cortex-M4 under qemu: the device bytes equal the simulator's ---------------
def test_new_layer_zoo_nets_on_qemu_equal_the_simulator(tmp_path):
    from emc.platforms.stm32 import toolchain
    if not (toolchain.have_cross_compiler() and toolchain.have_qemu()):
        pytest.skip("arm-none-eabi-gcc or qemu-system-arm is not installed")
    import emc
    from emc.calibrate import calibrate
    from emc.passes import optimize
    from emc.platforms import stm32
    from zoo import KERAS_ZOO
    arts, inputs = [], []
    for k, name in enumerate(("recurrent_sensor", "conv_transpose_decoder", "kws_conv1d_pools")):
        graph = optimize(emc.load_model(KERAS_ZOO[name]()))
        data = np.random.default_rng(k).uniform(0, 1, (48,) + graph.input_shapes[0]).astype(np.float32)
        art = stm32.convert(graph, calibrate(graph, data), name=name)
        arts.append(art)
        inputs.append(art.quantize_inputs(data[:2]))
    results, _ = toolchain.run_on_qemu(arts, inputs, folder=str(tmp_path), timeout=150)
    for art, q, outs in zip(arts, inputs, results):
        for device, expected in zip(outs, art.simulate_int8(q)):
            assert device.tobytes() == expected.tobytes(), f"{art.name}: qemu output differs from the simulator"


# ---- several inputs: <name>_run_buffers takes one buffer per input and per output -------------------------------------
def test_run_buffers_takes_a_buffer_per_input_and_output():
    import ctypes
    import emc
    from emc.calibrate import calibrate
    from emc.passes import optimize
    from emc.platforms import c as cplat
    from zoo import KERAS_ZOO
    graph = optimize(emc.load_model(KERAS_ZOO["two_inputs"]()))
    rng = np.random.default_rng(4)
    data = [rng.uniform(0, 1, (32,) + s).astype(np.float32) for s in graph.input_shapes]
    art = cplat.convert(graph, calibrate(graph, data), name="two_in")
    assert "int two_in_run_buffers(const int8_t *const *inputs, int8_t *const *outputs);" in art.files["two_in.h"]
    lib = ctypes.CDLL(art.compile())
    q = art.quantize_inputs([d[:3] for d in data])
    expected = art.simulate_int8(q)
    p8 = ctypes.POINTER(ctypes.c_int8)
    for i in range(3):
        ins = [np.ascontiguousarray(x[i]).copy() for x in q]              # separate allocations
        outs = [np.zeros(t.shape, np.int8) for t in art.output_tensors]
        in_ptrs = (p8 * len(ins))(*[a.ctypes.data_as(p8) for a in ins])
        out_ptrs = (p8 * len(outs))(*[a.ctypes.data_as(p8) for a in outs])
        assert lib.two_in_run_buffers(in_ptrs, out_ptrs) == 0
        for got, want in zip(outs, expected):
            np.testing.assert_array_equal(got, want[i])
