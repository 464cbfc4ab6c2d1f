"""The plugin's registration and collection: entry point, inertness, node ids, runs from
configuration (globs, relative to the file), and input errors as pytest reports them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile

import re

import pytest

from conftest import subprocess_env
from plugin_runs import PLUGIN, ROOT, add_run, handmade, pt  # noqa: F401 (pt is a fixture)
from weightwatch.checking.config import load_rules
from weightwatch.errors import RuleError

pytest_plugins = ["pytester"]

RULES = [r.id for r in load_rules(use_project_config=False) if not r.check_def.baseline]   # no baseline given


# -- registration ------------------------------------------------------------------------------

def test_entry_point_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["entry-points"]["pytest11"] == {"weightwatch": "weightwatch.pytest_plugin"}


def test_installed_wheel_registers_the_plugin(tmp_path):
    """The wheel's metadata carries the pytest11 entry point, and pytest loads the plugin from it
    with no -p: what `pip install weightwatch` gives (the wheel is unpacked on PYTHONPATH)."""
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w",
                            str(tmp_path / "dist")], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.fail(f"wheel build failed:\n{build.stderr[-2000:]}")
    wheel = next((tmp_path / "dist").glob("weightwatch-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))
        assert "[pytest11]\nweightwatch = weightwatch.pytest_plugin" in z.read(name).decode()
        z.extractall(tmp_path / "site")
    project = tmp_path / "project"
    handmade(project / "runs" / "ok", "healthy")
    (project / ".git").mkdir()
    env = dict(subprocess_env(), PYTHONPATH=str(tmp_path / "site"))
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    env.pop("PYTEST_ADDOPTS", None)
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--weightwatch",
                          "runs/ok", "-q"], capture_output=True, text=True, cwd=project, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"\b\d+ passed, \d+ skipped", out.stdout) and " failed" not in out.stdout
    loaded = subprocess.run([sys.executable, "-c", "import weightwatch.pytest_plugin as m; print(m.__file__)"],
                            capture_output=True, text=True, cwd=project, env=env)
    assert loaded.stdout.startswith(str(tmp_path / "site")), loaded


INERT_PROBE = """
import sys

def test_nothing_heavy_was_imported():
    assert "weightwatch.pytest_plugin" in sys.modules          # the plugin is loaded...
    heavy = {"numpy", "rich", "keras", "tensorflow", "weightwatch.checking.config"} & set(sys.modules)
    assert not heavy, sorted(heavy)                            # ... and inert
