"""The `emc` command driven as a shell user drives it: subprocesses, exit codes, stdout / stderr."""
import os
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, reference_path

COMMANDS = ["convert", "inspect", "run", "compare", "platforms", "layers"]
# kmodel v3 layer type codes of kpu.h (kpu_model_layer_type_t) that occur in the shared files
V3_TYPE_NAMES = {5: "GLOBAL_AVERAGE_POOL2D", 8: "QUANTIZED_MAX_POOL2D", 11: "QUANTIZE", 12: "DEQUANTIZE",
                 15: "SOFTMAX", 18: "FULLY_CONNECTED", 21: "QUANTIZED_TENSORFLOW_FLATTEN", 24: "CHANNELWISE_DEQUANTIZE",
                 10240: "K210_CONV", 10241: "K210_ADD_PADDING", 10242: "K210_REMOVE_PADDING", 10243: "K210_UPLOAD"}
V3_FILES = ["nncase_iris", "nncase_yolo20", "maixemc_cifar10_board", "maixemc_cifar10", "maixemc_mbnetv1_0.75"]
V4_FILES = ["nncase_iris", "nncase_yolo20", "nncase_ulffd_landmark", "nncase_rfb320", "nncase_slim320"]
CIFAR_LABELS = "airplane automobile bird cat deer dog frog horse ship truck".split()


