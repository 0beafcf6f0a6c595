"""Calibration data: a registry of image loaders (Maix-EMC's names) and load_dataset for folders, files, arrays."""
import logging
import os

import numpy as np

from .errors import DatasetError

log = logging.getLogger(__name__)

_FUNCS = {}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
                    ".pnm", ".ico", ".jp2", ".tga"}
# Files in a dataset folder that are clearly not images: skipped. Anything else is read as an image.
NOT_IMAGE_EXTENSIONS = {".txt", ".md", ".rst", ".csv", ".tsv", ".json", ".xml", ".yaml", ".yml", ".ini", ".cfg",
                        ".toml", ".log", ".py", ".ipynb", ".sh", ".html", ".pdf", ".npy", ".npz", ".h5", ".hdf5",
                        ".keras", ".kmodel", ".tflite", ".pb", ".onnx", ".pkl", ".pickle", ".zip", ".tar", ".gz",
                        ".tgz", ".bz2", ".xz", ".7z", ".db", ".c", ".h", ".bin"}


def register(name, fn=None):
    """Register fn(path, (H, W, C)) -> float32 HWC array under name; usable as a decorator."""
    if fn is None:
        return lambda f: register(name, f)
    if not isinstance(name, str) or not name:
        raise DatasetError(f"a dataset function name must be a non-empty string, not {name!r}")
    if not callable(fn):
        raise DatasetError(f"dataset function '{name}' must be callable as fn(path, (H, W, C))")
    _FUNCS[name] = fn
    return fn


def get(name):
    """The dataset function registered under a name, or the callable itself."""
    if callable(name):
        return name
    try:
        return _FUNCS[name]
    except (KeyError, TypeError):
        raise DatasetError(f"unknown dataset function {name!r}; known: {', '.join(names())}, "
                           f"or pass a callable f(path, (H, W, C))") from None


def names():
    """Registered names, sorted."""
    return sorted(_FUNCS)


def read_image(path, shape):
    """uint8 HWC pixels of an image file, RGB or grayscale as shape's C needs, resized (bilinear) to H x W."""
    from PIL import Image
    if len(shape) != 3:
        raise DatasetError(f"image datasets need a model input of shape (H, W, C), this one is {tuple(shape)}: "
                           f"pass an array or a .npy file of samples instead")
    h, w, c = shape
    if c not in (1, 3):
        raise DatasetError(f"the model input has {c} channels; image datasets give 1 (grayscale) or 3 (RGB): "
                           f"pass an array or a .npy file instead, or a dataset function of your own")
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
    load.__doc__ = f"Image pixels p (0..255) as float32 p * {scale:.6g} + {offset:g} (Maix-EMC's {name})."
    load.pixel_transform = (scale, offset)     # float = pixel * scale + offset, used for device input scaling
    return register(name, load)


_pixel_func("img_0_1", 1.0 / 255.0, 0.0)
_pixel_func("img_0_255", 1.0, 0.0)
_pixel_func("img_neg1_1", 1.0 / 127.5, -1.0)


def _folder_files(folder):
    """Files of a folder that may be images, sorted by name (hidden files, subfolders and clear non-images skipped)."""
    entries = sorted(os.listdir(folder))
    files, subfolders = [], []
    for entry in entries:
        path = os.path.join(folder, entry)
        if entry.startswith("."):
            continue
        if os.path.isdir(path):
            subfolders.append(entry)
        elif os.path.splitext(entry)[1].lower() not in NOT_IMAGE_EXTENSIONS:
            files.append(path)
    if not files:
        hint = (f"; its subfolders ({', '.join(subfolders[:5])}{' ...' if len(subfolders) > 5 else ''}) are not "
                f"searched: point at a folder that holds the images" if subfolders else "")
        raise DatasetError(f"dataset folder {folder} holds no image files{hint}; add calibration images "
                           f"({', '.join(sorted(IMAGE_EXTENSIONS)[:6])} ...) or give a .npy file")
    skipped = len(entries) - len(files) - len(subfolders)
    if skipped or subfolders:
        log.debug("dataset folder %s: %d files skipped as non-images, %d subfolders ignored", folder, skipped,
                  len(subfolders))
    return files