"""


@pytest.mark.parametrize("config", [None, "[tool.weightwatch]\ndisable = ['loss-plateau']\n"],
                         ids=["no-config", "config-without-runs"])
def test_inert_unless_asked(pt, monkeypatch, config):
    """No --weightwatch and no runs configured: no numpy, rich or Keras, nothing collected but the
    project's own tests, no header line."""
    if config:
        pt.makepyprojecttoml(config)
    handmade(pt.path / "runs" / "ok", "healthy")      # a run lying around is not collected
    pt.makepyfile(test_probe=INERT_PROBE)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = pt.runpytest_subprocess(*PLUGIN, "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["collected 2 items", "*2 passed*"])
    assert "weightwatch:" not in result.stdout.str()


# -- node ids ------------------------------------------------------------------------------------

def test_each_run_and_rule_is_an_item_after_the_projects_tests(pt):
    add_run(pt, "exp1", handmade(pt.path / "src" / "a", "healthy"))
    add_run(pt, "exp2", handmade(pt.path / "src" / "b", "healthy"))
    result = pt.runpytest(*PLUGIN, "--weightwatch", "runs/exp1", "--weightwatch", "runs/exp2",
                          "--collect-only", "-q")
    ids = [ln for ln in result.stdout.lines if "::" in ln]
    assert ids == (["test_unit.py::test_unit"] + [f"runs/exp1::{r}" for r in RULES]
                   + [f"runs/exp2::{r}" for r in RULES])
    assert result.ret == 0


def test_header_names_the_runs_and_the_rules(pt):
    add_run(pt, "exp1", handmade(pt.path / "src", "healthy"))
    result = pt.runpytest(*PLUGIN, "--weightwatch", "runs/exp1")
    result.stdout.fnmatch_lines(["weightwatch: runs runs/exp1 (command line) · rules: default",
                                 f"collected {len(RULES) + 1} items"])


def test_globs_are_expanded_in_order_and_each_run_collected_once(pt):
    for name in ("b", "a"):
        add_run(pt, name, handmade(pt.path / "src" / name, "healthy"))
    (pt.path / "runs" / "notes.txt").write_text("not a run")
    result = pt.runpytest(*PLUGIN, "--weightwatch", "runs/*", "--weightwatch", "runs/a",
                          "--weightwatch", str(pt.path / "runs" / "b"), "--collect-only", "-q")
    runs = list(dict.fromkeys(ln.split("::")[0] for ln in result.stdout.lines if "::" in ln))
    assert runs == ["test_unit.py", "runs/a", "runs/b"]


def test_a_run_outside_the_rootdir_keeps_its_absolute_path(pt, tmp_path):
    outside = handmade(tmp_path / "elsewhere" / "exp", "healthy")
    # `=`: pytest picks its rootdir before plugins declare their options, so a separate value
    # outside the project would count as a path argument (as for every plugin's path option)
    result = pt.runpytest(*PLUGIN, f"--weightwatch={outside}", "--collect-only", "-q")
    assert "test_unit.py::test_unit" in result.stdout.lines
    assert f"{outside.as_posix()}::nonfinite-weights" in result.stdout.lines


# -- runs from the configuration ------------------------------------------------------------------

def test_runs_from_pyproject_with_globs(pt):
    for name in ("exp1", "exp2"):
        add_run(pt, name, handmade(pt.path / "src" / name, "healthy"))
    pt.makepyprojecttoml('[tool.weightwatch]\nruns = ["runs/exp*"]\n')
    plain = pt.runpytest(*PLUGIN, "--collect-only", "-q")
    assert {ln.split("::")[0] for ln in plain.stdout.lines if "::" in ln} == {"test_unit.py", "runs/exp1",
                                                                                "runs/exp2"}
    header = pt.runpytest(*PLUGIN, "--collect-only")
    header.stdout.fnmatch_lines(["weightwatch: runs runs/exp* (pyproject.toml) · rules: default, pyproject.toml*"])
    # like testpaths: file arguments mean "just these"; --weightwatch replaces the configured runs
    only_unit = pt.runpytest(*PLUGIN, "test_unit.py", "--collect-only", "-q")
    assert [ln for ln in only_unit.stdout.lines if "::" in ln] == ["test_unit.py::test_unit"]
    replaced = pt.runpytest(*PLUGIN, "--weightwatch", "runs/exp2", "--collect-only", "-q")
    assert {ln.split("::")[0] for ln in replaced.stdout.lines if "::" in ln} == {"test_unit.py", "runs/exp2"}


def test_configured_runs_are_relative_to_the_configuration_file(pt, monkeypatch):
    add_run(pt, "exp1", handmade(pt.path / "src", "healthy"))
    (pt.path / "weightwatch.toml").write_text('runs = ["runs/exp1"]\n')
    sub = pt.mkdir("notebooks")
    monkeypatch.chdir(sub)
    result = pt.runpytest(*PLUGIN, "--collect-only", "-q")
    assert "runs/exp1::nonfinite-weights" in result.stdout.lines, result.stdout.str()


def test_runs_key_is_validated_where_the_configuration_is_read(pt, tmp_path):
    pt.makepyprojecttoml('[project]\nname = "x"\n\n[tool.weightwatch]\nruns = 3\n')
    result = pt.runpytest(*PLUGIN)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(['ERROR: weightwatch: *pyproject.toml:5: "runs" must be a list of run '
                                 'directories or glob patterns, got 3'])
    # weightwatch check reads the same document: the same one-line error, not "unknown key"
    with pytest.raises(RuleError, match=r'pyproject.toml:5: "runs" must be a list'):
        load_rules(start=pt.path)


def test_runs_key_belongs_to_the_project_configuration_only(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "weightwatch.toml").write_text('runs = ["runs/*"]\ndisable = ["loss-plateau"]\n')
    rules = load_rules(start=tmp_path)                       # accepted: not an unknown key
    assert "loss-plateau" not in [r.id for r in rules]
    (tmp_path / "extra.toml").write_text('runs = ["elsewhere"]\n')
    with pytest.raises(RuleError, match=r'extra.toml:1: "runs" belongs in the project configuration'):
        load_rules([tmp_path / "extra.toml"], start=tmp_path)


def test_a_glob_that_matches_nothing_warns_and_errors_under_W_error(pt):
    result = pt.runpytest(*PLUGIN, "--weightwatch", "runs/*")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*WeightwatchWarning: weightwatch: 'runs/*' matched no run directory",
                                 "*1 passed, 1 warning*"])
    strict = pt.runpytest(*PLUGIN, "--weightwatch", "runs/*", "-W", "error")
    assert strict.ret == pytest.ExitCode.USAGE_ERROR
    strict.stderr.fnmatch_lines(["ERROR: weightwatch: 'runs/*' matched no run directory (command line)"])


