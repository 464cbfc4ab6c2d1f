"""Outcomes of the plugin's items on real recorded runs: failures drawn as weightwatch draws them,
skips with the rule's note, warnings as pytest warnings (failing under strict mode and -W error),
the diagnosis, and the same exit codes and outcomes as `weightwatch check`."""

from __future__ import annotations

import re

import pytest

from plugin_runs import (  # noqa: F401 (fixtures)
    PLUGIN, add_run, broken_keras, cli_json, handmade, healthy_keras, outcomes, pt,
)

pytest_plugins = ["pytester"]


def block(lines: list[str], title: str) -> list[str]:
    """The lines under the ``____ title ____`` separator, up to the next separator."""
    start = next(i for i, ln in enumerate(lines) if re.fullmatch(rf"_+ {re.escape(title)} _+", ln))
    end = next(i for i in range(start + 1, len(lines)) if re.fullmatch(r"([_=!])\1{4,}.*", lines[i]))
    return lines[start + 1:end]


def test_failures_are_drawn_by_weightwatch_not_as_tracebacks(pt, broken_keras, capsys):
    run = add_run(pt, "broken", broken_keras)
    result = pt.runpytest(*PLUGIN, "--weightwatch", run)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    lines = result.stdout.lines
    text = result.stdout.str()
    assert "Traceback" not in text and "pytest_plugin.py" not in text and "RuleFailed" not in text
    # the same block as weightwatch check's own failure section: evidence, history, hint
    from weightwatch.cli import main

    capsys.readouterr()
    assert main(["check", run]) == 1
    cli = capsys.readouterr().out.splitlines()
    for rule in ("nonfinite-weights", "nonfinite-loss"):
        mine = block(lines, f"{run}::{rule}")
        assert mine == block(cli, rule)
        assert any(ln.startswith("E   ") for ln in mine) and any(ln.startswith("hint: ") for ln in mine)
    weights = block(lines, f"{run}::nonfinite-weights")
    assert re.search(r"nan\+inf: [▁-█]+  0  \[\d+\]", "\n".join(weights)), weights
    # the short summary names the item and the first finding, as weightwatch's does
    result.stdout.fnmatch_lines([
        "FAILED runs/broken::nonfinite-weights - tiny/hidden/kernel holds 256 NaN/Inf values (+3 more)",
        "FAILED runs/broken::nonfinite-loss - loss became non-finite (NaN or Inf) at epoch 1"])


def test_the_diagnosis_follows_the_failures_with_the_restore_line(pt, broken_keras):
    run = add_run(pt, "broken", broken_keras)
    result = pt.runpytest(*PLUGIN, "--weightwatch", run)
    result.stdout.fnmatch_lines([
        "*= FAILURES =*",
        "*= weightwatch diagnosis =*",
        "training diverged: weights or loss grew without bound · from epoch 1 (record 1)",
        "  first: tiny/hidden/kernel (nonfinite-weights) - tiny/hidden/kernel holds 256 NaN/Inf values",
        '  restore: weightwatch.restore(model, "runs/broken")   # the weights of record 0, the last that passed',
        "*= short test summary info =*"])
    quiet = pt.runpytest(*PLUGIN, "--weightwatch", run, "--tb=no")
    assert "weightwatch diagnosis" not in quiet.stdout.str()


def test_a_healthy_run_passes_and_skips_carry_the_rules_note(pt, healthy_keras):
    run = add_run(pt, "healthy", healthy_keras)
    result = pt.runpytest(*PLUGIN, "--weightwatch", run, "-rs")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([
        "SKIPPED [1] runs/healthy::frozen-changed: no selected tensor is frozen=true",
        "* passed, * skipped*"])
    assert "weightwatch diagnosis" not in result.stdout.str()


def test_a_warning_passes_and_is_listed_as_a_pytest_warning(pt):
    run = add_run(pt, "plateau", handmade(pt.path / "src", "plateau"))
    result = pt.runpytest(*PLUGIN, "--weightwatch", run)
    assert result.ret == pytest.ExitCode.OK
    assert outcomes(result)[f"{run}::loss-plateau"] == "passed"
    result.stdout.fnmatch_lines([
        "*= warnings summary =*",
        "runs/plateau::loss-plateau",
        "  runs/plateau/record-000006.json:0: RuleWarning: loss-plateau: loss improved by 0.00% over the last "
        "5 epochs (needs 0.10%)",
        "*= weightwatch diagnosis =*",
        "the loss stopped improving · from epoch 6 (record 6)",
        "* passed, * skipped, 1 warning*"])


