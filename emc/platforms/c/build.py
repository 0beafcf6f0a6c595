"""Building generated C: the runtime sources shipped with emc, and a host shared library cached by content hash."""
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from importlib import resources

from ...errors import EmcError

log = logging.getLogger(__name__)

HOST_FLAGS = ("-std=c99", "-O2", "-fPIC", "-shared", "-Wall", "-Wextra")
WARNING_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")


def runtime_files():
    """The portable kernel library as {file name: text}: emc_nn.h and its .c files."""
    folder = resources.files(__package__).joinpath("runtime")
    return {entry.name: entry.read_text(encoding="utf-8") for entry in sorted(folder.iterdir(), key=lambda e: e.name)
            if entry.name.endswith((".c", ".h"))}


def cache_root():
    """Where compiled libraries are kept: $EMC_CACHE_DIR or a per-user folder in the temp directory."""
    root = os.environ.get("EMC_CACHE_DIR") or os.path.join(tempfile.gettempdir(), f"emc-cache-{os.getuid()}")
    return os.path.join(root, "c")


def find_compiler(name="cc"):
    """Path of a C compiler: $CC, else gcc/cc; EmcError when there is none."""
    for candidate in ([os.environ["CC"]] if os.environ.get("CC") else []) + ["gcc", name, "clang"]:
        path = shutil.which(candidate)
        if path:
            return path
    raise EmcError("no C compiler found: install gcc (apt-get install gcc) or set $CC")


def write_tree(folder, files):
    os.makedirs(folder, exist_ok=True)
    for fname, text in files.items():
        with open(os.path.join(folder, fname), "w" if isinstance(text, str) else "wb") as f:
            f.write(text)


def run(cmd, cwd=None, what="compiler", explain=None):
    """Run a tool; its failure becomes an EmcError with the tool's own message, or the error explain(output)
    returns for a failure it recognises (e.g. a linker region overflow as one line naming the sizes)."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        output = proc.stderr.strip() or proc.stdout.strip()
        known = explain(output) if explain else None
        if known is not None:
            raise known
        raise EmcError(f"{what} failed ({' '.join(cmd[:3])} ...):\n{output}")
    return proc


def build_shared(files, lib_name, flags=HOST_FLAGS, extra=()):
    """Compile the .c files of `files` into a shared library (cached by a hash of sources and flags); its path."""
    cc = find_compiler()
    digest = hashlib.sha256()
    for fname in sorted(files):
        digest.update(fname.encode() + b"\0" + (files[fname].encode() if isinstance(files[fname], str)
                                                else files[fname]) + b"\0")
    digest.update(" ".join((cc,) + tuple(flags) + tuple(extra)).encode())
    folder = os.path.join(cache_root(), digest.hexdigest()[:24])
    lib = os.path.join(folder, f"lib{lib_name}.so")
    if os.path.exists(lib):
        return lib
    os.makedirs(cache_root(), exist_ok=True)
    work = tempfile.mkdtemp(prefix=".build-", dir=cache_root())
    try:
        write_tree(work, files)
        sources = sorted(f for f in files if f.endswith(".c"))
        run([cc, *flags, *extra, "-I", work, *sources, "-o", f"lib{lib_name}.so"], cwd=work)
        try:
            os.replace(work, folder)
        except OSError:             # another process built the same sources first
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.debug("built %s", lib)
    return lib
