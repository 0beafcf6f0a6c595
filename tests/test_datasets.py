"""Dataset loading: Maix-EMC's image functions on the shared images, tmp folders, files, arrays and bad input."""
import numpy as np
import pytest
from PIL import Image

import emc
from emc import datasets
from conftest import reference_path


def cifar():
    folder = reference_path("images", "cifar10")
    return folder, sorted(p.name for p in folder.iterdir())


def test_img_functions_on_shared_cifar_images():
    folder, names = cifar()
    x = datasets.load_dataset(folder, (32, 32, 3), "img_0_1")
    assert x.shape == (10, 32, 32, 3) and x.dtype == np.float32
    assert x[names.index("1.bmp")].max() == 0.0                     # 1.bmp is all black
    for i in (0, 9):
        raw = np.asarray(Image.open(folder / names[i]).convert("RGB"), np.float32)
        np.testing.assert_allclose(x[i], raw / 255, atol=1e-6)
    np.testing.assert_allclose(datasets.load_dataset(folder, (32, 32, 3), "img_neg1_1"), x * 2 - 1, atol=1e-5)
    raw255 = datasets.load_dataset(folder, (32, 32, 3), "img_0_255")
    np.testing.assert_allclose(raw255, x * 255, atol=1e-4)
    assert raw255.max() > 200 and np.all(raw255 == np.round(raw255))   # raw pixel values as float
    for name in ("img_0_1", "img_0_255", "img_neg1_1"):                # the advertised pixel mapping holds
        scale, offset = datasets.get(name).pixel_transform
        np.testing.assert_allclose(datasets.load_dataset(folder, (32, 32, 3), name), raw255 * scale + offset,
                                   atol=1e-5)


def test_grayscale_and_resized_inputs():
    folder, names = cifar()
    gray = datasets.load_dataset(folder, (32, 32, 1), "img_0_255")
    rgb = np.asarray(Image.open(folder / names[0]).convert("RGB"), np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])                        # ITU-R 601, written independently
    assert gray.shape == (10, 32, 32, 1) and np.abs(gray[0, ..., 0] - luma).max() <= 1.0
    small = datasets.load_dataset(folder, (16, 24, 3), "img_0_255")
    ref = np.asarray(Image.open(folder / names[0]).convert("RGB").resize((24, 16), Image.BILINEAR), np.float32)
    assert small.shape == (10, 16, 24, 3)
    np.testing.assert_array_equal(small[0], ref)


def test_cap_is_a_seeded_reproducible_subset():
    folder, _ = cifar()
    full = datasets.load_dataset(folder, (8, 8, 3))
    a = datasets.load_dataset(folder, (8, 8, 3), max_samples=4, seed=3)
    b = datasets.load_dataset(folder, (8, 8, 3), max_samples=4, seed=3)
    c = datasets.load_dataset(folder, (8, 8, 3), max_samples=4, seed=4)
    assert a.shape[0] == 4 and np.array_equal(a, b) and not np.array_equal(a, c)
    picked = np.sort(np.random.default_rng(3).choice(10, size=4, replace=False))
    np.testing.assert_array_equal(a, full[picked])                      # sorted indices from default_rng(seed)
    arr = np.arange(50, dtype=np.float32).reshape(10, 5)
    np.testing.assert_array_equal(datasets.load_dataset(arr, (5,), max_samples=4, seed=3), arr[picked])
    assert len(datasets.load_dataset(arr, (5,), max_samples=99)) == 10
    with pytest.raises(emc.DatasetError, match="max_samples"):
        datasets.load_dataset(arr, (5,), max_samples=0)


