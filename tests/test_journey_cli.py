"""Issue 13 items 2, 5-8 and 10: every command takes every artefact (kmodel, C folder, float model), evaluation
streams batches, options that were missing or crashing, README truths, names from the model, notebook HTML."""
import os

import numpy as np
import pytest

import emc
from emc import layers as L
from emc.cli import main


def tiny_graph(name="tiny", seed=0):
    rng = np.random.default_rng(seed)
    g = emc.Graph(name)
    x = g.add_input((6, 6, 3))
    c = g.add(L.Conv2D(rng.normal(0, .3, (3, 3, 3, 4)).astype(np.float32), None, pads=(1, 1, 1, 1),
                       activation=L.Act("relu")), [x], name="c")
    f = g.add(L.Flatten(), [c], name="f")
    g.set_outputs([g.add(L.Dense(rng.normal(0, .1, (144, 3)).astype(np.float32), None), [f], name="d")])
    return g


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    from PIL import Image
    root = tmp_path_factory.mktemp("journey")
    g = tiny_graph()
    rng = np.random.default_rng(0)
    calib = rng.integers(0, 256, (8, 6, 6, 3)).astype(np.float32) / 255
    c_art = emc.convert(g, platform="c", dataset=calib)
    c_art.save(root / "c")
    k_art = emc.convert(g, dataset=calib, version=3)
    k_art.save(root / "tiny.kmodel")
    for cls in ("cat", "dog", "eel"):
        (root / "lab" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)).save(root / "lab" / cls / f"{i}.png")
    return root, g, c_art, k_art


def cli(capsys, *args):
    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def image(path):
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB"), np.float32)[None] / 255


# ---- item 2: every command takes every artefact ---------------------------------------------------------------
def test_run_evaluate_compare_take_a_c_folder(made, capsys):
    root, g, c_art, _ = made
    png = root / "lab" / "dog" / "1.png"
    code, out, err = cli(capsys, "run", root / "c", png, "--full")
    assert code == 0, err
    printed = np.array(out.split("[")[1].split("]")[0].split(), np.float32)
    np.testing.assert_allclose(printed, c_art.predict(image(png))[0][0], atol=1e-4)
    code, out, err = cli(capsys, "evaluate", root / "c", root / "lab", "--top", "1", "2")
    assert code == 0 and "top-2 accuracy" in out and "cat" in out, err
    folder_eval = emc.evaluate(os.fspath(root / "c"), os.fspath(root / "lab"), top_k=(1,))
    assert folder_eval["samples"] == 12 and folder_eval.labels == ["cat", "dog", "eel"]
    data = np.stack([image(root / "lab" / "eel" / f"{i}.png")[0] for i in range(4)])
    result = emc.compare(g, os.fspath(root / "c"), data)
    assert result.outputs[0]["cosine"] > 0.99
    code, out, err = cli(capsys, "compare", root / "c", root / "c", "--dataset", root / "lab" / "cat")
    assert code == 2                                         # MODEL must be the float model: one-line error


def test_evaluate_a_kmodel_on_a_labelled_folder(made, capsys):
    root, g, _, k_art = made
    code, out, err = cli(capsys, "evaluate", root / "tiny.kmodel", root / "lab", "--top", "1", "--timing")
    assert code == 0, err
    assert "top-1 accuracy" in out and "time per inference" in out
    x = np.concatenate([image(root / "lab" / c / f"{i}.png") for c in ("cat", "dog", "eel") for i in range(4)])
    direct = emc.evaluate(k_art, x, np.repeat([0, 1, 2], 4), top_k=(1,))
    assert f"top-1 accuracy: {direct['top1']:.4f}" in out


# ---- item 5: batches, bounded memory, timing that does not slow it, workers --------------------------------------
class Counting:
    """A predictor that records the batch sizes it is given."""

    def __init__(self, g):
        self.g, self.sizes = g, []

    def __call__(self, x):
        self.sizes.append(len(x))
        return self.g.run(x)


def test_timing_times_whole_batches_and_workers_agree(made):
    root, g, _, _ = made
    from emc.evaluate import Predictor
    x = np.random.default_rng(3).random((20, 6, 6, 3)).astype(np.float32)
    y = np.arange(20) % 3
    counting = Counting(g)
    timed = emc.evaluate(Predictor("float", counting, g), x, y, timing=True, batch_size=8, top_k=(1, 2))
    assert counting.sizes == [8, 8, 4]                        # not one sample at a time
    assert timed["time_per_inference"] > 0
    plain = emc.evaluate(g, x, y, top_k=(1, 2))
    pooled = emc.evaluate(g, x, y, top_k=(1, 2), workers=2, batch_size=4)
    assert pooled["top1"] == plain["top1"] == timed["top1"]
    np.testing.assert_array_equal(pooled["confusion"], plain["confusion"])
    np.testing.assert_array_equal(pooled["predictions"], plain["predictions"])


