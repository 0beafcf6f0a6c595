"""The generic C platform: int8 kernels against plain integer references written here, every zoo model compiled
with the host gcc and compared bit for bit with the Python simulator and closely with float, a digits
classifier, the Maix-EMC cifar net, the memory plan, warning-free C and bad input."""
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import emc
from conftest import reference_path
from emc.calibrate import calibrate
from emc.errors import EmcError, PlatformLimitError
from emc.graph import Graph
from emc.layers import (Act, BatchNorm, Concat, Conv2D, Crop2D, Dense, DepthwiseConv2D, Elementwise, GlobalPool2D,
                        Op, Pad2D, Pool2D, PReLU, Upsample2D, Activation)
from emc.passes import optimize
from emc.platforms import c as cplat

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="the host C compiler gcc is not installed")


# ---- an independent scalar reference of TF Lite Micro's integer arithmetic -----------------------------------------
def ref_requant(x, mult, shift):
    """MultiplyByQuantizedMultiplier on Python ints: doubling high multiply, then rounding right shift."""
    x, mult, shift = int(x), int(mult), int(shift)
    x = max(min(x * (1 << max(shift, 0)), 2**31 - 1), -2**31)
    ab = x * mult
    t = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    high = abs(t) // (1 << 31) * (1 if t >= 0 else -1)
    if x == mult == -2**31:                             # SaturatingRoundingDoublingHighMul's one overflow
        high = 2**31 - 1
    right = max(-shift, 0)
    mask = (1 << right) - 1
    return (high >> right) + (1 if (high & mask) > (mask >> 1) + (1 if high < 0 else 0) else 0)


def sat(v, lo=-128, hi=127):
    return max(lo, min(hi, int(v)))


@settings(max_examples=300, deadline=None)
@given(st.integers(-2**20, 2**20), st.floats(1e-6, 30.0))
def test_requantize_matches_the_reference_and_the_real_product(x, real):
    from emc.platforms.c.fixedpoint import quantize_multiplier, requantize
    mult, shift = quantize_multiplier(real)
    assert abs(mult * 2.0 ** (shift - 31) - real) <= real * 2.0 ** -30
    got = int(requantize(np.array([x]), mult, shift)[0])
    assert got == ref_requant(x, mult, shift)
    if abs(x * real) < 2**30:
        assert abs(got - x * real) <= 0.5 + 1e-6 * abs(x * real) + 1


def test_requantize_of_arrays_matches_the_reference_at_the_edges():
    """Per-channel multipliers and shifts over whole arrays, int32 extremes and the saturating INT32_MIN product."""
    from emc.platforms.c.fixedpoint import requantize
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.integers(-2**31, 2**31, 600), rng.integers(-2**12, 2**12, 600),
                        [-2**31, 2**31 - 1, -1, 0, 1, 2**40, -2**40]]).reshape(-1, 1)
    mult = np.array([-2**31, 2**31 - 1, 2**30, 1 << 20, 1518500250, -1073741824, 7])
    shift = np.array([0, -31, 3, -5, -1, 1, -12])
    got = requantize(x, mult, shift)
    want = [[ref_requant(v, m, s) for m, s in zip(mult, shift)] for v in x[:, 0]]
    np.testing.assert_array_equal(got, want)


# ---- one-op graphs: C and simulator against loops written here -------------------------------------------------------
RNG = np.random.default_rng(1234)


def one_op(op_factory, in_shapes, data_range=(-1.0, 1.0), n_cal=48):
    """A graph with one op (plus inputs), calibrated on random data; returns (artefact, int8 test inputs)."""
    g = Graph("op")
    names = [g.add_input(s, f"in{i}") for i, s in enumerate(in_shapes)]
    out = g.add(op_factory(), names, name="op")
    g.set_outputs([out])
    data = [RNG.uniform(*data_range, (n_cal,) + s).astype(np.float32) for s in in_shapes]
    art = cplat.convert(g, calibrate(g, data), name="op")
    q = [RNG.integers(-128, 128, (3,) + s).astype(np.int8) for s in in_shapes]
    return art, q