# -- input errors ---------------------------------------------------------------------------------

def test_unreadable_runs_are_collection_errors_with_the_one_line_message(pt):
    run = add_run(pt, "damaged", handmade(pt.path / "src", "healthy"))
    (pt.path / run / "record-000002.json").write_text("{not json")
    result = pt.runpytest(*PLUGIN, "--weightwatch", run, "--weightwatch", "runs/missing")
    assert result.ret == pytest.ExitCode.INTERRUPTED   # pytest's code for collection errors
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*ERROR collecting runs/damaged*",
        "runs/damaged/record-000002.json: unreadable record, skipped (*)",
        "*ERROR collecting runs/missing*",
        "runs/missing: no such run directory",
        "ERROR runs/damaged - runs/damaged/record-000002.json: unreadable record, skipped*",
        "ERROR runs/missing - runs/missing: no such run directory",
        "*Interrupted: 2 errors during collection*"])
    assert "Traceback" not in out and "pytest_plugin.py" not in out


def test_a_rule_file_that_does_not_load_is_a_usage_error(pt):
    run = add_run(pt, "exp1", handmade(pt.path / "src", "healthy"))
    (pt.path / "ci.toml").write_text('[[rule]]\nid = "x"\ncheck = "norm-grwoth"\n')
    result = pt.runpytest(*PLUGIN, "--weightwatch", run, "--weightwatch-rules", "ci.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    line = next(ln for ln in result.stderr.lines if ln.startswith("ERROR: weightwatch: "))
    assert 'ci.toml:2: rule "x": unknown check' in line and 'did you mean "norm-growth"' in line


def test_extra_rule_files_are_layered_like_the_cli(pt):
    run = add_run(pt, "exp1", handmade(pt.path / "src", "healthy"))
    (pt.path / "ci.toml").write_text('disable = ["loss-plateau"]\n[[rule]]\nid = "head-learns"\n'
                                     'check = "stalled"\nselect = ["out/*"]\n')
    result = pt.runpytest(*PLUGIN, "--weightwatch", run, "--weightwatch-rules", "ci.toml", "--collect-only",
                          "-q")
    ids = [ln for ln in result.stdout.lines if ln.startswith("runs/")]
    assert "runs/exp1::head-learns" in ids and "runs/exp1::loss-plateau" not in ids
