"""The `emc` command: convert, inspect, run and compare models from a shell.

Exit codes: 0 success, 1 an unexpected internal error, 2 bad input (a missing file, an unknown name, a model
or dataset emc cannot take, a usage error) -- reported as one line `emc: error: ...` unless --debug.
"""
import argparse
import logging
import os
import sys

from .cli_runners import UsageError, _need_file, read_labels, runner_for, top_k_text
from .errors import EmcError
from .fileio import check_not_input

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2
COMMANDS = {}
log = logging.getLogger("emc")


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


def _check_dataset_options(args):
    """Fail fast on --max-samples / --mean / --std values that cannot work, naming the flag."""
    from .convert import check_normalisation
    if args.max_samples is not None and args.max_samples < 1:
        raise UsageError(f"--max-samples must be at least 1 (how many samples to use), not {args.max_samples}; "
                         f"leave it out for the default")
    check_normalisation(args.mean, args.std)


def _progress(args):
    return not args.quiet and sys.stderr.isatty()


def _is_kmodel(path):
    from .evaluate import is_kmodel_file
    return os.path.isfile(path) and is_kmodel_file(path)


def _quiet_frameworks(args):
    """TensorFlow's and Keras' start-up chatter kept quiet should a framework start (all of it shown with --debug)."""
    if not args.debug:
        from .quiet import quiet_frameworks
        quiet_frameworks()


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
    p.add_argument("--name", default=None,
                   help="model name inside the artefact and its report (default: the model's own name)")
    p.add_argument("--ram-limit", type=_byte_count, default=None, metavar="BYTES",
                   help="fail when the model needs more RAM (k210: kmodel + main buffer in SRAM, default 6M; "
                        "c/stm32: the working buffer plus input/output buffers, default no limit); K/M suffixes allowed, 'none' for no limit")
    p.add_argument("--dense", choices=("auto", "kpu", "cpu"), default=None,
                   help="k210: where dense layers on vectors run (auto: the KPU from 64K weights; default auto)")
    p.add_argument("--chip", default=None, metavar="PART",
                   help="c / stm32: check the model fits this part's flash and RAM (stm32f103c8, stm32f411ce, "
                        "stm32f446re, stm32f746ng, stm32h743zi, nrf52840, rp2040, esp32s3, ...); the report says "
                        "how much of it the model uses")
    p.add_argument("--flash-limit", type=_byte_count, default=None, metavar="BYTES",
                   help="c / stm32: flash budget (K/M suffixes allowed)")
    return run_convert


