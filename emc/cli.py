"""The `emc` command: convert, inspect, run and compare models from a shell.

Exit codes: 0 success, 1 an unexpected internal error, 2 bad input (a missing file, an unknown name, a model
or dataset emc cannot take, a usage error) -- reported as one line `emc: error: ...` unless --debug.
"""
import argparse
import logging
import os
import sys

from .errors import EmcError

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2
COMMANDS = {}
log = logging.getLogger("emc")


class UsageError(EmcError):
    """A command line that cannot be carried out as written."""


class Parser(argparse.ArgumentParser):
    """argparse with the same one-line error format as every other emc error."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def command(name, help_text):
    """Register a subcommand: the decorated function adds its arguments and returns the function that runs it."""
    def wrap(setup):
        COMMANDS[name] = (help_text, setup)
        return setup
    return wrap


# ---- shared helpers --------------------------------------------------------------------------------------------
def _common(parser, top=False):
    default = False if top else argparse.SUPPRESS
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="no progress bars, only warnings and errors")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show debug messages and full tracebacks")


def _dataset_options(parser, dataset_required):
    parser.add_argument("--dataset", required=dataset_required, metavar="DATA",
                        help="calibration / test data: a folder of images, an image, a .npy or .npz file")
    parser.add_argument("--dataset-func", default="img_0_1", metavar="NAME",
                        help="how an image becomes the model's float input: img_0_1 (pixel/255), img_0_255, "
                             "img_neg1_1, or a name registered with emc.datasets.register (default: img_0_1)")
    parser.add_argument("--mean", type=float, default=None, help="input mean, applied as (x - mean) / std")
    parser.add_argument("--std", type=float, default=None, help="input standard deviation")
    parser.add_argument("--max-samples", type=int, default=None, metavar="N",
                        help="use at most N samples, a seeded random subset (default: convert 256, compare 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample subset (default 0)")


def _need_file(path, what):
    if not os.path.exists(path):
        raise UsageError(f"{what} {path} does not exist")
    return path


def _progress(args):
    return not args.quiet and sys.stderr.isatty()


def _is_kmodel(path):
    from .evaluate import is_kmodel_file
    return os.path.isfile(path) and is_kmodel_file(path)


def _check_names(platform=None, quant=None, dataset_func=None):
    """Fail fast on unknown registry names, before a framework is loaded."""
    from . import datasets, platforms
    from . import quant as quant_registry
    if platform is not None:
        platforms.get(platform)
    if quant is not None:
        quant_registry.get(quant)
    if dataset_func is not None:
        datasets.get(dataset_func)


# ---- emc convert -------------------------------------------------------------------------------------------
@command("convert", "convert a Keras / TensorLayer model for a platform (K210 kmodel, C, STM32)")
def setup_convert(p):
    p.add_argument("model", metavar="MODEL", help="a Keras (.keras, .h5) or TensorLayer (.h5) model file")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file (k210: the .kmodel) or folder (c, stm32)")
    p.add_argument("--platform", default="k210", help="target platform: see 'emc platforms' (default k210)")
    p.add_argument("--version", type=int, default=None, choices=(3, 4), help="k210 kmodel version (default 3)")
    _dataset_options(p, dataset_required=True)
    p.add_argument("--quant", default="minmax", metavar="NAME",
                   help="range function: minmax, kld, l2, percentile, minmax98, meanminmax (default minmax)")
    p.add_argument("--bits", type=int, default=8, help="quantization bits (default 8)")
    p.add_argument("--softmax", action="store_true", help="append a softmax to the outputs")
    p.add_argument("--name", default=None, help="model name inside the artefact (default: the file's stem)")
    p.add_argument("--chip", default=None, metavar="PART",
                   help="c / stm32: check the model fits this part's flash and RAM (stm32f103c8, stm32f411ce, "
                        "stm32f446re, stm32f746ng, stm32h743zi, nrf52840, rp2040, esp32s3, ...); the report says "
                        "how much of it the model uses")
    p.add_argument("--ram-limit", type=int, default=None, metavar="BYTES", help="c / stm32: RAM budget in bytes")
    p.add_argument("--flash-limit", type=int, default=None, metavar="BYTES", help="c / stm32: flash budget in bytes")
    return run_convert


def run_convert(args):
    from .convert import convert
    _need_file(args.model, "model file")
    _need_file(args.dataset, "dataset")
    _check_names(args.platform, args.quant, args.dataset_func)
    options = {}
    if args.platform != "k210":
        for flag, given in (("--version", args.version is not None), ("--softmax", args.softmax)):
            if given:
                raise UsageError(f"{flag} is a k210 option; the {args.platform} platform does not take it"
                                 + (" (add a Softmax layer to the model instead)" if flag == "--softmax" else ""))
    else:
        options["version"] = args.version or 3
    budget = {"chip": args.chip, "ram_limit": args.ram_limit, "flash_limit": args.flash_limit}
    for key, value in budget.items():
        if value is not None:
            if args.platform == "k210":
                raise UsageError(f"--{key.replace('_', '-')} is a c / stm32 option; the K210 report gives the "
                                 f"kmodel's sizes")
            options[key] = value
    if args.softmax:
        options["softmax"] = True
    options["name"] = args.name or _stem(args.output if args.platform == "k210" else args.model)
    artefact = convert(args.model, platform=args.platform, dataset=args.dataset, dataset_func=args.dataset_func,
                       quant_func=args.quant, quant_bit=args.bits, max_samples=args.max_samples or 256,
                       seed=args.seed, mean=args.mean, std=args.std, progress=_progress(args), **options)
    written = artefact.save(args.output)
    print(artefact.report)
    print()
    for path in written:
        print(f"wrote {path} ({os.path.getsize(path):,} bytes)")
    return EXIT_OK


def _stem(path):
    stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    clean = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in stem) or "model"
    return clean if not clean[0].isdigit() else "m_" + clean


# ---- emc inspect -------------------------------------------------------------------------------------------
@command("inspect", "print a kmodel's header, layer table and totals, an emc C artefact's report, or a model's graph")
def setup_inspect(p):
    p.add_argument("file", metavar="FILE", help="a kmodel v3/v4 (anyone's), an emc C artefact folder, or a "
                                                "Keras / TensorLayer model file")
    return run_inspect


def run_inspect(args):
    path = _need_file(args.file, "file")
    if os.path.isdir(path):
        print(_artefact_folder_report(path))
    elif _is_kmodel(path):
        from .platforms.k210.kmodel import load_kmodel
        print(load_kmodel(path))
    elif os.path.splitext(path)[1].lower() in (".h5", ".hdf5", ".keras"):
        from .frontends import load_model
        print(load_model(path).summary())
    else:
        raise UsageError(f"{path} is neither a kmodel (v3 or v4), an emc C artefact folder nor a .h5/.keras model")
    return EXIT_OK


def _artefact_folder_report(folder):
    """The report of an emc C / STM32 artefact folder (saved with it, or rebuilt from its sources)."""
    from .c_folder import describe
    return describe(folder)


# ---- emc run -----------------------------------------------------------------------------------------------
@command("run", "run a kmodel (simulated bit-exactly) or a float model on images or .npy inputs")
def setup_run(p):
    p.add_argument("file", metavar="FILE", help="a kmodel (v3/v4) or a Keras / TensorLayer model file")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files (resized to the model input) or .npy arrays (kmodels: uint8 HWC images or "
                        "float vectors; float models: float input)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line: print the top-k classes")
    p.add_argument("--top", type=int, default=5, metavar="K", help="how many classes with --labels (default 5)")
    p.add_argument("--dataset-func", default="img_0_1", metavar="NAME",
                   help="float models only: how an image becomes the float input (default img_0_1)")
    p.add_argument("--full", action="store_true", help="print every output value, not a summary")
    return run_run


def run_run(args):
    import numpy as np
    _need_file(args.file, "model file")
    for path in args.inputs:
        _need_file(path, "input")
    labels = _read_labels(args.labels) if args.labels else None
    if args.top < 1:
        raise UsageError("--top must be at least 1")
    if _is_kmodel(args.file):
        runner = _kmodel_runner(args.file)
    else:
        runner = _float_runner(args.file, args.dataset_func)
    np.set_printoptions(precision=4, suppress=True, threshold=sys.maxsize if args.full else 20, linewidth=110)
    inputs = args.inputs
    if _progress(args) and len(inputs) > 1:
        from tqdm import tqdm
        inputs = tqdm(inputs, desc="running", unit="input", leave=False, file=sys.stderr)
    for path in inputs:
        for name, outputs in runner(path):
            print(f"{name}:")
            for k, out in enumerate(outputs):
                out = np.asarray(out, np.float32).reshape(-1)
                if labels is not None:
                    print(_top_k(out, labels, args.top, k, len(outputs)))
                else:
                    print(f"  output {k} ({out.size} values): {np.array2string(out, prefix='  ')}")
    return EXIT_OK


def _read_labels(path):
    _need_file(path, "labels file")
    with open(path, encoding="utf-8") as f:
        labels = [line.strip() for line in f.read().splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise UsageError(f"labels file {path} is empty; give one class name per line")
    return labels


def _top_k(values, labels, k, index, count):
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
    model = load_kmodel(path)
    kind, shape = kmodel_input(model)

    def run(item):
        if item.lower().endswith(".npy"):
            x = _load_npy(item)
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


def kmodel_input(model):
    """('kpu', (C, H, W)) for an image-input kmodel (uint8 pixels), ('float', (n,)) for a float-vector one."""
    if model.version == 3:
        from .platforms.k210.v3.simulator import input_spec
        return input_spec(model)
    if len(model.inputs) != 1:
        raise UsageError(f"emc run takes single-input kmodels; this one has {len(model.inputs)} inputs")
    _, c, h, w = model.input_shapes[0]
    if model.inputs[0].dtype == "u8":
        return "kpu", (c, h, w)
    return "float", (c * h * w,)


def _float_runner(path, dataset_func):
    import numpy as np

    from .frontends import load_model
    from .datasets import IMAGE_EXTENSIONS, get
    graph = load_model(path)
    if len(graph.inputs) != 1:
        raise UsageError("emc run takes single-input models")
    shape = graph.input_shapes[0]
    load = get(dataset_func)

    def run(item):
        if os.path.splitext(item)[1].lower() in IMAGE_EXTENSIONS:
            x = np.asarray(_read_image(item, lambda p: load(p, shape)), np.float32)[None]
        else:
            x = np.asarray(_load_npy(item), np.float32)
            if x.shape == shape:
                x = x[None]
        outs = graph.run(x)
        if len(x) == 1:
            return [(item, [o[0] for o in outs])]
        return [(f"{item}[{i}]", [o[i] for o in outs]) for i in range(len(x))]
    return run


# ---- emc compare -------------------------------------------------------------------------------------------
@command("compare", "float model vs kmodel, layer by layer (cosine, SNR), worst layers first")
def setup_compare(p):
    p.add_argument("model", metavar="MODEL", help="the float model (Keras / TensorLayer file)")
    p.add_argument("file", metavar="FILE", help="the kmodel converted from it (emc's, nncase's, Maix-EMC's)")
    _dataset_options(p, dataset_required=True)
    p.add_argument("--plot", metavar="PNG", help="draw the per-layer SNR into this PNG file")
    p.set_defaults(max_samples=32)
    return run_compare


def run_compare(args):
    from .compare import compare
    _need_file(args.model, "model file")
    _need_file(args.file, "kmodel")
    _need_file(args.dataset, "dataset")
    _check_names(dataset_func=args.dataset_func)
    if not _is_kmodel(args.file):
        raise UsageError(f"{args.file} is not a kmodel; emc compare takes a kmodel (v3/v4). For a C artefact use "
                         f"emc.compare(net, artefact, data) in Python")
    result = compare(args.model, args.file, args.dataset, dataset_func=args.dataset_func, mean=args.mean,
                     std=args.std, max_samples=args.max_samples, seed=args.seed, progress=_progress(args))
    print(result)
    if args.plot:
        result.plot(args.plot)
        print(f"\nwrote {args.plot}")
    return EXIT_OK


# ---- emc platforms / layers --------------------------------------------------------------------------------
@command("platforms", "list the platforms emc converts for")
def setup_platforms(p):
    return run_platforms


def run_platforms(args):
    from . import platforms
    for name in platforms.names():
        try:
            module = platforms.get(name)
        except ImportError as err:
            print(f"{name:<8} (cannot be loaded: {err})")
            continue
        table = getattr(module, "TABLE", None)
        doc = ((module.__doc__ or "").strip().splitlines() or [""])[0]
        state = f"{len(table)} op kinds" if table else "not available yet"
        print(f"{name:<8} {state:<18} {doc}")
    return EXIT_OK


@command("layers", "list the graph op kinds a platform supports (from its own TABLE)")
def setup_layers(p):
    p.add_argument("--platform", default="k210", help="platform name (default k210)")
    return run_layers


def run_layers(args):
    from . import platforms
    from .layers import OPS
    module = platforms.get(args.platform)
    table = getattr(module, "TABLE", None)
    if not table:
        raise UsageError(f"platform '{args.platform}' has no TABLE yet: it converts nothing")
    print(f"{args.platform} supports {len(table)} graph op kinds:")
    for kind in sorted(table):
        print(f"  {kind}")
    missing = sorted(set(OPS) - set(table))
    print(f"not supported: {', '.join(missing) if missing else '(none)'}")
    print("each supported op still checks its parameters (kernel, stride, channels ...) and names what it cannot take")
    return EXIT_OK


# ---- main --------------------------------------------------------------------------------------------------
def build_parser():
    parser = Parser(prog="emc", description="emc, the Embedded Model Converter: Keras / TensorLayer networks to "
                                            "K210 kmodels and int8 C for microcontrollers.",
                    epilog="'emc COMMAND --help' describes each command. Exit codes: 0 ok, 2 bad input, 1 bug.")
    _common(parser, top=True)
    parser.add_argument("--version", dest="show_version", action="store_true", help="print emc's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, (help_text, setup) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        _common(p)
        p.set_defaults(run=setup(p))
    return parser


class _CliFormatter(logging.Formatter):
    def format(self, record):
        level = "" if record.levelno == logging.INFO else record.levelname.lower() + ": "
        return f"emc: {level}{record.getMessage()}"


class _NoReports(logging.Filter):
    """The command prints reports on stdout; drop the library's log copy of them."""

    def filter(self, record):
        from .report import Report
        return not any(isinstance(a, Report) or type(a).__name__ == "Comparison" for a in (record.args or ()))


def _configure_logging(args):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_CliFormatter())
    handler.addFilter(_NoReports())
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO)
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv=None):
    """Entry point of the `emc` console script; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")           # keep TensorFlow's start-up chatter quiet
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "show_version", False) and not getattr(args, "command", None):
            from . import __version__
            print(f"emc {__version__}")
            return EXIT_OK
        if not getattr(args, "command", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        _configure_logging(args)
        return args.run(args)
    except KeyboardInterrupt:
        print("emc: interrupted", file=sys.stderr)
        return 130
    except (EmcError, OSError) as err:              # bad input, or files the system will not read / write
        if debug:
            raise
        print(f"emc: error: {_message(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:                       # a bug: say so in one line, the traceback with --debug
        if debug:
            raise
        print(f"emc: internal error: {type(err).__name__}: {err} (run again with --debug for the traceback, "
              f"and report it)", file=sys.stderr)
        return EXIT_INTERNAL


def _message(err):
    if isinstance(err, OSError) and err.filename:
        return f"{err.strerror}: {err.filename}"
    return str(err)


if __name__ == "__main__":
    sys.exit(main())
