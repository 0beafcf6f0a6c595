"""The K210 kmodel v3 writer: activation tables, KPU conv quantisation, QUANTIZED_ADD parameters, memory planning,
file layout, determinism, limits reported all at once, and the lowering of each graph op through the simulator.

Expected values come from float numpy (emc's float graph executor), from plain re-statements of the chip's
integer formulas written here, and from the file layout rules of the spec (checked with struct.unpack).
"""
import struct

import numpy as np
import pytest

from emc.calibrate import calibrate
from emc.errors import EmcError, PlatformLimitError
from emc.graph import Graph
from emc.layers import (Act, BatchNorm, Concat, Conv2D, Crop2D, Dense, DepthwiseConv2D, Elementwise, Flatten,
                        GlobalPool2D, Pad2D, Pool2D, Activation, Reshape, Upsample2D)
from emc.layers.activations import ACTIVATIONS
from emc.passes import optimize
from emc.platforms import k210
from emc.platforms.k210.lowering.actfit import SEG0_X, build_act_table
from emc.platforms.k210.chip.kpu import ActTable as KpuActTable, LayerArgument, kpu_conv
from emc.platforms.k210.lowering.quantize import Quant, kpu_conv_params
from emc.platforms.k210.lowering.handlers_merge import quantized_add_params

RNG = np.random.default_rng(11)
STOCK_SDK = {1, 2, 5, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 20, 22, 23, 24, 25, 10240, 10241, 10242, 10243}
PIXELS = (1 / 255.0, 0.0)


# ---- plain references of the chip's integer formulas (spec 1.5.3, 2.4) ------------------------------------------
def ref_rs(t, s):
    if s == 0:
        return t
    q, f, half = t >> s, t & ((1 << s) - 1), 1 << (s - 1)
    sgn = -1 if t < 0 else 1
    return q + sgn if f > half or (f == half and q % 2) else q


def ref_act(segments, v):
    """Highest segment with v > x_start, then clamp(RS((v - x) * mul, shift) + add)."""
    chosen = [s for s in segments if v > s[0]][-1]
    x, mul, shift, add = chosen
    return min(255, max(0, ref_rs((v - x) * mul, shift) + add))


def ref_carry_shift(v, s):
    """SDK kpu_carry_shift, including its quirk for negative values."""
    if s <= 0:
        return v
    t = v >> (s - 1)
    if t & 1:
        return (t >> 1) + 1 if v >= 0 else (t >> 1) - 1
    return t >> 1


def exact_codes(name, alpha, x, quant):
    y = np.clip(ACTIVATIONS[name](np.asarray(x, np.float64), alpha), quant.lo, quant.hi)
    return np.clip(np.round(y / quant.scale + quant.zero_point), 0, 255)


def check_table_shape(table):
    segs = table.segments()
    assert len(segs) == 16 and segs[0][0] == SEG0_X
    assert all(a[0] <= b[0] for a, b in zip(segs, segs[1:]))
    assert all(-(1 << 15) <= m < (1 << 15) and 0 <= s <= 20 and 0 <= a <= 255 for _, m, s, a in segs)


# ---- activation tables ---------------------------------------------------------------------------------------------
PIECEWISE = [("relu", None, (-4, 5), (0, 5)), ("relu6", None, (-3, 8), (0, 6)),
             ("leaky_relu", 0.1, (-6, 4), (-0.6, 4)), ("linear", None, (-2, 3), (-2, 3)),
             ("hard_sigmoid", None, (-5, 5), (0, 1))]
SMOOTH = [("sigmoid", (-6, 6), (0, 1)), ("tanh", (-3, 3), (-1, 1)), ("swish", (-5, 5), (-0.3, 5)),
          ("hard_swish", (-4, 4), (-0.4, 4))]


@pytest.mark.parametrize("name,alpha,pre,out", PIECEWISE)
def test_piecewise_linear_tables_are_exact_up_to_rounding(name, alpha, pre, out):
    quant, v_scale = Quant.from_range(*out), 2048.0
    table = build_act_table(Act(name, alpha), v_scale, pre, (quant.scale, quant.zero_point))
    check_table_shape(table)
    v = np.unique(np.linspace(pre[0] * v_scale, pre[1] * v_scale, 3001).astype(np.int64))
    got = np.array([ref_act(table.segments(), int(x)) for x in v])
    assert np.max(np.abs(got - exact_codes(name, alpha, v / v_scale, quant))) <= 1
    assert table.method == "exact" and table.max_error <= 1


