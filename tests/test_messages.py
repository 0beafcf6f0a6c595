"""Careless input gets a message naming the cause and the fix (issue 15, item 7), one test per case."""
import warnings

import numpy as np
import pytest

import emc
from emc import layers as L
from test_cli import assert_one_line_error, emc_cli

RNG = np.random.default_rng(0)


def mlp(inputs=1):
    """A float graph with `inputs` inputs of 8 values, summed into one dense layer."""
    g = emc.Graph("mlp")
    xs = [g.add_input((8,), f"x{i}") for i in range(inputs)]
    h = xs[0] if inputs == 1 else g.add(L.Elementwise("add"), xs, name="sum")
    g.set_outputs([g.add(L.Dense(RNG.normal(0, 0.3, (8, 4)), np.zeros(4)), [h], name="logits")])
    return g


@pytest.fixture
def files(tmp_path):
    """A model file and a dataset that exist (the checks under test come before either is read)."""
    model = tmp_path / "m.h5"
    model.write_bytes(b"not read")
    data = tmp_path / "data.npy"
    np.save(data, RNG.uniform(0, 1, (4, 8)).astype(np.float32))
    return model, data


def test_max_samples_0_is_refused_naming_the_flag(files, tmp_path):
    model, data = files
    result = emc_cli("convert", model, "-o", tmp_path / "o.kmodel", "--dataset", data, "--max-samples", "0")
    assert_one_line_error(result, "--max-samples must be at least 1")


def test_std_0_is_refused_before_any_work(files, tmp_path):
    model, data = files
    assert_one_line_error(emc_cli("convert", model, "-o", tmp_path / "o.kmodel", "--dataset", data, "--std", "0"),
                          "std must not be 0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # no numpy RuntimeWarning on the way
        with pytest.raises(emc.EmcError, match="std must not be 0"):
            emc.convert(mlp(), platform="c", dataset=RNG.uniform(0, 1, (4, 8)).astype(np.float32), std=0)
        with pytest.raises(emc.EmcError, match="mean must be a finite number"):
            emc.convert(mlp(), platform="c", dataset=RNG.uniform(0, 1, (4, 8)).astype(np.float32), mean=np.nan)


def test_a_folder_named_like_a_model_file(tmp_path, files):
    folder = tmp_path / "x.h5"
    folder.mkdir()
    with pytest.raises(emc.ModelLoadError, match="is a folder, not a model file"):
        emc.load_model(folder)
    assert_one_line_error(emc_cli("convert", folder, "-o", tmp_path / "o.kmodel", "--dataset", files[1]),
                          "x.h5 is a folder")


def test_emc_run_on_a_text_file_named_kmodel(tmp_path):
    text = tmp_path / "text.kmodel"
    text.write_text("hello, this is not a model\n")
    np.save(tmp_path / "x.npy", np.zeros(4, np.float32))
    result = emc_cli("run", text, tmp_path / "x.npy")
    assert_one_line_error(result, "not a kmodel: the file starts with 68656c6c")
    assert "unknown model file type" not in result.stderr


def test_load_kmodel_of_a_folder_or_a_device(tmp_path):
    with pytest.raises(emc.EmcError, match="is a folder, not a kmodel file"):
        emc.load_kmodel(tmp_path)
    with pytest.raises(emc.EmcError, match="is not a regular file"):
        emc.load_kmodel("/dev/zero")
    with pytest.raises(emc.EmcError, match="does not exist"):
        emc.load_kmodel(tmp_path / "missing.kmodel")


@pytest.mark.parametrize("platform", ["k210", "c"])
def test_a_model_with_two_inputs_names_the_platform(platform):
    with pytest.raises(emc.PlatformLimitError, match=f"models with several inputs are not supported on {platform}"):
        emc.convert(mlp(inputs=2), platform=platform, dataset=RNG.uniform(0, 1, (4, 8)).astype(np.float32))


def _as_given(model, form, tmp_path):
    """The live Keras model, or the path of it saved as a .keras / .h5 file (read by emc without TensorFlow)."""
    if form == "live":
        return model
    path = tmp_path / f"model.{form}"
    model.save(path)
    return str(path)


@pytest.mark.parametrize("form", ["live", "keras", "h5"])
def test_unsupported_layers_of_the_frontend_and_the_platform_in_one_message(form, tmp_path):
    keras = pytest.importorskip("keras")
    k = keras.layers
    x = keras.Input((16, 16, 3))
    y = k.LayerNormalization(name="norm")(k.Conv2DTranspose(4, 3, strides=2, padding="same", name="up")(x))
    y = k.SeparableConv2D(4, 3, dilation_rate=2, padding="same", name="dilated")(y)
    model = keras.Model(x, k.GlobalAveragePooling2D()(y))
    with pytest.raises(emc.UnsupportedLayerError) as err:
        emc.convert(_as_given(model, form, tmp_path), platform="k210",
                    dataset=RNG.uniform(0, 1, (4, 16, 16, 3)).astype(np.float32))
    text = str(err.value)
    assert "'up' (conv2d_transpose)" in text and "'norm' (LayerNormalization)" in text    # platform + frontend
    assert "dilated" in text and "dilation" in text and "3 layer(s)" in text


@pytest.mark.parametrize("form", ["live", "keras", "h5"])
def test_a_refused_layer_that_changes_the_shape_still_lets_the_later_ones_be_checked(form, tmp_path):
    """A Sequential .h5 records no tensor shapes: the refused grouped conv's output shape comes from its config."""
    keras = pytest.importorskip("keras")
    k = keras.layers
    model = keras.Sequential([keras.Input((16, 16, 4)), k.Conv2D(8, 3, groups=2, name="grouped"),
                              k.SeparableConv2D(4, 3, dilation_rate=2, padding="same", name="dilated"),
                              k.GlobalAveragePooling2D()])
    with pytest.raises(emc.UnsupportedLayerError) as err:
        emc.convert(_as_given(model, form, tmp_path), platform="k210",
                    dataset=RNG.uniform(0, 1, (4, 16, 16, 4)).astype(np.float32))
    text = str(err.value)
    assert "'grouped' (Conv2D): grouped convolution" in text and "2 layer(s)" in text
    assert "'dilated/depthwise'" in text and "14,112 float MACs" in text    # 14x14x8 outputs x 9 taps, on 14x14


def test_an_stm32_build_that_overflows_flash_is_one_line_with_the_sizes():
    from emc.platforms.stm32 import toolchain
    if not toolchain.have_cross_compiler():
        pytest.skip("arm-none-eabi-gcc is not installed")
    files = {"m.h": "#include <stdint.h>\n#define M_INPUT_SIZE 4\n#define M_OUTPUT_SIZE 4\n"
                    "int m_run(const int8_t *in, int8_t *out);\n",
             "m.c": '#include "m.h"\nconst int8_t big[5 << 20] = {1};\n'
                    "int m_run(const int8_t *in, int8_t *out) { out[0] = big[(uint8_t)in[0] * 20000]; return 0; }\n"}
    with pytest.raises(emc.PlatformLimitError) as err:
        toolchain.measure(files, "m")
    text = str(err.value)
    assert "\n" not in text and "FLASH needs" in text and "4,194,304" in text and "ld:" not in text


def test_convert_refuses_to_overwrite_its_input_model(files):
    model, data = files
    assert_one_line_error(emc_cli("convert", model, "-o", model, "--dataset", data), "will not overwrite its own input")
    assert model.read_bytes() == b"not read"
