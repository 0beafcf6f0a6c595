"""What `emc run` and `emc evaluate` run: a kmodel (simulated), an emc C / STM32 folder (its C compiled on the
host) or a float model file, fed with images (through a dataset function, then (x - mean) / std) or arrays."""
import os

from .errors import EmcError


class UsageError(EmcError):
    """A command line that cannot be carried out as written."""


def _need_file(path, what):
    if not os.path.exists(path):
        raise UsageError(f"{what} {path} does not exist")
    return path


def runner_for(path, dataset_func="img_0_1", mean=None, std=None):
    """Per input path: [(display name, [flat outputs])] -- for a kmodel, a C folder or a float model file."""
    from .c_folder import is_c_folder
    from .evaluate import is_kmodel_file
    if os.path.isfile(path) and (is_kmodel_file(path) or path.lower().endswith(".kmodel")):
        return _kmodel_runner(path)         # a damaged .kmodel: load_kmodel says what is wrong with it
    if os.path.isdir(path):
        if not is_c_folder(path):
            raise UsageError(f"{path} is a folder but holds no emc-generated C model; give a kmodel, the folder "
                             f"'emc convert --platform c' wrote, or a .h5 / .keras model")
        from .c_folder import CFolder
        folder = CFolder(path)
        return _float_runner(folder.predict, folder.input_shape, dataset_func, mean, std)
    from .frontends import load_model
    graph = load_model(path)
    if len(graph.inputs) != 1:
        raise UsageError("emc run takes single-input models")
    return _float_runner(graph.run, graph.input_shapes[0], dataset_func, mean, std)


def read_labels(path):
    _need_file(path, "labels file")
    with open(path, encoding="utf-8") as f:
        labels = [line.strip() for line in f.read().splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise UsageError(f"labels file {path} is empty; give one class name per line")
    return labels


def top_k_text(values, labels, k, index, count):
    import numpy as np
    order = np.argsort(-values, kind="stable")[:k]
    head = f"  output {index} top-{min(k, values.size)}:" if count > 1 else f"  top-{min(k, values.size)}:"
    lines = [head]
    for rank, c in enumerate(order, 1):
        name = labels[c] if c < len(labels) else f"(no label: only {len(labels)} in the file)"
        lines.append(f"    {rank}. {values[c]:10.4f}  {c:>4}  {name}")
    return "\n".join(lines)


def _read_image(path, read):
    """read(path), with an unreadable image reported as bad input, not as a crash."""
    try:
        return read(path)
    except OSError as err:                       # PIL's UnidentifiedImageError is an OSError
        raise UsageError(f"cannot read image {path} ({err}); give an image file or a .npy array") from None


def _load_npy(path):
    import numpy as np
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise UsageError(f"{path} is not a readable .npy array ({err})") from None


def _kmodel_runner(path):
    """Per input path: [(display name, [flat outputs])] from the kmodel simulator."""
    import numpy as np

    from .platforms.k210.kmodel import load_kmodel, run_kmodel
    from .datasets import read_image
    from .evaluate import kmodel_input
    from .inputs import input_array
    model = load_kmodel(path)
    kind, shape = kmodel_input(model)

    def run(item):
        if item.lower().endswith(".npy"):
            x = input_array(_load_npy(item), f"input {item}")
            if kind == "float":
                x = np.asarray(x, np.float32)
        elif kind != "kpu":
            raise UsageError(f"{path} takes {shape[0]} float values, not an image: give a .npy file")
        else:
            c, h, w = shape
            x = _read_image(item, lambda p: read_image(p, (h, w, c)))
        outs = run_kmodel(model, x)
        batched = np.ndim(x) == (4 if kind == "kpu" else 2)
        if not batched:
            return [(item, outs)]
        return [(f"{item}[{i}]", [o[i] for o in outs]) for i in range(len(x))]
    return run


def _float_runner(forward, shape, dataset_func, mean=None, std=None):
    """Runner of a float-input model: forward(x batch) -> outputs; images are read to the per-sample shape."""
    import numpy as np

    from .convert import normalise
    from .datasets import IMAGE_EXTENSIONS, get
    load = get(dataset_func)

    def run(item):
        if os.path.splitext(item)[1].lower() in IMAGE_EXTENSIONS:
            x = np.asarray(_read_image(item, lambda p: load(p, shape)), np.float32)[None]
            x = normalise(x, mean, std)
        else:
            x = np.asarray(_load_npy(item), np.float32)
            if x.shape == shape:
                x = x[None]
        outs = forward(x)
        if len(x) == 1:
            return [(item, [o[0] for o in outs])]
        return [(f"{item}[{i}]", [o[i] for o in outs]) for i in range(len(x))]
    return run


def evaluate_command(args, progress):
    """`emc evaluate MODEL DATA`: the Evaluation of the model on a labelled folder or a .npz of x and y."""
    import numpy as np

    from .convert import normalise
    from .evaluate import _pixel_mapping, evaluate
    labels = read_labels(args.labels) if args.labels else None
    transform = _pixel_mapping(args.dataset_func, args.mean, args.std)
    if args.batch_size < 1 or args.workers < 1 or min(args.top) < 1:
        raise UsageError("--batch-size, --workers and --top take positive numbers")
    options = dict(top_k=tuple(args.top), timing=args.timing, batch_size=args.batch_size, workers=args.workers,
                   input_transform=transform, progress=progress)
    if os.path.isdir(args.data):
        result = evaluate(args.model, args.data, dataset_func=args.dataset_func, mean=args.mean, std=args.std,
                          labels=labels, **options)
    else:
        try:
            with np.load(args.data, allow_pickle=False) as arrays:
                x, y = arrays["x"], arrays["y"]
        except (KeyError, ValueError, OSError) as err:
            raise UsageError(f"{args.data}: give a folder with one subfolder per class, or a .npz file holding "
                             f"arrays 'x' (inputs, batch first) and 'y' (labels) ({err})") from None
        if args.mean is not None or args.std is not None:
            x = normalise(np.asarray(x, np.float32), args.mean, args.std)
        result = evaluate(args.model, x, y, **options)
        result.labels = labels
    return result