def check_against(art, q, reference):
    """The C, the simulator and the reference (per sample, ints) agree exactly."""
    c_out = art.predict_int8(q)[0]
    sim = art.simulate_int8(q)[0]
    np.testing.assert_array_equal(c_out, sim)
    step = [s for s in art.program.steps if s.node == "op"][0]
    for i in range(len(q[0])):
        want = np.asarray(reference(step, [x[i].astype(np.int64) for x in q]), np.int64).reshape(c_out[i].shape)
        np.testing.assert_array_equal(c_out[i].astype(np.int64), want)


def epilogue(acc, step, oc):
    p, a = step.params, step.arrays
    v = sat(ref_requant(acc, a["mult"][oc], a["shift"][oc]) + p["out_zp"], p["act_min"], p["act_max"])
    return int(a["lut"][v + 128]) if "lut" in a else v


def conv_reference(step, xs, depthwise=False):
    p, a = step.params, step.arrays
    x = xs[0]
    (ih, iw, ic), (oh, ow, oc) = p["in_shape"], p["out_shape"]
    kh, kw = p["kernel"]
    out = np.zeros((oh, ow, oc), np.int64)
    for oy in range(oh):
        for ox in range(ow):
            for o in range(oc):
                acc = int(a["bias"][o])
                for ky in range(kh):
                    for kx in range(kw):
                        iy = oy * p["stride"][0] - p["pad"][0] + ky * p["dilation"][0]
                        ix = ox * p["stride"][1] - p["pad"][1] + kx * p["dilation"][1]
                        if not (0 <= iy < ih and 0 <= ix < iw):
                            continue
                        if depthwise:
                            acc += (int(x[iy, ix, o // p["depth_mult"]]) - p["in_zp"]) * int(a["weights"][ky, kx, o])
                        else:
                            for c in range(ic):
                                acc += (int(x[iy, ix, c]) - p["in_zp"]) * int(a["weights"][o, ky, kx, c])
                out[oy, ox, o] = epilogue(acc, step, o)
    return out


@pytest.mark.parametrize("strides,dilation,pads,act", [
    (1, 1, (1, 1, 1, 1), "relu"), (2, 1, (0, 1, 0, 1), "linear"), ((2, 1), 2, (2, 2, 1, 3), "relu6"),
    (1, 1, (0, 0, 0, 0), "tanh")])
def test_conv2d_kernel(strides, dilation, pads, act):
    w = RNG.normal(0, 0.4, (3, 3, 3, 5))
    art, q = one_op(lambda: Conv2D(w, RNG.normal(0, 0.2, 5), strides, dilation, pads, Act(act)), [(7, 6, 3)])
    check_against(art, q, conv_reference)


@pytest.mark.parametrize("mult,strides,pads", [(1, 1, (1, 1, 1, 1)), (2, 2, (1, 2, 0, 1)), (3, 1, (0, 0, 0, 0))])
def test_depthwise_kernel(mult, strides, pads):
    w = RNG.normal(0, 0.4, (3, 3, 4, mult))
    art, q = one_op(lambda: DepthwiseConv2D(w, RNG.normal(0, 0.2, 4 * mult), strides, 1, pads, Act("relu6")),
                    [(6, 7, 4)])
    check_against(art, q, lambda s, xs: conv_reference(s, xs, depthwise=True))


def test_dense_kernel_on_vectors_and_rows():
    def reference(step, xs):
        p, a = step.params, step.arrays
        x = xs[0].reshape(p["rows"], p["in_features"])
        return [[epilogue(int(a["bias"][o]) + sum((int(v) - p["in_zp"]) * int(a["weights"][o, i])
                                                   for i, v in enumerate(row)), step, o)
                 for o in range(p["out_features"])] for row in x]
    for shape in [(12,), (3, 12)]:
        art, q = one_op(lambda: Dense(RNG.normal(0, 0.3, (12, 7)), RNG.normal(0, 0.1, 7), Act("sigmoid")), [shape])
        check_against(art, q, reference)


@pytest.mark.parametrize("mode,pool,strides,pads", [("max", 3, 2, (1, 1, 1, 1)), ("avg", 3, 2, (1, 1, 1, 1)),
                                                    ("avg", 2, 1, (0, 1, 0, 1)), ("max", (2, 3), (1, 2), (0, 0, 1, 1))])
def test_pool_kernels(mode, pool, strides, pads):
    def reference(step, xs):
        p = step.params
        x = xs[0]
        (ih, iw, c), (oh, ow, _) = p["in_shape"], p["out_shape"]
        out = np.zeros((oh, ow, c), np.int64)
        for oy in range(oh):
            for ox in range(ow):
                ys = [y for y in range(oy * p["stride"][0] - p["pad"][0], oy * p["stride"][0] - p["pad"][0]
                                       + p["pool"][0]) if 0 <= y < ih]
                xs_ = [v for v in range(ox * p["stride"][1] - p["pad"][1], ox * p["stride"][1] - p["pad"][1]
                                        + p["pool"][1]) if 0 <= v < iw]
                for ch in range(c):
                    vals = [int(x[y, v, ch]) for y in ys for v in xs_]
                    if mode == "max":
                        out[oy, ox, ch] = max(vals)
                    else:               # round half away from zero, as TF Lite's integer average does
                        s, n = sum(vals), len(vals)
                        out[oy, ox, ch] = (s + n // 2) // n if s > 0 else -((-s + n // 2) // n)
        return out
    art, q = one_op(lambda: Pool2D(mode, pool, strides, pads), [(7, 8, 3)])
    check_against(art, q, reference)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_global_pool_kernels(mode):
    def reference(step, xs):
        p = step.params
        x = xs[0].reshape(-1, xs[0].shape[-1])
        if mode == "max":
            return x.max(axis=0)
        return [sat(ref_requant(int(sum(int(v) - p["in_zp"] for v in col)), p["mult"], p["shift"]) + p["out_zp"])
                for col in x.T]
    art, q = one_op(lambda: GlobalPool2D(mode), [(5, 4, 6)])
    check_against(art, q, reference)


@pytest.mark.parametrize("kind,shapes", [("add", [(4, 5, 3), (4, 5, 3)]), ("add", [(4, 5, 3), (1, 1, 3)]),
                                         ("sub", [(4, 5, 3), (1, 5, 1)]), ("avg", [(6,), (6,), (6,)]),
                                         ("mul", [(4, 5, 3), (4, 1, 3)]), ("max", [(2, 3), (2, 3)]),
                                         ("min", [(4, 5, 3), (1, 1, 3), (4, 5, 3)])])
def test_elementwise_kernels_with_broadcasting(kind, shapes):
    def reference(step, xs):
        p, a = step.params, step.arrays
        out_shape = np.broadcast_shapes(*[x.shape for x in xs])
        bx = [np.broadcast_to(x, out_shape).reshape(-1) for x in xs]
        out = []
        for i in range(int(np.prod(out_shape))):
            if kind == "mul":
                prod = (int(bx[0][i]) - int(a["in_zp"][0])) * (int(bx[1][i]) - int(a["in_zp"][1]))
                out.append(sat(ref_requant(prod, p["out_mult"], p["out_shift"]) + p["out_zp"]))
            elif kind in ("max", "min"):
                vals = [ref_requant(int(x[i]) - int(a["in_zp"][k]), a["in_mult"][k], a["in_shift"][k]) + p["out_zp"]
                        for k, x in enumerate(bx)]
                out.append(sat(max(vals) if kind == "max" else min(vals)))
            else:
                total = sum(int(a["sign"][k]) * ref_requant((int(x[i]) - int(a["in_zp"][k])) << 20,
                                                            a["in_mult"][k], a["in_shift"][k]) for k, x in enumerate(bx))
                out.append(sat(ref_requant(total, p["out_mult"], p["out_shift"]) + p["out_zp"]))
        return out
    art, q = one_op(lambda: Elementwise(kind), shapes)
    check_against(art, q, reference)


def test_concat_requantises_each_input():
    def reference(step, xs):
        p, a = step.params, step.arrays
        parts = []
        for k, x in enumerate(xs):
            if a["same"][k]:
                parts.append(x)
            else:
                parts.append(np.vectorize(lambda v: sat(ref_requant(int(v) - int(a["in_zp"][k]), a["in_mult"][k],
                                                                    a["in_shift"][k]) + p["out_zp"]))(x))
        return np.concatenate(parts, axis=-1)
    g = Graph("op")
    a, b = g.add_input((3, 4, 2), "a"), g.add_input((3, 4, 3), "b")
    g.set_outputs([g.add(Concat(-1), [a, b], name="op")])
    data = [RNG.uniform(-1, 1, (32, 3, 4, 2)).astype(np.float32), RNG.uniform(0, 5, (32, 3, 4, 3)).astype(np.float32)]
    art = cplat.convert(g, calibrate(g, data), name="op")
    q = [RNG.integers(-128, 128, (3, 3, 4, 2)).astype(np.int8), RNG.integers(-128, 128, (3, 3, 4, 3)).astype(np.int8)]
    check_against(art, q, reference)


def test_activation_kernels():
    def leaky_reference(step, xs):
        p = step.params
        return [sat((ref_requant(v, p["mult_pos"], p["shift_pos"]) if v >= 0 else
                     ref_requant(v, p["mult_neg"], p["shift_neg"])) + p["out_zp"])
                for v in (int(x) - p["in_zp"] for x in xs[0].reshape(-1))]

    def relu6_reference(step, xs):
        p = step.params
        return [sat(ref_requant(int(x) - p["in_zp"], p["mult"], p["shift"]) + p["out_zp"], p["act_min"], p["act_max"])
                for x in xs[0].reshape(-1)]

    def table_reference(step, xs):       # exactness of the table itself: quantize(f(dequantize(q)))
        return [step.arrays["table"][int(x) + 128] for x in xs[0].reshape(-1)]

    for act, reference in [(Act("leaky_relu", 0.1), leaky_reference), (Act("relu6"), relu6_reference),
                           (Act("hard_swish"), table_reference)]:
        art, q = one_op(lambda: Activation(act), [(4, 4, 3)], data_range=(-8, 8))
        check_against(art, q, reference)
    # the table reproduces the float activation to half an output step
    art, _ = one_op(lambda: Activation("sigmoid"), [(10,)], data_range=(-6, 6))
    t_in, t_out = art.program.tensors["in0"], art.program.tensors["op"]
    codes = np.arange(-128, 128)
    want = 1 / (1 + np.exp(-(codes - t_in.zero_point) * t_in.scale))
    got = (art.program.steps[0].arrays["table"].astype(np.float64) - t_out.zero_point) * t_out.scale
    assert np.abs(got - want).max() <= t_out.scale * 0.5 + 1e-6


def test_prelu_kernel_per_channel_slopes():
    def reference(step, xs):
        p, a = step.params, step.arrays
        flat = xs[0].reshape(-1)
        out = []
        for i, x in enumerate(flat):
            v = int(x) - p["in_zp"]
            r = ref_requant(v, p["mult_pos"], p["shift_pos"]) if v >= 0 else \
                ref_requant(v * int(a["alpha"][i % p["period"]]), p["mult_neg"], p["shift_neg"])
            out.append(sat(r + p["out_zp"]))
        return out
    art, q = one_op(lambda: PReLU(np.array([0.1, -0.2, 0.3]).reshape(1, 1, 3)), [(4, 4, 3)])
    assert art.program.steps[0].params["period"] == 3
    check_against(art, q, reference)


def test_softmax_kernel_is_a_distribution():
    def reference(step, xs):
        x = xs[0].reshape(-1, xs[0].shape[-1])
        out = []
        table = step.arrays["table"]
        for row in x:
            m = int(row.max())
            e = [int(table[m - int(v)]) for v in row]
            s = sum(e)
            out.append([sat((v * step.params["recip"] + s // 2) // s - 128) for v in e])
        return out
    art, q = one_op(lambda: Activation("softmax"), [(3, 10)], data_range=(-4, 4))
    check_against(art, q, reference)
    x = RNG.uniform(-4, 4, (5, 3, 10)).astype(np.float32)
    probs = art.predict(x)[0]
    e = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(-1, keepdims=True), atol=0.02)


def test_data_movement_and_channel_scale_kernels():
    cases = [
        (lambda: Pad2D((1, 2, 0, 3), 0.5), lambda s, xs: np.pad(xs[0], ((1, 2), (0, 3), (0, 0)),
                                                                 constant_values=s.params["value"])),
        (lambda: Crop2D((1, 0, 2, 1)), lambda s, xs: xs[0][1:, 2:-1]),
        (lambda: Upsample2D((2, 3)), lambda s, xs: np.repeat(np.repeat(xs[0], 2, 0), 3, 1)),
    ]
    for factory, reference in cases:
        art, q = one_op(factory, [(4, 5, 2)])
        check_against(art, q, reference)

    def bn_reference(step, xs):
        p, a = step.params, step.arrays
        return [sat(ref_requant((int(v) - p["in_zp"]) * int(a["weights"][i % 2]) + int(a["bias"][i % 2]),
                                a["mult"][i % 2], a["shift"][i % 2]) + p["out_zp"]) for i, v in enumerate(xs[0].reshape(-1))]
    art, q = one_op(lambda: BatchNorm(np.array([1.5, -0.5]), np.array([0.2, 0.1])), [(4, 5, 2)])
    check_against(art, q, bn_reference)


# ---- the zoo: every model converts, C == simulator bit for bit, close to float, arena at the bound -----------------
def zoo_models():
    from zoo import KERAS_ZOO
    from zoo_tl import TL_ZOO
    return {**{k: v for k, v in KERAS_ZOO.items()}, **{k: v for k, v in TL_ZOO.items()}}


def zoo_names():
    try:
        return sorted(zoo_models())
    except ImportError:
        return []


def random_inputs(graph, n, seed):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 1, (n,) + s).astype(np.float32) for s in graph.input_shapes]


def cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("name", zoo_names())
def test_zoo_model_compiles_and_matches(name):
    net = zoo_models()[name]()
    graph = optimize(emc.load_model(net))
    cal_data, test = random_inputs(graph, 64, 0), random_inputs(graph, 12, 1)
    if len(graph.inputs) == 1:
        art = emc.convert(net, platform="c", dataset=cal_data[0], dataset_func="img_0_1", name=name)
    else:
        art = cplat.convert(graph, calibrate(graph, cal_data), name=name)
    q = art.quantize_inputs(test)
    for c_out, sim in zip(art.predict_int8(q), art.simulate_int8(q)):
        np.testing.assert_array_equal(c_out, sim)
    floats = graph.run(test)
    for c_out, sim, ref in zip(art.predict(test), art.simulate(test), floats):
        np.testing.assert_array_equal(c_out, sim)                          # the C float wrappers round alike
        assert cosine(c_out, ref) >= 0.99, f"{name}: cosine {cosine(c_out, ref):.4f} with float"
    assert art.plan.arena_bytes <= 1.05 * art.plan.lower_bound
    assert art.report.totals["arena (bytes)"] == art.plan.arena_bytes


def test_digits_classifier_keeps_its_accuracy():
    keras = pytest.importorskip("keras")
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1400], order[1400:]
    keras.utils.set_random_seed(0)
    k = keras.layers
    model = keras.Sequential([keras.Input((8, 8, 1)), k.Conv2D(12, 3, padding="same", activation="relu"),
                              k.MaxPooling2D(2), k.Flatten(), k.Dense(32, activation="relu"), k.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[train], y[train], epochs=8, batch_size=64, verbose=0)
    art = emc.convert(model, platform="c", dataset=x[train], dataset_func="img_0_1", max_samples=300, name="digits")
    float_acc = float(np.mean(art.graph.run(x[test])[0].argmax(1) == y[test]))
    c_acc = float(np.mean(art.predict(x[test])[0].argmax(1) == y[test]))
    print(f"digits: float top-1 {float_acc:.4f}, int8 C top-1 {c_acc:.4f}")
    assert float_acc > 0.9
    assert abs(c_acc - float_acc) <= 0.01


def test_maixemc_cifar_net_beats_the_issue_targets():
    from emc.datasets import load_dataset
    h5 = reference_path("float-models", "maixemc_cifar10.h5")
    folder = reference_path("images", "cifar10")
    art = emc.convert(str(h5), platform="c", dataset=str(folder), dataset_func="img_0_1", name="cifar")
    data = load_dataset(folder, (32, 32, 3), dataset_func="img_0_1")
    reference = art.graph.run(data)[0]
    ours = art.predict(data)[0]
    error = float(np.abs(ours - reference).mean())
    print(f"cifar: arena {art.plan.arena_bytes} (bound {art.plan.lower_bound}), mean abs logit error {error:.4f}")
    assert art.plan.arena_bytes <= 43008
    assert error <= 0.1
    assert np.all(ours.argmax(1) == reference.argmax(1))
    # input codes are the camera pixels minus 128: img_0_1 maps a pixel p to p / 255
    t = art.input_tensors[0]
    assert (t.scale, t.zero_point) == pytest.approx((1 / 255, -128))


# ---- generated C quality and files -----------------------------------------------------------------------------------
def mixed_graph():
    """One graph that uses most kernels (for the compiler warning check)."""
    rng = np.random.default_rng(5)
    g = Graph("mixed")
    x = g.add_input((8, 8, 3), "image")
    a = g.add(Conv2D(rng.normal(0, .3, (3, 3, 3, 4)), None, 1, 1, (1, 1, 1, 1), Act("relu")), [x])
    b = g.add(DepthwiseConv2D(rng.normal(0, .3, (3, 3, 4, 1)), rng.normal(0, .1, 4), 1, 1, (1, 1, 1, 1),
                              Act("elu")), [a])
    c = g.add(Elementwise("add"), [a, b])
    d = g.add(Concat(-1), [c, b])
    e = g.add(Pool2D("avg", 2), [d])
    f = g.add(Upsample2D(2), [e])
    h = g.add(Elementwise("mul"), [f, d])
    i = g.add(Pad2D((1, 1, 1, 1)), [h])
    j = g.add(Crop2D((1, 1, 1, 1)), [i])
    k = g.add(Activation(Act("leaky_relu", 0.2)), [j])
    m = g.add(PReLU(np.full((1, 1, 8), 0.25)), [k])
    n = g.add(Elementwise("max"), [m, j])
    o = g.add(GlobalPool2D("max"), [n])
    p = g.add(Dense(rng.normal(0, .3, (8, 4)), None, Act("softmax")), [o])
    g.set_outputs([p, e])
    g = optimize(g)
    return g, calibrate(g, rng.uniform(0, 1, (32, 8, 8, 3)).astype(np.float32))


def test_generated_c_compiles_warning_free(tmp_path):
    g, cal = mixed_graph()
    art = cplat.convert(g, cal, name="mixed")
    art.save(tmp_path)
    sources = sorted(str(p) for p in tmp_path.glob("*.c"))
    proc = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-c", *sources],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in tmp_path.iterdir() if p.suffix in (".c", ".h")}
    assert {"mixed.h", "mixed.c", "emc_nn.h", "emc_conv.c"} <= names
    header = (tmp_path / "mixed.h").read_text()
    assert "int mixed_run(const int8_t *in, int8_t *out);" in header
    assert "MIXED_OUTPUT1_OFFSET 4" in header
    text = (tmp_path / "mixed.c").read_text()
    assert "malloc" not in text and "float" not in text.split("int mixed_run")[1].split("void mixed_quantize")[0]
    q = art.quantize_inputs(np.random.default_rng(6).uniform(0, 1, (4, 8, 8, 3)))
    for c_out, sim in zip(art.predict_int8(q), art.simulate_int8(q)):
        np.testing.assert_array_equal(c_out, sim)


def test_conversion_is_deterministic():
    g, cal = mixed_graph()
    assert cplat.convert(g, cal, name="m").files == cplat.convert(g, cal, name="m").files


def test_output_sharing_storage_is_copied():
    g = Graph("views")
    x = g.add_input((2, 3, 4), "x")
    f = g.add(emc.layers.Flatten(), [x])
    r = g.add(Activation("relu"), [x])
    g.set_outputs([f, r, g.add(emc.layers.Reshape((6, 4)), [r])])
    art = cplat.convert(g, calibrate(g, RNG.uniform(-1, 1, (16, 2, 3, 4)).astype(np.float32)), name="views")
    q = [RNG.integers(-128, 128, (2, 2, 3, 4)).astype(np.int8)]
    outs = art.predict_int8(q)
    np.testing.assert_array_equal(outs[0], q[0].reshape(2, -1))
    np.testing.assert_array_equal(outs[1].reshape(2, -1), outs[2].reshape(2, -1))
    for c_out, sim in zip(outs, art.simulate_int8(q)):
        np.testing.assert_array_equal(c_out, sim)


# ---- bad input ---------------------------------------------------------------------------------------------------------------
class FourierOp(Op):
    """An op no platform knows (stands for any op without an int8 kernel)."""
    kind = "fourier"

    def forward(self, xs):
        return np.abs(np.fft.fft(xs[0])).astype(np.float32)


def test_ops_without_int8_kernel_are_all_named_before_writing(tmp_path):
    g = Graph("bad")
    x = g.add_input((4, 4, 2), "x")
    a = g.add(FourierOp(), [x], name="fft_layer")
    b = g.add(Elementwise("mul"), [x, x, x], name="triple_mul")
    g.set_outputs([a, b])
    cal = calibrate(g, RNG.uniform(0, 1, (8, 4, 4, 2)).astype(np.float32))
    target = tmp_path / "out"
    with pytest.raises(PlatformLimitError) as err:
        cplat.convert(g, cal, name="bad").save(target)
    text = str(err.value)
    assert "fft_layer" in text and "fourier" in text and "triple_mul" in text and "two" in text
    assert len(err.value.problems) == 2
    assert not target.exists()


def test_ram_and_flash_limits_give_the_sizes():
    g, cal = mixed_graph()
    art = cplat.convert(g, cal, name="lim")
    with pytest.raises(PlatformLimitError, match=f"{art.plan.arena_bytes:,} bytes.*ram_limit=100 bytes"):
        cplat.convert(g, cal, name="lim", ram_limit=100)
    with pytest.raises(PlatformLimitError, match=f"{art.program.weight_bytes:,} bytes.*flash_limit=64"):
        cplat.convert(g, cal, name="lim", flash_limit=64)
    ram = art.plan.arena_bytes + art.plan.input_bytes + art.plan.output_bytes       # what the model itself holds
    cplat.convert(g, cal, name="lim", ram_limit=ram, flash_limit=art.program.weight_bytes)


def test_bad_arguments():
    g, cal = mixed_graph()
    with pytest.raises(PlatformLimitError, match="int8"):
        cplat.convert(g, cal, quant_bit=16)
    art = cplat.convert(g, cal, name="args")
    with pytest.raises(EmcError, match="per-sample shape"):
        art.simulate(np.zeros((2, 5, 5, 3)))
    with pytest.raises(EmcError, match="1 input"):
        art.simulate([np.zeros((1, 8, 8, 3))] * 2)
    assert "conv2d" in cplat.supported_kinds() and "fourier" not in cplat.supported_kinds()


CMSIS_STUB = """
/* Declarations shaped like CMSIS-NN's documented s8 API, only to compile-check emc's EMC_USE_CMSIS_NN path. */
#include <stdint.h>
typedef enum { ARM_CMSIS_NN_SUCCESS = 0, ARM_CMSIS_NN_ARG_ERROR = -1 } arm_cmsis_nn_status;
typedef struct { int32_t w; int32_t h; } cmsis_nn_tile;
typedef struct { int32_t min; int32_t max; } cmsis_nn_activation;
typedef struct { int32_t n; int32_t h; int32_t w; int32_t c; } cmsis_nn_dims;
typedef struct { void *buf; int32_t size; } cmsis_nn_context;
typedef struct { int32_t input_offset; int32_t output_offset; cmsis_nn_tile stride; cmsis_nn_tile padding;
                 cmsis_nn_tile dilation; cmsis_nn_activation activation; } cmsis_nn_conv_params;
typedef struct { int32_t input_offset; int32_t output_offset; int32_t ch_mult; cmsis_nn_tile stride;
                 cmsis_nn_tile padding; cmsis_nn_tile dilation; cmsis_nn_activation activation; } cmsis_nn_dw_conv_params;
typedef struct { cmsis_nn_tile stride; cmsis_nn_tile padding; cmsis_nn_activation activation; } cmsis_nn_pool_params;
typedef struct { int32_t *multiplier; int32_t *shift; } cmsis_nn_per_channel_quant_params;
arm_cmsis_nn_status arm_convolve_wrapper_s8(const cmsis_nn_context *, const cmsis_nn_conv_params *,
    const cmsis_nn_per_channel_quant_params *, const cmsis_nn_dims *, const int8_t *, const cmsis_nn_dims *,
    const int8_t *, const cmsis_nn_dims *, const int32_t *, const cmsis_nn_dims *, int8_t *);
arm_cmsis_nn_status arm_convolve_1x1_s8_fast(const cmsis_nn_context *, const cmsis_nn_conv_params *,
    const cmsis_nn_per_channel_quant_params *, const cmsis_nn_dims *, const int8_t *, const cmsis_nn_dims *,
    const int8_t *, const cmsis_nn_dims *, const int32_t *, const cmsis_nn_dims *, int8_t *);
arm_cmsis_nn_status arm_depthwise_conv_wrapper_s8(const cmsis_nn_context *, const cmsis_nn_dw_conv_params *,
    const cmsis_nn_per_channel_quant_params *, const cmsis_nn_dims *, const int8_t *, const cmsis_nn_dims *,
    const int8_t *, const cmsis_nn_dims *, const int32_t *, const cmsis_nn_dims *, int8_t *);
arm_cmsis_nn_status arm_max_pool_s8(const cmsis_nn_context *, const cmsis_nn_pool_params *, const cmsis_nn_dims *,
    const int8_t *, const cmsis_nn_dims *, const cmsis_nn_dims *, int8_t *);
arm_cmsis_nn_status arm_avgpool_s8(const cmsis_nn_context *, const cmsis_nn_pool_params *, const cmsis_nn_dims *,
    const int8_t *, const cmsis_nn_dims *, const cmsis_nn_dims *, int8_t *);
typedef struct { int32_t input_offset; int32_t filter_offset; int32_t output_offset;
                 cmsis_nn_activation activation; } cmsis_nn_fc_params;
arm_cmsis_nn_status arm_fully_connected_per_channel_s8(const cmsis_nn_context *, const cmsis_nn_fc_params *,
    const cmsis_nn_per_channel_quant_params *, const cmsis_nn_dims *, const int8_t *, const cmsis_nn_dims *,
    const int8_t *, const cmsis_nn_dims *, const int32_t *, const cmsis_nn_dims *, int8_t *);
int32_t arm_fully_connected_s8_get_buffer_size(const cmsis_nn_dims *);
int32_t arm_convolve_wrapper_s8_get_buffer_size(const cmsis_nn_conv_params *, const cmsis_nn_dims *,
    const cmsis_nn_dims *, const cmsis_nn_dims *);
int32_t arm_depthwise_conv_wrapper_s8_get_buffer_size(const cmsis_nn_dw_conv_params *, const cmsis_nn_dims *,
    const cmsis_nn_dims *, const cmsis_nn_dims *);
int32_t arm_avgpool_s8_get_buffer_size(const int, const int);
arm_cmsis_nn_status arm_elementwise_add_s8(const int8_t *, const int8_t *, const int32_t, const int32_t,
    const int32_t, const int32_t, const int32_t, const int32_t, const int32_t, int8_t *, const int32_t,
    const int32_t, const int32_t, const int32_t, const int32_t, const int32_t);
"""


def test_cmsis_nn_code_path_compiles_against_the_documented_api(tmp_path):
    """Compile-only: CMSIS-NN itself is not available here, so its results are not checked."""
    g, cal = mixed_graph()
    cplat.convert(g, cal, name="cm").save(tmp_path)
    (tmp_path / "arm_nnfunctions.h").write_text(CMSIS_STUB)
    sources = sorted(str(p) for p in tmp_path.glob("*.c"))
    proc = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-DEMC_USE_CMSIS_NN", "-I", str(tmp_path),
                           "-c", *sources], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
