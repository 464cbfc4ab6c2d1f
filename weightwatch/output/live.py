"""What weightwatch prints while a model trains: new findings as they appear, and a summary.

Kept to a line per rule, so it reads well between Keras' progress bars; the
full report is ``weightwatch check RUN_DIR`` (the same rules, the same findings).
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from .terminal import summary_text


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
            by_rule.setdefault(f.rule, []).append(f)
        for rule, group in by_rule.items():
            f = group[0]
            line = Text("weightwatch: ")
            line.append(*(("FAILED", "bold red") if f.severity == "error" else ("WARNING", "yellow")))
            line.append(f" {rule} - {f.message}")
            if len(group) > 1:
                line.append(f" (and {len(group) - 1} more tensors)", style="dim")
            self.console.print(line)

    def summary(self, report, duration: float, run_path) -> None:
        """``weightwatch: 1 failed, 9 passed in 0.12s - runs/exp1`` at the end of training."""
        self.console.print(Text(f"weightwatch: {summary_text([report], duration)} - {run_path}"))
