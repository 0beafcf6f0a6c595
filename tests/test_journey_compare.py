"""Issue 13 item 4: emc's own artefacts pair each device layer with the graph tensor it computes (recorded at
conversion, saved in the kmodel's `.emc.json` sidecar); foreign kmodels keep the shape rule, with a device
softmax paired with the softmax's output and never before it."""
import os

import numpy as np
import pytest

import emc
from emc import layers as L


def dense_on_map_graph(seed=0):
    """conv -> flatten -> dense 1024 -> dense 512 (both on the KPU as padded 4x4 maps) -> dense 10 + softmax."""
    rng = np.random.default_rng(seed)
    g = emc.Graph("densey")
    x = g.add_input((8, 8, 4))
    c = g.add(L.Conv2D(rng.normal(0, 0.3, (3, 3, 4, 16)).astype(np.float32), None, pads=(1, 1, 1, 1),
                       activation=L.Act("relu")), [x], name="conv")
    f = g.add(L.Flatten(), [c], name="flat")
    d1 = g.add(L.Dense(rng.normal(0, 0.05, (1024, 1024)).astype(np.float32), None, activation=L.Act("relu")), [f],
               name="d1")
    d2 = g.add(L.Dense(rng.normal(0, 0.05, (1024, 512)).astype(np.float32), None, activation=L.Act("relu")), [d1],
               name="d2")
    g.set_outputs([g.add(L.Dense(rng.normal(0, 0.1, (512, 10)).astype(np.float32), None,
                                 activation=L.Act("softmax")), [d2], name="probs")])
    return g


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    g = dense_on_map_graph()
    data = np.random.default_rng(1).random((6, 8, 8, 4)).astype(np.float32)
    folder = tmp_path_factory.mktemp("pairs")
    paths = {}
    for version in (3, 4):
        artefact = emc.convert(g, platform="k210", dataset=data, version=version)
        written = artefact.save(folder / f"densey_v{version}.kmodel")
        assert written[1].endswith(".kmodel.emc.json")
        paths[version] = written[0]
    return g, data, paths


@pytest.mark.parametrize("version", [3, 4])
def test_dense_on_map_and_softmax_pair_by_recorded_tensor(saved, version):
    g, data, paths = saved
    result = emc.compare(g, paths[version], data)
    assert result.exact
    by_tensor = {}
    for r in result.layers:
        by_tensor.setdefault(r["tensor"], []).append(r["device"].lower())
    assert {"conv", "d1", "d2", "probs"} <= set(by_tensor)              # the 1024 and 512 dense layers are paired
    assert by_tensor["probs"] == ["softmax"]                             # softmax meets the softmax's output
    assert all(r["cosine"] > 0.99 for r in result.layers)
    assert [t.lower() for _, t in result.unmatched] in (["fully_connected"], ["matmul"])   # the logits: no tensor


@pytest.mark.parametrize("version", [3, 4])
def test_foreign_kmodel_keeps_the_shape_rule_with_post_ops(saved, version):
    g, data, paths = saved
    with open(paths[version], "rb") as f:
        foreign = f.read()                                   # bytes: no sidecar, as a kmodel from another tool
    result = emc.compare(g, foreign, data, input_transform=(1 / 255, 0.0))
    assert not result.exact
    pairs = {r["device"].lower(): r["tensor"] for r in result.layers}
    assert pairs.get("softmax") == "probs"
    assert "fully_connected" not in pairs and "matmul" not in pairs   # the logits are not the softmax's output
    assert "without a float tensor of their shape" in str(result)


def test_stale_sidecar_is_ignored(saved, tmp_path):
    g, data, paths = saved
    copy = tmp_path / "m.kmodel"
    copy.write_bytes(open(paths[3], "rb").read())
    with open(paths[4] + ".emc.json") as f:                  # a sidecar that belongs to another file
        (tmp_path / "m.kmodel.emc.json").write_text(f.read())
    assert emc.compare(g, os.fspath(copy), data).exact is False
