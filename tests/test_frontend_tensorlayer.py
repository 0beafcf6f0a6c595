"""The TensorLayer frontend: the shared 2019 .h5 file and a TL zoo, against TensorLayer 2.2.5's own forward pass."""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import emc
from conftest import reference_path
from emc.frontends.tensorlayer import SUPPORTED_TENSORLAYER_LAYERS, build_graph, from_tensorlayer, parse_config
from emc.passes import optimize
from zoo_tl import TL_FRONTEND_CASES, TL_ZOO, TL_ZOO_INFO, maixemc_cifar_layers, tl_modules, unique

pytest.importorskip("tensorlayer")
CASES = {**TL_ZOO, **TL_FRONTEND_CASES}
PICKLED_ACT = {"tl_branchy"}      # a lambda activation: TensorLayer pickles it into the file, emc refuses that


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def model_inputs(model, n, seed):
    inputs = model.inputs if isinstance(model.inputs, list) else [model.inputs]
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, (n,) + tuple(i.shape[1:])).astype(np.float32) for i in inputs]


def tl_forward(model, xs):
    """TensorLayer's own outputs (eval mode), always as a list of numpy arrays."""
    out = model(xs if len(xs) > 1 else xs[0])
    return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]


def assert_matches(graph, xs, refs, what):
    outs = graph.run(xs)
    assert len(outs) == len(refs), what
    for i, (out, ref) in enumerate(zip(outs, refs)):
        err = rel_l2(out, ref)
        assert err < 1e-4, f"{what}: output {i} differs from TensorLayer by {err:.2e}"


def cifar_images():
    """The 10 shared CIFAR-10 pictures, RGB / 255, NHWC float32 (read here with Pillow, not with emc)."""
    from PIL import Image
    folder = reference_path("images", "cifar10")
    pics = [np.asarray(Image.open(folder / f).convert("RGB").resize((32, 32)), np.float32) / 255.0
            for f in sorted(os.listdir(folder))]
    return np.stack(pics)


# ---- the shared file saved by TensorLayer 2.1 (Maix-EMC's cifar example) -----------------------------------------
def test_shared_maixemc_h5_matches_tensorlayer_rebuild():
    path = reference_path("float-models", "maixemc_cifar10.h5")
    graph = emc.load_model(str(path))
    assert graph.input_shapes == [(32, 32, 3)] and graph.output_shapes == [(10,)]
    tf, tl = tl_modules()
    from tensorlayer.layers import Input
    ni = Input([None, 32, 32, 3])
    model = tl.models.Model(ni, maixemc_cifar_layers(tf, tl, ni), name=unique("cifar_rebuild"))
    with h5py.File(path, "r") as f:          # the file's weights, assigned by name here, independently of emc
        for w in model.all_weights:
            layer, short = w.name.split("/")[0], w.name.split("/")[-1]
            w.assign(np.asarray(f[layer][layer][short]).reshape(tuple(w.shape)))
    model.eval()
    images = cifar_images()
    assert images.shape == (10, 32, 32, 3)
    x = np.concatenate([images, np.random.default_rng(0).uniform(0, 1, (6, 32, 32, 3)).astype(np.float32)])
    ref = tl_forward(model, [x])
    assert ref[0].argmax(1).tolist() != [ref[0].argmax(1)[0]] * len(x)      # a real, non-constant network
    for g, what in ((graph, "as read"), (optimize(graph), "after passes")):
        assert_matches(g, [x], ref, what)


def test_shared_h5_is_read_without_importing_a_framework():
    path = reference_path("float-models", "maixemc_cifar10.h5")
    code = ("import sys, emc; g = emc.load_model(sys.argv[1]); "
            "bad = [m for m in ('tensorflow', 'tensorlayer', 'keras') if m in sys.modules]; "
            "assert not bad, bad; print(len(g.nodes))")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-2000:]


