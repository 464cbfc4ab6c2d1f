"""Checking a run while it trains: new findings, halting, verdict, healthy weights.

The callback keeps the run's histories in memory (it appends each record it
writes) and calls :meth:`LiveChecker.update` after every record; nothing is
re-read from disk.  The rules are the same ones ``weightwatch check``
discovers, evaluated by the same engine, so a halted run and a later
``weightwatch check`` report exactly the same failures.

Framework-free: restoring weights into a model lives in :mod:`weightwatch.restore`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from .config import load_rules
from .engine import evaluate
from .jsonio import atomic_write
from .report import FAILED, WARNING, Finding, Report
from .runformat import HEALTHY, HEALTHY_POINTER, record_name, save_npz, sync_later


@dataclass
class LiveOutcome:
    report: Report
    new: list[Finding] = field(default_factory=list)
    healthy: bool = True
    halt: bool = False
    reason: str = ""


class LiveChecker:
    def __init__(self, rules=None, *, verbose=1, halt_on="error"):
        # Loaded at on_train_begin: a bad rule file stops fit() before the first step.
        self.ruleset = load_rules(rules)
        self.verbose = verbose
        self.halt_on = halt_on
        self._seen: set[tuple] = set()
        self.last_report: Report | None = None
        self.healthy_record: int | None = None
        self._started = time.perf_counter()

    def start(self, run) -> None:
        self._seen.clear()
        self.last_report = None
        self._started = time.perf_counter()

    def update(self, run) -> LiveOutcome:
        report = evaluate(run, self.ruleset)
        self.last_report = report
        out = LiveOutcome(report)
        for result in report.results:
            for f in result.findings:
                key = (f.rule, f.tensor, f.metric)
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
        if out.new and self.verbose:
            self._print_new(out.new)
        return out

    def _print_new(self, findings) -> None:
        from rich.console import Console
        from rich.markup import escape

        console = Console(highlight=False)
        console.print()  # Keras' progress bar may still own the current line
        by_rule: dict[str, list[Finding]] = {}
        for f in findings:
            by_rule.setdefault(f.rule, []).append(f)
        for rule, group in by_rule.items():
            f = group[0]
            word = "[bold red]FAILED[/]" if f.severity == "error" else "[yellow]WARNING[/]"
            more = f" [dim](and {len(group) - 1} more tensors)[/]" if len(group) > 1 else ""
            console.print(f"weightwatch: {word} {escape(rule)} - {escape(f.message)}{more}")

    def keep_healthy(self, run, index: int, arrays: dict, writer) -> None:
        """Keep the weights of record ``index`` as the last healthy ones (``healthy.npz``).

        Written on a background thread so the next epoch trains meanwhile:
        ``arrays`` are the recorder's copies of this record, which are
        replaced, never mutated, at the next record - and the next record
        starts with :meth:`wait_healthy`, so no more than one copy is ever
        held.  When the record has its tensors on disk already
        (``save_tensors=True``) the file is hard-linked instead.
        """
        self.wait_healthy()
        sidecar = writer.dir / record_name(index, ".npz")
        if sidecar.exists() and self._link(sidecar, writer.dir / HEALTHY):
            self._write_pointer(writer, index, sidecar.name)
            self.healthy_record = index
            return
        import threading

        snapshot = dict(arrays)

        def write():
            try:
                save_npz(writer.dir / HEALTHY, snapshot)
                self._write_pointer(writer, index, HEALTHY)
                self.healthy_record = index
            except OSError as exc:
                self._healthy_error = exc

        self._healthy_thread = threading.Thread(target=write, name="weightwatch-healthy", daemon=True)
        self._healthy_thread.start()

    def wait_healthy(self) -> None:
        """Wait for the healthy-weights write in flight; raise the OSError it met, if any."""
        thread = getattr(self, "_healthy_thread", None)
        if thread is not None:
            thread.join()
            self._healthy_thread = None
        error = getattr(self, "_healthy_error", None)
        if error is not None:
            self._healthy_error = None
            raise error

    @staticmethod
    def _link(source, target) -> bool:
        tmp = target.with_name(f".{target.name}.link.tmp")
        try:
            if tmp.exists():
                tmp.unlink()
            os.link(source, tmp)
            os.replace(tmp, target)
            return True
        except OSError:
            return False  # filesystems without hard links: write a copy

    def _write_pointer(self, writer, index, file):
        from .jsonio import dumps

        path = writer.dir / HEALTHY_POINTER
        # Renamed into place now, fsynced off the training thread like the records.
        atomic_write(path, dumps({"record": index, "file": file}), fsync=False)
        sync_later(path)

    def write_verdict(self, run, outcome: LiveOutcome, writer) -> None:
        self.wait_healthy()  # the verdict names the healthy record: it must be on disk
        rec = run.records[-1]
        findings = [f for r in outcome.report.results for f in r.findings
                    if r.status in (FAILED, WARNING)]
        writer.write_verdict({
            "halted": True,
            "record": rec.index,
            "epoch": rec.epoch,
            "batch": rec.batch,
            "reason": outcome.reason,
            "healthy_record": self.healthy_record,
            "rule_sources": outcome.report.rule_sources,
            "findings": [dict(f.to_dict(), rule=f.rule, severity=f.severity) for f in findings],
        })

    def print_summary(self, run) -> None:
        from rich.console import Console

        report = self.last_report or evaluate(run, self.ruleset)
        from .terminal import summary_text

        Console(highlight=False).print(
            f"weightwatch: {summary_text([report], time.perf_counter() - self._started)}"
            f" - {run.path}")