@pytest.mark.parametrize("name,pre,out", SMOOTH)
def test_fitted_tables_stay_within_two_lsb_and_report_their_error(name, pre, out):
    quant, v_scale = Quant.from_range(*out), 4096.0
    table = build_act_table(Act(name), v_scale, pre, (quant.scale, quant.zero_point))
    check_table_shape(table)
    v = np.unique(np.linspace(pre[0] * v_scale, pre[1] * v_scale, 4001).astype(np.int64))
    got = np.array([ref_act(table.segments(), int(x)) for x in v])
    error = int(np.max(np.abs(got - exact_codes(name, None, v / v_scale, quant))))
    assert error <= 2, f"{name}: {error} LSB"
    assert table.method == "fit" and table.max_error >= error - 0 and table.max_error <= 2


# ---- KPU convolution parameters, run through the KPU model ------------------------------------------------------------
def float_conv(kind, kernel, bias, act, x):
    op = (Conv2D if kind == "conv" else DepthwiseConv2D)(kernel, bias, pads=(kernel.shape[0] // 2,) * 4,
                                                        activation=Act(act))
    return op.forward_linear([x]), op.forward([x])


@pytest.mark.parametrize("kind,k,act", [("conv", 3, "relu"), ("conv", 1, "linear"), ("conv", 3, "sigmoid"),
                                        ("dw", 3, "relu6"), ("conv", 3, "leaky_relu"), ("dw", 3, "tanh")])
def test_quantized_conv_reproduces_the_float_conv(kind, k, act):
    c_in, c_out, h, w = 6, (6 if kind == "dw" else 9), 8, 10
    kernel = RNG.normal(0, 0.4, (k, k, c_in, 1 if kind == "dw" else c_out))
    bias = RNG.normal(0, 0.2, c_out)
    pixels = RNG.integers(0, 256, (1, h, w, c_in))
    in_q = Quant(2.0 / 255, 64)                                  # real = (pixel - 64) * 2 / 255
    x = ((pixels - in_q.zero_point) * in_q.scale).astype(np.float32)
    pre, y = float_conv(kind, kernel, bias, act, x)
    out_q = Quant.from_range(y.min(), y.max())
    p = kpu_conv_params(kernel, bias, kind == "dw", in_q, (pre.min(), pre.max()), out_q, Act(act))
    arg = LayerArgument(depth_wise_layer=int(kind == "dw"), i_ch_num=c_in - 1, o_ch_num=c_out - 1, i_row_wid=w - 1,
                        i_col_high=h - 1, o_row_wid=w - 1, o_col_high=h - 1, kernel_type=1 if k == 3 else 0,
                        pad_value=p.pad_value, arg_x=p.arg_x, shr_x=p.shr_x, arg_w=p.arg_w, shr_w=p.shr_w,
                        arg_add=p.arg_add)
    weights = p.weights.reshape(c_out, k, k) if kind == "dw" else p.weights
    table = KpuActTable(p.act.x_start, p.act.mul, p.act.shift, p.act.add)
    codes = kpu_conv(arg, pixels[0].transpose(2, 0, 1).astype(np.uint8), weights, (p.bn_mul, p.bn_shift, p.bn_add),
                     table)
    expect = np.clip(np.round(y[0].transpose(2, 0, 1) / out_q.scale) + out_q.zero_point, 0, 255)
    diff = np.abs(codes.astype(np.int64) - expect)
    assert diff.max() <= 4 and diff.mean() < 0.8, (diff.max(), diff.mean())
    assert np.all(np.abs(p.bn_mul) < (1 << 23)) and np.all((0 <= p.bn_shift) & (p.bn_shift <= 15))
    assert p.arg_add == k * k * p.zp_w * in_q.zero_point and p.pad_value == in_q.zero_point


# ---- QUANTIZED_ADD parameters --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ca,cb", [(1.0, 1.0), (1.0, -1.0), (0.5, 0.5)])
def test_quantized_add_parameters_round_correctly_on_every_code_pair(ca, cb):
    qa, qb = Quant(0.031, 100), Quant(0.007, 3)
    lo = min(ca * qa.lo + cb * qb.lo, ca * qa.lo + cb * qb.hi, ca * qa.hi + cb * qb.lo)
    hi = max(ca * qa.hi + cb * qb.hi, ca * qa.hi + cb * qb.lo, ca * qa.lo + cb * qb.hi)
    qo = Quant.from_range(lo, hi)
    p = quantized_add_params(qa, ca, qb, cb, qo)
    a, b = np.meshgrid(np.arange(256), np.arange(256))
    a, b = a.ravel().tolist(), b.ravel().tolist()
    got = []
    for va, vb in zip(a, b):                              # SDK kpu_quantized_add with equal input shifts
        v = ((va + p["a_offset"]) * p["a_mul"] + (vb + p["b_offset"]) * p["b_mul"]) >> p["a_shift"]
        v = ref_carry_shift(v * p["out_mul"], p["out_shift"]) + p["out_offset"]
        got.append(min(255, max(0, v)))
    real = ca * (np.array(a) - qa.zero_point) * qa.scale + cb * (np.array(b) - qb.zero_point) * qb.scale
    expect = np.clip(np.round(real / qo.scale) + qo.zero_point, 0, 255)
    assert np.max(np.abs(np.array(got) - expect)) <= 1
    assert p["a_shift"] == p["b_shift"] == 0


# ---- whole conversions ------------------------------------------------------------------------------------------------------
def small_cnn(h=16, w=16, c=3):
    g = Graph("cnn")
    x = g.add_input((h, w, c))
    y = g.add(Conv2D(RNG.normal(0, 0.3, (3, 3, c, 8)), RNG.normal(0, 0.1, 8), pads=(1, 1, 1, 1),
                     activation=Act("relu")), x)
    y = g.add(Pool2D("max", 2), y)
    y = g.add(Conv2D(RNG.normal(0, 0.3, (1, 1, 8, 12)), None, activation=Act("relu6")), y)
    y = g.add(Flatten(), y)
    g.set_outputs([g.add(Dense(RNG.normal(0, 0.1, (12 * (h // 2) * (w // 2), 5)), RNG.normal(0, 0.1, 5)), y)])
    return optimize(g)


def images(shape, n=8, seed=0):
    return (np.random.default_rng(seed).integers(0, 256, (n,) + shape) / 255.0).astype(np.float32)


def converted(graph, n=8, **options):
    data = images(graph.input_shapes[0], n)
    return k210.convert(graph, calibrate(graph, data), input_transform=options.pop("transform", PIXELS), **options), data


def cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_file_layout_follows_the_v3_rules():
    art, _ = converted(small_cnn())
    data = art.kmodel
    version, flags, arch, n_layers, _, main_usage, n_out = struct.unpack_from("<7I", data, 0)
    assert (version, flags, arch) == (3, 1, 0)
    pos = 28 + 8 * n_out + 8 * n_layers
    codes = []
    for i in range(n_layers):
        code, size = struct.unpack_from("<2I", data, 28 + 8 * n_out + 8 * i)
        codes.append(code)
        if code == 10240:
            blocks = struct.unpack_from("<4I", data, pos + 8)       # layer, weights, bn, act file offsets
            assert [o % a for o, a in zip(blocks, (8, 128, 128, 256))] == [0, 0, 0, 0]
            assert pos + 24 <= blocks[0] < blocks[1] < blocks[2] < blocks[3] < pos + size
        pos += size
        assert pos % 8 == 0                                          # padding to the next multiple of 8 written
    assert pos == len(data)
    assert codes[0] == 10240 and set(codes) <= STOCK_SDK
    for i in range(n_out):
        address, size = struct.unpack_from("<2I", data, 28 + 8 * i)
        assert address % 8 == 0 and address + size <= main_usage


def test_same_inputs_give_identical_bytes():
    graph = small_cnn()
    first, _ = converted(graph)
    second, _ = converted(graph.copy())
    assert first.kmodel == second.kmodel


def test_planner_reuses_main_memory_and_never_overlaps_live_buffers():
    g = Graph("chain")
    x = g.add_input((16,))
    for i in range(6):
        x = g.add(Dense(RNG.normal(0, 0.3, (16 if i == 0 else 64, 64)), None, activation=Act("relu")), x)
    g.set_outputs([x])
    art, _ = converted(optimize(g), transform=None)
    model = art.model
    spans = []
    for layer in model.layers:
        b = layer.body
        spans.append(((b.main_mem_in_address, 4 * b.in_channels), (b.main_mem_out_address, 4 * b.out_channels)))
    for (src, dst) in spans:
        assert src[0] + src[1] <= dst[0] or dst[0] + dst[1] <= src[0]
    assert model.header.main_mem_usage < sum(4 * 64 for _ in spans)          # reused, not one buffer per layer


def test_kpu_ram_overflow_names_the_layer_and_the_sizes():
    g = Graph("big")
    x = g.add_input((256, 320, 3))
    y = g.add(Conv2D(RNG.normal(0, 0.3, (3, 3, 3, 64)), None, pads=(1, 1, 1, 1)), x, name="wide_conv")
    y = g.add(Conv2D(RNG.normal(0, 0.3, (1, 1, 64, 8)), None), y)
    g.set_outputs([g.add(Pool2D("max", 2), y)])
    with pytest.raises(PlatformLimitError) as err:
        k210.convert(optimize(g), _FakeCal(), input_transform=PIXELS)
    text = str(err.value)
    assert "KPU RAM overflow" in text and "wide_conv" in text and "KiB" in text


class _FakeCal:
    """A calibration stand-in (the platform contract allows any object with .ranges)."""

    def __init__(self):
        self.ranges = _All()


class _All(dict):
    def __missing__(self, key):
        return (-1.0, 1.0)

    def __contains__(self, key):
        return True


def problem_graph():
    g = Graph("bad")
    x = g.add_input((32, 32, 4))
    a = g.add(Conv2D(RNG.normal(size=(5, 5, 4, 4)), None, pads=(2, 2, 2, 2)), x, name="five")
    b = g.add(Conv2D(RNG.normal(size=(3, 3, 4, 4)), None, dilation=2, pads=(2, 2, 2, 2)), a, name="dilated")
    c = g.add(DepthwiseConv2D(RNG.normal(size=(3, 3, 4, 2)), None, pads=(1, 1, 1, 1)), b, name="mult2")
    d = g.add(DepthwiseConv2D(RNG.normal(size=(3, 3, 8, 8))[..., :1], None, strides=2, pads=(0, 1, 0, 1)), c,
              name="tf_same_s2")
    e = g.add(Conv2D(RNG.normal(size=(1, 1, 8, 1100)), None), d, name="wide")
    f = g.add(Elementwise("mul"), [e, e], name="product")
    g.set_outputs([f])
    return g


def test_every_problem_is_listed_at_once_and_no_file_is_written(tmp_path):
    import emc
    graph = problem_graph()
    problems = k210.check(graph)
    for name in ("five", "dilated", "mult2", "product"):
        assert any(f"'{name}'" in p for p in problems), name
    assert not any("'tf_same_s2'" in p for p in problems)       # TF-same stride 2: a CPU selection since v3 too
    assert not any("'wide" in p for p in problems)              # 1100 channels: split into KPU layers (issue 10)
    target = tmp_path / "bad.kmodel"
    data = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 4)).astype(np.float32)
    with pytest.raises(PlatformLimitError) as err:
        emc.save_kmodel(graph, target, data)
    assert len(err.value.problems) >= 4 and err.value.problems == problems
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_options_and_versions_are_checked():
    graph = small_cnn()
    cal = calibrate(graph, images(graph.input_shapes[0], 2))
    with pytest.raises(EmcError, match="version must be 3 or 4"):
        k210.convert(graph, cal, version=5)
    with pytest.raises(PlatformLimitError, match="quant_bit"):
        k210.convert(graph, cal, quant_bit=16)
    with pytest.raises(EmcError, match="unknown K210 option"):
        k210.convert(graph, cal, colour="blue")
    with pytest.raises(PlatformLimitError, match="SRAM"):
        k210.convert(graph, cal, input_transform=PIXELS, ram_limit=10_000)


def test_report_has_the_columns_and_totals():
    art, _ = converted(small_cnn())
    report = art.report
    assert report.columns == ["#", "type", "unit", "layer", "path", "output", "MACs", "mem in", "mem out", "weights"]
    assert report.rows[0]["unit"] == "KPU" and report.totals["file size (bytes)"] == len(art.kmodel)
    for key in ("KPU RAM peak (bytes)", "main memory (bytes)", "MACs on the KPU"):
        assert key in report.totals
    assert any("CHW" in n or "flat" in n for n in report.notes)
    assert "K210_CONV" in str(report)


# ---- the lowering of each op, checked end to end through the simulator ---------------------------------------------------
def conv(g, src, c_out, k=3, act="relu", **kw):
    c_in = g[src].shape[-1]
    kw.setdefault("pads", (k // 2,) * 4)
    return g.add(Conv2D(RNG.normal(0, 0.4, (k, k, c_in, c_out)), RNG.normal(0, 0.1, c_out), activation=Act(act),
                        **kw), src)


def dw(g, src, act="relu6", **kw):
    c = g[src].shape[-1]
    kw.setdefault("pads", (1, 1, 1, 1))
    return g.add(DepthwiseConv2D(RNG.normal(0, 0.4, (3, 3, c, 1)), RNG.normal(0, 0.1, c), activation=Act(act),
                                 **kw), src)


def graph_of(build, shape=(12, 12, 3)):
    g = Graph("case")
    out = build(g, g.add_input(shape))
    g.set_outputs(out if isinstance(out, list) else [out])
    return optimize(g)


CASES = {
    "avg_pool_fused": lambda g, x: g.add(Pool2D("avg", 2), conv(g, x, 8)),
    "max_pool_s1_same_fused": lambda g, x: g.add(Pool2D("max", 2, 1, (0, 1, 0, 1)), conv(g, x, 8)),
    "max_pool_4x4_fused": lambda g, x: g.add(Pool2D("max", 4), conv(g, x, 4)),
    "stride2_pad1_even": lambda g, x: conv(g, x, 8, strides=2),
    "stride2_pad1_odd": lambda g, x: conv(g, conv(g, x, 6, k=3, pads=(0, 0, 0, 0)), 8, strides=2),
    "valid_3x3_crop": lambda g, x: conv(g, x, 5, pads=(0, 0, 0, 0)),
    "one_by_one_stride2": lambda g, x: conv(g, conv(g, x, 6), 4, k=1, strides=2),
    "dw_stride2_into_1x1": lambda g, x: conv(g, dw(g, conv(g, x, 6), strides=2), 8, k=1),
    "dw_stride2_alone": lambda g, x: dw(g, conv(g, x, 6), strides=2),
    "cpu_max_pool_3x3_s2": lambda g, x: g.add(Pool2D("max", 3, 2, (0, 1, 0, 1)), conv(g, x, 6)),
    "cpu_avg_pool_3x3_s2": lambda g, x: g.add(Pool2D("avg", 3, 2, (1, 1, 1, 1)), conv(g, x, 6)),
    "add_then_relu": lambda g, x: g.add(Activation("relu"), g.add(Elementwise("add"),
                                                                  [conv(g, x, 6, act="linear"), conv(g, x, 6, k=1)])),
    "sub_and_avg": lambda g, x: g.add(Elementwise("avg"), [g.add(Elementwise("sub"), [conv(g, x, 4), conv(g, x, 4)]),
                                                         conv(g, x, 4)]),
    "concat_channels_upsample": lambda g, x: conv(g, g.add(Concat(-1), [
        g.add(Upsample2D(2), g.add(Pool2D("max", 2), conv(g, x, 4))), conv(g, x, 6)]), 4, k=1),
    "concat_rows_and_cols": lambda g, x: [g.add(Concat(0), [conv(g, x, 3), conv(g, x, 3)]),
                                          g.add(Concat(1), [conv(g, x, 2), conv(g, x, 2)])],
    "crop_and_pad": lambda g, x: conv(g, g.add(Pad2D((1, 2, 0, 1)), g.add(Crop2D((1, 2, 2, 1)), conv(g, x, 4))), 4,
                                      k=1),
    "global_max_and_avg": lambda g, x: [g.add(GlobalPool2D("max"), conv(g, x, 5)),
                                        g.add(GlobalPool2D("avg"), conv(g, x, 5, act="linear"))],
    "sigmoid_tanh_standalone": lambda g, x: g.add(Activation("tanh"), g.add(Activation("sigmoid"),
                                                                           conv(g, x, 4, act="linear"))),
    "fitted_activations": lambda g, x: conv(g, conv(g, conv(g, x, 4, act="hard_swish"), 4, act="swish"), 3,
                                            act="sigmoid"),
    "batch_norm_alone": lambda g, x: g.add(BatchNorm(RNG.uniform(0.5, 2, 4), RNG.normal(0, 0.3, 4)),
                                           g.add(Elementwise("add"), [conv(g, x, 4), conv(g, x, 4)])),
    "gap_dense_softmax": lambda g, x: g.add(Dense(RNG.normal(0, 0.3, (6, 4)), None, activation=Act("softmax")),
                                            g.add(GlobalPool2D("avg"), conv(g, x, 6))),
    "flatten_dense_sigmoid": lambda g, x: g.add(Dense(RNG.normal(0, 0.05, (12 * 12 * 4, 3)), None,
                                                      activation=Act("sigmoid")), g.add(Flatten(), conv(g, x, 4))),
    "flatten_output": lambda g, x: g.add(Flatten(), conv(g, x, 3)),
    "reshape_vector_back": lambda g, x: g.add(Reshape((12, 12, 3)), g.add(Flatten(), conv(g, x, 3))),
    "input_read_by_cpu": lambda g, x: conv(g, g.add(Pool2D("max", 3, 2, (1, 1, 1, 1)), x), 4),
    "dense_on_map_pad4": lambda g, x: g.add(Dense(RNG.normal(0, 0.3, (5, 7)), None, activation=Act("relu")),
                                            g.add(GlobalPool2D("avg", keepdims=True), conv(g, x, 5))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_lowering_matches_the_float_graph(case):
    graph = graph_of(CASES[case])
    art, data = converted(graph)
    codes = [layer.code for layer in art.model.layers]
    assert codes[0] == 10240 and set(codes) <= STOCK_SDK
    for ref, sim in zip(graph.run(data), art.simulate(data)):
        assert ref.shape == sim.shape
        span = float(ref.max() - ref.min()) or 1.0
        assert cosine(ref, sim) > 0.995, case
        assert np.abs(ref - sim).mean() < 0.03 * span, case


@pytest.mark.parametrize("options", [{"dense": "kpu"}, {"dense": "cpu"}, {"softmax": True}, {"dequantize": False}])
def test_output_and_dense_options(options):
    graph = graph_of(lambda g, x: g.add(Dense(RNG.normal(0, 0.2, (16, 10)), RNG.normal(0, 0.1, 10)),
                                        g.add(GlobalPool2D("avg"), conv(g, x, 16))))
    art, data = converted(graph, **dict(options))
    ref, sim = graph.run(data)[0], art.simulate(data)[0]
    if options.get("softmax"):
        e = np.exp(ref - ref.max(axis=1, keepdims=True))
        ref = e / e.sum(axis=1, keepdims=True)
        assert np.allclose(sim.sum(axis=1), 1, atol=1e-5)
    assert cosine(ref, sim) > 0.999
    types = {layer.name for layer in art.model.layers}
    if options.get("dense") == "kpu":
        assert {"K210_ADD_PADDING", "K210_REMOVE_PADDING"} <= types and "FULLY_CONNECTED" not in types
    if options.get("dense") == "cpu":
        assert "FULLY_CONNECTED" in types
    if options.get("dequantize") is False:
        assert art.model.outputs[0][1] == 10                      # ten uint8 codes


@pytest.mark.parametrize("transform", [(1 / 127.5, -1.0), (1.0, 0.0), None])
def test_input_transforms_fold_into_the_first_conv(transform):
    graph = small_cnn()
    data = images(graph.input_shapes[0], 8)
    if transform is not None:
        data = (np.round((data * 255)) * transform[0] + transform[1]).astype(np.float32)
    art = k210.convert(graph, calibrate(graph, data), input_transform=transform)
    pixels = art.to_pixels(data)
    assert pixels.dtype == np.uint8
    assert cosine(graph.run(data)[0], art.simulate(data)[0]) > 0.999
