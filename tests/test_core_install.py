"""The core install without frameworks (issue 17): with TensorFlow, Keras and TensorLayer blocked from import in a
fresh interpreter, emc inspects and runs the shared kmodels and converts a Keras .h5 for the C platform; a feature
whose extra is missing says which extra to install in one line; one version string; `python -m emc` is `emc`."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

import emc
from conftest import REPO, REFERENCE

DATA = REPO / "tests" / "data"
BLOCKER = """
import sys
class Blocker:
    def __init__(self, names):
        self.names = names
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ImportError("blocked for this test: " + name)
sys.meta_path.insert(0, Blocker({names!r}))
"""
FRAMEWORKS = ("tensorflow", "keras", "tf_keras", "tensorlayer")


def run_blocked(code, cwd, blocked=FRAMEWORKS, args=()):
    """Run Python code (or `-m emc args` when code is None) in a fresh interpreter with these modules blocked."""
    prelude = BLOCKER.format(names=tuple(blocked))
    if code is None:
        code = prelude + "import runpy; sys.argv = ['emc'] + sys.argv[1:]; runpy.run_module('emc', run_name='__main__')"
    else:
        code = prelude + code
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)


def test_core_runs_kmodels_and_converts_h5_for_c_without_frameworks(tmp_path):
    kmodels = sorted((REFERENCE / "kmodel-v3").glob("*.kmodel")) if (REFERENCE / "kmodel-v3").is_dir() else []
    if not kmodels:
        pytest.skip(f"no shared kmodels under {REFERENCE / 'kmodel-v3'}")
    done = run_blocked(f"""
import numpy as np
import emc
from emc.cli import main
from emc.platforms.k210.v3.simulator import input_spec
for path in {[str(p) for p in kmodels]!r}:
    assert main(["inspect", path]) == 0, path
    model = emc.load_kmodel(path)
    kind, shape = input_spec(model)
    if kind == "kpu":
        x = np.random.default_rng(0).integers(0, 256, shape[1:] + shape[:1], dtype=np.uint8)
    else:
        x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
    outputs = emc.run_kmodel(model, x)
    assert outputs and all(np.isfinite(np.asarray(o, np.float64)).all() for o in outputs), path
    print("ran", path)
x = np.random.default_rng(1).uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
np.save("calib.npy", x)
assert main(["convert", {str(DATA / 'tfkeras2_mini.h5')!r}, "-o", "mini_c", "--platform", "c",
             "--dataset", "calib.npy"]) == 0
artefact = emc.convert({str(DATA / 'tfkeras2_mini.h5')!r}, platform="c", dataset=x)
float_out = artefact.graph.run(x[:2])[0]
device_out = artefact.simulate(x[:2])[0]
assert np.asarray(device_out).shape == float_out.shape
assert np.abs(np.asarray(device_out, np.float64) - float_out).max() < 0.1
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {FRAMEWORKS!r})
assert not loaded, loaded
print("converted")
""", tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("ran ") == len(kmodels) and "converted" in done.stdout
    assert (tmp_path / "mini_c").is_dir() and any(p.suffix == ".c" for p in (tmp_path / "mini_c").iterdir())


def test_missing_extra_names_the_extra_in_one_line(tmp_path):
    """Python: an emc exception (also an ImportError); CLI: one line naming the extra, exit code 2."""
    done = run_blocked("""
import emc
from emc.extras import MissingExtraError, require
try:
    require("matplotlib", "plots")
except emc.EmcError as err:
    assert isinstance(err, ImportError) and isinstance(err, MissingExtraError)
    print(err)
""", tmp_path, blocked=FRAMEWORKS + ("matplotlib",))
    assert done.returncode == 0, done.stderr
    assert 'pip install "emc[plot]"' in done.stdout and len(done.stdout.strip().splitlines()) == 1
    kmodel, h5 = REFERENCE / "kmodel-v3" / "maixemc_cifar10.kmodel", REFERENCE / "float-models" / "maixemc_cifar10.h5"
    images = REFERENCE / "images" / "cifar10"
    if not (kmodel.exists() and h5.exists() and images.is_dir()):
        pytest.skip("the shared Maix-EMC cifar10 kmodel, its .h5 or the cifar10 images are absent")
    done = run_blocked(None, tmp_path, blocked=FRAMEWORKS + ("matplotlib",),
                       args=["compare", str(h5), str(kmodel), "--dataset", str(images), "--max-samples", "2",
                             "--plot", "snr.png", "-q"])
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and 'emc[plot]' in lines[0] and "Traceback" not in done.stderr, done.stderr


def test_one_version_string_everywhere(tmp_path):
    setup_py = (REPO / "setup.py").read_text()
    assert "version=version()" in setup_py and not re.search(r'version="\d', setup_py)
    init = (REPO / "emc" / "__init__.py").read_text()
    assert init.count("__version__ = ") == 1 and emc.__version__ in init
    if importlib.util.find_spec("setuptools"):      # a Python 3.12 venv has none until someone builds a wheel
        done = subprocess.run([sys.executable, str(REPO / "setup.py"), "--version"], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        assert done.stdout.strip().splitlines()[-1] == emc.__version__
    done = run_blocked(None, tmp_path, args=["--version"])
    assert done.returncode == 0 and done.stdout.strip() == f"emc {emc.__version__}"


def test_python_m_emc_is_the_emc_command(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    via_m = subprocess.run([sys.executable, "-m", "emc", "platforms"], cwd=tmp_path, capture_output=True,
                           text=True, env=env, timeout=120)
    via_main = subprocess.run([sys.executable, "-c", "import sys; from emc.cli import main; sys.exit(main())",
                               "platforms"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert via_m.returncode == via_main.returncode == 0
    assert via_m.stdout == via_main.stdout and "k210" in via_m.stdout
    bad = subprocess.run([sys.executable, "-m", "emc", "inspect", "missing.kmodel"], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("emc: error:")
