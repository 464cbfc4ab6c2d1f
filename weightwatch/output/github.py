"""GitHub Actions annotations: findings shown on the run's summary page and in the PR.

One workflow command per finding::

    ::error file=runs/exp1/record-000002.json,title=weightwatch nonfinite-weights::dense/kernel at epoch 2: dense/kernel holds 3 NaN/Inf values
    ::warning file=runs/exp1/record-000005.json,title=weightwatch loss-plateau::loss at epoch 5: loss improved by 0.01% ...
    ::notice title=weightwatch::2 failed, 1 warning, 9 passed in 0.12s

The message and property values are escaped as the Actions runner expects
(``%`` ``\\r`` ``\\n`` everywhere, and ``:`` ``,`` inside properties), the same
as ``@actions/core``'s ``escapeData`` / ``escapeProperty``.
"""

from __future__ import annotations

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


def emit(out: Emission) -> None:
    out.stream.write(github_annotations(out.reports, strict=out.strict))


FORMAT = OutputFormat(
    name="github", help="GitHub Actions annotations (::error / ::warning workflow commands)", emit=emit,
    # Under GitHub Actions, the terminal report is followed by annotations unless --format says otherwise.
    alongside=lambda environ: environ.get("GITHUB_ACTIONS") == "true")