def test_folder_streams_in_batches(made):
    root, g, _, _ = made
    from emc.evaluate import Predictor
    counting = Counting(g)
    result = emc.evaluate(Predictor("float", counting, g), os.fspath(root / "lab"), batch_size=5, top_k=(1,))
    assert counting.sizes == [5, 5, 2] and result["samples"] == 12
    assert result["confusion"].sum() == 12


# ---- item 6: options -------------------------------------------------------------------------------------------
def test_ram_limit_none_dense_and_cli_options(made, tmp_path, capsys):
    root, g, c_art, _ = made
    data = np.random.default_rng(1).random((4, 6, 6, 3)).astype(np.float32)
    assert emc.convert(g, dataset=data, ram_limit=None).report.totals["layers"] > 0
    np.save(tmp_path / "data.npy", data)
    code, _, err = cli(capsys, "convert", tmp_path / "data.npy", "-o", tmp_path / "x.kmodel", "--dataset",
                       tmp_path / "data.npy")
    assert code == 2                                          # (a .npy is not a model: still a one-line error)
    from emc.cli import build_parser
    args = build_parser().parse_args(["convert", "m.h5", "-o", "o", "--dataset", "d", "--ram-limit", "1K",
                                      "--dense", "cpu"])
    assert args.ram_limit == 1024 and args.dense == "cpu"
    assert build_parser().parse_args(["convert", "m.h5", "-o", "o", "--dataset", "d",
                                      "--ram-limit", "none"]).ram_limit == "none"
    png = root / "lab" / "cat" / "2.png"
    code, out, err = cli(capsys, "run", root / "c", png, "--mean", "0.5", "--std", "0.25", "--full")
    assert code == 0, err
    printed = np.array(out.split("[")[1].split("]")[0].split(), np.float32)
    np.testing.assert_allclose(printed, c_art.predict((image(png) - 0.5) / 0.25)[0][0], atol=1e-4)
    for command in ("convert", "run", "compare", "evaluate", "inspect"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        help_text = capsys.readouterr().out
        if command == "convert":
            assert "--ram-limit" in help_text and "--dense" in help_text
        if command == "run":
            assert "--mean" in help_text and "--std" in help_text


def test_readme_cli_table_documents_every_option():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    table = readme.split("## The command line")[1].split("## Python API")[0]
    from emc.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        row = next((line for line in table.splitlines() if f"`emc {name}" in line or f"`emc {name}`" in line), "")
        assert row, f"README has no row for emc {name}"
        for action in p._actions:
            flags = action.option_strings
            if flags and not set(flags) & {"--help", "--quiet", "--debug"}:
                assert any(f"{o} " in row or f"{o}]" in row for o in flags), f"README's emc {name} row omits {flags}"


# ---- items 7 and 8: README truths, names ---------------------------------------------------------------------------
def test_format_evaluation_at_top_level_and_names_from_the_model(made, tmp_path):
    root, g, _, _ = made
    x = np.random.default_rng(3).random((6, 6, 6, 3)).astype(np.float32)
    assert "top-1 accuracy" in emc.format_evaluation(emc.evaluate(g, x, np.arange(6) % 3, top_k=(1,)))
    named = tiny_graph("cnn_model")
    report = emc.save_kmodel(named, os.fspath(tmp_path / "cifar_v4.kmodel"), x, version=4)
    assert "'cnn_model'" in report.title
    c = emc.convert(named, platform="c", dataset=x)
    assert c.name == "cnn_model" and "'cnn_model'" in c.report.title


# ---- item 10: notebooks ------------------------------------------------------------------------------------------
def test_html_rendering(made):
    root, g, _, k_art = made
    x = np.random.default_rng(4).random((6, 6, 6, 3)).astype(np.float32)
    assert "<table>" in k_art.report._repr_html_() and "<td" in k_art.report._repr_html_()
    assert "<table>" in emc.load_kmodel(k_art.kmodel)._repr_html_()
    comparison = emc.compare(None, k_art, x)
    assert "<table>" in comparison._repr_html_()
    assert comparison.plot() is not None                     # a matplotlib Figure for the notebook
    evaluation = emc.evaluate(g, x, np.arange(6) % 3, top_k=(1,))
    html = evaluation._repr_html_()
    assert "confusion matrix" in html and html.count("<tr>") >= 4
    assert evaluation.plot() is not None
