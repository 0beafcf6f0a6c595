"""Issue 13 item 9: quiet and consistent -- no TensorFlow chatter from the Python API, activation-table notes
folded to a count plus the worst (never 'exact' next to a large error), a warning naming collapsed ranges."""
import logging
import os
import subprocess
import sys

import numpy as np

import emc
from emc import layers as L
from emc.platforms.k210.artefact import activation_notes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_activation_notes_are_folded_and_do_not_contradict_themselves():
    errors = [(f"conv_{i}", "relu", "exact", 1) for i in range(52)]
    errors += [("conv_preds", "linear", "exact", 125), ("head", "sigmoid", "fit", 3)]
    notes = activation_notes(errors)
    assert len(notes) == 2
    assert notes[0].startswith("2 activation table(s) deviate") and "'conv_preds'" in notes[0]
    assert "125 LSB" in notes[0] and "exact" not in notes[0] and "head" not in notes[0]
    assert notes[1].startswith("52 activation table(s) within 1 LSB") and "conv_3" not in notes[1]


def test_collapsed_calibration_ranges_are_named(caplog):
    rng = np.random.default_rng(0)
    g = emc.Graph("dead")
    x = g.add_input((6, 6, 3))
    live = g.add(L.Conv2D(rng.normal(0, .3, (3, 3, 3, 4)).astype(np.float32), None, pads=(1, 1, 1, 1),
                          activation=L.Act("relu")), [x], name="live")
    dead = g.add(L.Conv2D(np.zeros((1, 1, 4, 4), np.float32), np.full(4, 0.5, np.float32)), [live], name="dead")
    g.set_outputs([g.add(L.Flatten(), [dead], name="out")])
    with caplog.at_level(logging.WARNING, logger="emc"):
        emc.convert(g, platform="c", dataset=rng.random((4, 6, 6, 3)).astype(np.float32))
    warned = [r.getMessage() for r in caplog.records if "collapsed" in r.getMessage()]
    assert len(warned) == 1 and "'dead'" in warned[0] and "'live'" not in warned[0]


def test_python_api_prints_no_tensorflow_chatter(tmp_path):
    import keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name="s")
    model.save(tmp_path / "s.h5")
    code = f"import emc; g = emc.load_model({str(tmp_path / 's.h5')!r}); print(g.name)"
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "s", done.stderr
    assert done.stderr.strip() == "", done.stderr
