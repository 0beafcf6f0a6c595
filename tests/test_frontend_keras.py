"""The Keras frontend: every zoo model's emc graph equals Keras' own output (before and after the passes),
saved .keras/.h5 files load, parameter counts agree with Keras, and bad models raise clear emc errors."""
import functools

import numpy as np
import pytest

import emc
from emc.frontends.keras import SUPPORTED_KERAS_LAYERS, from_keras
from emc.passes import optimize

keras = pytest.importorskip("keras")
from zoo import KERAS_ZOO, ZOO_INFO, sample_inputs  # noqa: E402

PREPROCESSING = ("Rescaling", "Normalization")


def rel_l2(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / max(np.linalg.norm(b), 1e-12))


def keras_outputs(model, x):
    out = model(x, training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


@functools.lru_cache(maxsize=None)
def built(name):
    """(model, inputs, Keras outputs, emc graph) of a zoo model, built once per test session."""
    model = KERAS_ZOO[name]()
    x = sample_inputs(model, n=3)
    return model, x, keras_outputs(model, x), from_keras(model)


def flat_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from flat_layers(layer)
        else:
            yield layer


@pytest.mark.parametrize("name", sorted(KERAS_ZOO))
def test_zoo_model_matches_keras(name):
    model, x, ref, graph = built(name)
    optimized = optimize(graph)
    for g in (graph, optimized):
        outs = g.run(x)
        assert len(outs) == len(ref)
        for o, r in zip(outs, ref):
            assert o.shape == r.shape
            assert rel_l2(o, r) < 1e-4, (name, rel_l2(o, r))
    assert len(optimized) <= len(graph)


@pytest.mark.parametrize("name", sorted(KERAS_ZOO))
def test_zoo_parameter_counts_match_keras(name):
    """Per Keras layer: emc holds the same number of weights (BN folded to scale+offset: 2 per channel)."""
    model, _, _, graph = built(name)
    rows = graph.rows()
    for layer in flat_layers(model):
        cls = type(layer).__name__
        if cls == "InputLayer" or cls in PREPROCESSING:
            continue
        # the nodes of the layer's first call (a shared layer's later calls are named '<layer>_1', ...)
        mine = [r for r in rows if r["name"] == layer.name or r["name"].startswith(layer.name + "/")]
        expected = 2 * layer.moving_mean.shape[0] if cls == "BatchNormalization" else layer.count_params()
        assert mine and sum(r["params"] for r in mine) == expected, (name, layer.name)
    if not any(type(layer).__name__ in ("BatchNormalization",) + PREPROCESSING for layer in flat_layers(model)) \
            and all(len(layer._inbound_nodes) <= 1 for layer in flat_layers(model)):
        assert sum(r["params"] for r in rows) == model.count_params()


def test_node_names_are_keras_layer_names():
    model, _, _, graph = built("lenet")
    assert list(graph.nodes) == [layer.name for layer in model.layers]
    assert graph.outputs == [model.layers[-1].name]


def test_shared_layer_and_nested_model_become_separate_nodes():
    _, _, _, graph = built("shared_and_nested")
    assert {"shared_conv", "shared_conv_1"} <= set(graph.nodes)
    assert graph["shared_conv"].shape == (16, 16, 8) and graph["shared_conv_1"].shape == (8, 8, 8)


KPU_ACTS = {"linear", "relu", "relu6", "leaky_relu", "sigmoid"}


def kpu_takes(graph):
    """The rule of zoo.py's docstring, written again here from the graph's ops."""
    def conv_ok(op, depthwise):
        kh, kw = op.kernel.shape[:2]
        if (kh, kw) not in ((1, 1), (3, 3)) or op.dilation != (1, 1) or (depthwise and op.kernel.shape[3] != 1):
            return False
        if op.strides == (1, 1):
            return set(op.pads) <= {0} or set(op.pads) == {kh // 2}
        return op.strides == (2, 2) and not any(op.pads)

    def act_ok(node):
        act = node.op.attrs.get("activation")
        return act is None or act.name in KPU_ACTS or (act.name == "softmax" and node.name in graph.outputs)

    rules = {
        "input": lambda n: True, "identity": lambda n: True, "flatten": lambda n: True, "dense": act_ok,
        "batch_norm": lambda n: True, "pad2d": lambda n: True, "crop2d": lambda n: True,
        "upsample2d": lambda n: True, "concat": lambda n: n.op.axis == -1,
        "rescale": lambda n: n.inputs == graph.inputs,
        "conv2d": lambda n: conv_ok(n.op, False) and act_ok(n),
        "depthwise_conv2d": lambda n: conv_ok(n.op, True) and act_ok(n),
        "activation": act_ok,
        "pool2d": lambda n: n.op.pool_size == (2, 2) and n.op.strides == (2, 2) and not any(n.op.pads),
        "global_pool2d": lambda n: n.op.mode == "avg",
        "elementwise": lambda n: n.op.op == "add",
    }
    return len(graph.inputs) == 1 and all(rules.get(n.op.kind, lambda n: False)(n) for n in graph)


@pytest.mark.parametrize("name", sorted(KERAS_ZOO))
def test_zoo_kpu_flag_follows_its_rule(name):
    assert ZOO_INFO[name]["kpu_eligible"] == kpu_takes(built(name)[3])


def test_zoo_covers_the_required_architectures():
    assert len(KERAS_ZOO) >= 15 and set(KERAS_ZOO) == set(ZOO_INFO)
    classes = {type(layer).__name__ for name in KERAS_ZOO for layer in flat_layers(built(name)[0])}
    wanted = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv1D", "Dense", "BatchNormalization", "ReLU",
              "LeakyReLU", "PReLU", "ELU", "Softmax", "Activation", "MaxPooling2D", "AveragePooling2D",
              "GlobalMaxPooling2D", "GlobalAveragePooling2D", "ZeroPadding2D", "Cropping2D", "UpSampling2D",
              "Flatten", "Reshape", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
              "Dropout", "Rescaling", "Normalization", "MaxPooling1D", "AveragePooling1D", "GlobalMaxPooling1D",
              "GlobalAveragePooling1D", "Conv2DTranspose", "SimpleRNN", "GRU", "LSTM"}
    assert wanted <= classes, wanted - classes
    assert wanted <= set(SUPPORTED_KERAS_LAYERS) and SUPPORTED_KERAS_LAYERS == sorted(SUPPORTED_KERAS_LAYERS)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("name", ["resnet_small", "two_inputs", "detector_two_heads", "shared_and_nested"])
def test_saved_files_load(tmp_path, name, suffix):
    model, x, ref, _ = built(name)
    path = tmp_path / (name + suffix)
    model.save(path)
    for source in (path, str(path)):
        outs = (emc.load_model(source) if source is path else from_keras(source)).run(x)
        assert len(outs) == len(ref)
        assert max(rel_l2(o, r) for o, r in zip(outs, ref)) < 1e-4


def test_unsupported_layers_are_all_listed_at_once():
    k = keras.layers
    inp = keras.Input((8, 8, 4))
    bad = {
        "tconv": k.Conv2DTranspose(4, 3, padding="same", dilation_rate=2, name="tconv")(inp),   # dilated: refused
        "lnorm": k.LayerNormalization(name="lnorm")(inp),
        "bn_axis1": k.BatchNormalization(axis=1, name="bn_axis1")(inp),
        "relu_thr": k.ReLU(threshold=0.5, name="relu_thr")(inp),
        "bilinear": k.UpSampling2D(interpolation="bilinear", name="bilinear")(inp),
        "grouped": k.Conv2D(4, 3, groups=2, name="grouped")(inp),
        "gelu": k.Activation("gelu", name="gelu")(inp),
        "lambda_act": k.Dense(3, activation=lambda t: t * 2.0, name="lambda_act")(inp),
        "relu_max1": k.ReLU(max_value=1.0, name="relu_max1")(inp),
    }
    ops_mean = keras.ops.average(inp, axis=-1)
    after_bad = k.Flatten(name="after_bad")(bad["tconv"])
    model = keras.Model(inp, list(bad.values()) + [ops_mean, after_bad, k.Conv2D(2, 1, name="fine")(inp)])
    with pytest.raises(emc.UnsupportedLayerError) as info:
        from_keras(model)
    text = str(info.value)
    assert f"has {len(bad) + 1} layer(s)" in text
    for name in bad:
        assert f"'{name}'" in text
    for fragment in ("Conv2DTranspose", "LayerNormalization", "axis 1", "threshold", "bilinear", "groups=2",
                     "gelu", "custom activation", "max_value=1.0", "keras.ops", "SUPPORTED_KERAS_LAYERS"):
        assert fragment in text, fragment
    assert "after_bad" not in text and "'fine'" not in text
    assert isinstance(info.value, emc.EmcError)


def test_dynamic_input_shape_asks_for_a_fixed_one():
    dynamic = keras.Model(inp := keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3)(inp))
    with pytest.raises(emc.ModelLoadError, match="fixed input shape"):
        from_keras(dynamic)


