"""The Keras frontend: every zoo model's emc graph equals Keras' own output, before and after the passes."""
import numpy as np
import pytest

import emc
from emc.frontends.keras import SUPPORTED_KERAS_LAYERS, from_keras
from emc.passes import optimize

keras = pytest.importorskip("keras")
from zoo import KERAS_ZOO, sample_inputs  # noqa: E402


def rel_l2(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / max(np.linalg.norm(b), 1e-12))


def keras_outputs(model, x):
    out = model(x, training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


@pytest.mark.parametrize("name", sorted(KERAS_ZOO))
def test_zoo_model_matches_keras(name):
    model = KERAS_ZOO[name]()
    x = sample_inputs(model, n=3)
    ref = keras_outputs(model, x)
    graph = emc.load_model(model)
    optimized = optimize(graph)
    for g in (graph, optimized):
        outs = g.run(x)
        assert len(outs) == len(ref)
        for o, r in zip(outs, ref):
            assert o.shape == r.shape
            assert rel_l2(o, r) < 1e-4, (name, rel_l2(o, r))
    assert len(optimized) <= len(graph)


def test_param_counts_match_keras_without_batchnorm():
    model = KERAS_ZOO["lenet"]()
    graph = emc.load_model(model)
    assert sum(r["params"] for r in graph.rows()) == model.count_params()


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_saved_files_load(tmp_path, suffix):
    model = KERAS_ZOO["resnet_small"]()
    path = tmp_path / ("m" + suffix)
    model.save(path)
    x = sample_inputs(model)
    assert rel_l2(emc.load_model(str(path)).run(x)[0], keras_outputs(model, x)[0]) < 1e-4


def test_unsupported_layers_are_all_listed():
    k = keras.layers
    inp = keras.Input((8, 8, 3))
    x = k.Conv2DTranspose(4, 3)(inp)
    x = k.LayerNormalization()(x)
    model = keras.Model(inp, k.Flatten()(x))
    with pytest.raises(emc.UnsupportedLayerError) as info:
        from_keras(model)
    text = str(info.value)
    assert "Conv2DTranspose" in text and "LayerNormalization" in text and "SUPPORTED_KERAS_LAYERS" in text
    assert "Conv2D" in SUPPORTED_KERAS_LAYERS


def test_bad_models():
    k = keras.layers
    dynamic = keras.Model(inp := keras.Input((None, None, 3)), k.Conv2D(2, 3)(inp))
    with pytest.raises(emc.ModelLoadError, match="fixed input shape"):
        from_keras(dynamic)
    with pytest.raises(emc.ModelLoadError, match="does not exist"):
        emc.load_model("/nonexistent/model.keras")
    cf = keras.Model(inp := keras.Input((3, 8, 8)), k.Conv2D(2, 3, data_format="channels_first")(inp))
    with pytest.raises(emc.UnsupportedLayerError, match="channels_first"):
        from_keras(cf)
    with pytest.raises(emc.ModelLoadError):
        emc.load_model(object())
