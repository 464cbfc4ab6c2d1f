"""``weightwatch show RUN_DIR``: a first look at a run, one table row per tensor.

For each tensor: its shape and dtype, whether it was trainable or frozen at
the last record, its L2 norm there, the size of the last update relative to
the weights before it (``||dW|| / ||W_prev||``), its NaN/Inf counts, and a
sparkline of its L2 norm over the whole run.  Reads the run only; never
imports TensorFlow.
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .text import fmt_num, sparkline

#: Default number of characters in the L2 sparkline column.
SPARK_WIDTH = 32


def fmt(x) -> str:
    """Three significant digits, compact (:func:`~.text.fmt_num`); undefined as ``–``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return fmt_num(x)


def _shape(shape) -> str:
    if shape is None:
        return "?"
    if len(shape) == 0:
        return "scalar"
    return "×".join(str(d) for d in shape)


def _flags(trainable: float, frozen: float) -> Text:
    if math.isnan(trainable) or math.isnan(frozen):
        return Text("?", style="dim")
    if frozen:
        return Text("frozen", style="cyan")
    if trainable:
        return Text("trainable")
    return Text("non-trainable", style="dim")


def _count(x: float) -> Text:
    if math.isnan(x):
        return Text("–", style="dim")
    n = int(x)
    return Text(str(n), style="bold red" if n > 0 else "")


def build_table(run, *, spark_width: int = SPARK_WIDTH, dtype: bool = True) -> Table:
    """The per-tensor table of :func:`render_show`, for callers that lay out their own output."""
    table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    longest = max((len(t.path) for t in run.tensors), default=6)
    # Tensor paths are what users grep and copy into rules: give them room before the sparkline.
    table.add_column("tensor", overflow="fold", min_width=min(longest, 36))
    table.add_column("shape", justify="right", no_wrap=True)
    if dtype:
        table.add_column("dtype", no_wrap=True)
    table.add_column("flags", no_wrap=True)
    table.add_column("L2", justify="right", no_wrap=True)
    table.add_column("‖ΔW‖/‖W‖", justify="right", no_wrap=True)
    table.add_column("NaN", justify="right", no_wrap=True)
    table.add_column("Inf", justify="right", no_wrap=True)
    table.add_column("L2 trend", no_wrap=True)

    n = len(run.records)
    if n == 0:
        return table
    last = n - 1
    l2 = run.metric("l2")
    d_l2 = run.metric("d_l2")
    nan = run.metric("nan")
    inf = run.metric("inf")
    trainable = run.metric("trainable")
    frozen = run.metric("frozen")
    for i, t in enumerate(run.tensors):
        bad = (0 if math.isnan(nan[last, i]) else nan[last, i]) + (0 if math.isnan(inf[last, i]) else inf[last, i])
        if math.isfinite(l2[last, i]):
            l2_cell = Text(fmt(l2[last, i]))
        elif bad:
            l2_cell = Text("nan", style="bold red")  # no finite element left
        else:
            l2_cell = Text("–", style="dim")        # not recorded at the last record
        cells = [Text(t.path), _shape(t.shape)] + ([t.dtype or "?"] if dtype else [])
        table.add_row(
            *cells,
            _flags(trainable[last, i], frozen[last, i]),
            l2_cell,
            _update_ratio(d_l2[last, i], l2[last - 1, i] if last > 0 else math.nan),
            _count(nan[last, i]),
            _count(inf[last, i]),
            Text(sparkline(l2[:, i], width=spark_width), style="green"),
        )
    return table


def _update_ratio(d: float, prev_l2: float) -> Text:
    if math.isnan(d) or math.isnan(prev_l2):
        return Text("–", style="dim")
    if prev_l2 == 0:
        return Text("0" if d == 0 else "inf")
    return Text(fmt(d / prev_l2))


def _header(run) -> Text:
    head = Text()
    head.append(str(run.path), style="bold")
    parts = [("source", run.source), ("records", str(len(run.records)))]
    if run.records:
        epochs = run.epochs
        lo, hi = int(epochs.min()), int(epochs.max())
        parts.append(("epochs", f"{lo}–{hi}" if lo != hi else str(lo)))
    parts.append(("tensors", str(len(run.tensors))))
    model = run.manifest.get("model")
    if model:
        parts.append(("model", str(model)))
    for key, value in parts:
        head.append(f"  {key} ", style="dim")
        head.append(value)
    return head


def render_show(run, console: Console | None = None, *, spark_width: int = SPARK_WIDTH) -> None:
    """Print the run's header line, its per-tensor table, and any unreadable files, to ``console``."""
    console = console or Console()
    console.print(_header(run), soft_wrap=True)
    if run.tensors:
        longest = max(len(t.path) for t in run.tensors)
        # ~75 columns for the figures; the sparkline gets what is left (at least 8)
        room = console.width - 75 - min(longest, 36)
        narrow = room < 8  # a narrow terminal (or CI log) drops dtype before the sparkline
        room += 9 if narrow else 0
        console.print(build_table(run, spark_width=max(8, min(spark_width, room)), dtype=not narrow))
    else:
        console.print(Text("no tensors recorded", style="dim"))
    if run.problems:
        console.print(Text(f"{len(run.problems)} unreadable file(s), skipped:", style="yellow"))
        for p in run.problems:
            console.print(Text(f"  {p}", style="yellow"), soft_wrap=True)