def _load_sample(fn, path, shape):
    """One sample from a dataset function, checked to have the model's input shape."""
    value = np.asarray(fn(path, shape), dtype=np.float32)
    if value.shape != shape:
        if value.shape + (1,) == shape:
            return value[..., None]
        raise DatasetError(f"dataset function {getattr(fn, '__name__', fn)} returned shape {value.shape} for "
                           f"{os.path.basename(path)}, but the model input is {shape}: make it return (H, W, C)")
    return value


def _load_images(files, shape, fn):
    """Stack of fn(file) for every file; every unreadable file is named in one DatasetError."""
    out, bad = [], []
    for path in files:
        try:
            out.append(_load_sample(fn, path, shape))
        except DatasetError:
            raise
        except Exception as err:   # PIL raises many types for broken files: collect them all, name each
            bad.append(f"{os.path.basename(path)} ({type(err).__name__}: {err})")
    if bad:
        raise DatasetError(f"{len(bad)} unreadable image file(s) in the dataset: " + "; ".join(bad)
                           + " -- remove, fix or convert them")
    return np.stack(out)


def _fit_shape(array, shape, source):
    """(N, *shape) float32 samples from an array of samples, one sample, or samples lacking a 1-channel axis."""
    try:
        array = np.asarray(array, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{source}: the data is not a numeric array ({err}); give float or integer samples") \
            from None
    fits = [                                                                    # (applies, fix), first wins
        (array.shape == shape, lambda a: a[None]),                              # one sample
        (array.shape[1:] == shape, lambda a: a),                                # samples
        (shape[-1:] == (1,) and array.shape[1:] == shape[:-1], lambda a: a[..., None]),   # (N, H, W), C = 1
        (shape[-1:] == (1,) and array.shape == shape[:-1], lambda a: a[None, ..., None]),
        (len(shape) == 1 and array.ndim > 1 and int(np.prod(array.shape[1:])) == shape[0],
         lambda a: a.reshape(len(a), -1)),                                      # images for a vector model
    ]
    fix = next((f for applies, f in fits if applies), None)
    if fix is None:
        hint = ""
        if len(shape) == 3 and array.ndim == 4 and array.shape[1:] == (shape[2], shape[0], shape[1]):
            hint = " -- it looks channels-first (NCHW): transpose it with x.transpose(0, 2, 3, 1)"
        raise DatasetError(f"{source}: samples of shape {array.shape[1:]} (array {array.shape}) do not fit the "
                           f"model input {shape}; give an array of shape (N, {', '.join(map(str, shape))})" + hint)
    array = fix(array)
    if array.shape[0] == 0:
        raise DatasetError(f"{source}: the dataset is empty; give at least one sample")
    finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DatasetError(f"{source}: {len(bad)} sample(s) hold NaN or inf values (first: sample {bad[0]}); "
                           f"remove or replace them")
    return array


def _load_file(path, shape, fn):
    """Array of a .npy/.npz file, or the single image of an image file."""
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            return np.load(path, allow_pickle=False)
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if not z.files:
                    raise DatasetError(f"{path} holds no arrays; save the samples with np.savez(path, x=samples)")
                return z["x"] if "x" in z.files else z[z.files[0]]
    except DatasetError:
        raise
    except Exception as err:
        raise DatasetError(f"cannot read {path} as a numpy file ({type(err).__name__}: {err}); save the samples "
                           f"with np.save / np.savez (no pickled objects)") from None
    if ext in NOT_IMAGE_EXTENSIONS:
        raise DatasetError(f"dataset {path}: give a folder of images, an image, a .npy or a .npz file")
    return _load_images([path], shape, fn)


def _subset(count, max_samples, seed):
    """Sorted indices of a seeded random subset of at most max_samples out of count (all when no cap)."""
    if max_samples is None or count <= max_samples:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=int(max_samples), replace=False))


def _check_shape(input_shape):
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise DatasetError(f"input_shape must be the model's per-sample input shape, e.g. (H, W, C) with fixed "
                           f"positive sizes, not {input_shape!r}")
    return shape


