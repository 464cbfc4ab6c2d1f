"""What weightwatch prints while a model trains: new findings as they appear, and a summary.

Kept to a line per rule, so it reads well between Keras' progress bars; the
full report is ``weightwatch check RUN_DIR`` (the same rules, the same findings).
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from ..run.schema import HEALTHY, VERDICT
from .terminal import render_diagnosis, restore_line, summary_text
from .text import visible, visible_copy


class LivePrinter:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False)

    def new_findings(self, findings) -> None:
        """One line per rule with new findings: its first finding, and how many tensors follow."""
        if not findings:
            return
        self.console.print()  # Keras' progress bar may still own the current line
        by_rule: dict[str, list] = {}
        for f in findings:
            by_rule.setdefault(visible(f.rule), []).append(f)
        for rule, group in by_rule.items():
            f = group[0]
            line = Text("weightwatch: ")
            line.append(*(("FAILED", "bold red") if f.severity == "error" else ("WARNING", "yellow")))
            line.append(f" {rule} - {visible(f.message)}")
            if len(group) > 1:
                more = len(group) - 1
                line.append(f" (and {more} more tensor{'s' if more != 1 else ''})", style="dim")
            self.console.print(line)

    def halted(self, run, reason: str, report=None, healthy_record: int | None = None) -> None:
        """Announce a halt as Keras' own callbacks do (``Epoch 2: ...``), with the diagnosis,
        where the verdict and the healthy weights are, and the line that restores them."""
        line = Text(f"Epoch {run.records[-1].epoch}: ", style="bold")
        line.append("weightwatch stopped training", style="bold red")
        line.append(f": {visible(reason)}")
        self.console.print(line)
        if report is not None and report.diagnosis:
            render_diagnosis(visible_copy(report), self.console, indent="  ")
        where = Text("  verdict: ", style="bold")
        where.append(visible(run.path / VERDICT))
        if healthy_record is not None and 0 <= healthy_record < len(run.records):
            where.append(" · healthy weights: ", style="bold")
            where.append(f"{visible(run.path / HEALTHY)} ({run.records[healthy_record].label})")
        self.console.print(where, soft_wrap=True)  # paths to copy: never wrapped
        if healthy_record is not None and (report is None or report.healthy_record is None):
            restore = Text("  ")
            restore.append_text(restore_line(visible(run.path), healthy_record))
            self.console.print(restore, soft_wrap=True)

    def summary(self, report, duration: float, run_path) -> None:
        """``weightwatch: 1 failed, 9 passed in 0.12s - runs/exp1`` at the end of training."""
        self.console.print(Text(f"weightwatch: {summary_text([report], duration)} - {visible(run_path)}"))