def test_channels_first_is_refused_with_a_fix():
    inp = keras.Input((3, 8, 8))
    x = keras.layers.Conv2D(2, 3, data_format="channels_first", name="cf_conv")(inp)
    x = keras.layers.MaxPooling2D(2, data_format="channels_first", name="cf_pool")(x)
    with pytest.raises(emc.UnsupportedLayerError, match="channels_last") as info:
        from_keras(keras.Model(inp, x))
    assert "'cf_conv'" in str(info.value) and "'cf_pool'" in str(info.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(emc.ModelLoadError, match="does not exist"):
        emc.load_model(tmp_path / "nonexistent.keras")
    with pytest.raises(emc.ModelLoadError, match="cannot load"):
        from_keras(str(tmp_path / "nonexistent.keras"))
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"this is not a zip archive")
    with pytest.raises(emc.ModelLoadError, match="junk.keras"):
        emc.load_model(junk)


def test_models_without_a_layer_graph():
    with pytest.raises(emc.ModelLoadError, match="keras.Input"):
        from_keras(keras.Sequential([keras.layers.Dense(3)]))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    sub = Subclassed()
    sub(np.zeros((1, 3), np.float32))
    with pytest.raises(emc.ModelLoadError, match="functional"):
        from_keras(sub)
    with pytest.raises(emc.ModelLoadError):
        emc.load_model(object())


def test_nan_weights_name_the_layer():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="broken_dense")])
    kernel, bias = model.layers[0].get_weights()
    kernel[1, 2] = np.nan
    model.layers[0].set_weights([kernel, bias])
    with pytest.raises(emc.EmcError, match="broken_dense"):
        from_keras(model)