def _byte_count(text):
    """'6M', '512K', '100000' or 'none' -> bytes (None: no limit)."""
    value = text.strip().lower()
    if value in ("none", "0", "off"):
        return "none"
    scale = {"k": 1024, "m": 1024 * 1024}.get(value[-1:], 1)
    try:
        return int(float(value[:-1] if scale > 1 else value) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a byte count (e.g. 6M, 512K, 100000, none)") from None


def run_convert(args):
    from .convert import convert
    _need_file(args.model, "model file")
    _need_file(args.dataset, "dataset")
    _check_names(args.platform, args.quant, args.dataset_func)
    _check_dataset_options(args)
    check_not_input(args.output, (args.model, args.dataset))          # before the work, not after it
    options = {}
    if args.platform != "k210":
        for flag, given in (("--version", args.version is not None), ("--softmax", args.softmax),
                            ("--dense", args.dense is not None)):
            if given:
                raise UsageError(f"{flag} is a k210 option; the {args.platform} platform does not take it"
                                 + (" (add a Softmax layer to the model instead)" if flag == "--softmax" else ""))
    else:
        options["version"] = args.version or 3
    for key, value in {"chip": args.chip, "flash_limit": args.flash_limit}.items():
        if value is not None:
            if args.platform == "k210":
                raise UsageError(f"--{key.replace('_', '-')} is a c / stm32 option; the K210 report gives the "
                                 f"kmodel's sizes (and --ram-limit bounds them)")
            options[key] = None if value == "none" else value
    if args.softmax:
        options["softmax"] = True
    if args.dense is not None:
        options["dense"] = args.dense
    if args.ram_limit is not None:
        options["ram_limit"] = None if args.ram_limit == "none" else args.ram_limit
    if args.name:
        options["name"] = args.name                   # else the model's own name (emc.convert's rule)
    artefact = convert(args.model, platform=args.platform, dataset=args.dataset, dataset_func=args.dataset_func,
                       quant_func=args.quant, quant_bit=args.bits, max_samples=256 if args.max_samples is None else
                       args.max_samples,
                       seed=args.seed, mean=args.mean, std=args.std, progress=_progress(args), **options)
    written = artefact.save(args.output)
    print(artefact.report)
    print()
    for path in written:
        print(f"wrote {path} ({os.path.getsize(path):,} bytes)")
    return EXIT_OK



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
        print(_kmodel_text(path))
    elif os.path.splitext(path)[1].lower() in (".h5", ".hdf5", ".keras"):
        from .frontends import load_model
        from .passes import optimize
        _quiet_frameworks(args)
        graph = optimize(load_model(path))
        print(graph.summary())
        print("(the graph after emc's passes: BatchNorm folded, activations fused, Dropout removed -- what "
              "the platforms convert)")
    else:
        raise UsageError(f"{path} is neither a kmodel (v3 or v4), an emc C artefact folder nor a .h5/.keras model")
    return EXIT_OK


def _kmodel_text(path):
    """emc's own kmodel (with its .emc.json): the conversion report, checked against the file; anyone else's:
    the reader's layer table, plus the KPU RAM peak the conversion report gives."""
    from .platforms.k210.inspect import file_totals, kmodel_report
    from .platforms.k210.kmodel import load_kmodel
    from .sidecar import for_kmodel
    model = load_kmodel(path)
    doc = for_kmodel(path)
    if doc is not None:
        return str(kmodel_report(model, doc))
    peak = file_totals(model)["KPU RAM peak (bytes)"]
    return f"{model}\nKPU RAM peak (bytes): {peak:,}"


def _artefact_folder_report(folder):
    """The report of an emc C / STM32 artefact folder (saved with it, or rebuilt from its sources)."""
    from .c_folder import describe
    return describe(folder)


# ---- emc run -----------------------------------------------------------------------------------------------
ARTEFACT_HELP = ("a kmodel v3/v4 (simulated bit-exactly; anyone's), an emc C / STM32 artefact folder (its C "
                 "compiled on the host), or a Keras / TensorLayer model file (float)")


@command("run", "run a kmodel (simulated bit-exactly), an emc C folder (compiled) or a float model on inputs")
def setup_run(p):
    p.add_argument("file", metavar="FILE", help=ARTEFACT_HELP)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files (resized to the model input) or .npy arrays (kmodels: uint8 HWC images or "
                        "float vectors; C folders and float models: float input)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line: print the top-k classes")
    p.add_argument("--top", type=int, default=5, metavar="K", help="how many classes with --labels (default 5)")
    p.add_argument("--dataset-func", default="img_0_1", metavar="NAME",
                   help="C folders and float models: how an image becomes the float input (default img_0_1); "
                        "a kmodel takes the camera's pixels")
    p.add_argument("--mean", type=float, default=None,
                   help="C folders and float models: input mean, applied as (x - mean) / std after --dataset-func")
    p.add_argument("--std", type=float, default=None, help="C folders and float models: input standard deviation")
    p.add_argument("--full", action="store_true", help="print every output value, not a summary")
    return run_run


def run_run(args):
    import numpy as np
    _need_file(args.file, "model file")
    for path in args.inputs:
        _need_file(path, "input")
    labels = read_labels(args.labels) if args.labels else None
    if args.top < 1:
        raise UsageError("--top must be at least 1")
    _check_names(dataset_func=args.dataset_func)
    _quiet_frameworks(args)
    runner = runner_for(args.file, args.dataset_func, args.mean, args.std)
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
                    print(top_k_text(out, labels, args.top, k, len(outputs)))
                else:
                    print(f"  output {k} ({out.size} values): {np.array2string(out, prefix='  ')}")
    return EXIT_OK


# ---- emc compare -------------------------------------------------------------------------------------------
@command("compare", "float model vs a kmodel or emc C folder, layer by layer (cosine, SNR), worst layers first")
def setup_compare(p):
    p.add_argument("model", metavar="MODEL", help="the float model (Keras / TensorLayer file)")
    p.add_argument("file", metavar="FILE", help="what it became: a kmodel (emc's, nncase's, Maix-EMC's; layer by "
                                                "layer) or an emc C / STM32 folder (compiled; final outputs)")
    _dataset_options(p, dataset_required=True)
    p.add_argument("--plot", metavar="PNG", help="draw the per-layer SNR into this PNG file")
    p.set_defaults(max_samples=32)
    return run_compare


def run_compare(args):
    from .c_folder import is_c_folder
    from .compare import compare
    _need_file(args.model, "model file")
    _need_file(args.file, "kmodel or C folder")
    _need_file(args.dataset, "dataset")
    _check_names(dataset_func=args.dataset_func)
    _check_dataset_options(args)
    if not (_is_kmodel(args.file) or is_c_folder(args.file)):
        raise UsageError(f"{args.file} is neither a kmodel (v3/v4) nor an emc C artefact folder; give what "
                         f"'emc convert' wrote (or anyone's kmodel)")
    _quiet_frameworks(args)
    result = compare(args.model, args.file, args.dataset, dataset_func=args.dataset_func, mean=args.mean,
                     std=args.std, max_samples=args.max_samples, seed=args.seed, progress=_progress(args))
    print(result)
    if args.plot:
        result.plot(args.plot)
        print(f"\nwrote {args.plot}")
    return EXIT_OK


# ---- emc evaluate ------------------------------------------------------------------------------------------
@command("evaluate", "accuracy and confusion matrix of any model or artefact on a labelled dataset, in batches")
def setup_evaluate(p):
    p.add_argument("model", metavar="MODEL", help=ARTEFACT_HELP)
    p.add_argument("data", metavar="DATA", help="a folder with one subfolder of images per class (sorted names = "
                                                "class indices), or a .npz file with arrays x and y")
    p.add_argument("--dataset-func", default="img_0_1", metavar="NAME",
                   help="how an image becomes the float input (default img_0_1); for a kmodel it also says how "
                        "float input maps to the camera's pixels")
    p.add_argument("--mean", type=float, default=None, help="input mean, applied as (x - mean) / std")
    p.add_argument("--std", type=float, default=None, help="input standard deviation")
    p.add_argument("--top", type=int, nargs="+", default=[1, 5], metavar="K", help="top-k accuracies (default 1 5)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="samples per batch (default 32)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="processes sharing the samples (default 1)")
    p.add_argument("--timing", action="store_true", help="print the host time per sample (whole batches timed)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line (default: the subfolder names)")
    return run_evaluate


def run_evaluate(args):
    from .cli_runners import evaluate_command
    _need_file(args.model, "model")
    _need_file(args.data, "dataset")
    _check_names(dataset_func=args.dataset_func)
    _quiet_frameworks(args)
    print(evaluate_command(args, _progress(args)))
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
    """Entry point of the `emc` console script; returns the exit code. The `emc` logger's handlers, level and
    propagation are restored afterwards, so calling it from Python leaves the caller's logging as it was."""
    saved = (list(log.handlers), log.propagate, log.level)
    try:
        return _main(argv)
    finally:
        log.handlers[:], log.propagate = saved[0], saved[1]
        log.setLevel(saved[2])


def _main(argv):
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
        if getattr(err, "report", None) is not None:    # e.g. a model over the SRAM: where the bytes go
            print(err.report, file=sys.stderr)
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