@pytest.mark.parametrize("option", [
    ["--weightwatch-strict"],
    ["--strict"],                                                   # pytest's strict mode
    ["-W", "error::weightwatch.pytest_plugin.RuleWarning"],
    ["-W", "error"],
], ids=["weightwatch-strict", "pytest-strict", "W-error-RuleWarning", "W-error"])
def test_a_warning_fails_under_strict_mode_and_W_error(pt, option):
    run = add_run(pt, "plateau", handmade(pt.path / "src", "plateau"))
    result = pt.runpytest(*PLUGIN, "--weightwatch", run, *option)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert outcomes(result)[f"{run}::loss-plateau"] == "failed"
    section = block(result.stdout.lines, f"{run}::loss-plateau")
    assert any(ln.startswith("E   loss improved by 0.00%") for ln in section), section
    assert "Traceback" not in result.stdout.str()


def test_filterwarnings_ini_can_silence_rule_warnings(pt):
    run = add_run(pt, "plateau", handmade(pt.path / "src", "plateau"))
    pt.makeini("[pytest]\nfilterwarnings =\n    ignore::weightwatch.pytest_plugin.RuleWarning\n")
    result = pt.runpytest(*PLUGIN, "--weightwatch", run)
    assert result.ret == 0 and "RuleWarning" not in result.stdout.str()


def test_a_select_that_matches_nothing_warns_with_its_note(pt):
    run = add_run(pt, "exp1", handmade(pt.path / "src", "healthy"))
    (pt.path / "intent.toml").write_text('[[rule]]\nid = "encoder-frozen"\ncheck = "unchanged"\n'
                                         'select = ["encoder/*"]\n')
    result = pt.runpytest(*PLUGIN, "--weightwatch", run, "--weightwatch-rules", "intent.toml")
    result.stdout.fnmatch_lines([
        "runs/exp1::encoder-frozen",
        "  runs/exp1/manifest.json:0: RuleWarning: encoder-frozen: select [[]'encoder/*'] matched no tensor of "
        "this run; closest names: *"])


# -- agreement with weightwatch check ------------------------------------------------------------

PYTEST_OUTCOME = {"passed": "passed", "failed": "failed", "skipped": "skipped", "warning": "passed"}


@pytest.mark.parametrize("kind,strict,expected", [
    ("healthy-keras", False, 0),
    ("broken-keras", False, 1),
    ("nan", False, 1),
    ("plateau", False, 0),
    ("plateau", True, 1),
    ("healthy-keras", True, 0),
])
def test_exit_codes_and_outcomes_agree_with_weightwatch_check(pt, capsys, request, kind, strict, expected):
    source = (request.getfixturevalue(kind.replace("-keras", "_keras")) if kind.endswith("-keras")
              else handmade(pt.path / "src", kind))
    run = add_run(pt, kind, source)
    code, report = cli_json(capsys, run, *(["--strict"] if strict else []))
    result = pt.runpytest(*PLUGIN, "--weightwatch", run, *(["--weightwatch-strict"] if strict else []),
                          "-p", "no:cacheprovider")
    assert code == result.ret == expected
    want = {f"{run}::{r['rule']}": ("failed" if strict and r["status"] == "warning"
                                    else PYTEST_OUTCOME[r["status"]]) for r in report["results"]}
    got = {k: v for k, v in outcomes(result).items() if k.startswith(run)}
    assert got == want
    warned = [r["rule"] for r in report["results"] if r["status"] == "warning"]
    assert len(result.reprec.getcalls("pytest_warning_recorded")) == (0 if strict else len(warned))


def test_nothing_selected_is_exit_5_in_both(pt, capsys, healthy_keras):
    run = add_run(pt, "healthy", healthy_keras)
    code, _ = cli_json(capsys, run, "-k", "no-such-rule")
    result = pt.runpytest(*PLUGIN, "--weightwatch", run, "-k", "no-such-rule")
    assert code == result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
