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

from .text import fmt_num, sparkline, visible

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


def elide_middle(text: str, width: int) -> str:
    """``functional/enc…/dense/kernel``: a path cut in the middle, keeping both ends in view."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def build_table(run, *, spark_width: int = SPARK_WIDTH, dtype: bool = True,
                name_width: int | None = None, model: str | None = None) -> Table:
    """The per-tensor table of :func:`render_show`, for callers that lay out their own output.

    ``name_width`` elides longer tensor paths in the middle (never wraps them);
    ``spark_width=0`` leaves the trend column out; ``model`` is a prefix (``spirals/``) left
    out of the paths (rules select tensors with it or without it).
    """
    table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    table.add_column("tensor", no_wrap=True)
    table.add_column("shape", justify="right", no_wrap=True)
    if dtype:
        table.add_column("dtype", no_wrap=True)
    table.add_column("flags", no_wrap=True)
    table.add_column("L2", justify="right", no_wrap=True)
    table.add_column("‖ΔW‖/‖W‖", justify="right", no_wrap=True)
    table.add_column("NaN", justify="right", no_wrap=True)
    table.add_column("Inf", justify="right", no_wrap=True)
    if spark_width:
        table.add_column("L2 trend", no_wrap=True)
    for cells in _rows(run, spark_width=max(spark_width, 1), dtype=dtype, model=model):
        if name_width is not None:
            cells[0] = Text(elide_middle(cells[0].plain, name_width))
        table.add_row(*(cells if spark_width else cells[:-1]))
    return table


def _local(path: str, model: str | None) -> str:
    return path[len(model) + 1:] if model and path.startswith(model + "/") else path


def _rows(run, *, spark_width: int, dtype: bool, model: str | None = None) -> list[list]:
    n = len(run.records)
    if n == 0:
        return []
    last = n - 1
    l2 = run.metric("l2")
    d_l2 = run.metric("d_l2")
    nan = run.metric("nan")
    inf = run.metric("inf")
    trainable = run.metric("trainable")
    frozen = run.metric("frozen")
    rows = []
    for i, t in enumerate(run.tensors):
        bad = (0 if math.isnan(nan[last, i]) else nan[last, i]) + (0 if math.isnan(inf[last, i]) else inf[last, i])
        if math.isfinite(l2[last, i]):
            l2_cell = Text(fmt(l2[last, i]))
        elif bad:
            l2_cell = Text("nan", style="bold red")  # no finite element left
        else:
            l2_cell = Text("–", style="dim")        # not recorded at the last record
        rows.append([Text(visible(_local(t.path, model))), Text(_shape(t.shape)), *([Text(visible(t.dtype or "?"))] if dtype else []),
                     _flags(trainable[last, i], frozen[last, i]), l2_cell,
                     _update_ratio(d_l2[last, i], l2[last - 1, i] if last > 0 else math.nan),
                     _count(nan[last, i]), _count(inf[last, i]),
                     Text(sparkline(l2[:, i], width=spark_width), style="green")])
    return rows


def _update_ratio(d: float, prev_l2: float) -> Text:
    if math.isnan(d) or math.isnan(prev_l2):
        return Text("–", style="dim")
    if prev_l2 == 0:
        return Text("0" if d == 0 else "inf")
    return Text(fmt(d / prev_l2))


def _header(run) -> Text:
    head = Text()
    head.append(visible(run.path), style="bold")
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
        head.append(visible(value))
    return head


#: Tensor paths get up to MAX_NAME characters (at least MIN_NAME); the trend at least MIN_SPARK.
MIN_NAME, MAX_NAME, MIN_SPARK = 16, 48, 8
_HEADERS = ("shape", "dtype", "flags", "L2", "‖ΔW‖/‖W‖", "NaN", "Inf")


def render_show(run, console: Console | None = None, *, spark_width: int = SPARK_WIDTH) -> None:
    """Print the run's header line, its per-tensor table, and any unreadable files, to ``console``.

    The table fits the console's width (80 columns when piped).  Tensor paths
    come first - they are what users copy into rules - up to :data:`MAX_NAME`
    characters, longer ones elided in the middle; the trend gets what is
    left, up to ``spark_width``.  When the trend would get fewer than
    :data:`MIN_SPARK` characters, dtype goes, then the trend: the numbers are
    never cut.
    """
    console = console or Console()
    console.print(_header(run), soft_wrap=True)
    # Every path carries the model's name (``spirals/``): said once, as weightwatch diff does,
    # so that the table's width goes to the part of the path that tells tensors apart.
    model = run.model_name
    if not (model and run.tensors and all(t.path.startswith(model + "/") for t in run.tensors)):
        model = None
    if model:
        console.print(Text(f"tensor paths below are in model {visible(model)!r} ({visible(model)}/...)",
                           style="dim"),
                      soft_wrap=True)
    if run.tensors:
        longest = max(len(visible(_local(t.path, model))) for t in run.tensors)
        spark = min(spark_width, max(len(run.records), 1))
        for dtype, trend_on in ((True, True), (False, True), (False, False)):
            # The figures' own widths, measured; two spaces between columns.
            figures = [len(h) for h in _HEADERS if dtype or h != "dtype"]
            for cells in _rows(run, spark_width=spark, dtype=dtype, model=model):
                figures = [max(w, c.cell_len) for w, c in zip(figures, cells[1:-1])]
            room = console.width - sum(figures) - 2 * len(figures) - (2 if trend_on else 0)
            name = max(MIN_NAME, min(longest, MAX_NAME, room - (min(MIN_SPARK, spark) if trend_on else 0)))
            trend = min(spark, room - name) if trend_on else 0
            if not trend_on or trend >= min(MIN_SPARK, spark):
                break
        console.print(build_table(run, spark_width=trend, dtype=dtype, name_width=name, model=model))
    else:
        console.print(Text("no tensors recorded", style="dim"))
    if run.problems:
        console.print(Text(f"{len(run.problems)} unreadable file(s), skipped:", style="yellow"))
        for p in run.problems:
            console.print(Text(f"  {visible(p)}", style="yellow"), soft_wrap=True)
