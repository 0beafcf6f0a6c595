"""The standing fuzz check of the kmodel readers and simulators (issue 15).

Per format, 3,000 seeded mutations of every shared reference kmodel and of a file emc wrote, type swaps
included, each through load_kmodel, str(model) and run_kmodel in a worker subprocess under a 2 GiB address
space and a per-case time bound: only results or emc errors may come out -- no other exception, MemoryError,
timeout or crash. A finding prints its case number; tests/kmodel_fuzz.py replay() rebuilds that file.
Long campaigns: python bench/fuzz.py --cases 50000.
"""
import functools
import shutil

import numpy as np
import pytest

import emc
import kmodel_fuzz
from conftest import REFERENCE

CASES = 3000
MASTER = 2026
CASE_SECONDS = 10          # a clean case takes < 1 s (the biggest seeds' full runs); a hang exceeds it at once


def keras_seed_model(version):
    """A small Keras net (random weights: only the file structure matters here) using many of the format's layer kinds."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(4)
    k = keras.layers
    x = keras.Input((8, 8, 3))
    a = k.Conv2D(4, 3, padding="same", activation="relu")(x)
    if version == 3:
        b = k.Conv2D(4, 1, padding="same", activation="relu")(x)
        y = k.Concatenate()([k.MaxPooling2D(2)(k.Add()([a, b])), k.AveragePooling2D(2)(a)])
        y = k.Dense(6, activation="relu")(k.GlobalAveragePooling2D()(y))
        return keras.Model(x, k.Dense(3, activation="softmax")(y))
    b = k.Conv2D(4, 5, padding="same", activation="relu")(x)
    y = k.Concatenate()([k.Add()([a, b]), k.MaxPooling2D(3, 1, padding="same")(a)])
    y = k.PReLU(alpha_initializer=keras.initializers.RandomUniform(0.1, 0.3))(k.Conv2D(4, 1)(y))
    y = k.Dense(6, activation="sigmoid")(k.GlobalAveragePooling2D()(y))
    return keras.Model(x, k.Dense(3, activation="softmax")(y))


@functools.lru_cache(maxsize=None)
def emc_written(version):
    """The bytes of a kmodel emc writes for keras_seed_model(version)."""
    data = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 3)).astype(np.float32)
    return emc.convert(keras_seed_model(version), dataset=data, version=version).kmodel


def seed_folder(tmp_path, version):
    """The shared kmodel-v<version> files and emc's own, copied into one folder for the workers."""
    folder = REFERENCE / f"kmodel-v{version}"
    if not folder.is_dir() or not list(folder.glob("*.kmodel")):
        pytest.skip(f"{folder} is absent: no reference kmodels to mutate")
    seeds = tmp_path / f"v{version}"
    seeds.mkdir()
    for path in sorted(folder.glob("*.kmodel")):
        shutil.copyfile(path, seeds / path.name)
    (seeds / f"emc_written_v{version}.kmodel").write_bytes(emc_written(version))
    return seeds


def test_the_emc_written_seeds_have_many_layer_kinds():
    v3 = {layer.name for layer in emc.load_kmodel(emc_written(3)).layers}
    v4 = {node.name for node in emc.load_kmodel(emc_written(4)).nodes}
    assert {"K210_CONV", "QUANTIZED_ADD", "QUANTIZED_MAX_POOL2D", "AVERAGE_POOL2D", "QUANTIZED_CONCAT",
            "GLOBAL_AVERAGE_POOL2D", "FULLY_CONNECTED", "SOFTMAX", "QUANTIZE", "DEQUANTIZE"} <= v3, v3
    assert {"kpu_conv2d", "quantized_binary", "concat", "matmul", "nnil_unary_method", "reduce_window2d",
            "softmax"} <= v4, v4


@pytest.mark.parametrize("version", [3, 4])
def test_mutated_kmodels_give_results_or_emc_errors_within_bounds(tmp_path, version):
    seeds = seed_folder(tmp_path, version)
    result = kmodel_fuzz.campaign(str(seeds), CASES, master=MASTER + version, case_seconds=CASE_SECONDS)
    counts = result["counts"]
    assert sum(counts.values()) == CASES and counts["ok"] > CASES // 20 and counts["emc errors"] > CASES // 5
    assert not result["findings"], "\n".join(
        f"case {i}: {outcome} on {name} [{recipe}] {detail} -- kmodel_fuzz.replay({str(seeds)!r}, "
        f"{MASTER + version}, {i})" for i, outcome, name, recipe, detail in result["findings"][:20])
    assert result["peak_rss"] < 1 << 30