# ---- the TL zoo, from the object and from the file TensorLayer writes ------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_tl_model_object_and_file_match_tensorlayer(name, tmp_path):
    model = CASES[name]()
    xs = model_inputs(model, 3, seed=1)
    ref = tl_forward(model, xs)
    graph = from_tensorlayer(model)
    assert_matches(graph, xs, ref, f"{name} from the object")
    assert_matches(optimize(graph), xs, ref, f"{name} from the object, after passes")
    path = tmp_path / f"{name}.h5"
    model.save(str(path), save_weights=True)
    if name in PICKLED_ACT:
        with pytest.raises(emc.UnsupportedLayerError, match="pickled"):
            emc.load_model(str(path))
    else:
        assert_matches(emc.load_model(str(path)), xs, ref, f"{name} from its .h5 file")


def test_tl21_layout_with_bytes_config_and_1x1x1xC_batchnorm(tmp_path):
    """A file as TensorLayer 2.1 wrote it: bytes model_config, BatchNorm parameters of shape (1, 1, 1, C)."""
    model = TL_ZOO["tl_maixemc_cifar"]()
    xs = model_inputs(model, 4, seed=2)
    ref = tl_forward(model, xs)
    path = tmp_path / "tl21.h5"
    model.save(str(path), save_weights=True)
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = np.bytes_(f.attrs["model_config"].encode() if isinstance(
            f.attrs["model_config"], str) else f.attrs["model_config"])
        reshaped = 0
        for lname in f.keys():
            for wname in f[lname].attrs["weight_names"]:
                wname = wname.decode() if isinstance(wname, bytes) else wname
                if lname.startswith("batch") and wname in f[lname]:
                    value = np.asarray(f[lname][wname])
                    del f[lname][wname]
                    f[lname][wname] = value.reshape(1, 1, 1, -1)
                    reshaped += 1
        assert reshaped == 8
    assert_matches(emc.load_model(str(path)), xs, ref, "TL 2.1 layout")


def test_kpu_eligible_flags_hold_after_passes():
    """TL_ZOO_INFO's kpu_eligible models use only what the K210 tests expect (checked here on the graph)."""
    def eligible(node):
        op = node.op
        kind = op.kind
        act = op.attrs.get("activation")
        if act is not None and act.name not in ("relu", "relu6", "leaky_relu", "linear"):
            return False
        if kind in ("conv2d", "depthwise_conv2d"):
            k = op.weights["kernel"].shape[:2] if "kernel" in op.weights else None
            return k in ((1, 1), (3, 3)) and tuple(op.strides) in ((1, 1), (2, 2))
        if kind == "pool2d":
            return tuple(op.pool_size) == (2, 2)
        if kind == "global_pool2d":
            return op.mode == "avg"
        if kind == "elementwise":
            return op.op == "add"
        return kind in ("input", "batch_norm", "dense", "flatten", "concat", "activation")
    for name, info in TL_ZOO_INFO.items():
        if info["kpu_eligible"]:
            graph = optimize(from_tensorlayer(TL_ZOO[name]()))
            bad = [f"{n.name} ({n.op.kind})" for n in graph if not eligible(n)]
            assert not bad, f"{name} is flagged kpu_eligible but has {bad}"


# ---- activations and combine functions given as Python callables --------------------------------------------------
def test_lambda_callables_are_identified_on_objects_and_refused_in_files(tmp_path):
    tf, tl = tl_modules()
    from tensorlayer.layers import Dense, Elementwise, Input
    ni = Input([None, 5])
    a = Dense(4, act=lambda x: tl.act.lrelu(x, 0.05))(ni)
    b = Dense(4, act=lambda x: tf.nn.relu6(x))(ni)
    out = Elementwise(combine_fn=lambda p, q, name=None: tf.subtract(p, q))([a, b])
    model = tl.models.Model(ni, out, name=unique("lambdas"))
    model.eval()
    xs = [np.random.default_rng(3).normal(0, 3, (6, 5)).astype(np.float32)]
    assert_matches(from_tensorlayer(model), xs, tl_forward(model, xs), "lambda callables")
    path = tmp_path / "lambdas.h5"
    model.save(str(path), save_weights=True)
    with pytest.raises(emc.UnsupportedLayerError) as info:
        emc.load_model(str(path))
    assert "pickled" in str(info.value) and "3 layer(s)" in str(info.value)


