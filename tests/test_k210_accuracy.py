"""K210 accuracy against float and against emc's int8 C: the per-layer SNR of the report, the trained
mini-Xception on real faces (v3 and v4), and the quantisation of one KPU layer against its exact output codes.
"""
import numpy as np
import pytest

import emc
from conftest import reference_path
from emc.datasets import load_dataset
from emc.graph import Graph
from emc.layers import Act, Conv2D
from emc.platforms.k210.layer_snr import LOW_SNR_DB, SNR_SAMPLES
from support import input_dependence, smooth_images

RNG = np.random.default_rng(3)


def cosines(a, b):
    a, b = (np.asarray(v, np.float64).reshape(len(v), -1) for v in (a, b))
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def two_convs():
    g = Graph("two_convs")
    x = g.add_input((16, 16, 3))
    y = g.add(Conv2D(RNG.normal(0, 0.4, (3, 3, 3, 8)), RNG.normal(0, 0.1, 8), pads=(1, 1, 1, 1),
                     activation=Act("relu")), x, name="first")
    g.set_outputs([g.add(Conv2D(RNG.normal(0, 0.4, (1, 1, 8, 4)), None), y, name="last")])
    return g


def test_report_gives_each_kpu_layer_its_snr_against_float():
    data = smooth_images((16, 16, 3), 12, np.random.default_rng(0))
    art = emc.convert(two_convs(), dataset=data)
    rows = {r["layer"]: r for r in art.report.rows if r["unit"] == "KPU"}
    assert set(rows) == {"first", "last"} and "SNR dB" in art.report.columns
    # the last KPU layer's codes are the dequantized output: its SNR is the simulation's, worked out here
    x = data[:SNR_SAMPLES]
    ref, got = art.graph.run(x)[0].astype(np.float64), art.simulate(x)[0].astype(np.float64)
    expected = 10 * np.log10(np.sum(ref ** 2) / np.sum((got - ref) ** 2))
    assert abs(rows["last"]["SNR dB"] - expected) <= 0.06
    assert rows["first"]["SNR dB"] > 30 and not any("under" in n for n in art.report.notes)


def test_a_note_names_the_layers_under_30_db():
    data = smooth_images((16, 16, 3), 12, np.random.default_rng(0))
    art = emc.convert(two_convs(), dataset=data, quant_func="percentile:60")     # clips 40 % of every tensor
    low = [r["layer"] for r in art.report.rows if r.get("SNR dB") is not None and r["SNR dB"] < LOW_SNR_DB]
    note = [n for n in art.report.notes if f"under {LOW_SNR_DB:.0f} dB" in n]
    assert low and len(note) == 1 and all(name in note[0] for name in low)


@pytest.fixture(scope="module")
def faces():
    h5 = reference_path("float-models", "fer_mini_xception_64.h5")
    folder = reference_path("images", "faces")
    graph = emc.load_model(str(h5))
    data = load_dataset(folder, (64, 64, 1), dataset_func="img_neg1_1")
    return graph, data


@pytest.fixture(scope="module")
def c_on_faces(faces):
    graph, data = faces
    art = emc.convert(graph, platform="c", dataset=data, dataset_func="img_neg1_1")
    ref, sim = graph.run(data)[0], art.simulate(data)[0]
    return ref, cosines(ref, sim), sim.argmax(1)


@pytest.mark.parametrize("version", [3, 4])
def test_mini_xception_on_faces_is_as_close_to_float_as_the_c_platform(faces, c_on_faces, version):
    graph, data = faces
    ref, c_cos, c_top = c_on_faces
    assert input_dependence(ref) > 0.05 and len(set(ref.argmax(1))) > 2      # else agreement could not fail
    art = emc.convert(graph, dataset=data, dataset_func="img_neg1_1", version=version)
    sim = art.simulate(data)[0]
    k_cos = cosines(ref, sim)
    print(f"v{version}: K210 cosine {k_cos.mean():.4f} (min {k_cos.min():.4f}), C {c_cos.mean():.4f} "
          f"(min {c_cos.min():.4f}); top-1 agreement K210 {np.sum(sim.argmax(1) == ref.argmax(1))}, "
          f"C {np.sum(c_top == ref.argmax(1))} of {len(ref)}")
    assert k_cos.mean() >= c_cos.mean() - 0.005
    assert np.sum(sim.argmax(1) == ref.argmax(1)) >= np.sum(c_top == ref.argmax(1))
    assert all(r["SNR dB"] > 20 for r in art.report.rows if r["unit"] == "KPU")


