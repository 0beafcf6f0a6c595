"""Atomic outputs: files and C folders are old-complete or new-complete after a kill at any step, concurrent
saves leave one whole output, stale temporaries of killed runs are removed, inputs are never overwritten."""
import os
import subprocess
import sys
import time

import pytest

from emc.artefact import Artefact
from emc.errors import EmcError
from emc.fileio import remove_stale, write_atomic, write_folder_atomic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["model.h", "model.c", "runtime/kernels.h", "runtime/kernels.c", "report.txt"]
SAVER = """
import sys
from emc.fileio import write_folder_atomic
tag = sys.argv[2]
write_folder_atomic(sys.argv[1], {n: (tag + ' ' + n) * 2000 for n in %r})
""" % (NAMES,)


def versions(folder):
    """The set of save tags found in the folder's files (one tag = one complete save)."""
    tags = set()
    for name in NAMES:
        with open(os.path.join(folder, name)) as f:
            tags.add(f.read().split(" ", 1)[0])
    return tags


def saver(path, tag, delay):
    env = dict(os.environ, PYTHONPATH=REPO, EMC_SAVE_TRACE=str(delay))
    return subprocess.Popen([sys.executable, "-c", SAVER, str(path), tag], env=env, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.parametrize("kill_after", range(len(NAMES) + 1))
def test_a_kill_at_any_step_leaves_the_old_or_the_new_folder(tmp_path, kill_after):
    out = tmp_path / "model_c"
    write_folder_atomic(out, {n: ("old " + n) * 2000 for n in NAMES})
    proc = saver(out, "new", 0.2)
    for _ in range(kill_after + 1):
        line = proc.stderr.readline()
        assert line.startswith("emc-save-step"), line
    proc.kill()
    proc.wait()
    assert versions(out) in ({"old"}, {"new"})
    if kill_after < len(NAMES):
        assert versions(out) == {"old"}           # killed before the swap: nothing of the new save is visible
    leftovers = [e for e in os.listdir(tmp_path) if e != "model_c"]
    assert leftovers, "a killed save leaves its temporary folder"
    write_atomic(tmp_path / "other.txt", "x")     # the next save in that folder removes them
    assert sorted(os.listdir(tmp_path)) == ["model_c", "other.txt"]


def test_two_concurrent_saves_leave_one_complete_folder(tmp_path):
    out = tmp_path / "model_c"
    procs = [saver(out, tag, 0.05) for tag in ("first", "second")]
    for p in procs:
        p.communicate()
        assert p.returncode == 0
    assert versions(out) in ({"first"}, {"second"})
    assert os.listdir(tmp_path) == ["model_c"]


def test_the_users_own_files_in_the_folder_are_kept(tmp_path):
    out = tmp_path / "src"
    write_folder_atomic(out, {"model.h": "old", "model.c": "old"})
    (out / "main.c").write_text("int main(void) { return 0; }")
    write_folder_atomic(out, {"model.h": "new", "model.c": "new"})
    assert (out / "main.c").read_text().startswith("int main")
    assert (out / "model.c").read_text() == "new"


def test_only_stale_temporaries_are_removed(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
        (tmp_path / f".emc-tmp-{dead}-0a0b0c0d-m.kmodel").write_bytes(b"partial")
        (tmp_path / f".emc-tmp-{sleeper.pid}-0a0b0c0d-m.kmodel").write_bytes(b"being written")
        (tmp_path / f".emc-tmp-{dead}-0a0b0c0d-c_out").mkdir()
        legacy = tmp_path / ".emc-k3j_x9a2"
        legacy.write_bytes(b"")
        os.utime(legacy, (time.time() - 7200, time.time() - 7200))
        (tmp_path / ".emc-fresh001").write_bytes(b"")
        (tmp_path / ".emcrc").write_text("user file")
        assert sorted(remove_stale(tmp_path)) == sorted([f".emc-tmp-{dead}-0a0b0c0d-m.kmodel",
                                                         f".emc-tmp-{dead}-0a0b0c0d-c_out", ".emc-k3j_x9a2"])
        assert sorted(os.listdir(tmp_path)) == sorted([f".emc-tmp-{sleeper.pid}-0a0b0c0d-m.kmodel",
                                                       ".emc-fresh001", ".emcrc"])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_unwritable_target_is_named_not_the_temporary_file():
    target = "/proc/emc-test-output.kmodel"
    with pytest.raises(OSError) as err:
        write_atomic(target, b"x")
    assert err.value.filename == target
    with pytest.raises(OSError) as err:
        write_folder_atomic("/proc/emc-test-folder", {"a.c": "x"})
    assert err.value.filename == "/proc/emc-test-folder"


def test_a_file_target_for_a_folder_output_is_an_emc_error(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(EmcError, match="is a file"):
        write_folder_atomic(tmp_path / "out", {"a.c": "x"})


def test_saving_over_an_input_is_refused(tmp_path):
    model = tmp_path / "m.h5"
    model.write_bytes(b"the model")
    data = tmp_path / "images"
    data.mkdir()
    one = Artefact("m", {"m.kmodel": b"kmodel"}, None)
    one.sources = [str(model), str(data)]
    with pytest.raises(EmcError, match="will not overwrite its own input"):
        one.save(model)
    assert model.read_bytes() == b"the model"
    two = Artefact("m", {"m.c": "c", "m.h": "h"}, None)
    two.sources = [str(model), str(data)]
    for target in (data, tmp_path):
        with pytest.raises(EmcError, match="input"):
            two.save(target)
    assert two.save(tmp_path / "c_out") == [str(tmp_path / "c_out" / "m.c"), str(tmp_path / "c_out" / "m.h")]