def test_arrays_and_files(tmp_path):
    arr = np.random.default_rng(0).random((5, 28, 28)).astype(np.float32)
    np.save(tmp_path / "d.npy", arr)
    np.savez(tmp_path / "d.npz", x=arr, y=np.zeros(3))
    np.savez(tmp_path / "first.npz", arr)
    for source in (arr, tmp_path / "d.npy", str(tmp_path / "d.npz"), tmp_path / "first.npz", list(arr)):
        got = datasets.load_dataset(source, (28, 28, 1))
        assert got.shape == (5, 28, 28, 1) and got.dtype == np.float32
        np.testing.assert_array_equal(got[..., 0], arr)
    assert datasets.load_dataset(arr[0], (28, 28, 1)).shape == (1, 28, 28, 1)         # one sample
    assert datasets.load_dataset(arr, (784,)).shape == (5, 784)                         # images for a vector model
    assert datasets.load_dataset(np.ones((2, 4), np.uint8), (4,)).dtype == np.float32


def test_bad_arrays_and_files(tmp_path):
    with pytest.raises(emc.DatasetError, match=r"do not fit the model input \(32, 32, 3\)"):
        datasets.load_dataset(np.zeros((3, 10)), (32, 32, 3))
    with pytest.raises(emc.DatasetError, match="channels-first"):
        datasets.load_dataset(np.zeros((2, 3, 32, 32)), (32, 32, 3))
    with pytest.raises(emc.DatasetError, match="NaN or inf.*sample 1"):
        datasets.load_dataset(np.array([[0, 1, 2, 3], [0, np.inf, 0, 0]], np.float32), (4,))
    with pytest.raises(emc.DatasetError, match="NaN"):
        datasets.load_dataset(np.full((2, 4), np.nan), (4,))
    with pytest.raises(emc.DatasetError, match="empty"):
        datasets.load_dataset(np.zeros((0, 4)), (4,))
    with pytest.raises(emc.DatasetError, match="empty"):
        datasets.load_dataset([], (4,))
    with pytest.raises(emc.DatasetError, match="different shapes"):
        datasets.load_dataset([np.zeros(4), np.zeros(5)], (4,))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(emc.DatasetError, match="obj.npy"):
        datasets.load_dataset(tmp_path / "obj.npy", (4,))
    np.savez(tmp_path / "none.npz")
    with pytest.raises(emc.DatasetError, match="holds no arrays"):
        datasets.load_dataset(tmp_path / "none.npz", (4,))
    with pytest.raises(emc.DatasetError, match="input_shape"):
        datasets.load_dataset(np.zeros((2, 4)), (None, 4))


def test_folders_skip_non_images_and_name_every_unreadable_file(tmp_path):
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "b.png")
    Image.new("RGB", (8, 8), (40, 50, 60)).save(tmp_path / "a.jpg", quality=100)
    (tmp_path / "labels.txt").write_text("cat\n")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "sub").mkdir()
    x = datasets.load_dataset(tmp_path, (8, 8, 3), "img_0_255")
    assert x.shape == (2, 8, 8, 3) and np.abs(x[1] - [10, 20, 30]).max() == 0    # sorted by name: a.jpg, b.png
    broken = [f"broken{i:02d}.jpg" for i in range(12)] + ["noext", "weird.dat"]
    for name in broken:
        (tmp_path / name).write_bytes(b"not an image")
    with pytest.raises(emc.DatasetError) as info:
        datasets.load_dataset(tmp_path, (8, 8, 3))
    assert "14 unreadable" in str(info.value)
    assert all(name in str(info.value) for name in broken) and "labels.txt" not in str(info.value)


def test_bad_folders(tmp_path):
    with pytest.raises(emc.DatasetError, match="no image files"):
        datasets.load_dataset(tmp_path, (8, 8, 3))
    (tmp_path / "class_a").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(emc.DatasetError, match="no image files.*class_a.*not searched"):
        datasets.load_dataset(tmp_path, (8, 8, 3))
    with pytest.raises(emc.DatasetError, match="does not exist"):
        datasets.load_dataset(tmp_path / "missing", (8, 8, 3))
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    with pytest.raises(emc.DatasetError, match="4 channels"):
        datasets.load_dataset(tmp_path, (8, 8, 4))
    with pytest.raises(emc.DatasetError, match=r"\(H, W, C\)"):
        datasets.load_dataset(tmp_path, (64,))
    with pytest.raises(emc.DatasetError, match="numpy file|image"):
        datasets.load_dataset(tmp_path / "notes.txt", (8, 8, 3))


