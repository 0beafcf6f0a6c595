"""Calibration data: a registry of image loaders (Maix-EMC's names) and load_dataset for folders, files, arrays."""
import os

import numpy as np

from .errors import DatasetError

_FUNCS = {}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def register(name, fn=None):
    """Register fn(path, shape) -> float32 HWC array under name; usable as a decorator."""
    if fn is None:
        return lambda f: register(name, f)
    _FUNCS[name] = fn
    return fn


def get(name):
    if callable(name):
        return name
    try:
        return _FUNCS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset function '{name}'; known: {', '.join(names())}, "
                           f"or pass a callable f(path, (H, W, C))") from None


def names():
    return sorted(_FUNCS)


def read_image(path, shape):
    """uint8 HWC pixels of an image file, RGB or grayscale as shape's C needs, resized (bilinear) to H x W."""
    from PIL import Image
    h, w, c = shape
    if c not in (1, 3):
        raise DatasetError(f"the model input has {c} channels; image datasets give 1 (grayscale) or 3 (RGB): "
                           f"pass an array or a .npy file instead")
    with Image.open(path) as img:
        img = img.convert("L" if c == 1 else "RGB")
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        pixels = np.asarray(img, dtype=np.uint8)
    return pixels.reshape(h, w, c)


def _pixel_func(name, scale, offset):
    def load(path, shape):
        return read_image(path, shape).astype(np.float32) * np.float32(scale) + np.float32(offset)
    load.__name__ = name
    load.pixel_transform = (scale, offset)     # float = pixel * scale + offset, used for device input scaling
    return register(name, load)


_pixel_func("img_0_1", 1.0 / 255.0, 0.0)
_pixel_func("img_0_255", 1.0, 0.0)
_pixel_func("img_neg1_1", 1.0 / 127.5, -1.0)


def _image_files(folder):
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DatasetError(f"dataset folder {folder} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def _load_images(files, shape, fn):
    out, bad = [], []
    for path in files:
        try:
            out.append(np.asarray(fn(path, shape), dtype=np.float32).reshape(shape))
        except DatasetError:
            raise
        except Exception as err:   # PIL raises many types for broken files: collect them all, name each
            bad.append(f"{os.path.basename(path)} ({type(err).__name__}: {err})")
    if bad:
        raise DatasetError(f"{len(bad)} unreadable image file(s) in the dataset: " + "; ".join(bad[:10])
                           + ("" if len(bad) <= 10 else " ...") + " -- remove or fix them")
    return np.stack(out)


def _fit_shape(array, shape, source):
    array = np.asarray(array, dtype=np.float32)
    shape = tuple(shape)
    if array.shape == shape:
        array = array[None]
    if array.shape[1:] != shape and array.ndim == len(shape) and array.shape[1:] + (1,) == shape:
        array = array[..., None]        # (N, H, W) for an (H, W, 1) model
    if array.shape[1:] != shape:
        if int(np.prod(array.shape[1:])) == int(np.prod(shape)) and len(shape) == 1:
            array = array.reshape(len(array), -1)
        else:
            raise DatasetError(f"{source}: samples of shape {array.shape[1:]} do not fit the model input {shape}")
    if array.shape[0] == 0:
        raise DatasetError(f"{source}: the dataset is empty")
    if not np.all(np.isfinite(array)):
        raise DatasetError(f"{source}: the data holds NaN or inf values")
    return array


def load_dataset(dataset, input_shape, dataset_func="img_0_1", max_samples=None, seed=0):
    """Float32 samples (N, *input_shape) from a folder, an image, a .npy/.npz file, an array or a list.

    With max_samples, a seeded random subset (same seed, same subset) keeps calibration deterministic.
    """
    shape = tuple(input_shape)
    if isinstance(dataset, (str, os.PathLike)):
        path = os.fspath(dataset)
        if not os.path.exists(path):
            raise DatasetError(f"dataset {path} does not exist")
        ext = os.path.splitext(path)[1].lower()
        if os.path.isdir(path):
            files = _image_files(path)
            files = _subset(files, max_samples, seed)
            return _fit_shape(_load_images(files, shape, get(dataset_func)), shape, path)
        if ext == ".npy":
            array = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if not z.files:
                    raise DatasetError(f"{path} holds no arrays")
                array = z["x"] if "x" in z.files else z[z.files[0]]
        elif ext in IMAGE_EXTENSIONS:
            array = _load_images([path], shape, get(dataset_func))
        else:
            raise DatasetError(f"dataset {path}: give a folder of images, an image, a .npy or a .npz file")
        source = path
    elif isinstance(dataset, (list, tuple)):
        array = np.stack([np.asarray(a, dtype=np.float32) for a in dataset]) if dataset else np.zeros((0,) + shape)
        source = "dataset list"
    else:
        array, source = dataset, "dataset array"
    array = _fit_shape(array, shape, source)
    return array[_subset(np.arange(len(array)), max_samples, seed)]


def _subset(items, max_samples, seed):
    if max_samples is None or len(items) <= max_samples:
        return items
    picked = np.sort(np.random.default_rng(seed).choice(len(items), size=int(max_samples), replace=False))
    return [items[i] for i in picked] if isinstance(items, list) else items[picked]