# ---- bad input -------------------------------------------------------------------------------------------------------
def test_unsupported_layers_are_all_listed(tmp_path):
    tf, tl = tl_modules()
    from tensorlayer.layers import Conv2d, DeConv2d, Flatten, Input, Lambda, UpSampling2d
    ni = Input([None, 8, 8, 3])
    n = DeConv2d(4, (3, 3), (2, 2), name="deconv")(ni)
    n = UpSampling2d((2, 2), method="bilinear", name="bilinear")(n)
    n = Lambda(lambda x: x * 2.0, name="twice")(Conv2d(2, (3, 3), name="fine")(n))
    model = tl.models.Model(ni, Flatten()(n), name=unique("unsupported"))
    path = tmp_path / "unsupported.h5"
    model.save(str(path), save_weights=True)
    for source in (model, str(path)):
        with pytest.raises(emc.UnsupportedLayerError) as info:
            emc.load_model(source)
        msg = str(info.value)
        for piece in ("'deconv' (DeConv2d)", "'bilinear' (UpSampling2d)", "'twice' (Lambda)",
                      "SUPPORTED_TENSORLAYER_LAYERS", "3 layer(s)"):
            assert piece in msg
        assert "'fine'" not in msg
    assert {"Conv2d", "Input", "BatchNorm", "Elementwise", "Dropout"} <= set(SUPPORTED_TENSORLAYER_LAYERS)


def test_unsupported_data_format_and_act_from_config():
    config = {"name": "m", "inputs": "in_node_0", "outputs": "b_node_0", "model_architecture": [
        {"class": "_InputLayer", "args": {"shape": [None, 8, 8, 3], "name": "in"}, "prev_layer": None},
        {"class": "Conv2d", "args": {"name": "a", "data_format": "channels_first"}, "prev_layer": ["in_node_0"]},
        {"class": "Flatten", "args": {"name": "f", "act": "relu"}, "prev_layer": ["a_node_0"]},
        {"class": "Dense", "args": {"name": "b", "act": "gelu"}, "prev_layer": ["f_node_0"]}]}
    with pytest.raises(emc.UnsupportedLayerError) as info:
        build_graph(config, {}, {}, "test")
    msg = str(info.value)
    assert "channels_first" in msg and "'f' (Flatten) with act=relu" in msg and "gelu" in msg


def test_dynamic_input_shape_asks_for_a_fixed_one(tmp_path):
    tf, tl = tl_modules()
    from tensorlayer.layers import Conv2d, GlobalMeanPool2d, Input
    ni = Input([None, None, None, 3])
    model = tl.models.Model(ni, GlobalMeanPool2d()(Conv2d(2, (3, 3))(ni)), name=unique("dynamic_hw"))
    with pytest.raises(emc.ModelLoadError, match="fixed input shape"):
        from_tensorlayer(model)
    path = tmp_path / "dynamic.h5"
    model.save(str(path), save_weights=True)
    with pytest.raises(emc.ModelLoadError, match="fixed input shape"):
        emc.load_model(str(path))


def test_dynamic_model_and_other_objects_are_refused():
    tf, tl = tl_modules()
    from tensorlayer.layers import Dense

    class Dynamic(tl.models.Model):
        def __init__(self):
            super().__init__()
            self.dense = Dense(3, in_channels=4)

        def forward(self, x):
            return self.dense(x)

    with pytest.raises(emc.ModelLoadError, match="static"):
        emc.load_model(Dynamic())
    with pytest.raises(emc.ModelLoadError, match="static"):
        from_tensorlayer(Dense(3, in_channels=4))


def test_nan_weights_name_the_layer():
    model = TL_ZOO["tl_mlp"]()
    weight = model.all_weights[0]
    weight.assign(np.full(tuple(weight.shape), np.nan, np.float32))
    with pytest.raises(emc.GraphError, match=weight.name.split("/")[0]):
        from_tensorlayer(model)


