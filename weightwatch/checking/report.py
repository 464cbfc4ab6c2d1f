"""Report objects: what a check run found, shared by every consumer.

The terminal report, ``--format json``, JUnit XML, GitHub annotations, the
live callback and user tests all read these same objects (pytest's
separation of reports and reporters), so the outputs cannot disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import ChecksFailed, ExitCode
from ..run.schema import where_label

PASSED, FAILED, WARNING, SKIPPED = "passed", "failed", "warning", "skipped"
#: Order of the summary line, like pytest's.
STATUS_ORDER = (FAILED, WARNING, PASSED, SKIPPED)


@dataclass
class Finding:
    """One rule violated by one tensor (or by the run, for log checks)."""

    rule: str
    severity: str
    tensor: str | None
    layer: str | None
    record: int          # index of the first failing record
    epoch: int           # as recording numbers it: 0 before training
    value: float | None  # observed value at that record
    limit: float | None  # the threshold it crossed
    message: str
    metric: str = ""     # name of the figure in `history`
    history: list = field(default_factory=list)   # the figure at every record (None = undefined)
    batch: int | None = None
    count: int = 1       # records that violated the rule
    file: str | None = None  # the record's file in the run directory
    key: str | None = None   # the log a log check judged (``loss``); None for tensors
    band: list | None = None # [lo, hi] of a baseline check: the reference band at the record
    band_history: list | None = None   # [lo, hi] at every record (None = no band there)

    @property
    def subject(self) -> str:
        """What the finding is about: its tensor, or the log key of a log check."""
        return self.tensor or self.key or "run"

    @property
    def at(self) -> str:
        """When: ``epoch 3`` or ``epoch 3 batch 200``."""
        return where_label(self.epoch, self.batch)

    @property
    def where(self) -> str:
        """``dense/kernel at epoch 3`` (``loss at epoch 3`` for a log check)."""
        return f"{self.subject} at {self.at}"

    def to_dict(self) -> dict:
        return {
            "tensor": self.tensor, "layer": self.layer, "record": self.record,
            "epoch": self.epoch, "batch": self.batch, "value": _json_float(self.value),
            "limit": _json_float(self.limit), "message": self.message, "metric": self.metric,
            "count": self.count, "file": self.file, "key": self.key,
            **({"band": [_json_float(x) for x in self.band]} if self.band is not None else {}),
            **({"band_history": [[_json_float(x) for x in b] for b in self.band_history]}
               if self.band_history is not None else {}),
        }


@dataclass
class RuleResult:
    rule: object             # weightwatch.checking.rules.Rule
    status: str
    findings: list[Finding] = field(default_factory=list)
    note: str = ""           # why a rule was skipped, or what a warning without findings means
    tensors: int = 0         # how many tensors the rule looked at

    @property
    def id(self) -> str:
        return self.rule.id

    @property
    def severity(self) -> str:
        return self.rule.severity

    def __repr__(self) -> str:
        """``<FAILED exploding-norm: dense/kernel L2 norm grew 5.31x ... (+2 more)>``: what an
        ``assert not report.failed`` shows."""
        text = self.findings[0].message if self.findings else self.note
        more = f" (+{len(self.findings) - 1} more)" if len(self.findings) > 1 else ""
        return f"<{self.status.upper()} {self.id}: {text}{more}>"

    def to_dict(self) -> dict:
        return {"rule": self.id, "check": self.rule.check, "severity": self.severity,
                "status": self.status, "note": self.note,
                "findings": [f.to_dict() for f in self.findings]}


@dataclass
class Report:
    run: str                              # the run directory
    source: str                           # "weightwatch" or "seed"
    records: int
    tensors: int
    rule_sources: list[str]
    results: list[RuleResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # unreadable input, one line each
    duration: float = 0.0
    stopped_early: bool = False           # -x / --maxfail reached
    deselected: int = 0                   # rules -k left out
    diagnosis: list = field(default_factory=list)       # diagnosis.Cause, earliest first
    healthy_record: int | None = None     # a halted run's last healthy record (healthy.npz)
    nothing_recorded: bool = False        # the run holds no tensor and no log: nothing to check
    config: str = ""                      # which project configuration applied, in words
    #: The comparison with a baseline, when one was given (see baseline.Alignment.summary).
    baseline: dict | None = None
    #: (lo, hi), each (records, tensors): the baseline's L2-norm band, for pictures (not in JSON).
    reference_l2: tuple | None = None

    def counts(self) -> dict[str, int]:
        c = {s: 0 for s in STATUS_ORDER}
        for r in self.results:
            c[r.status] += 1
        return c

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.results if r.status == FAILED]

    @property
    def warnings(self) -> list[RuleResult]:
        return [r for r in self.results if r.status == WARNING]

    def exit_code(self, strict: bool = False) -> ExitCode:
        if self.failed or (strict and self.warnings):
            return ExitCode.CHECKS_FAILED
        if self.problems:
            return ExitCode.USAGE_ERROR
        if not self.results or self.nothing_recorded:
            # Nothing selected, or nothing to check (as pytest's "no tests collected"); rules
            # that ran and were all skipped pass (exit 0), as skipped tests do.
            return ExitCode.NO_CHECKS_RAN
        return ExitCode.OK

    def to_dict(self) -> dict:
        return {
            "run": self.run, "source": self.source, "records": self.records,
            "tensors": self.tensors, "config": self.config, "rule_sources": self.rule_sources,
            "summary": dict(self.counts(), deselected=self.deselected), "problems": self.problems,
            "duration": round(self.duration, 4),
            "diagnosis": [c.to_dict() for c in self.diagnosis],
            "healthy_record": self.healthy_record,
            "baseline": self.baseline,
            "results": [r.to_dict() for r in self.results],
        }

    # -- in programs, tests and notebooks ----------------------------------------------------
    def summary(self) -> str:
        """``2 failed, 1 warning, 9 passed, 1 skipped`` (pytest's order)."""
        parts = [f"{n} {s}{'s' if s == WARNING and n != 1 else ''}" for s, n in self.counts().items() if n]
        if self.deselected:
            parts.append(f"{self.deselected} deselected")
        if self.problems:
            parts.append(f"{len(self.problems)} error{'s' if len(self.problems) != 1 else ''}")
        return ", ".join(parts) or "no rules ran"

    def short_lines(self, strict: bool = False) -> list[str]:
        """What went wrong, a line each: the diagnosis, then each failing rule's first finding."""
        lines = [f"{c.title} at {c.at}: first {c.first.subject} ({c.first.rule})" for c in self.diagnosis
                 if c.severity == "error" or strict]
        for r in self.results:
            if r.status == FAILED or (strict and r.status == WARNING):
                text = r.findings[0].message if r.findings else r.note
                more = f" (+{len(r.findings) - 1} more)" if len(r.findings) > 1 else ""
                lines.append(f"{r.status.upper()} {r.id} - {text}{more}")
        return lines + [f"ERROR {p}" for p in self.problems]

    def raise_for_failures(self, strict: bool = False) -> None:
        """Raise :class:`~weightwatch.ChecksFailed` (an AssertionError) unless the run passed.

        Its message is the short summary, so ``report.raise_for_failures()`` in
        a user's pytest shows what went wrong, not objects.  ``strict``: warnings
        fail too.  Unreadable input fails as well: it was not checked.
        """
        if self.exit_code(strict=strict) in (ExitCode.CHECKS_FAILED, ExitCode.USAGE_ERROR):
            raise ChecksFailed("\n".join([f"weightwatch: {self.run}: {self.summary()}",
                                          *("  " + ln for ln in self.short_lines(strict))]), report=self)

    def __repr__(self) -> str:
        return f"<Report {self.run}: {self.summary()}>"

    def _repr_html_(self) -> str:
        """A notebook's view: the summary, the diagnosis and a row per rule."""
        from html import escape

        colour = {FAILED: "#c62828", WARNING: "#b26a00", PASSED: "#2e7d32", SKIPPED: "#757575"}
        rows = "".join(
            f"<tr><td><code>{escape(r.id)}</code></td><td>{escape(r.rule.check)}</td>"
            f"<td style='color:{colour[r.status]};font-weight:bold'>{r.status.upper()}</td>"
            f"<td>{escape(r.findings[0].message if r.findings else r.note)}</td></tr>"
            for r in self.results)
        causes = "".join(f"<li><b>{escape(c.title)}</b> at {escape(c.at)}: first "
                         f"<code>{escape(c.first.subject)}</code> - {escape(c.hint)}</li>"
                         for c in self.diagnosis)
        problems = "".join(f"<li style='color:#c62828'>{escape(p)}</li>" for p in self.problems)
        return (f"<div><p><b>weightwatch</b> {escape(self.run)}: {escape(self.summary())}</p>"
                + (f"<ul>{causes}</ul>" if causes else "") + (f"<ul>{problems}</ul>" if problems else "")
                + "<table><thead><tr><th>rule</th><th>check</th><th>status</th><th>first finding</th>"
                f"</tr></thead><tbody>{rows}</tbody></table></div>")


def _json_float(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