def test_single_image_and_list_of_image_paths(tmp_path):
    Image.new("L", (4, 4), color=200).save(tmp_path / "g.png")
    Image.new("RGB", (4, 4), color=(0, 100, 255)).save(tmp_path / "c.png")
    one = datasets.load_dataset(tmp_path / "c.png", (4, 4, 3), "img_0_255")
    assert one.shape == (1, 4, 4, 3) and one[0, 0, 0].tolist() == [0, 100, 255]
    both = datasets.load_dataset([tmp_path / "g.png", str(tmp_path / "c.png")], (2, 2, 3), "img_0_255")
    assert both.shape == (2, 2, 2, 3) and both[0].min() == both[0].max() == 200


def test_registry_and_custom_functions(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_FUNCS", dict(datasets._FUNCS))   # leave the registry as found
    Image.new("L", (4, 4), color=7).save(tmp_path / "a.png")
    datasets.register("sevens", lambda path, shape: np.full(shape, 7.0))

    @datasets.register("flat")
    def flat(path, shape):
        return np.zeros(shape[:2])                                      # (H, W) for a 1-channel model is fine
    assert {"img_0_1", "img_0_255", "img_neg1_1", "sevens", "flat"} <= set(datasets.names())
    assert datasets.load_dataset(tmp_path, (2, 2, 1), "sevens").max() == 7.0
    assert datasets.load_dataset(tmp_path, (2, 2, 1), "flat").shape == (1, 2, 2, 1)
    assert datasets.load_dataset(tmp_path, (2, 2, 1), lambda p, s: np.ones(s)).sum() == 4
    with pytest.raises(emc.DatasetError, match="returned shape \\(3,\\)"):
        datasets.load_dataset(tmp_path, (2, 2, 1), lambda p, s: np.ones(3))
    with pytest.raises(emc.DatasetError, match="unknown dataset function 'nope'.*img_0_1"):
        datasets.load_dataset(tmp_path, (2, 2, 1), "nope")
    with pytest.raises(emc.DatasetError, match="NaN"):
        datasets.load_dataset(tmp_path, (2, 2, 1), lambda p, s: np.full(s, np.nan))


def test_iter_batches():
    x, y = np.arange(10), np.arange(10, 20)
    assert [b.tolist() for b in datasets.iter_batches(x, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    pairs = list(datasets.iter_batches([x, y], 6))
    assert len(pairs) == 2 and pairs[1][1].tolist() == [16, 17, 18, 19]
    with pytest.raises(emc.DatasetError, match="batch_size"):
        list(datasets.iter_batches(x, 0))


def test_array_range_must_match_the_dataset_function(tmp_path):
    """0..255 data with img_0_1 (the default) is an error naming the range and the fix; so are negatives with
    img_0_255; matching data, vectors and image folders pass."""
    pixels = np.random.default_rng(3).integers(0, 256, (4, 8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", pixels)
    with pytest.raises(emc.DatasetError, match=r"x.npy: values range from 0 to 255.*'img_0_1' gives 0..1.*"
                                               r"dataset_func='img_0_255'"):
        datasets.load_dataset(str(tmp_path / "x.npy"), (8, 8, 3))
    np.savez(tmp_path / "x.npz", x=pixels / 127.5 - 1)
    with pytest.raises(emc.DatasetError, match=r"from -1 to .*'img_0_255'.*dataset_func='img_neg1_1'"):
        datasets.load_dataset(str(tmp_path / "x.npz"), (8, 8, 3), dataset_func="img_0_255")
    with pytest.raises(emc.DatasetError, match="'img_neg1_1' gives -1..1"):
        datasets.load_dataset(pixels, (8, 8, 3), dataset_func="img_neg1_1")
    assert datasets.load_dataset(pixels, (8, 8, 3), dataset_func="img_0_255").max() == pixels.max()
    assert datasets.load_dataset(pixels / 255, (8, 8, 3)).shape == (4, 8, 8, 3)
    assert datasets.load_dataset(pixels.reshape(4, -1), (192,)).max() == pixels.max()      # a vector: no pixel mapping
