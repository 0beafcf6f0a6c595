"""The TensorFlow-free Keras file reader: every zoo model saved as .h5 and .keras reads into a graph whose float
outputs equal Keras' within 1e-5; Keras 2 / tf.keras 2.x layouts and the shared reference files read too; a file
never imports TensorFlow (checked in a subprocess with the frameworks blocked)."""
import json
import pathlib
import shutil

import h5py
import numpy as np
import pytest

import emc
from conftest import reference_path
from emc.frontends.keras_files import read_keras_file, snake_case
from test_core_install import run_blocked

DATA = pathlib.Path(__file__).resolve().parent / "data"
TOLERANCE = 1e-5


def assert_close(outs, refs, what):
    """Every output within 1e-5 of Keras', relative to the output's own scale when that exceeds 1."""
    assert len(outs) == len(refs), what
    for o, r in zip(outs, refs):
        assert o.shape == r.shape, what
        scale = max(1.0, float(np.abs(r).max()))
        assert float(np.abs(o - r).max()) <= TOLERANCE * scale, (what, float(np.abs(o - r).max()))


def zoo_names():
    from zoo import KERAS_ZOO
    return sorted(KERAS_ZOO)


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
@pytest.mark.parametrize("name", zoo_names())
def test_zoo_files_match_keras(tmp_path, name, suffix):
    pytest.importorskip("keras")
    from test_frontend_keras import built
    model, x, ref, _ = built(name)
    path = tmp_path / (name + suffix)
    model.save(path)
    graph = read_keras_file(path)
    assert graph.name == model.name
    assert len(graph.inputs) == len(model.inputs) and len(graph.outputs) == len(model.outputs)
    assert_close(graph.run(x), ref, (name, suffix))


@pytest.mark.parametrize("name", ["fer_mini_xception_64.h5", "tinymaix_mnist_valid.h5"])
def test_reference_files_match_keras(name):
    """A Keras 2.0.5 file and a Keras 3 one from the shared references, against Keras loading the same file."""
    keras = pytest.importorskip("keras")
    path = reference_path("float-models", name)
    graph = read_keras_file(path)          # emc reads it whatever Keras is installed
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:               # an older Keras 3 refuses a newer one's initializer configs
        pytest.skip(f"Keras {keras.__version__} cannot load {name} to compare with: {type(err).__name__}")
    x = np.random.default_rng(0).uniform(0, 1, (3,) + tuple(model.inputs[0].shape[1:])).astype(np.float32)
    ref = np.asarray(model(x, training=False))
    assert_close(graph.run(x), [ref], name)


def test_tf_keras2_layout_matches_tf_keras():
    """A tf.keras 2 file (nested Sequential and Functional, Conv1_pad, 'dtype' in initializer configs, ':0'
    weight names, node indices that count the nested model's own call) against tf.keras' own outputs."""
    ref = np.load(DATA / "tfkeras2_mini_outputs.npz")
    graph = read_keras_file(DATA / "tfkeras2_mini.h5")
    assert_close(graph.run(ref["x"]), [ref["y"]], "tfkeras2_mini")
    assert graph["Conv1_pad"].op.pads == (0, 1, 0, 1)
    assert {"dw", "dw_bn", "project_bn", "sep/depthwise", "gate"} <= set(graph.nodes)


def test_keras3_nested_model_called_twice(tmp_path):
    """One nested model applied to two tensors: two copies in the graph, both with the file's weights."""
    keras = pytest.importorskip("keras")
    k = keras.layers
    keras.utils.set_random_seed(3)
    block_in = keras.Input((6, 6, 4))
    block = keras.Sequential([block_in, k.Conv2D(4, 3, padding="same", activation="relu"), k.BatchNormalization()],
                             name="block")
    inp = keras.Input((6, 6, 4))
    model = keras.Model(inp, k.Add()([block(inp), block(k.Activation("tanh")(inp))]), name="twice")
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 4)).astype(np.float32)
    ref = np.asarray(model(x, training=False))
    for suffix in (".h5", ".keras"):
        model.save(tmp_path / ("twice" + suffix))
        graph = read_keras_file(tmp_path / ("twice" + suffix))
        assert_close(graph.run(x), [ref], suffix)
        assert sum(n.op.kind == "conv2d" for n in graph) == 2


def test_unsupported_layers_in_a_file_are_all_listed(tmp_path):
    keras = pytest.importorskip("keras")
    k = keras.layers
    inp = keras.Input((8, 8, 4))
    a = k.Conv2DTranspose(4, 3, padding="same", dilation_rate=2, name="tconv")(inp)     # dilated: refused
    b = k.LayerNormalization(name="lnorm")(inp)
    c = k.Conv2D(4, 3, padding="same", data_format="channels_last", groups=2, name="grouped")(inp)
    ops_mean = keras.ops.average(inp, axis=-1)         # saved as class 'Average', like the merge layer
    model = keras.Model(inp, [k.Flatten(name="after")(a), b, c, ops_mean, k.Conv2D(2, 1, name="fine")(inp)])
    for suffix in (".h5", ".keras"):
        model.save(tmp_path / ("bad" + suffix))
        with pytest.raises(emc.UnsupportedLayerError) as info:
            read_keras_file(tmp_path / ("bad" + suffix))
        text = str(info.value)
        assert "has 4 layer(s)" in text and "groups=2" in text and "SUPPORTED_KERAS_LAYERS" in text
        assert "keras.ops call" in text
        assert "'tconv' (Conv2DTranspose)" in text and "'lnorm' (LayerNormalization)" in text
        assert "'after'" not in text and "'fine'" not in text


