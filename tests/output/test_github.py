"""GitHub Actions annotations, on reports the real engine produced from hand-written runs."""

from __future__ import annotations

from runbuilder import default_rule_count, write_healthy_run, write_run
from weightwatch.checking.config import load_rules
from weightwatch.checking.engine import evaluate
from weightwatch.output import get_format
from weightwatch.output.github import command, escape_data, escape_property, github_annotations
from weightwatch.run.reader import open_run

#: rules in the default pack: the counts below follow it as rules are added
N = default_rule_count()


def test_annotations_for_a_failing_run(nan_report):
    run = nan_report.run
    lines = github_annotations([nan_report]).splitlines()
    assert lines == [
        f"::error file={escape_property(run)}/record-000002.json,title=weightwatch nonfinite-weights"
        "::dense/kernel at epoch 2: dense/kernel holds 3 NaN/Inf values",
        f"::error file={escape_property(run)}/record-000002.json,title=weightwatch nonfinite-loss"
        f"::loss at epoch 2: {nan_report.results[1].findings[0].message}",
        f"::notice title=weightwatch::2 failed, {N - 3} passed, 1 skipped in "
        + lines[-1].rsplit(" in ", 1)[1],
    ]
    assert github_annotations([nan_report]).endswith("\n")


def test_annotations_warnings_and_strict(plateau, healthy):
    lines = github_annotations([plateau]).splitlines()
    assert lines[0].startswith(f"::warning file={escape_property(plateau.run)}/record-000006.json,"
                               "title=weightwatch loss-plateau::loss at epoch 6: loss improved by ")
    assert lines[-1].startswith(f"::notice title=weightwatch::1 warning, {N - 2} passed, 1 skipped in ")
    assert github_annotations([plateau], strict=True).splitlines()[0].startswith("::error ")
    assert github_annotations([healthy]).splitlines()[0].startswith(f"::notice title=weightwatch::{N - 1} passed")


def test_annotation_escaping(tmp_path):
    rs = load_rules({"rule": [{"id": "odd", "check": "nonfinite", "message": "100% bad\r\nreally: yes, {tensor}"}]},
                    use_project_config=False)
    bad = {"nan": 1, "d_l2": None, "d_absmax": None, "d_cos": None, "dead_units": None}
    run_dir = tmp_path / "run,a:b%"
    records = [{"logs": {}}, {"logs": {"loss": 1.0}, "rows": {"dense/kernel": bad}}]
    report = evaluate(open_run(write_run(run_dir, {"dense/kernel": {"shape": [2, 2]}}, records)), rs)
    line = next(x for x in github_annotations([report]).splitlines() if "weightwatch odd" in x)
    file = str(run_dir).replace("%", "%25").replace(":", "%3A").replace(",", "%2C")
    assert "run%2Ca%3Ab%25" in file
    assert line == (f"::error file={file}/record-000001.json,title=weightwatch odd"
                    "::dense/kernel at epoch 1: 100%25 bad%0D%0Areally: yes, dense/kernel")
    assert "\n" not in line and "\r" not in line


def test_escape_functions():
    assert escape_data("a%b\r\nc:d,e") == "a%25b%0D%0Ac:d,e"
    assert escape_property("a%b\r\nc:d,e") == "a%25b%0D%0Ac%3Ad%2Ce"


def test_problem_annotations(tmp_path, rules):
    run = write_healthy_run(tmp_path / "run")
    (run / "record-000004.json").write_text("{not json", encoding="utf-8")
    report = evaluate(open_run(run), rules)
    first = github_annotations([report]).splitlines()[0]
    assert first.startswith(f"::error file={escape_property(str(run / 'record-000004.json'))},"
                            "title=weightwatch input::")
    assert "unreadable record, skipped" in first


def test_command_omits_missing_properties():
    assert command("warning", "m", file=None, title="t") == "::warning title=t::m"
    assert command("notice", "m") == "::notice::m"


def test_annotations_follow_the_terminal_report_only_under_github_actions():
    fmt = get_format("github")
    assert fmt.flag is None and fmt.alongside({"GITHUB_ACTIONS": "true"})
    assert not fmt.alongside({}) and not fmt.alongside({"GITHUB_ACTIONS": "false"})


def test_annotation_for_a_batch_record_names_the_batch(tmp_path, rules):
    bad = {"nan": 1, "d_l2": None, "d_absmax": None, "d_cos": None, "dead_units": None}
    records = [{"logs": {}}, {"epoch": 1, "batch": 4, "trigger": "batch", "logs": {"loss": 1.0},
                              "rows": {"dense/kernel": bad}}]
    report = evaluate(open_run(write_run(tmp_path / "run", {"dense/kernel": {"shape": [2, 2]}}, records)), rules)
    first = github_annotations([report]).splitlines()[0]
    assert "::dense/kernel at epoch 1 batch 4: " in first and "record-000001.json" in first
