"""Report objects: what a check run found, shared by every consumer.

The terminal report, ``--format json``, JUnit XML, GitHub annotations, the
live callback and user tests all read these same objects (pytest's
separation of reports and reporters), so the outputs cannot disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import ExitCode
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
        if not self.results:  # nothing selected; skipped rules ran (exit 0), as in pytest
            return ExitCode.NO_CHECKS_RAN
        return ExitCode.OK

    def to_dict(self) -> dict:
        return {
            "run": self.run, "source": self.source, "records": self.records,
            "tensors": self.tensors, "rule_sources": self.rule_sources,
            "summary": dict(self.counts(), deselected=self.deselected), "problems": self.problems,
            "duration": round(self.duration, 4),
            "results": [r.to_dict() for r in self.results],
        }


def _json_float(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
