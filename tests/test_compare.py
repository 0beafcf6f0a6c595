"""emc.compare: the layer-matching rule, metrics recomputed independently here, and the shared Maix-EMC kmodels
(the board one follows float; the broken one is caught at the layer where it goes wrong)."""
import numpy as np
import pytest

import emc
from emc import layers as L
from emc.compare import Traced, match_layers
from conftest import reference_path


def small_graph(seed=0):
    rng = np.random.default_rng(seed)
    g = emc.Graph("small")
    x = g.add_input((8, 8, 3))
    c1 = g.add(L.Conv2D(rng.normal(0, 0.4, (3, 3, 3, 8)).astype(np.float32), rng.normal(0, 0.1, 8).astype(np.float32),
                        pads=(1, 1, 1, 1), activation=L.Act("relu")), [x], name="c1")
    p = g.add(L.Pool2D("max", (2, 2), (2, 2), (0, 0, 0, 0)), [c1], name="p")
    c2 = g.add(L.Conv2D(rng.normal(0, 0.3, (1, 1, 8, 6)).astype(np.float32), None, activation=L.Act("relu")), [p],
               name="c2")
    f = g.add(L.Flatten(), [c2], name="f")
    g.set_outputs([g.add(L.Dense(rng.normal(size=(96, 5)).astype(np.float32), None), [f], name="d")])
    return g


def test_matching_rule():
    g = small_graph()
    u8 = np.uint8
    steps = [Traced(0, "K210_CONV", np.zeros((8, 4, 4), u8)),            # conv with fused pool -> 'p' (8x4x4 CHW)
             Traced(1, "K210_UPLOAD", np.zeros((8, 4, 4), u8)),          # data movement: skipped
             Traced(2, "K210_CONV", np.zeros((6, 4, 4), u8)),            # -> 'c2'
             Traced(3, "DEQUANTIZE", np.zeros(96, np.float32)),          # skipped
             Traced(4, "MYSTERY", np.zeros((7, 7, 7), u8)),              # no such shape: unmatched
             Traced(5, "FULLY_CONNECTED", np.zeros(5, np.float32))]      # -> 'd'
    matches, unmatched = match_layers(g, steps)
    assert [(m[0], m[2], m[3]) for m in matches] == [(0, "p", "chw"), (2, "c2", "chw"), (5, "d", "flat")]
    assert unmatched == [(4, "MYSTERY")]
    # a named device layer starts its search at that graph layer; HWC maps (C artefacts) match H,W,C directly
    named = [Traced(0, "conv2d", np.zeros((8, 8, 8)), node="c1", layout="hwc", fit=False),
             Traced(1, "max_pool", np.zeros((4, 4, 8)), node="p", layout="hwc", fit=False)]
    assert [m[2] for m in match_layers(g, named)[0]] == ["c1", "p"]
    # monotonic: a device tensor matching only an earlier graph tensor is not matched backwards
    assert match_layers(g, [steps[2], steps[0]])[1] == [(0, "K210_CONV")]


def test_k210_metrics_recomputed_independently(tmp_path):
    g = small_graph()
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (16, 8, 8, 3)).astype(np.float32) / 255.0
    artefact = emc.convert(g, platform="k210", dataset=data)
    result = emc.compare(None, artefact, data)
    rows = {r["tensor"]: r for r in result.layers}
    assert "d" in rows and ("c1" in rows or "p" in rows) and "c2" in rows
    # the 'c2' row by hand: graph tensor vs the kmodel trace, least-squares affine fit (np.polyfit), SNR
    index = rows["c2"]["index"]
    floats, device = [], []
    for sample in data:
        seen = {}
        artefact.graph.run(sample[None], observer=lambda n, v: seen.__setitem__(n, v))
        floats.append(seen["c2"][0].transpose(2, 0, 1).ravel())
        _, steps = emc.run_kmodel(artefact.model, artefact.to_pixels(sample), trace=True)
        device.append(dict((i, a) for i, _, a in steps)[index].astype(np.float64).ravel())
    f, d = np.concatenate(floats).astype(np.float64), np.concatenate(device)
    a, b = np.polyfit(d, f, 1)
    g_fit = a * d + b
    assert rows["c2"]["snr_db"] == pytest.approx(10 * np.log10(np.sum(f * f) / np.sum((f - g_fit) ** 2)), abs=1e-6)
    assert rows["c2"]["cosine"] == pytest.approx(f @ g_fit / np.linalg.norm(f) / np.linalg.norm(g_fit), abs=1e-9)
    out = result.outputs[0]
    sim, ref = artefact.simulate(data)[0], g.run(data)[0]
    assert out["top1_agree"] == pytest.approx(np.mean(sim.argmax(1) == ref.argmax(1)))
    assert out["max_abs"] == pytest.approx(np.max(np.abs(sim - ref)), rel=1e-5)
    assert result.plot(tmp_path / "snr.png") and (tmp_path / "snr.png").read_bytes()[:4] == b"\x89PNG"
    text = str(result)
    assert text.index(f"{result.worst_first()[0]['tensor']}") < text.index("output '")


def test_maixemc_board_kmodel_follows_float_and_the_broken_one_is_located():
    net = reference_path("float-models", "maixemc_cifar10.h5")
    images = reference_path("images", "cifar10")
    board = emc.compare(net, reference_path("kmodel-v3", "maixemc_cifar10_board.kmodel"), images)
    assert {r["tensor"] for r in board.layers} == {"conv1", "pool1", "conv2", "pool2", "denserelu", "output"}
    assert board.outputs[0]["top1_agree"] == 1.0 and min(r["snr_db"] for r in board.layers) > 20
    broken = emc.compare(net, reference_path("kmodel-v3", "maixemc_cifar10.kmodel"), images)
    snr = {r["tensor"]: r["snr_db"] for r in broken.layers}
    assert snr["conv1"] > 30 and min(snr.values()) < 10          # the first conv is right, a later layer is not
    assert broken.outputs[0]["top1_agree"] < 0.5


def test_c_artefact_layers_use_their_own_scales():
    c = emc.platforms.get("c")
    if not hasattr(c, "convert"):
        pytest.skip("the C platform is not available yet")
    g = small_graph()
    data = np.random.default_rng(2).integers(0, 256, (12, 8, 8, 3)).astype(np.float32) / 255.0
    artefact = emc.convert(g, platform="c", dataset=data)
    result = emc.compare(None, artefact, data)
    rows = {r["tensor"]: r for r in result.layers}
    assert {"c1", "p", "c2", "d"} <= set(rows) and all(r["values"] == "i8" for r in rows.values())
    # 'c1' by hand: dequantize the int8 simulator's tensor with its own scale and zero point
    floats, device = [], []

    def observe(step, value):
        if step.node == "c1":
            device.append(artefact.program.tensors[step.output].dequantize(value).ravel())
    for sample in data:
        seen = {}
        artefact.graph.run(sample[None], observer=lambda n, v: seen.__setitem__(n, v))
        floats.append(seen["c1"].ravel())
        artefact.simulate_int8(artefact.quantize_inputs(sample[None]), observer=observe)
    f, d = np.concatenate(floats).astype(np.float64), np.concatenate(device).astype(np.float64)
    assert rows["c1"]["snr_db"] == pytest.approx(10 * np.log10(np.sum(f * f) / np.sum((f - d) ** 2)), abs=1e-6)
    assert rows["c1"]["max_abs"] == pytest.approx(np.max(np.abs(f - d)), rel=1e-6)
