"""Checking a run while it trains: which findings are new, and whether to halt.

The recording session keeps the run's histories in memory (it appends each
record it writes) and calls :meth:`LiveChecker.update` after every record;
nothing is re-read from disk.  The rules are the same ones ``weightwatch
check`` discovers, evaluated by the same engine, so a halted run and a later
``weightwatch check`` report exactly the same failures.  What to print, and
where the verdict and the healthy weights go, is the caller's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import load_rules
from .engine import evaluate
from .report import FAILED, WARNING, Finding, Report


@dataclass
class LiveOutcome:
    report: Report
    new: list[Finding] = field(default_factory=list)
    healthy: bool = True
    halt: bool = False
    reason: str = ""


class LiveChecker:
    """Evaluates the rules after each record and says what is new and whether to halt.

    ``halt_on`` is ``"error"``, ``"warning"`` or None (never halt).  The rules
    load in the constructor, so a bad rule file fails before training starts.
    """

    def __init__(self, rules=None, *, halt_on="error"):
        self.ruleset = load_rules(rules)
        self.halt_on = halt_on
        self._seen: set[tuple] = set()
        self.last_report: Report | None = None

    def start(self) -> None:
        """Forget what was reported: a new run (or a new fit) starts."""
        self._seen.clear()
        self.last_report = None

    def final_report(self, run) -> Report:
        """The report of the last evaluation (evaluated now if there was none)."""
        return self.last_report or evaluate(run, self.ruleset)

    def update(self, run) -> LiveOutcome:
        report = evaluate(run, self.ruleset)
        self.last_report = report
        out = LiveOutcome(report)
        for result in report.results:
            for f in result.findings:
                key = (f.rule, f.subject)
                if key not in self._seen:
                    self._seen.add(key)
                    out.new.append(f)
        out.healthy = not report.failed
        levels = {"error": (FAILED,), "warning": (FAILED, WARNING)}.get(self.halt_on, ())
        new_ids = {id(f) for f in out.new}
        triggering = [f for r in report.results if r.status in levels for f in r.findings
                      if id(f) in new_ids]
        if triggering:
            out.halt = True
            first = triggering[0]
            out.reason = f"{first.rule} failed on {first.where}: {first.message}"
        return out

    @staticmethod
    def verdict(run, outcome: LiveOutcome, healthy_record: int | None) -> dict:
        """What ``verdict.json`` says of a halt: where, why, and every finding."""
        rec = run.records[-1]
        findings = [f for r in outcome.report.results for f in r.findings
                    if r.status in (FAILED, WARNING)]
        return {
            "halted": True,
            "record": rec.index,
            "epoch": rec.epoch,
            "batch": rec.batch,
            "reason": outcome.reason,
            "healthy_record": healthy_record,
            "rule_sources": outcome.report.rule_sources,
            "findings": [dict(f.to_dict(), rule=f.rule, severity=f.severity) for f in findings],
        }
