"""The TensorLayer frontend: the shared 2019 .h5 file and a TL zoo, against TensorLayer's own forward pass."""
import h5py
import numpy as np
import pytest

import emc
from conftest import reference_path
from emc.frontends.tensorlayer import SUPPORTED_TENSORLAYER_LAYERS, from_tensorlayer, parse_config
from emc.passes import optimize
from zoo_tl import TL_ZOO, maixemc_cifar_layers, tl_modules

pytest.importorskip("tensorlayer")


def rel_l2(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / max(np.linalg.norm(b), 1e-12))


def tl_forward(model, x):
    return np.asarray(model(x.astype(np.float32)))


def test_shared_maixemc_h5_matches_tensorlayer_rebuild():
    path = reference_path("float-models", "maixemc_cifar10.h5")
    graph = emc.load_model(str(path))
    tf, tl = tl_modules()
    from tensorlayer.layers import Input
    ni = Input([None, 32, 32, 3])
    model = tl.models.Model(ni, maixemc_cifar_layers(tf, tl, ni))
    with h5py.File(path, "r") as f:          # assign the file's weights by name, independently of emc's reader
        for w in model.all_weights:
            layer, short = w.name.split("/")[0], w.name.split("/")[-1]
            w.assign(np.asarray(f[layer][layer][short]).reshape(tuple(w.shape)))
    model.eval()
    images = emc.datasets.load_dataset(reference_path("images", "cifar10"), (32, 32, 3), "img_0_1")
    x = np.concatenate([images, np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)])
    ref = tl_forward(model, x)
    for g in (graph, optimize(graph)):
        assert rel_l2(g.run(x)[0], ref) < 1e-4


@pytest.mark.parametrize("name", sorted(TL_ZOO))
def test_tl_zoo_object_and_file(name, tmp_path):
    model = TL_ZOO[name]()
    shape = tuple(model._inputs.shape[1:]) if hasattr(model._inputs, "shape") else None
    x = np.random.default_rng(1).uniform(0, 1, (3,) + shape).astype(np.float32)
    ref = tl_forward(model, x)
    from_object = from_tensorlayer(model)
    path = tmp_path / f"{name}.h5"
    model.save(str(path), save_weights=True)
    for g in (from_object, optimize(from_object)):
        assert rel_l2(g.run(x)[0], ref) < 1e-4
    if name != "tl_branchy":       # its lambda activation is pickled in the file: refused, tested below
        assert rel_l2(emc.load_model(str(path)).run(x)[0], ref) < 1e-4


def test_pickled_lambda_activation_is_refused_in_files(tmp_path):
    model = TL_ZOO["tl_branchy"]()
    path = tmp_path / "branchy.h5"
    model.save(str(path), save_weights=True)
    with pytest.raises(emc.UnsupportedLayerError, match="pickled"):
        emc.load_model(str(path))


def test_bad_files_and_layers(tmp_path):
    with pytest.raises(emc.ModelLoadError, match="cannot be read"):
        parse_config("{'model_architecture': [__import__('os').system('true')]}")
    with pytest.raises(emc.ModelLoadError, match="does not exist"):
        emc.load_model(str(tmp_path / "missing.h5"))
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.attrs["model_config"] = "{'model_architecture': [ {'class': "
        f.attrs["layer_names"] = []
    with pytest.raises(emc.ModelLoadError, match="cannot be read"):
        emc.load_model(str(bad))
    config = {"name": "m", "inputs": "in_node_0", "outputs": "b_node_0", "model_architecture": [
        {"class": "_InputLayer", "args": {"shape": [None, 8, 8, 3], "name": "in"}, "prev_layer": None},
        {"class": "DeConv2d", "args": {"name": "a"}, "prev_layer": ["in_node_0"]},
        {"class": "Lambda", "args": {"name": "b"}, "prev_layer": ["a_node_0"]}]}
    from emc.frontends.tensorlayer import build_graph
    with pytest.raises(emc.UnsupportedLayerError) as info:
        build_graph(config, {}, {}, "test")
    assert "DeConv2d" in str(info.value) and "Lambda" in str(info.value)
    assert "Conv2d" in SUPPORTED_TENSORLAYER_LAYERS
