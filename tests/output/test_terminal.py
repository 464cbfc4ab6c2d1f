"""The terminal report, on reports the real engine produced from hand-written runs."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from runbuilder import default_rule_count, MLP, write_healthy_run, write_nan_run, write_run
from weightwatch.checking.config import load_rules
from weightwatch.checking.engine import evaluate
from weightwatch.run.reader import open_run
from weightwatch.checking.report import Report
from weightwatch.output.terminal import fmt_num, format_duration, history_text, render_report, render_summary, summary_text

#: rules in the default pack: the counts below follow it as rules are added
N = default_rule_count()

WIDTH = 120


def console(width=WIDTH, **kw) -> Console:
    return Console(record=True, width=width, force_terminal=False, file=io.StringIO(), **kw)


def render(report, verbosity=0, width=WIDTH) -> str:
    c = console(width)
    render_report(report, c, verbosity=verbosity)
    return c.export_text()


def summary(reports, duration=0.123, strict=False, width=WIDTH) -> str:
    c = console(width)
    render_summary(reports, c, duration=duration, strict=strict)
    return c.export_text()


def line_of(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def section(text: str, title: str) -> str:
    """The lines between the ``=== title ===`` bar and the next ``===`` bar."""
    m = re.search(rf"^=+ {re.escape(title)} =+$\n(.*?)(?=^=+ |\Z)", text, re.S | re.M)
    assert m, f"no {title} section in:\n{text}"
    return m.group(1)


# -- one run -------------------------------------------------------------------------------

def test_healthy_run_every_rule_passes_or_skips(healthy):
    out = render(healthy)
    assert re.search(r"^=+ weightwatch check =+$", out, re.M)
    head = line_of(out, "run: ")
    assert head == f"run: {healthy.run}  (weightwatch) · 4 records · 4 tensors"
    assert line_of(out, "rules: ") == "rules: default"
    for r in healthy.results:
        line = line_of(out, r.id + " ")
        assert r.rule.check in line
        word = {"passed": "PASSED", "skipped": "SKIPPED"}[r.status]
        assert line.endswith(" " + word) and len(line) == WIDTH, line
    assert line_of(out, "frozen-changed").endswith("SKIPPED")
    assert "no selected tensor is frozen" not in out      # skip notes are -v material
    for title in ("FAILURES", "WARNINGS", "ERRORS", "short test summary info"):
        assert f" {title} " not in out


def test_failing_run_lines_and_failures_section(nan_report):
    out = render(nan_report)
    assert line_of(out, "nonfinite-weights").endswith(" FAILED")
    assert line_of(out, "nonfinite-loss").endswith(" FAILED")
    assert line_of(out, "exploding-norm").endswith(" PASSED")

    failures = section(out, "FAILURES")
    assert re.search(r"^_+ nonfinite-weights _+$", failures, re.M)
    assert re.search(r"^_+ nonfinite-loss _+$", failures, re.M)
    block = failures.split("nonfinite-loss _")[0]
    assert ("dense/kernel · first at epoch 2 (record 2) · nan+inf 3 against limit 0 · "
            "2 of 4 records violate") in block
    assert "E   dense/kernel holds 3 NaN/Inf values" in block
    hist = line_of(block, "    nan+inf: ")
    assert hist.endswith("0  0  [3]  3")                 # the failing record is marked
    assert re.fullmatch(r"    nan\+inf: \S{4}  0  0  \[3\]  3", hist)   # sparkline, one bar per record
    assert "hint: Lower the learning rate" in block
    loss = failures.split("nonfinite-loss _")[1]
    assert "log loss · first at epoch 2 (record 2) · loss non-finite · 2 of 4 records" in loss
    assert "[non-finite]" in loss

    short = section(out, "short test summary info").splitlines()
    assert short[0] == "FAILED nonfinite-weights - dense/kernel holds 3 NaN/Inf values"
    assert short[1].startswith("FAILED nonfinite-loss - loss")
    assert len(short) == 2


def test_quiet_prints_progress_characters(healthy, nan_report):
    out = render(nan_report, verbosity=-1)
    chars = "".join({"passed": ".", "failed": "F", "skipped": "s", "warning": "W"}[r.status]
                    for r in nan_report.results)
    assert out.splitlines()[0] == f"{nan_report.run} {chars}"
    assert chars.startswith("FF") and "s" in chars
    assert "PASSED" not in out and "run: " not in out
    assert " FAILURES " in out and "E   dense/kernel holds 3 NaN/Inf values" in out
    assert render(healthy, verbosity=-1).strip() == f"{healthy.run} " + "".join(
        "." if r.status == "passed" else "s" for r in healthy.results)


def test_verbose_adds_tensor_counts_and_skip_notes(nan_report):
    out = render(nan_report, verbosity=1)
    line = line_of(out, "nonfinite-weights")
    assert "4 tensors" in line and line.endswith("FAILED")
    assert "1 log" in line_of(out, "nonfinite-loss ")
    skipped = line_of(out, "frozen-changed")
    assert "(no selected tensor is frozen=true)" in skipped and skipped.endswith("SKIPPED")
    assert re.search(r"^rule: default\.toml:\d+ \(built-in\)$", out, re.M)
    assert "SKIPPED frozen-changed - no selected tensor is frozen=true" in section(
        out, "short test summary info")


def test_findings_are_capped_unless_verbose(rules, tmp_path):
    tensors = {f"l{i}/kernel": {"shape": [3, 3]} for i in range(8)}
    bad = {"nan": 1, "d_l2": None, "d_absmax": None, "d_cos": None, "dead_units": None}
    records = [{"logs": {}}, {"logs": {"loss": 1.0}, "rows": {p: dict(bad) for p in tensors}}]
    report = evaluate(open_run(write_run(tmp_path / "run", tensors, records)), rules)
    out = render(report)
    failures = section(out, "FAILURES")
    assert failures.count("E   l") == 5
    assert "… and 3 more tensors (-v shows all)" in failures
    short = section(out, "short test summary info")
    assert short.count("FAILED nonfinite-weights - l") == 5
    assert "FAILED nonfinite-weights - … and 3 more tensors" in short
    verbose = render(report, verbosity=1)
    assert section(verbose, "FAILURES").count("E   l") == 8
    assert "more tensors" not in verbose


def test_long_history_is_elided_around_the_failing_record(rules, tmp_path):
    n = 30
    records = []
    for i in range(n):
        rows = {p: {"l2": 50.0 * 10 ** (i - 14), "d_l2": 10.0 ** (i - 14)} for p in MLP} if i >= 15 else {}
        records.append({"logs": {"loss": 1.0 / (1 + i)} if i else {}, "rows": rows})
    report = evaluate(open_run(write_run(tmp_path / "run", MLP, records)), rules)
    out = render(report)
    block = section(out, "FAILURES").split("_ exploding-norm _")[1]
    hist = line_of(block, "    growth: ")
    assert "…" in hist and "[" in hist and len(hist) <= WIDTH
    numbers = hist[hist.index("-  1.05"):]
    assert numbers.startswith("-  1.05")               # first records
    assert "…  1.03  [294]  10  …" in numbers          # neighbours around the marked record
    assert numbers.endswith("10  10  10  10")          # last records
    assert "first at epoch 15 (record 15)" in block and "15 of 30 records violate" in block
    # a narrow terminal still shows the marked record
    narrow = render(report, width=60)
    assert all(len(line) <= 60 for line in narrow.splitlines())
    assert "[" in line_of(section(narrow, "FAILURES"), "    growth: ")


def test_warning_section_and_plateau(rules, tmp_path):
    records = [{"logs": {"loss": 1.0} if i else {}} for i in range(8)]
    report = evaluate(open_run(write_run(tmp_path / "run", MLP, records)), rules)
    assert [r.id for r in report.warnings] == ["loss-plateau"]
    out = render(report)
    assert line_of(out, "loss-plateau").endswith(" WARNING")
    warnings = section(out, "WARNINGS")
    assert re.search(r"^_+ loss-plateau _+$", warnings, re.M)
    assert "log loss · first at epoch 6 (record 6)" in warnings
    assert "hint: If the run is finished" in warnings
    assert " FAILURES " not in out
    assert line_of(section(out, "short test summary info"), "WARNING").startswith("WARNING loss-plateau - loss")
    assert summary([report]).strip().startswith("=")
    assert f" 1 warning, {N - 2} passed, 1 skipped in 0.12s " in summary([report])


def test_warning_without_findings_shows_its_note(tmp_path):
    rs = load_rules({"rule": [{"id": "enc-frozen", "check": "unchanged", "select": ["encoder/*"]}]},
                    use_project_config=False)
    report = evaluate(open_run(write_healthy_run(tmp_path / "run")), rs)
    result = next(r for r in report.results if r.id == "enc-frozen")
    assert result.status == "warning" and not result.findings
    out = render(report)
    assert "E   select ['encoder/*'] matched no tensor of this run" in section(out, "WARNINGS")
    assert "WARNING enc-frozen - select ['encoder/*'] matched no tensor" in out


def test_run_problems_are_listed_as_errors(rules, tmp_path):
    run = write_healthy_run(tmp_path / "run", n_records=4)
    (run / "record-000004.json").write_text("{not json", encoding="utf-8")
    report = evaluate(open_run(run), rules)
    assert len(report.problems) == 1
    out = render(report)
    errors = section(out, "ERRORS")
    assert "record-000004.json: unreadable record, skipped" in errors
    assert line_of(section(out, "short test summary info"), "ERROR ").startswith("ERROR ")
    text = summary([report])
    assert f" {N - 1} passed, 1 skipped, 1 error in " in text
    assert summary_text([report, report], 1.0).endswith("2 errors in 1.00s")
    assert render(report, verbosity=-1).splitlines()[0].endswith("E")


def test_markup_in_names_prints_as_written(rules, tmp_path):
    tensors = {"enc[0]/kernel": {"shape": [3, 3]}, "[bold]x/bias": {"shape": [3]}}
    bad = {"nan": 2, "d_l2": None, "d_absmax": None, "d_cos": None, "dead_units": None}
    records = [{"logs": {}}, {"logs": {"loss": 1.0}, "rows": {"enc[0]/kernel": bad, "[bold]x/bias": bad}}]
    report = evaluate(open_run(write_run(tmp_path / "run", tensors, records)), rules)
    out = render(report)
    assert "E   enc[0]/kernel holds 2 NaN/Inf values" in out
    assert "[bold]x/bias holds 2 NaN/Inf values" in out


def test_seed_run_header(rules, tmp_path):
    d = tmp_path / "seed"
    d.mkdir()
    for n in range(1, 4):
        (d / f"weights{n}.json").write_text(json.dumps(
            {"dense": [[[0.1 * n, 0.2], [0.3, 0.4 * n]], [0.0, 0.01 * n]]}), encoding="utf-8")
    report = evaluate(open_run(d), rules)
    assert report.source == "seed"
    assert line_of(render(report), "run: ").endswith("(seed-format dump) · 3 records · 2 tensors")


# -- the summary line ----------------------------------------------------------------------

def test_summary_line_counts_and_order(healthy, nan_report):
    text = summary([healthy, nan_report])
    line = text.strip()
    assert len(line) == WIDTH
    assert re.fullmatch(rf"=+ 2 failed, {2 * N - 4} passed, 2 skipped in 0\.12s =+", line)
    assert summary_text([healthy, nan_report], 0.123) == f"2 failed, {2 * N - 4} passed, 2 skipped in 0.12s"
    assert summary_text([healthy], 0.5) == f"{N - 1} passed, 1 skipped in 0.50s"
    assert summary_text([], 0.0) == "no rules ran in 0.00s"


def _colored(reports, strict=False) -> str:
    f = io.StringIO()
    c = Console(file=f, force_terminal=True, color_system="standard", width=80)
    render_summary(reports, c, duration=0.1, strict=strict)
    return f.getvalue()


RED, GREEN, YELLOW = "\x1b[31m", "\x1b[32m", "\x1b[33m"


def test_summary_colour_follows_the_worst_outcome(healthy, nan_report, rules, tmp_path):
    assert _colored([healthy]).startswith(GREEN)
    assert _colored([healthy, nan_report]).startswith(RED)
    records = [{"logs": {"loss": 1.0} if i else {}} for i in range(8)]
    plateau = evaluate(open_run(write_run(tmp_path / "run", MLP, records)), rules)
    assert _colored([plateau]).startswith(YELLOW)
    assert _colored([plateau], strict=True).startswith(RED)
    assert _colored([]).startswith(YELLOW)


def test_no_color_is_honoured(healthy, nan_report, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out = _colored([healthy, nan_report])
    assert RED not in out and "2 failed" in out


def test_maxfail_is_mentioned(rules, tmp_path):
    report = evaluate(open_run(write_nan_run(tmp_path / "run")), rules, maxfail=1)
    assert report.stopped_early
    text = summary([report])
    assert re.search(r"^!+ stopped after 1 failure \(--maxfail\) !+$", text, re.M)
    assert text.strip().splitlines()[-1].startswith("=") and " 1 failed in 0.12s " in text


def test_summary_plurals():
    from types import SimpleNamespace

    from weightwatch.checking.report import RuleResult

    rule = SimpleNamespace(id="r", check="nonfinite", severity="warning", hint="")
    rep = Report(run="x", source="weightwatch", records=1, tensors=1, rule_sources=[],
                 results=[RuleResult(rule, "warning"), RuleResult(rule, "warning"),
                          RuleResult(rule, "failed"), RuleResult(rule, "failed")],
                 problems=["x: bad"])
    assert summary_text([rep], 0.01) == "2 failed, 2 warnings, 1 error in 0.01s"


# -- helpers -------------------------------------------------------------------------------

@pytest.mark.parametrize("value, text", [
    (None, "-"), (3.0, "3"), (0.0, "0"), (-2, "-2"), (0.123456, "0.123"), (1.5e-08, "1.5e-8"),
    (12345678.0, "1.23e7"), (1e15, "1e15"), (float("nan"), "nan"), (float("inf"), "inf"),
    (-float("inf"), "-inf"), (5.88235, "5.88"),
])
def test_fmt_num(value, text):
    assert fmt_num(value) == text


def test_format_duration():
    assert format_duration(0.1234) == "0.12s"
    assert format_duration(75.3) == "75.30s (0:01:15)"


def test_history_text_marks_and_elides():
    hist = [float(i) for i in range(20)]
    t = history_text(hist, 10).plain
    assert t.endswith("  0  1  2  3  …  9  [10]  11  …  16  17  18  19")
    assert history_text([1.0, None, 2.0], 2).plain.endswith("1  -  [2]")
    assert history_text([1.0, None], 1).plain.endswith("[non-finite]")


def test_source_label(tmp_path, monkeypatch):
    from weightwatch.checking.config import builtin_packs
    from weightwatch.output.terminal import source_label

    default = str(builtin_packs()["default"])
    assert source_label(default) == "default"
    assert source_label(default + ":25") == "default.toml:25 (built-in)"
    monkeypatch.chdir(tmp_path)
    assert source_label(str(tmp_path / "ci" / "rules.toml") + ":7") == "ci/rules.toml:7"
    assert source_label(str(tmp_path / "pyproject.toml") + " [tool.weightwatch]") == "pyproject.toml [tool.weightwatch]"
    assert source_label("<rules argument 0>") == "<rules argument 0>"