def test_parse_config_evaluates_nothing(tmp_path):
    marker = tmp_path / "marker"
    for text in (f"{{'model_architecture': [open({str(marker)!r}, 'w')]}}",
                 "{'model_architecture': [__import__('os').system('true')]}",
                 "{'model_architecture': [x for x in ()]}", "lambda: 1", "{'model_architecture': [ {'class': "):
        with pytest.raises(emc.ModelLoadError, match="cannot be read"):
            parse_config(text)
    assert not marker.exists()
    with pytest.raises(emc.ModelLoadError, match="model_architecture"):
        parse_config(b"['not', 'a', 'dict']")
    config = parse_config(b"{'model_architecture': [], 'd': tf.float32, 'f': tf.nn.relu, 'n': -1e-3}")
    assert config["d"] == "tf.float32" and config["f"] == "tf.nn.relu" and config["n"] == -1e-3


@pytest.fixture(scope="module")
def saved_mlp(tmp_path_factory):
    model = TL_ZOO["tl_mlp"]()
    path = tmp_path_factory.mktemp("tl") / "mlp.h5"
    model.save(str(path), save_weights=True)
    return path, model


def damaged_copy(saved, tmp_path, edit):
    path = tmp_path / "damaged.h5"
    path.write_bytes(saved.read_bytes())
    with h5py.File(path, "r+") as f:
        edit(f)
    return str(path)


def test_damaged_files_raise_model_load_error(saved_mlp, tmp_path):
    saved, model = saved_mlp
    first = model.all_layers[1].name

    def config_text(f):
        value = f.attrs["model_config"]
        return value.decode() if isinstance(value, bytes) else value

    def truncate(f):
        f.attrs["model_config"] = config_text(f)[:80]

    def dangling(f):
        f.attrs["model_config"] = config_text(f).replace(f"'{first}_node_0'", "'nowhere_node_0'")

    def no_layers(f):
        f.attrs["model_config"] = "{'model_architecture': [1, 2], 'inputs': 'a', 'outputs': 'b'}"

    def drop_weight(f):
        group = f[first]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        del group[names[0]]

    def text_weights(f):
        group = f[first]
        name = group.attrs["weight_names"][0]
        name = name.decode() if isinstance(name, bytes) else name
        del group[name]
        group[name] = "not numbers"

    cases = {truncate: "cannot be read", dangling: "nowhere_node_0", no_layers: "entry 0",
             drop_weight: "missing", text_weights: first}
    for edit, expected in cases.items():
        with pytest.raises(emc.ModelLoadError, match=expected):
            emc.load_model(damaged_copy(saved, tmp_path, edit))


def test_missing_weights_only_and_non_hdf5_files(saved_mlp, tmp_path):
    with pytest.raises(emc.ModelLoadError, match="does not exist"):
        emc.load_model(str(tmp_path / "missing.h5"))
    with pytest.raises(emc.ModelLoadError, match="does not exist"):
        from_tensorlayer(str(tmp_path / "missing.h5"))
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not an HDF5 file" * 10)
    with pytest.raises(emc.ModelLoadError, match="not a readable HDF5"):
        emc.load_model(str(junk))
    _, model = saved_mlp
    weights_only = tmp_path / "weights.h5"
    model.save_weights(str(weights_only))
    with pytest.raises(emc.ModelLoadError, match="weights only"):
        emc.load_model(str(weights_only))


def test_bad_configuration_values_name_the_layer():
    config = {"name": "m", "inputs": "in_node_0", "outputs": "c_node_0", "model_architecture": [
        {"class": "_InputLayer", "args": {"shape": [None, 8, 8, 3], "name": "in"}, "prev_layer": None},
        {"class": "Conv2d", "args": {"name": "c", "filter_size": "ab"}, "prev_layer": ["in_node_0"]}]}
    weights = {"c": {"filters": np.zeros((3, 3, 3, 2), np.float32)}}
    with pytest.raises(emc.ModelLoadError, match="layer 'c' \\(Conv2d\\)"):
        build_graph(config, weights, {}, "test")
    config["model_architecture"][1]["args"]["filter_size"] = (3, 3)
    with pytest.raises(emc.ModelLoadError, match="lacks its weight 'filters'"):
        build_graph(config, {}, {}, "test")
    assert build_graph(config, weights, {}, "test").output_shapes == [(8, 8, 2)]
    config["outputs"] = None
    with pytest.raises(emc.ModelLoadError, match="no outputs"):
        build_graph(config, weights, {}, "test")