def load_dataset(dataset, input_shape, dataset_func="img_0_1", max_samples=None, seed=0):
    """Float32 samples (N, *input_shape) from a folder, an image, a .npy/.npz file, an array or a list.

    Images go through dataset_func (a registered name or a callable (path, shape) -> HWC array). With
    max_samples, a seeded random subset (same seed, same subset) keeps calibration deterministic.
    """
    shape = _check_shape(input_shape)
    if max_samples is not None and (isinstance(max_samples, bool) or int(max_samples) != max_samples
                                    or max_samples < 1):
        raise DatasetError(f"max_samples must be a positive integer or None, not {max_samples!r}")
    fn = get(dataset_func)
    if isinstance(dataset, (str, os.PathLike)):
        path = os.fspath(dataset)
        if not os.path.exists(path):
            raise DatasetError(f"dataset {path} does not exist; give a folder of images, an image, a .npy or "
                               f"a .npz file")
        if os.path.isdir(path):
            files = _folder_files(path)
            files = [files[i] for i in _subset(len(files), max_samples, seed)]
            log.info("loading %d images from %s with %s", len(files), path, getattr(fn, "__name__", fn))
            return _fit_shape(_load_images(files, shape, fn), shape, path)
        array, source = _load_file(path, shape, fn), path
    elif isinstance(dataset, (list, tuple)):
        array, source = _stack_list(dataset, shape, fn), "dataset list"
    else:
        array, source = dataset, "dataset array"
    array = _fit_shape(array, shape, source)
    _check_range(array, shape, fn, source)
    return np.ascontiguousarray(array[_subset(len(array), max_samples, seed)])


def _check_range(array, shape, fn, source):
    """Image-shaped arrays are taken as the dataset function's output (e.g. pixel / 255 for img_0_1), and the
    K210 maps camera pixels to the model's input with that function: 0..255 data calibrated as img_0_1 converts
    without a word and the device then scores like chance. An array whose range contradicts the function (above
    its top by half its span, or below its bottom by 0.2% of it) is an error naming the range and the fix. Image
    folders go through the function and need no check; vectors and non-image shapes have no pixel mapping."""
    transform = getattr(fn, "pixel_transform", None)
    if transform is None or len(shape) != 3 or shape[-1] not in (1, 3) or not array.size:
        return
    scale, offset = transform
    lo, hi = sorted((offset, 255.0 * scale + offset))
    span = hi - lo
    seen_lo, seen_hi = float(np.min(array)), float(np.max(array))
    if seen_hi <= hi + 0.5 * span and seen_lo >= lo - 0.002 * span:
        return
    name = getattr(fn, "__name__", "the dataset function")
    fits = [n for n, f in sorted(_FUNCS.items()) if getattr(f, "pixel_transform", None) is not None
            and _covers(f.pixel_transform, seen_lo, seen_hi)]
    hint = f"pass dataset_func={fits[0]!r} (--dataset-func {fits[0]})" if fits else \
        "give the samples as the model takes them"
    raise DatasetError(f"{source}: values range from {seen_lo:g} to {seen_hi:g}, but dataset function {name!r} "
                       f"gives {lo:g}..{hi:g} (camera pixels p 0..255 as p * {scale:.6g} + {offset:g}); {hint}, "
                       f"or rescale the array to {lo:g}..{hi:g}")


def _covers(transform, seen_lo, seen_hi):
    scale, offset = transform
    lo, hi = sorted((offset, 255.0 * scale + offset))
    return lo - 0.02 * (hi - lo) <= seen_lo and seen_hi <= hi + 0.02 * (hi - lo) and seen_hi > lo + 0.5 * (hi - lo)


def _stack_list(items, shape, fn):
    """Samples of a list: image paths go through the dataset function, arrays are stacked."""
    if not items:
        raise DatasetError("the dataset list is empty; give at least one sample")
    if all(isinstance(i, (str, os.PathLike)) for i in items):
        return _load_images([os.fspath(i) for i in items], shape, fn)
    try:
        arrays = [np.asarray(i, dtype=np.float32) for i in items]
    except (TypeError, ValueError) as err:
        raise DatasetError(f"the dataset list holds a non-numeric item ({err}); give arrays or image paths") \
            from None
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise DatasetError(f"the dataset list holds samples of different shapes {shapes[:4]}: give samples of "
                           f"the model input shape {shape}")
    return np.stack(arrays)


def iter_batches(data, batch_size):
    """Consecutive batches of data (an array, or a list of arrays for several inputs, batch axis first)."""
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise DatasetError(f"batch_size must be a positive integer, not {batch_size!r}")
    several = isinstance(data, (list, tuple))
    arrays = list(data) if several else [data]
    total = len(arrays[0])
    for start in range(0, total, int(batch_size)):
        batch = [a[start:start + batch_size] for a in arrays]
        yield batch if several else batch[0]
