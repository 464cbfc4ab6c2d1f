"""The plugin with a baseline: baseline rules become test items only when one is given."""

from __future__ import annotations

from plugin_runs import PLUGIN, add_run, outcomes, pt  # noqa: F401
from runbuilder import trajectory_run

pytest_plugins = ["pytester"]


def test_baseline_rules_are_items_only_with_a_baseline(pt, tmp_path):
    refs = [trajectory_run(tmp_path / f"ref{s}", jitter=0.02 * (s + 1)) for s in range(3)]
    run = add_run(pt, "pr", trajectory_run(tmp_path / "lr3", lr=3.0, jitter=0.05))
    plain = outcomes(pt.runpytest(*PLUGIN, "--weightwatch", run))
    assert plain and not [k for k in plain if "::baseline-" in k]
    args = [a for r in refs for a in ("--weightwatch-baseline", str(r))]
    result = pt.runpytest(*PLUGIN, "--weightwatch", run, *args)
    got = outcomes(result)
    assert got[f"{run}::baseline-update-ratio"] == "failed"
    assert got[f"{run}::baseline-norm"] == "passed" and got[f"{run}::baseline-tensors"] == "passed"
    assert result.ret == 1
    result.stdout.fnmatch_lines(["weightwatch: runs runs/pr (command line) · rules: default · baseline: "
                                 "3 reference runs (*ref0, *ref1, *ref2)", "*update ratio*above the reference band*"])


def test_the_configuration_baseline_applies_and_a_bad_one_is_a_usage_error(pt, tmp_path):
    refs = [trajectory_run(tmp_path / f"ref{s}", jitter=0.02 * (s + 1)) for s in range(3)]
    run = add_run(pt, "pr", trajectory_run(tmp_path / "lr3", lr=3.0, jitter=0.05))
    listed = ", ".join(f'"{r}"' for r in refs)
    (pt.path / "weightwatch.toml").write_text(f'runs = ["{run}"]\nbaseline = [{listed}]\n')
    assert outcomes(pt.runpytest(*PLUGIN))[f"{run}::baseline-update-ratio"] == "failed"
    assert not [k for k in outcomes(pt.runpytest(*PLUGIN, "--weightwatch-no-baseline")) if "::baseline-" in k]
    (pt.path / "weightwatch.toml").write_text(f'runs = ["{run}"]\nbaseline = ["nowhere"]\n')
    bad = pt.runpytest(*PLUGIN)
    assert bad.ret == 4
    bad.stderr.fnmatch_lines(["*weightwatch: *nowhere: no such reference run directory or baseline file*"])
