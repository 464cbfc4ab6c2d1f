"""The diagnosis: findings grouped by cause, the first offender, one hint per cause."""

import pytest

from runbuilder import MLP, make_run, write_run
from weightwatch import ChecksFailed
from weightwatch.checking.config import load_rules
from weightwatch.checking.engine import evaluate
from weightwatch.run.reader import open_run


def _diverging(tmp_path):
    """dense/kernel explodes at record 2, out/kernel follows at record 3, the loss blows up at 3."""
    grow = lambda l2: {"l2": l2, "d_l2": l2 / 2}  # noqa: E731
    records = [{"logs": {}}, {"logs": {"loss": 1.0}},
               {"logs": {"loss": 0.9}, "rows": {"dense/kernel": grow(12.0)}},
               {"logs": {"loss": 40.0}, "rows": {"dense/kernel": grow(200.0), "out/kernel": grow(30.0)}}]
    return evaluate(open_run(write_run(tmp_path / "run", MLP, records)), load_rules(use_project_config=False))


def test_one_cause_for_many_findings_with_its_first_offender(tmp_path):
    report = _diverging(tmp_path)
    assert len(report.failed) >= 2, "the run must fail several rules for the test to mean something"
    causes = [c for c in report.diagnosis if c.severity == "error"]
    assert [c.id for c in causes] == ["divergence"]
    cause = causes[0]
    assert (cause.first.subject, cause.first.record, cause.first.rule) == ("dense/kernel", 2, "exploding-norm")
    assert [f.subject for f in cause.followed][:2] == ["out/kernel", "loss"]
    assert {"exploding-norm", "loss-diverging"} <= set(cause.rules)
    assert cause.detail == "loss 0.9 at epoch 2, 40 at epoch 3"
    assert "Lower the learning rate" in cause.hint


def test_the_diagnosis_is_in_the_json(tmp_path):
    d = _diverging(tmp_path).to_dict()["diagnosis"][0]
    assert d["cause"] == "divergence" and d["record"] == 2 and d["first"]["subject"] == "dense/kernel"
    assert d["followed"][0] == {"subject": "out/kernel", "record": 3, "epoch": 3}


def test_separate_causes_are_told_apart_and_ordered_by_onset():
    run = make_run({"base/kernel": {"frozen": 1, "d_absmax": [None, 0.0, 0.0, 0.5], "changed": [None, 0, 0, 1]},
                    "head/kernel": {"d_l2": [None, 0.01, 0.0, 0.0], "changed": [None, 1, 0, 0]}}, 4)
    causes = evaluate(run, load_rules(use_project_config=False)).diagnosis
    assert [(c.id, c.onset) for c in causes if c.severity == "error"] == [("not-learning", 2), ("frozen-changed", 3)]


def test_a_healthy_run_has_no_diagnosis(healthy):
    assert healthy.diagnosis == []


def test_report_reads_well_in_programs_tests_and_notebooks(tmp_path, healthy):
    report = _diverging(tmp_path)
    assert repr(report) == f"<Report {report.run}: {report.summary()}>"
    assert report.summary().startswith(f"{len(report.failed)} failed")
    assert repr(report.failed[0]).startswith("<FAILED exploding-norm: dense/kernel L2 norm grew")
    with pytest.raises(ChecksFailed) as info:
        report.raise_for_failures()
    assert isinstance(info.value, AssertionError)
    text = str(info.value)
    assert text.splitlines()[0] == f"weightwatch: {report.run}: {report.summary()}"
    assert "training diverged" in text and "FAILED exploding-norm - dense/kernel" in text
    healthy.raise_for_failures()                       # passes quietly
    html = report._repr_html_()
    assert "<table>" in html and "exploding-norm" in html and "training diverged" in html


def test_a_warning_that_came_first_does_not_stand_for_a_later_failure():
    # update-ratio warns (too small) on a/kernel at record 2; b/kernel stops learning at record 4
    run = make_run({"a/kernel": {"d_l2": [None, 1e-3, 1e-7, 1e-3, 1e-3], "l2": 1.0},
                    "b/kernel": {"d_l2": [None, 0.01, 0.01, 0.01, 0.0], "changed": [None, 1, 1, 1, 0]}}, 5)
    report = evaluate(run, load_rules(use_project_config=False))
    assert [f.tensor for r in report.warnings for f in r.findings if r.id == "update-ratio"] == ["a/kernel"]
    stalled = [c for c in report.diagnosis if c.id == "not-learning"]
    assert [(c.severity, c.first.subject, c.onset) for c in stalled] == [("error", "b/kernel", 4)]


def test_the_terminal_diagnosis_gives_the_restore_line_of_a_halted_run(tmp_path):
    from rich.console import Console

    from weightwatch.output.terminal import render_report

    report = _diverging(tmp_path)
    (tmp_path / "run" / "verdict.json").write_text('{"halted": true, "healthy_record": 1}')
    report = evaluate(open_run(tmp_path / "run"), load_rules(use_project_config=False))
    assert report.healthy_record == 1
    console = Console(record=True, width=200)
    render_report(report, console)
    text = console.export_text()
    section = text.split(" diagnosis ")[1].split("short test summary info")[0]
    assert "training diverged" in section and "first: dense/kernel (exploding-norm)" in section
    assert f'restore: weightwatch.restore(model, "{report.run}")   # the weights of record 1' in section


def test_an_empty_run_checks_nothing_and_exits_5(tmp_path):
    run_dir = write_run(tmp_path / "run", {}, [{"logs": {}}])
    report = evaluate(open_run(run_dir), load_rules(use_project_config=False))
    assert report.exit_code() == 5, "a run with no tensor and no log must not pass"


def test_a_loss_back_at_chance_is_its_own_cause_unless_training_diverged(tmp_path):
    """Labels shuffled mid-run: the loss climbs back to chance and nothing else moves."""
    import math
    records = [{"logs": {}}] + [{"logs": {"loss": r * math.log(4)}} for r in (1.0, 0.8, 0.7, 1.01, 1.0)]
    run = open_run(write_run(tmp_path / "run", MLP, records, manifest_extra={"chance_loss": math.log(4)}))
    report = evaluate(run, load_rules(use_project_config=False))
    assert "loss-at-chance" in {r.id for r in report.warnings}     # the loss sits at chance after it
    # ... which is the lost signal itself, not another cause
    assert [c.id for c in report.diagnosis] == ["signal-lost"], [(c.id, c.first.message) for c in report.diagnosis]
    assert report.diagnosis[0].first.rule == "loss-back-to-chance" and report.diagnosis[0].onset == 4
    # a loss that climbs to 3x its best is a divergence, and its return to chance the divergence's doing
    records = [{"logs": {}}] + [{"logs": {"loss": r * math.log(4)}} for r in (1.0, 0.7, 0.6, 1.9)]
    run = open_run(write_run(tmp_path / "div", MLP, records, manifest_extra={"chance_loss": math.log(4)}))
    report = evaluate(run, load_rules(use_project_config=False))
    assert {"loss-diverging", "loss-back-to-chance"} <= {r.id for r in report.failed}
    assert [c.id for c in report.diagnosis if c.severity == "error"] == ["divergence"]
