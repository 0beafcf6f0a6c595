"""Atomic outputs: a reader never sees a half-written file or a folder mixing two saves.

A file is written to a temporary sibling and renamed over the target; a folder (C / STM32 sources) is built
in a temporary sibling folder and swapped in as a unit. Temporary names carry the writer's pid
(`.emc-tmp-<pid>-<random>-<name>`), so a later save in the same folder removes what a killed run left behind
(writer no longer alive, or older than a day) and never what a running save is still writing.
"""
import contextlib
import ctypes
import errno
import os
import shutil
import time

from .errors import EmcError

TMP_PREFIX = ".emc-tmp-"
LEGACY_PREFIX = ".emc-"              # emc before 0.1.1: mkstemp's .emc-XXXXXXXX, no pid in the name
STALE_SECONDS = 24 * 3600
LEGACY_STALE_SECONDS = 3600
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
AT_FDCWD = -100


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_name(folder, name):
    return os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}-{name}")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:                  # EPERM: someone else's live process
        return True
    return True


def _is_stale(folder, entry, now):
    path = os.path.join(folder, entry)
    try:
        age = now - os.lstat(path).st_mtime
    except OSError:
        return False
    if entry.startswith(TMP_PREFIX):
        pid = entry[len(TMP_PREFIX):].split("-", 1)[0]
        return age > STALE_SECONDS or (pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)))
    return len(entry) == len(LEGACY_PREFIX) + 8 and entry.startswith(LEGACY_PREFIX) and age > LEGACY_STALE_SECONDS


def remove_stale(folder):
    """Delete the temporary files and folders that killed emc runs left in folder; returns their names."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    now, removed = time.time(), []
    for entry in entries:
        if entry.startswith(LEGACY_PREFIX) and _is_stale(folder, entry, now):
            path = os.path.join(folder, entry)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
                removed.append(entry)
            except OSError:
                pass                 # another save removed it first, or it is not ours to remove
    return removed


def _step(label):
    """Test hook: with EMC_SAVE_TRACE=seconds, announce each step of a save on stderr and pause after it."""
    delay = os.environ.get("EMC_SAVE_TRACE")
    if delay:
        os.write(2, f"emc-save-step {label}\n".encode())
        time.sleep(float(delay))


def _named(err, path):
    """The same OSError, naming the output path instead of a temporary file."""
    return type(err)(err.errno, err.strerror, path) if err.errno else err


def _write_file(path, data):
    mode = "wb" if isinstance(data, (bytes, bytearray, memoryview)) else "w"
    with open(path, mode) as f:
        f.write(data)
    os.chmod(path, 0o666 & ~_umask())    # outputs follow the user's umask


def _prepare_folder(path):
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise _named(err, path) from None
    remove_stale(folder)
    return folder


def write_atomic(path, data):
    """Write bytes or str to path via a temporary sibling file and os.replace."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise EmcError(f"{path} is a folder; give a file name for this output")
    tmp = _tmp_name(_prepare_folder(path), os.path.basename(path))
    with _cleaned_up(tmp, path):
        _write_file(tmp, data)
        os.replace(tmp, path)


@contextlib.contextmanager
def _cleaned_up(tmp, path):
    """On any failure remove the temporary tmp; an OSError names the output path, not tmp."""
    try:
        yield
    except OSError as err:
        _discard(tmp)
        raise _named(err, path) from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
    except OSError:
        pass


def _renameat2(src, dst, flags):
    """Linux renameat2(2); returns False where the call or the flag is not available (then rename twice)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if fn(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), dst)


def _carry_over(old, tmp, names):
    """Entries of the previous folder that this save does not write (the user's own files) move along."""
    if not os.path.isdir(old):
        return
    for entry in os.listdir(old):
        if entry in names or entry.startswith(LEGACY_PREFIX):
            continue
        src, dst = os.path.join(old, entry), os.path.join(tmp, entry)
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, dst, symlinks=True)
        else:
            try:
                os.link(src, dst, follow_symlinks=False)
            except OSError:
                shutil.copy2(src, dst, follow_symlinks=False)


def _swap_in(tmp, path):
    """Put the folder tmp at path in one step; the previous folder, if any, is removed after the swap."""
    for _ in range(8):
        if not os.path.lexists(path):
            try:
                if _renameat2(tmp, path, RENAME_NOREPLACE):
                    return
                os.rename(tmp, path)            # no renameat2: rename fails on a non-empty folder made meanwhile
                return
            except OSError as err:
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                continue                        # another save got there first: swap with it instead
        if _renameat2(tmp, path, RENAME_EXCHANGE):
            _step("swapped")
            _discard(tmp)                       # tmp now holds the previous folder
            return
        old = _tmp_name(os.path.dirname(tmp), "old-" + os.path.basename(path))
        os.rename(path, old)
        try:
            os.rename(tmp, path)
        except OSError:
            os.rename(old, path)
            raise
        _discard(old)
        return
    raise EmcError(f"{path} kept changing while emc replaced it (other saves to the same folder?); save again")


def write_folder_atomic(path, files):
    """Write {name: bytes or str} as the folder path, built in a temporary sibling and swapped in whole.

    Files of the previous folder that are not among `files` are kept. Returns the written paths.
    """
    path = os.fspath(path).rstrip(os.sep) or os.sep
    if os.path.exists(path) and not os.path.isdir(path):
        raise EmcError(f"{path} is a file; this platform writes a folder of files: give a folder name")
    parent = _prepare_folder(path)
    tmp = _tmp_name(parent, os.path.basename(os.path.abspath(path)))
    with _cleaned_up(tmp, path):
        os.mkdir(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        for name, data in files.items():
            target = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            _write_file(target, data)
            _step(f"wrote {name}")
        _carry_over(path, tmp, {n.split("/")[0] for n in files})
        _swap_in(tmp, path)
    return [os.path.join(path, name) for name in files]


def check_not_input(path, inputs):
    """EmcError when the output path is one of the input files (model, dataset) or a folder holding one."""
    out = os.path.realpath(os.fspath(path))
    for source in inputs:
        if not isinstance(source, (str, os.PathLike)) or not os.path.exists(source):
            continue
        src = os.path.realpath(os.fspath(source))
        if src == out or src.startswith(out.rstrip(os.sep) + os.sep):
            what = "is" if src == out else "holds"
            raise EmcError(f"output {path} {what} the input {source}: emc will not overwrite its own input; "
                           f"choose another output path")
