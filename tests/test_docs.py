"""README.md: its supported-layers section must equal what the platforms' TABLEs say, and it must open with
the two commands a new user (and CI) runs."""
import importlib
import os
import re
import subprocess
import sys

import emc.docs
from conftest import REPO

README = REPO / "README.md"
FIRST_COMMANDS = ['pip install -e ".[all,test]" && python examples/digits/digits_demo.py', "python -m pytest -q tests"]


def test_readme_layers_section_matches_the_platform_tables():
    text = README.read_text(encoding="utf-8")
    section = emc.docs.current_section(text)
    assert section == emc.docs.section(), "README is out of date: run `python -m emc.docs --write`"
    # independently of emc.docs: every op kind of each shipped platform's TABLE has `yes` in its column
    header = next(line for line in section.splitlines() if line.startswith("| graph op |"))
    columns = [c.strip() for c in header.strip("|").split("|")][1:]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `([a-z0-9_]+)` \|(.*)\|$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    for i, name in enumerate(columns):
        module = importlib.import_module(f"emc.platforms.{name}")
        table = set(getattr(module, "TABLE", {}) or {})
        assert {kind for kind, cells in rows.items() if cells[i] == "yes"} == table, name


def test_docs_check_detects_drift_and_write_repairs_it(tmp_path):
    copy = tmp_path / "README.md"
    text = README.read_text(encoding="utf-8")
    copy.write_text(text.replace("| `conv2d` |", "| `conv2d_drifted` |"), encoding="utf-8")
    run = [sys.executable, "-m", "emc.docs", "--readme", str(copy)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    assert subprocess.run(run + ["--check"], capture_output=True, cwd=REPO, env=env).returncode == 1
    assert subprocess.run(run + ["--write"], capture_output=True, cwd=REPO, env=env).returncode == 0
    assert copy.read_text(encoding="utf-8") == text


def test_readme_opens_with_the_install_demo_and_test_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# ")
    rest = [line for line in lines[1:] if line.strip()]
    intro = rest[0] if not rest[0].startswith("```") else None
    block = rest[1:] if intro else rest
    assert intro is None or intro.count(". ") == 0, "at most a one-sentence intro before the commands"
    assert block[0].startswith("```")
    assert block[1:3] == FIRST_COMMANDS and block[3] == "```"


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert [line for line in ci if line.strip() and not line.startswith("#")][-1] == FIRST_COMMANDS[1]
