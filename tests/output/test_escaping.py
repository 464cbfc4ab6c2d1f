"""Names come from the run, and a run is input: nothing in a name is acted on by a terminal or a
CI runner, and --junitxml never replaces what it should not.

A tensor named ``"x\\n::error file=README.md,line=1::forged"`` used to print raw workflow commands
in the default terminal report under GITHUB_ACTIONS=true; ESC sequences reached the terminal;
--junitxml replaced a device or a symbolic link at its path.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from weightwatch.checking.engine import evaluate
from weightwatch.cli import main
from weightwatch.output import Emission
from weightwatch.output.junit import write_junit
from weightwatch.output.terminal import emit
from weightwatch.output.text import visible
from weightwatch.run.reader import open_run

from conftest import subprocess_env
from runbuilder import write_run

FORGED = "x\n::error file=README.md,line=1::forged"
ESC = "e\x1b[31mRED\x1b]0;title\x07/kernel"
MARKUP = "[bold red]m[/]/kernel"
COLON = "::warning::w/kernel"
NAN = {"nan": 3, "d_l2": None, "d_absmax": None, "changed": True, "d_cos": None, "dead_units": None}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    tensors = {n: {"shape": [4, 3]} for n in (FORGED, ESC, MARKUP, COLON)}
    records = [{"logs": {}}, {"logs": {"loss": 1.0}},
               {"logs": {"loss": None}, "rows": {t: dict(NAN) for t in tensors}}]
    return write_run(tmp_path_factory.mktemp("hostile") / "run", tensors, records)


def commands_outside_fences(text: str) -> list[str]:
    """Lines a GitHub runner would act on: '::' lines outside ::stop-commands:: fences."""
    out, token = [], None
    for line in text.splitlines():
        if token is not None:
            if line == f"::{token}::":
                token = None
            continue
        if line.startswith("::stop-commands::"):
            token = line.split("::")[2]
        elif line.startswith("::"):
            out.append(line)
    return out


def test_visible_escapes_every_control_character():
    assert visible(FORGED) == "x\\n::error file=README.md,line=1::forged"
    assert visible(ESC) == "e\\x1b[31mRED\\x1b]0;title\\x07/kernel"
    assert visible("a\u202eb\x9bc\td") == "a\\u202eb\\x9bc\\td"
    assert visible(MARKUP) == MARKUP and visible("dense/kernel") == "dense/kernel"


@pytest.mark.parametrize("command", [["check", "--no-config"], ["check", "--no-config", "-v"], ["show"]])
def test_under_github_actions_only_weightwatchs_own_annotations_are_commands(hostile, command):
    env = dict(subprocess_env(), GITHUB_ACTIONS="true")
    args = [sys.executable, "-m", "weightwatch", command[0], str(hostile), *command[1:]]
    out = subprocess.run(args, capture_output=True, text=True, env=env).stdout
    assert "\x1b" not in out and "\x07" not in out
    for line in commands_outside_fences(out):
        # weightwatch's own annotations, written after the fenced report, data escaped
        assert line.startswith(("::error file=", "::warning file=", "::notice title=weightwatch::")), line
        assert "README.md" not in line.split("::")[1]
    assert not any(ln.startswith("::error file=README.md") for ln in out.splitlines())
    if command[0] == "check":
        assert commands_outside_fences(out)  # the annotations are there


def test_the_terminal_report_shows_names_escaped_and_markup_literally(hostile):
    rules = __import__("weightwatch.checking.config", fromlist=["load_rules"]).load_rules(use_project_config=False)
    report = evaluate(open_run(hostile), rules)
    stream = io.StringIO()
    emit(Emission([report], verbosity=1).to(stream=stream))
    text = stream.getvalue()
    assert "\x1b" not in text and "x\\n::error file=README.md" in text and "e\\x1b[31mRED" in text
    assert MARKUP in text
    assert FORGED in [f.tensor for r in report.results for f in r.findings]  # the report itself is untouched


@pytest.fixture
def report(hostile):
    from weightwatch.checking.config import load_rules

    return evaluate(open_run(hostile), load_rules(use_project_config=False))


def test_junitxml_replaces_a_regular_file_by_rename(report, tmp_path):
    target = tmp_path / "reports" / "weights.xml"
    write_junit([report], target)
    first = os.stat(target).st_ino
    write_junit([report], target)
    assert os.stat(target).st_ino != first  # a new file renamed over the old one
    assert target.read_bytes().startswith(b"<?xml")
    assert [p.name for p in target.parent.iterdir()] == ["weights.xml"]  # no temporary left


@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo", "device"])
def test_junitxml_refuses_what_is_not_a_regular_file(report, tmp_path, capsys, kind):
    target = tmp_path / "weights.xml"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    if kind == "directory":
        target.mkdir()
    elif kind == "symlink":
        target.symlink_to(victim)
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target = "/dev/null"
    code = main(["check", str(report.run), "--no-config", "--junitxml", str(target)])
    err = capsys.readouterr().err
    assert code == 4 and "Traceback" not in err
    assert "refusing to replace it" in err and len(err.strip().splitlines()) == 1
    assert victim.read_text() == "keep me"
    if kind == "symlink":
        assert os.path.islink(target)


def test_the_lines_printed_during_training_are_escaped(report):
    from rich.console import Console

    from weightwatch.output.live import LivePrinter

    stream = io.StringIO()
    printer = LivePrinter(Console(file=stream, highlight=False, width=200, color_system=None))
    printer.new_findings([f for r in report.results for f in r.findings])
    printer.summary(report, 0.1, "runs/x\x1b[2J")
    text = stream.getvalue()
    assert "\x1b" not in text and "x\\n::error file=README.md" in text and "runs/x\\x1b[2J" in text
    assert not any(line.startswith("::") for line in text.splitlines())