def emc_cli(*args, cwd=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "emc.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=timeout)


def assert_one_line_error(result, *fragments):
    """Exit code 2, one `emc: error:` line last on stderr, nothing there but emc's own one-line messages."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("emc: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert all(line.startswith("emc: ") for line in lines) and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


# ---- help ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [None] + COMMANDS)
def test_help_of_every_command(command):
    result = emc_cli(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: emc" + (f" {command}" if command else ""))
    assert "--quiet" in result.stdout and "--debug" in result.stdout


@pytest.mark.skipif(shutil.which("emc") is None, reason="the `emc` console script is not installed (pip install -e .)")
def test_console_script_entry_point():
    result = subprocess.run(["emc", "platforms"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "k210" in result.stdout


def test_platforms_and_layers_come_from_the_tables():
    from emc.platforms.k210 import TABLE
    result = emc_cli("platforms")
    assert result.returncode == 0 and re.search(r"^k210\s+\d+ op kinds", result.stdout, re.M)
    layers = emc_cli("layers", "--platform", "k210")
    assert layers.returncode == 0
    listed = {line.strip() for line in layers.stdout.splitlines() if line.startswith("  ")}
    assert listed == set(TABLE)


# ---- inspect ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", V3_FILES)
def test_inspect_every_shared_v3_kmodel(name):
    path = reference_path("kmodel-v3", f"{name}.kmodel")
    data = path.read_bytes()
    version, flags, arch, layers, _, main_mem, outputs = struct.unpack_from("<7I", data, 0)
    codes = [struct.unpack_from("<I", data, 28 + 8 * outputs + 8 * i)[0] for i in range(layers)]
    result = emc_cli("inspect", path)
    assert result.returncode == 0, result.stderr
    assert f"kmodel v3: {layers} layers" in result.stdout and f"main memory {main_mem} bytes" in result.stdout
    row = re.compile(r"^\s*\d+\s+[A-Z_0-9]+\s+(KPU|CPU)")
    rows = [line.split()[1] for line in result.stdout.splitlines() if row.match(line)]
    assert rows == [V3_TYPE_NAMES[c] for c in codes]
    assert f"{len(data):,}" in result.stdout                    # file size in the totals


@pytest.mark.parametrize("name", V4_FILES)
def test_inspect_every_shared_v4_kmodel(name):
    path = reference_path("kmodel-v4", f"{name}.kmodel")
    # nncase v0.2 model_header: identifier, version, flags, target, constants, main_mem, nodes, inputs, outputs
    identifier, version, _, _, _, _, nodes, inputs, outputs = struct.unpack_from("<4sIIIIIIII", path.read_bytes(), 0)
    assert identifier == b"LDMK" and version == 4
    result = emc_cli("inspect", path)
    assert result.returncode == 0, result.stderr
    assert "kmodel v4" in result.stdout
    assert f"{nodes} nodes, {inputs} input(s), {outputs} output(s)" in result.stdout.splitlines()[0]
    rows = [line for line in result.stdout.splitlines() if re.match(r"^\s*\d+\s+[a-z_0-9]+\s+(KPU|CPU)", line)]
    assert len(rows) == nodes


# ---- run -------------------------------------------------------------------------------------------------------
def test_run_mobilenet_on_the_tiger_with_labels():
    result = emc_cli("run", reference_path("kmodel-v3", "maixemc_mbnetv1_0.75.kmodel"),
                     reference_path("images", "imagenet", "tiger.jpg"),
                     "--labels", reference_path("images", "imagenet", "labels.txt"), "--top", "3")
    assert result.returncode == 0, result.stderr
    ranks = [line for line in result.stdout.splitlines() if re.match(r"^\s+\d\. ", line)]
    assert len(ranks) == 3
    assert ranks[0].split()[2] == "292" and "tiger" in ranks[0]          # ImageNet class 292 is "tiger"


def test_run_iris_npy_matches_the_board(tmp_path):
    np.save(tmp_path / "sample.npy", np.array([5.1, 3.8, 1.9, 0.4], np.float32))
    result = emc_cli("run", reference_path("kmodel-v3", "nncase_iris.kmodel"), tmp_path / "sample.npy")
    assert result.returncode == 0, result.stderr
    values = [float(v) for v in re.search(r"values\): \[([^\]]*)\]", result.stdout).group(1).split()]
    np.testing.assert_allclose(values, [16.077795, 5.607656, -2.071745], atol=1e-3)   # nncase's Readme, a K210


def test_run_iris_v4(tmp_path):
    sample = np.array([5.1, 3.8, 1.9, 0.4], np.float32)
    np.save(tmp_path / "sample.npy", sample)
    result = emc_cli("run", reference_path("kmodel-v4", "nncase_iris.kmodel"), tmp_path / "sample.npy")
    import tensorflow as tf
    interp = tf.lite.Interpreter(model_path=str(reference_path("float-models", "nncase_iris.tflite")))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], sample[None])
    interp.invoke()
    expected = interp.get_tensor(interp.get_output_details()[0]["index"])[0]
    assert result.returncode == 0, result.stderr
    values = [float(v) for v in re.search(r"values\): \[([^\]]*)\]", result.stdout).group(1).split()]
    np.testing.assert_allclose(values, expected, atol=0.05)


# ---- convert a model made here, then inspect / run / compare it -----------------------------------------------------
@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    import keras
    from PIL import Image
    folder = tmp_path_factory.mktemp("cli_model")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3)),
                              keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                              keras.layers.Conv2D(8, 1, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(4)])
    model.save(folder / "small.keras")
    rng = np.random.default_rng(0)
    images = folder / "images"
    images.mkdir()
    pixels = rng.integers(0, 256, (12, 8, 8, 3)).astype(np.uint8)
    for i, img in enumerate(pixels):
        Image.fromarray(img).save(images / f"{i:02d}.png")
    expected = model.predict(pixels.astype(np.float32) / 255.0, verbose=0)       # Keras itself, img_0_1
    return folder, images, pixels, expected


@pytest.mark.parametrize("version", [3, 4])
def test_convert_then_inspect_run_compare(small_model, tmp_path, version):
    folder, images, pixels, expected = small_model
    out = tmp_path / "small.kmodel"
    kpu_layer = {3: "K210_CONV", 4: "kpu_conv2d"}[version]
    result = emc_cli("convert", folder / "small.keras", "-o", out, "--dataset", images, "--quant", "minmax", "-q",
                     "--version", str(version))
    assert result.returncode == 0, result.stderr
    assert f"K210 kmodel v{version}" in result.stdout and f"wrote {out}" in result.stdout
    assert out.read_bytes()[:4] == (b"LDMK" if version == 4 else struct.pack("<I", 3))
    inspect = emc_cli("inspect", out)
    assert inspect.returncode == 0 and kpu_layer in inspect.stdout
    run = emc_cli("run", out, images / "00.png", images / "01.png", "--full")
    assert run.returncode == 0, run.stderr
    outputs = [[float(v) for v in body.split()] for body in re.findall(r"values\): \[([^\]]*)\]", run.stdout)]
    span = float(expected.max() - expected.min())
    np.testing.assert_allclose(outputs, expected[:2], atol=0.05 * span)
    compare = emc_cli("compare", folder / "small.keras", out, "--dataset", images, "--plot", tmp_path / "snr.png")
    assert compare.returncode == 0, compare.stderr
    cosine = float(re.search(r"output '[^']+'\s*: cosine ([0-9.]+)", compare.stdout).group(1))
    assert cosine > 0.99 and (tmp_path / "snr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert kpu_layer in compare.stdout


# ---- errors: one line, exit code 2, no traceback unless --debug ---------------------------------------------------
def test_missing_files(tmp_path):
    assert_one_line_error(emc_cli("inspect", tmp_path / "nope.kmodel"), "does not exist", "nope.kmodel")
    assert_one_line_error(emc_cli("convert", tmp_path / "nope.h5", "-o", tmp_path / "x.kmodel",
                                  "--dataset", tmp_path), "model file", "does not exist")
    assert_one_line_error(emc_cli("run", reference_path("kmodel-v3", "nncase_iris.kmodel"), tmp_path / "in.npy"),
                          "input", "does not exist")
    assert not (tmp_path / "x.kmodel").exists()


@pytest.mark.parametrize("option, value, fragment", [("--platform", "esp32", "unknown platform 'esp32'"),
                                                     ("--quant", "magic", "unknown quant function 'magic'"),
                                                     ("--dataset-func", "img_x", "unknown dataset function")])
def test_unknown_names(tmp_path, option, value, fragment):
    model = reference_path("float-models", "maixemc_cifar10.h5")
    result = emc_cli("convert", model, "-o", tmp_path / "x.kmodel", "--dataset",
                     reference_path("images", "cifar10"), option, value)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "x.kmodel").exists()


def test_wrong_dataset_kinds(tmp_path):
    model = reference_path("float-models", "maixemc_cifar10.h5")
    notes = tmp_path / "notes.txt"
    notes.write_text("not images")
    empty = tmp_path / "empty"
    empty.mkdir()
    for dataset, fragment in [(notes, "give a folder of images"), (empty, "holds no image files")]:
        result = emc_cli("convert", model, "-o", tmp_path / "x.kmodel", "--dataset", dataset)
        assert_one_line_error(result, fragment)
    quiet = emc_cli("-q", "convert", model, "-o", tmp_path / "x.kmodel", "--dataset", notes)
    assert_one_line_error(quiet, "give a folder of images")
    assert len(quiet.stderr.strip().splitlines()) == 1              # --quiet: the error line and nothing else
    np.save(tmp_path / "wrong.npy", np.zeros((3, 5, 5, 3), np.float32))
    result = emc_cli("convert", model, "-o", tmp_path / "x.kmodel", "--dataset", tmp_path / "wrong.npy")
    assert_one_line_error(result, "do not fit the model input")
    assert not (tmp_path / "x.kmodel").exists()


def test_usage_errors_and_bad_files(tmp_path):
    assert_one_line_error(emc_cli("convert"), "required")
    assert_one_line_error(emc_cli("layers", "--platform", "nope"), "unknown platform 'nope'")
    model, images = reference_path("float-models", "maixemc_cifar10.h5"), reference_path("images", "cifar10")
    assert_one_line_error(emc_cli("convert", model, "-o", tmp_path / "c", "--dataset", images, "--platform", "c",
                                  "--softmax"), "--softmax is a k210 option")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x07\x00\x00\x00" + bytes(40))
    assert_one_line_error(emc_cli("inspect", junk), "neither a kmodel")
    not_image = tmp_path / "photo.jpg"
    not_image.write_text("not an image")
    assert_one_line_error(emc_cli("run", reference_path("kmodel-v3", "maixemc_cifar10_board.kmodel"), not_image),
                          "cannot read image")
    bad = tmp_path / "truncated.kmodel"
    bad.write_bytes(reference_path("kmodel-v3", "maixemc_cifar10_board.kmodel").read_bytes()[:300])
    assert_one_line_error(emc_cli("inspect", bad), "offset")


def test_debug_shows_the_traceback(tmp_path):
    result = emc_cli("--debug", "inspect", tmp_path / "nope.kmodel")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_convert_to_c_then_inspect_the_folder(small_model, tmp_path):
    import emc
    if not hasattr(emc.platforms.get("c"), "convert"):
        pytest.skip("the C platform is not available yet")
    folder, images, _, _ = small_model
    out = tmp_path / "c_model"
    result = emc_cli("convert", folder / "small.keras", "-o", out, "--platform", "c", "--dataset", images, "-q")
    assert result.returncode == 0, result.stderr
    assert (out / "small.h").is_file() and (out / "small.c").is_file()
    inspect = emc_cli("inspect", out)
    assert inspect.returncode == 0, inspect.stderr
    arena = re.search(r"#define SMALL_ARENA_SIZE (\d+)", (out / "small.h").read_text()).group(1)
    assert re.search(rf"arena \(bytes\)\s*: {int(arena):,}", inspect.stdout)
    kernels = [line.split()[2] for line in inspect.stdout.splitlines() if re.match(r"^\d+\s+\S+\s+\S+\s+[0-9x]+", line)]
    assert kernels[0] == "conv2d" and kernels[-1] == "dense"
    assert_one_line_error(emc_cli("inspect", images), "no emc-generated C model")