def test_a_dead_layer_still_gets_a_batch_norm_scale():
    """A pre-activation range of ~1e-6 (untrained, dead channels) leaves only the largest scale the fields allow."""
    from emc.platforms.k210.lowering.quantize import Quant, kpu_conv_params
    p = kpu_conv_params(RNG.normal(0, 1e-7, (1, 1, 4, 4)), np.full(4, 1e-6), False, Quant(1 / 255, 0),
                        (0.0, 2e-6), Quant.from_range(0.0, 2e-6), Act("relu6"))
    assert np.all(np.abs(p.bn_add) < 2 ** 31) and p.v_scale > 0


def test_a_kpu_layer_with_a_fused_softmax_is_measured_on_its_logits():
    g = Graph("softmax_head")
    x = g.add_input((8, 8, 4))
    y = g.add(Conv2D(RNG.normal(0, 0.4, (3, 3, 4, 6)), None, pads=(1, 1, 1, 1), activation=Act("relu")), x)
    g.set_outputs([g.add(Conv2D(RNG.normal(0, 0.4, (1, 1, 6, 5)), None, activation=Act("softmax")), y,
                         name="head")])
    art = emc.convert(g, dataset=smooth_images((8, 8, 4), 6, np.random.default_rng(1)), version=4)
    head = [r for r in art.report.rows if r["unit"] == "KPU" and r["layer"] == "head"]
    assert head and head[0]["SNR dB"] > 25


def strided_graph():
    """A TF-same stride-2 3x3 conv, a stride-2 depthwise conv, two 1x1 convs, their sum and a global average pool."""
    from emc.layers import DepthwiseConv2D, Elementwise, GlobalPool2D
    g = Graph("strided")
    x = g.add_input((16, 16, 3))
    y = g.add(Conv2D(RNG.normal(0, 0.4, (3, 3, 3, 8)), RNG.normal(0, 0.1, 8), strides=2, pads=(0, 1, 0, 1),
                     activation=Act("relu")), x, name="conv_s2")
    y = g.add(DepthwiseConv2D(RNG.normal(0, 0.4, (3, 3, 8, 1)), RNG.normal(0, 0.1, 8), strides=2, pads=(0, 1, 0, 1),
                              activation=Act("relu")), y, name="dw_s2")
    a = g.add(Conv2D(RNG.normal(0, 0.4, (1, 1, 8, 8)), None), y, name="pw_a")
    b = g.add(Conv2D(RNG.normal(0, 0.4, (1, 1, 8, 8)), None), y, name="pw_b")
    s = g.add(Elementwise("add"), [a, b], name="sum")
    g.set_outputs([g.add(GlobalPool2D("avg"), s, name="gap")])
    return g