def _edit_config(src, dst, edit):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        edit(config)
        f.attrs["model_config"] = json.dumps(config).encode()
    return dst


def test_keras2_hard_sigmoid_is_refused_not_misread(tmp_path):
    """Keras 2's hard_sigmoid is 0.2x + 0.5 clipped, not Keras 3's relu6(x + 3) / 6: say so instead of guessing."""
    def edit(config):
        logits = [e for e in config["config"]["layers"] if e["name"] == "Logits"][0]
        logits["config"]["activation"] = "hard_sigmoid"
    path = _edit_config(DATA / "tfkeras2_mini.h5", tmp_path / "hs.h5", edit)
    with pytest.raises(emc.UnsupportedLayerError, match="Keras 2's hard_sigmoid"):
        read_keras_file(path)


def test_bad_files_raise_model_load_errors(tmp_path):
    with pytest.raises(emc.ModelLoadError, match="does not exist"):
        read_keras_file(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(emc.ModelLoadError, match="junk.h5"):
        read_keras_file(junk)
    weights_only = tmp_path / "weights.h5"
    with h5py.File(weights_only, "w") as f:
        f.attrs["keras_version"] = "3.0.0"
        f.create_group("dense").attrs["weight_names"] = []
    with pytest.raises(emc.ModelLoadError, match="save_weights"):
        read_keras_file(weights_only)
    broken = _edit_config(DATA / "tfkeras2_mini.h5", tmp_path / "broken.h5",
                          lambda c: c["config"]["layers"][1]["inbound_nodes"][0][0].__setitem__(0, "nowhere"))
    with pytest.raises(emc.ModelLoadError, match="nowhere"):
        read_keras_file(broken)


def test_snake_case_names_as_keras_saving_lib():
    assert [snake_case(n) for n in ("Conv2D", "BatchNormalization", "ReLU", "PReLU", "UpSampling2D", "InputLayer",
                                    "GlobalAveragePooling2D", "Functional")] == [
        "conv2d", "batch_normalization", "re_lu", "p_re_lu", "up_sampling2d", "input_layer",
        "global_average_pooling2d", "functional"]


def test_reading_files_never_imports_tensorflow(tmp_path):
    """With TensorFlow installed and importable, inspecting and converting a .h5 leaves it out of sys.modules."""
    done = run_blocked(f"""
import numpy as np
from emc.cli import main
assert main(["inspect", {str(DATA / 'tfkeras2_mini.h5')!r}]) == 0
import emc
graph = emc.load_model({str(DATA / 'tfkeras2_mini.h5')!r})
emc.convert({str(DATA / 'tfkeras2_mini.h5')!r}, platform="c", dataset=np.zeros((2, 32, 32, 3), np.float32) + 0.5)
assert not any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules), sorted(sys.modules)
print("graph", len(graph))
""", tmp_path, blocked=())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "mobilenetv2_mini" in done.stdout and "graph 20" in done.stdout


def test_keras2_scope_suffixed_weight_names_in_a_nested_model(tmp_path):
    """Keras 2 named variables by TensorFlow scope ('dw_1/depthwise_kernel:0' for layer 'dw'): still found."""
    path = tmp_path / "suffixed.h5"
    shutil.copy(DATA / "tfkeras2_mini.h5", path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/block_1"]
        renamed = []
        for name in [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]:
            owner, weight = name.split("/")
            group.move(name, f"{owner}_1/{weight}")
            renamed.append(f"{owner}_1/{weight}".encode())
        group.attrs["weight_names"] = np.array(renamed)
    ref = np.load(DATA / "tfkeras2_mini_outputs.npz")
    assert_close(read_keras_file(path).run(ref["x"]), [ref["y"]], "suffixed")


def test_keras2_sequential_list_config_without_input_layer(tmp_path):
    """Keras 2.0-2.2 wrote a Sequential's config as a bare list whose first layer carries batch_input_shape."""
    original = reference_path("float-models", "tinymaix_mnist_valid.h5")

    def old_style(config):
        layers = config["config"]["layers"]
        shape = layers[0]["config"]["batch_shape"]
        config["config"] = [e for e in layers if e["class_name"] != "InputLayer"]
        config["config"][0]["config"]["batch_input_shape"] = shape
    path = _edit_config(original, tmp_path / "old_sequential.h5", old_style)
    x = np.random.default_rng(2).uniform(0, 1, (2, 28, 28, 1)).astype(np.float32)
    graph = read_keras_file(path)
    assert graph.inputs == ["ftr0_input"]
    np.testing.assert_array_equal(graph.run(x)[0], read_keras_file(original).run(x)[0])


def test_dynamic_input_shape_in_a_file_asks_for_a_fixed_one(tmp_path):
    def dynamic(config):
        config["config"]["layers"][0]["config"]["batch_input_shape"] = [None, None, None, 3]
    path = _edit_config(DATA / "tfkeras2_mini.h5", tmp_path / "dynamic.h5", dynamic)
    with pytest.raises(emc.ModelLoadError, match="fixed input shape"):
        read_keras_file(path)
