"""The README's first command: examples/digits/digits_demo.py trains, converts and simulates offline; each
device's printed accuracy must be within 2 points of the float model's. One run of the demo (about 15 s)."""
import os
import re
import struct
import subprocess
import sys
import time

import pytest

from conftest import REPO

DEMO = REPO / "examples" / "digits" / "digits_demo.py"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.time()
    result = subprocess.run([sys.executable, str(DEMO), "--out", str(out)], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=600)
    return result, out, time.time() - start


def test_digits_demo_devices_match_float(demo_run):
    result, out, seconds = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    accuracies = {m.group(1): float(m.group(2))
                  for m in re.finditer(r"^accuracy ([\w.-]+): ([0-9.]+)$", result.stdout, re.M)}
    assert "float" in accuracies and "k210-v3" in accuracies, result.stdout
    assert accuracies["float"] >= 0.9
    for device, accuracy in accuracies.items():
        assert abs(accuracy - accuracies["float"]) <= 0.02, f"{device}: {accuracy} vs float {accuracies['float']}"
    skipped = set(re.findall(r"^note: ([\w-]+) skipped", result.stdout, re.M))
    assert "k210-v4" in accuracies, result.stdout
    assert "c" in set(accuracies) | skipped                    # measured, or said skipped when no C toolchain
    assert "KPU RAM peak" in result.stdout                       # the memory report is printed
    kmodel = (out / "digits_v3.kmodel").read_bytes()
    assert struct.unpack_from("<I", kmodel, 0)[0] == 3
    assert (out / "digits_v4.kmodel").read_bytes()[:4] == b"LDMK"
    assert (out / "digits_test.bin").stat().st_size == 4 * 128 + 450 * 256   # 450 held-out 16x16 digits
    assert "digits_kmodel[" in (out / "digits_v3_kmodel.h").read_text()
    assert seconds < 300, f"the demo took {seconds:.0f} s"