@pytest.mark.parametrize("version", [3, 4])
def test_report_names_the_path_each_layer_took(version, tmp_path, capsys):
    from emc.cli import main
    x = smooth_images((16, 16, 3), 4, RNG)
    art = emc.convert(strided_graph(), platform="k210", dataset=x, version=version)
    paths = {}
    for row in art.report.rows:
        paths.setdefault(row["layer"].split(":")[0], set()).add(row["path"])
    assert paths["conv_s2"] == {"KPU stride-2 via pool 6"}
    assert paths["dw_s2"] == {"KPU + CPU selection"}
    assert paths["pw_a"] == paths["pw_b"] == {"KPU"}
    assert paths["sum"] == {"CPU quantized"}
    assert paths["gap"] == {"CPU float"}
    path = art.save(tmp_path / "strided.kmodel")[0]
    capsys.readouterr()
    assert main(["inspect", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "KPU stride-2 via pool 6" in printed and "KPU + CPU selection" in printed


def uneven_depthwise():
    """conv -> ReLU6 depthwise whose channels differ 20-fold in range -> 1x1 conv."""
    from emc.layers import DepthwiseConv2D
    rng = np.random.default_rng(11)
    g = Graph("uneven")
    x = g.add_input((16, 16, 3))
    y = g.add(Conv2D(rng.normal(0, 0.5, (3, 3, 3, 8)), None, pads=(1, 1, 1, 1), activation=Act("relu")), x,
              name="conv")
    gains = np.geomspace(0.05, 1.0, 8).reshape(1, 1, 8, 1)
    y = g.add(DepthwiseConv2D(np.abs(rng.normal(0, 0.5, (3, 3, 8, 1))) * gains, None, pads=(1, 1, 1, 1),
                              activation=Act("relu6")), y, name="dw")
    g.set_outputs([g.add(Conv2D(rng.normal(0, 0.4, (1, 1, 8, 4)), None), y, name="pw")])
    return g


def test_depthwise_equalisation_keeps_the_float_result_and_fills_each_channel(monkeypatch):
    from emc.calibrate import calibrate
    from emc.platforms.k210 import equalize
    from emc.platforms.k210.equalize import equalize_depthwise
    graph, x = uneven_depthwise(), smooth_images((16, 16, 3), 8, np.random.default_rng(12))
    cal = calibrate(graph, x)
    rescaled, cal2, scales = equalize_depthwise(graph, cal)
    assert scales["dw"].max() > 4 and not np.array_equal(graph["dw"].op.kernel, rescaled["dw"].op.kernel)
    np.testing.assert_allclose(rescaled.run(x)[0], graph.run(x)[0], rtol=1e-4, atol=1e-5)
    tops, top = calibrate(rescaled, x).stats["dw"].channel_max, cal.ranges["dw"][1]
    wanted = np.minimum(top, cal.stats["dw"].channel_max * equalize.MAX_SCALE)     # each channel up to the map's
    np.testing.assert_allclose(tops, wanted, rtol=1e-3)
    assert cal2.ranges["dw"] == cal.ranges["dw"]
    def snr_of(art):
        return {row["layer"]: row["SNR dB"] for row in art.report.rows if row.get("SNR dB") is not None}

    after = snr_of(emc.convert(graph, platform="k210", dataset=x, version=3))   # in the graph's own units
    monkeypatch.setattr(equalize, "MAX_SCALE", 1.0)
    plain = emc.convert(graph, platform="k210", dataset=x, version=3)
    assert not plain.channel_scales
    before = snr_of(plain)
    assert after["dw"] > before["dw"] + 3 and after["pw"] > before["pw"], (before, after)


def test_a_model_fed_the_wrong_pixel_mapping_is_told_so_in_the_report():
    """A model that rescales 0..255 pixels itself, calibrated with img_0_1: real 0 of its conv input lies at
    pixel 32512.5, which no padding code reaches -- the report says so and names the fix, not 'half a step'."""
    keras = pytest.importorskip("keras")
    k = keras.layers
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 3))
    x = k.Conv2D(4, 3, padding="same", activation="relu")(k.Rescaling(1 / 127.5, offset=-1)(inp))
    model = keras.Model(inp, k.GlobalAveragePooling2D()(x))
    data = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 3)).astype(np.float32)
    wrong = "\n".join(emc.convert(model, dataset=data, dataset_func="img_0_1").report.notes)
    assert "lies at pixel 32512.5" in wrong and "img_0_255" in wrong
    right = "\n".join(emc.convert(model, dataset=data * 255, dataset_func="img_0_255").report.notes)
    assert "0.50 pixel steps off" in right and "img_0_255" not in right


def test_a_valid_first_conv_reads_no_padding_so_no_padding_note():
    keras = pytest.importorskip("keras")
    k = keras.layers
    keras.utils.set_random_seed(4)
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, k.GlobalAveragePooling2D()(k.Conv2D(4, 3, padding="valid", activation="relu")(inp)))
    data = np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 3)).astype(np.float32)
    notes = "\n".join(emc.convert(model, dataset=data, dataset_func="img_neg1_1").report.notes)
    assert "pixel steps" not in notes and "zero point" not in notes
