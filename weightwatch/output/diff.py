"""``weightwatch diff A B``: the figures of run A that depart most from run B's, side by side.

A quick look before deciding whether a change trains as main does: one row
per tensor figure or log, the largest departure first, with both histories
as sparklines over the same records.
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..checking.baseline import departures, local_path
from .terminal import baseline_lines
from .text import sparkline, visible

FIGURES = {"l2": "L2 norm", "update_ratio": "update ratio", "grad_rms": "gradient RMS", "log": "log"}


def render_diff(a, b, console: Console, *, top: int = 15, width: int = 24) -> int:
    """Print the table; the number of departures found (rows before ``top`` cut them)."""
    found, alignment = departures(a, b)
    console.print(Text.assemble(("A: ", "bold"), str(a.path), ("   B: ", "bold"), str(b.path)),
                  soft_wrap=True)
    summary = alignment.summary()
    summary["baseline"] = "B as the single reference"
    for line in baseline_lines(summary):
        console.print(line, soft_wrap=True)
    if not alignment.compared_records:
        console.print(Text("no record in common: nothing to compare (runs of another length or freq=?)",
                           style="yellow"))
        return 0
    if not found:
        console.print(Text("no figure differs: the runs are identical where they overlap", style="green"))
        return 0
    rows = found[:top]
    # Tensors are matched without the model's name (``sequential_3/``): the table leaves it out too.
    model = a.model_name
    if model and any(d.figure != "log" and d.subject.startswith(model + "/") for d in rows):
        console.print(Text(f"tensor paths below are in model {visible(model)!r} ({visible(model)}/...)",
                           style="dim"),
                      soft_wrap=True)
    names = [d.subject if d.figure == "log" else local_path(d.subject, model) for d in rows]
    # Sparklines give way before tensor paths do: a path folded mid-name is hard to read.
    fixed = (max(len(FIGURES[d.figure]) for d in rows) + max(len(visible(n)) for n in names)
             + max(len(_factor(d.ratio)) for d in rows) + max(len(d.at) for d in rows)
             + 2 * 5 + 1)   # a space either side of the 5 gaps between 6 columns; rich keeps one
    width = max(3, min(width, (console.width - fixed) // 2))
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("figure")
    table.add_column("tensor / log", overflow="fold")
    table.add_column("A / B", justify="right")
    table.add_column("at")
    table.add_column("A", no_wrap=True)
    table.add_column("B", no_wrap=True)
    for d, name in zip(rows, names):
        style = "red" if d.score >= math.log10(3) else "yellow" if d.score >= math.log10(1.5) else ""
        spark_a, spark_b = _shared_sparklines(d.a, d.b, width)
        table.add_row(FIGURES[d.figure], visible(name), Text(_factor(d.ratio), style=style), d.at,
                      Text(spark_a, style="cyan"), Text(spark_b, style="magenta"))
    console.print(table)
    if len(found) > top:
        console.print(Text(f"... {len(found) - top} more (--top N shows more)", style="dim"))
    return len(found)


def _shared_sparklines(a, b, width: int) -> tuple[str, str]:
    """Both histories on one scale (log10: these figures are scales), so heights compare."""
    import numpy as np

    from ..checking.baseline import to_log

    a, b = to_log(np.asarray(a, float)), to_log(np.asarray(b, float))
    both = np.concatenate([a, b])
    real = both[np.isfinite(both) & (both > -29)]
    if real.size:   # exact zeros (a bias at init, a frozen layer's update) sit just below the rest
        floor = real.min() - 0.25 * max(real.max() - real.min(), 0.1)
        a, b = (np.where(np.isfinite(x) & (x <= -29), floor, x) for x in (a, b))
    if a.size > width:   # one character per run of records: its most departing value, so a spike stays
        edges = np.linspace(0, a.size, width + 1).round().astype(int)
        middle = np.nanmedian(both) if np.isfinite(both).any() else 0.0
        a, b = (np.array([_extreme(x[lo:hi], middle) for lo, hi in zip(edges[:-1], edges[1:])])
                for x in (a, b))
    drawn = sparkline(np.concatenate([a, b]))
    return drawn[: a.size], drawn[a.size:]


def _extreme(x, middle: float) -> float:
    """The finite value of ``x`` farthest from ``middle``, NaN when none is finite."""
    import numpy as np

    finite = x[np.isfinite(x)]
    return float(finite[np.argmax(np.abs(finite - middle))]) if finite.size else math.nan


def _factor(r: float) -> str:
    if not math.isfinite(r):
        return "inf" if r > 0 else "<= 0"   # A's figure is 0 or negative where B's is positive
    return f"{r:.3g}x"
