"""The README's walk-through platform (tests/example_platform.py): registered at run time, it converts, saves,
simulates, lists every problem at once, and shows up in `emc platforms` / `emc layers` but not in the docs."""
import json

import numpy as np
import pytest

import emc
import emc.cli
import emc.docs
import example_platform
from emc import layers as L
from emc.errors import PlatformLimitError


@pytest.fixture
def registered():
    saved = dict(emc.platforms._PLATFORMS)
    emc.platforms.register("example", example_platform)
    yield
    emc.platforms._PLATFORMS.clear()
    emc.platforms._PLATFORMS.update(saved)


def mlp(act="relu", seed=0):
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(0, 0.5, (8, 16)).astype(np.float32), rng.normal(0, 0.1, 16).astype(np.float32)
    w2, b2 = rng.normal(0, 0.5, (16, 3)).astype(np.float32), rng.normal(0, 0.1, 3).astype(np.float32)
    g = emc.Graph("mlp")
    x = g.add_input((8,))
    h = g.add(L.Dense(w1, b1), [x], name="hidden")
    h = g.add(L.Activation(act), [h], name="act")
    g.set_outputs([g.add(L.Dense(w2, b2), [h], name="logits")])
    return g, (w1, b1, w2, b2)


def test_example_platform_converts_saves_and_simulates_in_float16(registered, tmp_path):
    g, (w1, b1, w2, b2) = mlp()
    x = np.random.default_rng(1).normal(size=(32, 8)).astype(np.float32)
    artefact = emc.convert(g, platform="example", dataset=x, name="mlp")
    f16 = np.float16
    h = np.maximum((x.astype(f16) @ w1.astype(f16) + b1.astype(f16)).astype(f16), f16(0))   # independent float16
    expected = (h @ w2.astype(f16) + b2.astype(f16)).astype(f16).astype(np.float32)
    got = artefact.simulate(x)[0]
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(got, g.run(x)[0], atol=0.05)          # and float16 stays near float32
    written = artefact.save(tmp_path / "mlp.json")
    program = json.loads((tmp_path / "mlp.json").read_text())["program"]
    assert written == [str(tmp_path / "mlp.json")]
    assert [s["op"] for s in program] == ["input", "dense", "dense"]
    assert [s["act"] for s in program[1:]] == ["relu", "linear"]        # relu was fused by emc.passes
    assert "weights (bytes)" in str(artefact.report)


def test_every_problem_is_listed_at_once(registered):
    g, _ = mlp(act="tanh")
    rng = np.random.default_rng(2)
    img = emc.Graph("img")
    x = img.add_input((4, 4, 2))
    c = img.add(L.Conv2D(rng.normal(size=(3, 3, 2, 4)).astype(np.float32), None, pads=(1, 1, 1, 1)), [x], name="conv")
    img.set_outputs([img.add(L.Flatten(), [c])])
    with pytest.raises(PlatformLimitError) as err:
        emc.convert(img, platform="example", dataset=rng.normal(size=(4, 4, 4, 2)))
    text = "\n".join(err.value.problems)
    assert len(err.value.problems) == 2 and "'input'" in text and "'conv' (conv2d)" in text
    with pytest.raises(PlatformLimitError, match="'hidden' \\(dense\\): activation tanh"):
        emc.convert(g, platform="example", dataset=rng.normal(size=(4, 8)))


def test_cli_lists_the_registered_platform_and_docs_leave_it_out(registered, capsys):
    assert emc.cli.main(["layers", "--platform", "example"]) == 0
    out = capsys.readouterr().out
    assert "example supports 3 graph op kinds" in out and "  dense" in out and "conv2d" in out.split("not supported")[1]
    assert emc.cli.main(["platforms"]) == 0
    assert "example" in capsys.readouterr().out
    assert "example" not in emc.docs.builtin_platforms()
    assert "| example" not in emc.docs.layers_markdown()
