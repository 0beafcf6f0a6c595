"""Dataset loading: Maix-EMC's image functions on the shared images, files, arrays and bad input."""
import numpy as np
import pytest
from PIL import Image

import emc
from emc import datasets
from conftest import reference_path


def test_img_functions_on_shared_cifar_images():
    folder = reference_path("images", "cifar10")
    x = datasets.load_dataset(folder, (32, 32, 3), "img_0_1")
    assert x.shape == (10, 32, 32, 3) and x.dtype == np.float32
    names = sorted(p.name for p in folder.iterdir())
    black = names.index("1.bmp")
    assert x[black].max() == 0.0                     # 1.bmp is all black
    ref = np.asarray(Image.open(folder / names[0]).convert("RGB"), np.float32) / 255
    np.testing.assert_allclose(x[0], ref, atol=1e-6)
    y = datasets.load_dataset(folder, (32, 32, 3), "img_neg1_1")
    np.testing.assert_allclose(y, x * 255 / 127.5 - 1, atol=1e-5)
    g = datasets.load_dataset(folder, (16, 16, 1), "img_0_255")
    assert g.shape == (10, 16, 16, 1) and g.max() > 1


def test_cap_is_seeded_and_reproducible():
    folder = reference_path("images", "cifar10")
    a = datasets.load_dataset(folder, (8, 8, 3), max_samples=4, seed=3)
    b = datasets.load_dataset(folder, (8, 8, 3), max_samples=4, seed=3)
    c = datasets.load_dataset(folder, (8, 8, 3), max_samples=4, seed=4)
    assert a.shape[0] == 4 and np.array_equal(a, b) and not np.array_equal(a, c)


def test_arrays_and_files(tmp_path):
    arr = np.random.default_rng(0).random((5, 28, 28)).astype(np.float32)
    np.save(tmp_path / "d.npy", arr)
    np.savez(tmp_path / "d.npz", x=arr)
    for source in (arr, tmp_path / "d.npy", tmp_path / "d.npz", list(arr)):
        assert datasets.load_dataset(source, (28, 28, 1)).shape == (5, 28, 28, 1)
    with pytest.raises(emc.DatasetError, match="do not fit"):
        datasets.load_dataset(np.zeros((3, 10)), (32, 32, 3))
    with pytest.raises(emc.DatasetError, match="NaN"):
        datasets.load_dataset(np.full((2, 4), np.nan), (4,))


def test_bad_folders(tmp_path):
    with pytest.raises(emc.DatasetError, match="no image files"):
        datasets.load_dataset(tmp_path, (8, 8, 3))
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "bad2.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(emc.DatasetError) as info:
        datasets.load_dataset(tmp_path, (8, 8, 3))
    assert "broken.jpg" in str(info.value) and "bad2.png" in str(info.value)
    with pytest.raises(emc.DatasetError, match="does not exist"):
        datasets.load_dataset(tmp_path / "missing", (8, 8, 3))
    with pytest.raises(emc.DatasetError, match="channels"):
        datasets.load_dataset(tmp_path, (8, 8, 4))


def test_registry_and_custom_function(tmp_path):
    Image.new("L", (4, 4), color=7).save(tmp_path / "a.png")
    datasets.register("sevens", lambda path, shape: np.full(shape, 7.0))
    assert datasets.load_dataset(tmp_path, (2, 2, 1), "sevens").max() == 7.0
    assert datasets.load_dataset(tmp_path, (2, 2, 1), lambda p, s: np.ones(s)).sum() == 4
    with pytest.raises(emc.DatasetError, match="unknown dataset function"):
        datasets.load_dataset(tmp_path, (2, 2, 1), "nope")
