"""pytest's own options on the plugin's items: -k, -m, -x, --maxfail, --junitxml, -q/-v, --lf,
--tb and --color, on a real healthy and a real broken Keras run."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from plugin_runs import PLUGIN, add_run, broken_keras, healthy_keras, outcomes, pt  # noqa: F401
from runbuilder import default_rule_count
from weightwatch.checking.config import load_rules

pytest_plugins = ["pytester"]

N = default_rule_count()


@pytest.fixture
def two_runs(pt, healthy_keras, broken_keras):
    runs = (add_run(pt, "healthy", healthy_keras), add_run(pt, "broken", broken_keras))
    return pt, [arg for r in runs for arg in ("--weightwatch", r)]


def test_k_selects_rules_by_id_check_severity_and_keywords_and_runs_by_path(two_runs):
    pt, args = two_runs
    by_word = pt.runpytest(*PLUGIN, *args, "-k", "nan and not loss")
    assert set(outcomes(by_word)) == {"runs/healthy::nonfinite-weights", "runs/broken::nonfinite-weights"}
    by_check = pt.runpytest(*PLUGIN, *args, "-k", "norm-growth")          # exploding-norm's check
    assert set(outcomes(by_check)) == {"runs/healthy::exploding-norm", "runs/broken::exploding-norm"}
    by_severity = pt.runpytest(*PLUGIN, *args, "-k", "healthy and warning")
    warnings = {f"runs/healthy::{r.id}" for r in load_rules(use_project_config=False)
                if r.severity == "warning" and not r.check_def.baseline}
    assert set(outcomes(by_severity)) == warnings
    by_run = pt.runpytest(*PLUGIN, *args, "-k", "broken")
    assert len(outcomes(by_run)) == N and by_run.ret == 1
    by_run.stdout.fnmatch_lines([f"*2 failed, * passed, * skipped, {N + 1} deselected*"])


def test_m_weightwatch_selects_the_runs_only(two_runs):
    pt, args = two_runs
    runs_only = pt.runpytest(*PLUGIN, *args, "-m", "weightwatch", "--strict-markers")
    assert "test_unit.py::test_unit" not in outcomes(runs_only) and len(outcomes(runs_only)) == 2 * N
    unit_only = pt.runpytest(*PLUGIN, *args, "-m", "not weightwatch")
    assert set(outcomes(unit_only)) == {"test_unit.py::test_unit"} and unit_only.ret == 0


@pytest.mark.parametrize("option,failed", [(["-x"], 1), (["--maxfail=1"], 1), (["--maxfail", "2"], 2)])
def test_x_and_maxfail_stop_at_the_first_failing_rules(two_runs, option, failed):
    pt, args = two_runs
    result = pt.runpytest(*PLUGIN, *args, *option)
    assert result.ret == 1
    got = outcomes(result)
    assert list(got.values()).count("failed") == failed
    assert "runs/broken::weight-magnitude" not in got        # nothing ran after the stop
    result.stdout.fnmatch_lines([f"*stopping after {failed} failure*"])


def test_junitxml_has_a_testcase_per_run_and_rule(two_runs):
    pt, args = two_runs
    result = pt.runpytest(*PLUGIN, *args, "--junitxml=reports/junit.xml", "--color=yes")
    assert result.ret == 1
    suite = ET.parse(pt.path / "reports" / "junit.xml").getroot().find("testsuite")
    cases = {(c.get("classname"), c.get("name")): c for c in suite.iter("testcase")}
    assert len(cases) == 2 * N + 1
    assert suite.get("failures") == "2" and int(suite.get("skipped")) >= 2
    failure = cases[("runs.broken", "nonfinite-weights")].find("failure")
    assert failure.get("message") == "tiny/hidden/kernel holds 256 NaN/Inf values (+3 more)"
    assert "E   tiny/hidden/kernel holds 256 NaN/Inf values" in failure.text and "hint: " in failure.text
    assert "\x1b[" not in failure.text and "Traceback" not in failure.text      # no colour, no traceback
    skipped = cases[("runs.healthy", "frozen-changed")].find("skipped")
    assert skipped.get("message") == "no selected tensor is frozen=true"
    assert cases[("runs.healthy", "exploding-norm")].find("failure") is None


def test_color_follows_pytest(two_runs):
    pt, args = two_runs
    coloured = pt.runpytest(*PLUGIN, *args, "--color=yes", "-k", "nonfinite-weights")
    assert "\x1b[1;31mE   \x1b[0m\x1b[1;31mtiny/hidden/kernel holds 256 NaN/Inf values" in coloured.stdout.str()
    plain = pt.runpytest(*PLUGIN, *args, "--color=no", "-k", "nonfinite-weights")
    assert "\x1b[" not in plain.stdout.str()


def test_q_and_v(two_runs):
    pt, args = two_runs
    quiet = pt.runpytest(*PLUGIN, *args, "-q")
    quiet.stdout.fnmatch_lines(["*FF* *", "2 failed, * passed, * skipped in *"])
    verbose = pt.runpytest(*PLUGIN, *args, "-v")
    verbose.stdout.fnmatch_lines(["runs/healthy::nonfinite-weights PASSED*",
                                  "runs/healthy::frozen-changed SKIPPED (no selected tensor is frozen=true)*",
                                  "runs/broken::nonfinite-weights FAILED*"])
    # -v also shows where each failing rule was declared, as weightwatch check -v does
    verbose.stdout.fnmatch_lines(["rule: default.toml:* (built-in)"])


def test_tb_line_gives_the_record_file_and_the_finding(two_runs):
    pt, args = two_runs
    result = pt.runpytest(*PLUGIN, *args, "--tb=line")
    result.stdout.fnmatch_lines(["runs/broken/record-000001.json: tiny/hidden/kernel holds 256 NaN/Inf values "
                                 "(+3 more)"])


def test_lf_reruns_only_the_failed_rules(two_runs):
    pt, args = two_runs
    first = pt.runpytest(*PLUGIN, *args)
    assert first.ret == 1
    again = pt.runpytest(*PLUGIN, *args, "--lf")
    assert outcomes(again) == {"runs/broken::nonfinite-weights": "failed", "runs/broken::nonfinite-loss": "failed"}
    again.stdout.fnmatch_lines(["run-last-failure: rerun previous 2 failures*"])
    # once the run is replaced by a healthy one, --lf passes and the next --lf runs everything
    import shutil

    shutil.rmtree(pt.path / "runs" / "broken")
    shutil.copytree(pt.path / "runs" / "healthy", pt.path / "runs" / "broken")
    fixed = pt.runpytest(*PLUGIN, *args, "--lf")
    assert fixed.ret == 0 and set(outcomes(fixed).values()) == {"passed"}
