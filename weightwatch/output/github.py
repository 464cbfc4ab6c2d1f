"""GitHub Actions annotations: findings shown on the run's summary page and in the PR.

One workflow command per finding::

    ::error file=runs/exp1/record-000002.json,title=weightwatch nonfinite-weights::dense/kernel at epoch 2: dense/kernel holds 3 NaN/Inf values
    ::warning file=runs/exp1/record-000005.json,title=weightwatch loss-plateau::loss at epoch 5: loss improved by 0.01% ...
    ::notice title=weightwatch::2 failed, 1 warning, 9 passed in 0.12s

The message and property values are escaped as the Actions runner expects
(``%`` ``\\r`` ``\\n`` everywhere, and ``:`` ``,`` inside properties), the same
as ``@actions/core``'s ``escapeData`` / ``escapeProperty``.

Where ``GITHUB_STEP_SUMMARY`` names a file (the runner sets it for every
step), a Markdown job summary is appended to it as well
(:func:`job_summary`): per run, the verdict, the diagnosis and a table of
the failed (and warning) rules with their first offender.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath

from ..checking.report import FAILED, WARNING, Finding, Report
from ..run.schema import record_name
from . import Emission, OutputFormat
from .terminal import summary_text
from .text import visible


def escape_data(s) -> str:
    """As ``@actions/core`` escapes a message; any other control character (ESC...) is shown
    as an escape rather than written raw into the log."""
    return visible(str(s).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def escape_property(s) -> str:
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def command(kind: str, message: str, **props) -> str:
    """``::kind prop=value,...::message`` with everything escaped."""
    p = ",".join(f"{k}={escape_property(v)}" for k, v in props.items() if v is not None)
    return f"::{kind}{' ' + p if p else ''}::{escape_data(message)}"


def _join(run: str, name: str) -> str:
    # Annotations want forward slashes whatever the OS the check ran on.
    return str(PurePosixPath(run.replace("\\", "/")) / name)


def _record_file(report: Report, f: Finding) -> str:
    """The file of the finding's record: a snapshot, or a seed dump's epoch file."""
    if f.file:
        return _join(report.run, f.file)
    if report.source == "weightwatch":
        return _join(report.run, record_name(f.record))
    return report.run.replace("\\", "/")


def github_annotations(reports: list[Report], strict: bool = False) -> str:
    """Workflow commands for every finding, run problem, and a final summary notice."""
    lines = []
    for report in reports:
        for problem in report.problems:
            where, sep, _ = problem.partition(": ")
            lines.append(command("error", problem, file=where.replace("\\", "/") if sep else None,
                                 title="weightwatch input"))
        for result in report.results:
            if result.status not in (FAILED, WARNING):
                continue
            kind = "error" if result.status == FAILED or strict else "warning"
            title = f"weightwatch {result.id}"
            if not result.findings:
                lines.append(command(kind, result.note or result.status, title=title))
            for f in result.findings:
                lines.append(command(kind, f"{f.where}: {f.message}",
                                     file=_record_file(report, f), title=title))
    duration = sum(r.duration for r in reports)
    lines.append(command("notice", summary_text(reports, duration), title="weightwatch"))
    return "\n".join(lines) + "\n"


def _md(text) -> str:
    """Text safe in a Markdown table cell."""
    return (str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")
            .replace("<", "&lt;").replace(">", "&gt;"))


def job_summary(reports: list[Report], strict: bool = False) -> str:
    """The Markdown job summary: per run, the verdict, the diagnosis, a table of the failed rules."""
    out = []
    for report in reports:
        code = report.exit_code(strict=strict)
        verdict = {1: ":x: failed", 4: ":warning: input error", 5: ":grey_question: no rules ran"}.get(
            int(code), ":white_check_mark: passed")
        out.append(f"### weightwatch: `{_md(report.run)}` {verdict}\n")
        out.append(f"{_md(report.summary())} in {report.duration:.2f}s "
                   f"({report.records} records, {report.tensors} tensors)\n")
        for cause in report.diagnosis:
            if cause.severity == "error" or strict:
                out.append(f"- **{_md(cause.title)}** at {_md(cause.at)}: first `{_md(cause.first.subject)}` "
                           f"({_md(cause.first.rule)})" + (f" - {_md(cause.hint)}" if cause.hint else ""))
        if report.diagnosis:
            out.append("")
        rows = [r for r in report.results if r.status == FAILED or r.status == WARNING]
        if rows:
            out.append("| rule | status | first offender | at | message |")
            out.append("|---|---|---|---|---|")
            for r in rows:
                status = "failed" if r.status == FAILED or strict else "warning"
                if r.findings:
                    f = r.findings[0]
                    more = f" (+{len(r.findings) - 1} more)" if len(r.findings) > 1 else ""
                    out.append(f"| `{_md(r.id)}` | {status} | `{_md(f.subject)}`{more} | {_md(f.at)} "
                               f"| {_md(f.message)} |")
                else:
                    out.append(f"| `{_md(r.id)}` | {status} | | | {_md(r.note)} |")
            out.append("")
        for p in report.problems:
            out.append(f"- error: {_md(p)}")
        if report.problems:
            out.append("")
    return "\n".join(out) + "\n"


def emit(out: Emission) -> None:
    out.stream.write(github_annotations(out.reports, strict=out.strict))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(job_summary(out.reports, strict=out.strict))
        except OSError as exc:   # a summary is a courtesy: never fail the gate over it
            out.stream.write(command("warning", f"cannot write the job summary to {summary}: {exc}",
                                     title="weightwatch") + "\n")


FORMAT = OutputFormat(
    name="github", help="GitHub Actions annotations (::error / ::warning workflow commands)", emit=emit,
    # Under GitHub Actions, the terminal report is followed by annotations unless --format says otherwise.
    alongside=lambda environ: environ.get("GITHUB_ACTIONS") == "true")
