"""The terminal report: pytest's layout, for rules over a training run.

::

    ============================== weightwatch check ===============================
    run: runs/exp1  (weightwatch) · 4 records · 2 tensors
    rules: default
    nonfinite-weights    nonfinite                                            FAILED
    ...
    =================================== FAILURES ===================================
    ______________________________ nonfinite-weights _______________________________
    dense/kernel (layer dense) · first at epoch 2 · value 3 against limit 0 · ...
    E   dense/kernel holds 3 NaN/Inf values
        nan+inf  0  0  [3]  3   ▁▁██
    hint: Lower the learning rate, ...
    =========================== short test summary info ============================
    FAILED nonfinite-weights - dense/kernel holds 3 NaN/Inf values
    ========================= 1 failed, 9 passed in 0.02s ==========================

Everything is printed as :class:`rich.text.Text`, never as markup, so a
tensor called ``dense[0]/kernel`` prints as written; control characters in
names (ESC sequences, newlines) are shown escaped, and under GitHub Actions
the report is fenced with ``::stop-commands::`` so no line of it is read as
a workflow command.  Colour follows rich's
own detection (``NO_COLOR``, ``FORCE_COLOR``, whether stdout is a terminal)
and lines follow the console's width.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rich.console import Console
from rich.text import Text

from ..checking.report import FAILED, PASSED, SKIPPED, STATUS_ORDER, WARNING, Finding, Report, RuleResult
from . import Emission, OutputFormat
from .text import fmt_num, format_duration, limit_text, no_workflow_commands, sparkline, visible_copy

#: Colour of each status word (and of the summary line).
STYLE = {FAILED: "red", WARNING: "yellow", PASSED: "green", SKIPPED: "dim"}
#: Status words, as pytest writes them.
WORD = {FAILED: "FAILED", WARNING: "WARNING", PASSED: "PASSED", SKIPPED: "SKIPPED"}
#: -q progress characters.
CHAR = {FAILED: "F", WARNING: "W", PASSED: ".", SKIPPED: "s"}
#: Findings shown per rule (and summary lines per rule) unless -v.
MAX_FINDINGS = 5
#: History entries shown in full before the middle is elided (-v allows more).
HISTORY_FULL, HISTORY_FULL_VERBOSE = 12, 40
#: Widest sparkline, in characters.
SPARK_WIDTH = 40


def _shown_indices(n: int, mark: int | None, full: int, edge: int) -> list[int | None]:
    """Indices of a history to print (``None`` = elided run): all when short, else the edges
    and the marked record with its neighbours."""
    if n <= full:
        return list(range(n))
    keep = set(range(edge)) | set(range(n - edge, n))
    if mark is not None and 0 <= mark < n:
        keep |= {mark - 1, mark, mark + 1}
    out: list[int | None] = []
    prev = -1
    for i in sorted(k for k in keep if 0 <= k < n):
        if i != prev + 1:
            out.append(None)
        out.append(i)
        prev = i
    return out


def _numbers(history: list, mark: int | None, indices, style: str) -> Text:
    t = Text()
    for k, i in enumerate(indices):
        if k:
            t.append("  ")
        if i is None:
            t.append("…", style="dim")
        elif i == mark:
            shown = "non-finite" if history[i] is None else fmt_num(history[i])
            t.append(f"[{shown}]", style=style)
        else:
            t.append(fmt_num(history[i]))
    return t


def history_text(history: list, mark: int | None, *, verbose: bool = False,
                 style: str = "bold red", max_width: int | None = None) -> Text:
    """A sparkline of the history, then its values (3 significant digits), the marked record
    as ``[value]`` in ``style``; the middle is elided (``…``) when long or when the values
    would not fit in ``max_width`` cells."""
    t = Text()
    if history:
        most = SPARK_WIDTH if max_width is None else max(8, min(SPARK_WIDTH, max_width // 3))
        width = most if len(history) > most else None
        spark = sparkline(history, width)
        if width is None and mark is not None and 0 <= mark < len(spark) == len(history):
            t.append(spark[:mark], style="cyan")
            t.append(spark[mark], style=style)
            t.append(spark[mark + 1:], style="cyan")
        else:
            t.append(spark, style="cyan")
        t.append("  ")
    full, edge = (HISTORY_FULL_VERBOSE, 8) if verbose else (HISTORY_FULL, 4)
    room = None if max_width is None else max_width - t.cell_len
    while True:
        nums = _numbers(history, mark, _shown_indices(len(history), mark, full, edge), style)
        if room is None or nums.cell_len <= room or edge <= 1:
            break
        full, edge = 0, edge - 1
    t.append_text(nums)
    return t


# -- pieces ------------------------------------------------------------------------------

def source_label(source: str) -> str:
    """``default`` for a built-in pack (``default.toml:25 (built-in)`` with a line), else a
    path relative to the current folder when it is below it."""
    m = re.fullmatch(r"(.*?)(:\d+)?", source)
    base, line = m.group(1), m.group(2) or ""
    path, _, section = base.partition(" [")
    try:
        from ..checking.config import packs_dir
        p = Path(path).resolve()
        if p.suffix == ".toml" and p.parent == packs_dir().resolve():
            return f"{p.name}{line} (built-in)" if line else p.stem
    except Exception:
        pass
    try:
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            return rel + (f" [{section}" if section else "") + line
    except ValueError:
        pass
    return source


def _check_of(r: RuleResult) -> str:
    return getattr(r.rule, "check", "")


def _line(console: Console, left: Text, right: Text) -> None:
    """``left`` then ``right`` flush with the console's right edge (left truncated to fit)."""
    width = console.width
    room = max(1, width - right.cell_len - 1)
    left = left.copy()
    if left.cell_len > room:
        left.truncate(room, overflow="ellipsis")
    line = Text()
    line.append_text(left)
    line.append(" " * max(1, width - left.cell_len - right.cell_len))
    line.append_text(right)
    console.print(line, no_wrap=True, overflow="ellipsis", soft_wrap=False)


def _sep(console: Console, title: str, char: str, style: str, bold: bool = True) -> None:
    console.rule(Text(title, style=f"bold {style}" if bold else style), characters=char, style=style)


def _what(f: Finding, total_records: int) -> Text:
    t = Text()
    t.append(f.subject if f.tensor else f"log {f.subject}", style="bold")
    if f.tensor and f.layer and not f.tensor.startswith(f.layer + "/") and f.layer != f.tensor:
        t.append(f" (layer {f.layer})", style="dim")
    t.append(f" · first at {f.at}")
    t.append(" (record ")
    t.append(str(f.record))
    t.append(")")
    value = "non-finite" if f.value is None else fmt_num(f.value, 4)
    t.append(f" · {f.metric or 'value'} ")
    t.append(value, style="bold red" if f.severity == "error" else "bold yellow")
    t.append(limit_text(f, 4))
    n = f.count
    t.append(f" · {n} of {total_records} record{'s' if total_records != 1 else ''} violate"
             + ("s" if n == 1 else ""))
    return t


def _finding_block(console: Console, f: Finding, report: Report, style: str, verbose: bool) -> None:
    console.print(_what(f, report.records))
    msg = Text("E   ", style=f"bold {style}")
    msg.append(f.message, style=f"bold {style}")
    console.print(msg)
    if f.history:
        hist = Text("    ")
        hist.append(f"{f.metric or 'value'}: ", style="dim")
        hist.append_text(history_text(f.history, f.record, verbose=verbose, style=f"bold {style}",
                                      max_width=console.width - hist.cell_len))
        console.print(hist, no_wrap=True, overflow="ellipsis")


def _rule_section(console: Console, result: RuleResult, report: Report, verbose: bool, *,
                  header: bool = True) -> None:
    """One rule's failure block: evidence, history, hint; ``header=False`` leaves out the
    ``____ rule ____`` line (the pytest plugin, where pytest draws its own)."""
    style = STYLE[result.status] if result.status in (FAILED, WARNING) else "red"
    if header:
        _sep(console, result.id, "_", style)
    findings = result.findings if verbose else result.findings[:MAX_FINDINGS]
    if not result.findings and result.note:
        console.print(Text(f"E   {result.note}", style=f"bold {style}"))
    for k, f in enumerate(findings):
        if k:
            console.print()
        _finding_block(console, f, report, style, verbose)
    more = len(result.findings) - len(findings)
    if more:
        console.print(Text(f"… and {more} more tensor{'s' if more != 1 else ''} (-v shows all)",
                           style="dim"))
    hint = getattr(result.rule, "hint", "")
    if hint:
        t = Text("hint: ", style="bold cyan")
        t.append(hint)
        console.print(t)
    if verbose:
        src = getattr(result.rule, "source", "")
        if src:
            console.print(Text(f"rule: {source_label(src)}", style="dim"))


def summary_lines(report: Report, verbose: bool = False) -> list[Text]:
    """The ``short test summary info`` lines of one run."""
    lines: list[Text] = []
    for p in report.problems:
        t = Text("ERROR", style="bold red")
        t.append(f" {p}")
        lines.append(t)
    for result in report.results:
        if result.status not in (FAILED, WARNING):
            continue
        word = WORD[result.status]
        style = STYLE[result.status]
        items = result.findings if verbose else result.findings[:MAX_FINDINGS]
        if not result.findings:
            t = Text(word, style=f"bold {style}")
            t.append(f" {result.id} - {result.note}")
            lines.append(t)
        for f in items:
            msg = f.message if f.message.startswith(f.subject) else f"{f.subject}: {f.message}"
            t = Text(word, style=f"bold {style}")
            t.append(f" {result.id} - {msg}")
            lines.append(t)
        more = len(result.findings) - len(items)
        if more:
            t = Text(word, style=f"bold {style}")
            t.append(f" {result.id} - … and {more} more tensor{'s' if more != 1 else ''}")
            lines.append(t)
    if verbose:
        for result in report.results:
            if result.status == SKIPPED:
                t = Text("SKIPPED", style="yellow")
                t.append(f" {result.id} - {result.note or 'skipped'}")
                lines.append(t)
    return lines


# -- the report ----------------------------------------------------------------------------

def _header(report: Report) -> list[Text]:
    source = "seed-format dump" if report.source == "seed" else report.source
    head = Text("run: ", style="bold")
    head.append(report.run)
    head.append(f"  ({source}) · {report.records} record{'s' if report.records != 1 else ''}"
                f" · {report.tensors} tensor{'s' if report.tensors != 1 else ''}")
    rules = Text("rules: ", style="bold")
    rules.append(", ".join(source_label(s) for s in report.rule_sources) or "(none)")
    lines = [head]
    if report.config:
        config = Text("config: ", style="bold")
        config.append(report.config)
        lines.append(config)
    lines.append(rules)
    return lines + baseline_lines(report.baseline)


def baseline_lines(b: dict | None) -> list[Text]:
    """``baseline: <what> · compared epoch 0 to epoch 9``, then what did not match, a line each:
    unmatched tensors are listed, never dropped silently."""
    if not b:
        return []
    t = Text("baseline: ", style="bold")
    t.append(f"{b['baseline']} · compared {b['compared']}")
    lines = [t]
    for label, items in (("only in this run", b.get("only_here")), ("missing here", b.get("missing")),
                         ("logs missing here", b.get("missing_logs"))):
        if items:
            shown = ", ".join(items[:8]) + (f" and {len(items) - 8} more" if len(items) > 8 else "")
            lines.append(Text(f"  {label}: {shown}", style="yellow"))
    for note in b.get("notes") or ():
        lines.append(Text(f"  note: {note}", style="dim"))
    return lines


def render_report(report: Report, console: Console, *, verbosity: int = 0) -> None:
    """Print one run's report, pytest-style: header, one line per rule, failures, summary info."""
    verbose = verbosity > 0
    if verbosity < 0:
        line = Text(report.run + " ")
        for r in report.results:
            line.append(CHAR.get(r.status, "?"), style=STYLE.get(r.status, ""))
        if report.problems:
            line.append("E" * len(report.problems), style="red")
        console.print(line)
    else:
        _sep(console, "weightwatch check", "=", "default", bold=True)
        for t in _header(report):
            console.print(t)
        if not report.results:
            console.print(Text("no rule selected", style="yellow"))
        idw = max((len(r.id) for r in report.results), default=0)
        ckw = max((len(_check_of(r)) for r in report.results), default=0)
        for r in report.results:
            left = Text(r.id.ljust(idw))
            left.append("  ")
            left.append(_check_of(r).ljust(ckw) if verbose else _check_of(r), style="dim")
            if verbose:
                if r.tensors:
                    noun = "log" if getattr(r.rule, "is_log_check", False) else "tensor"
                    left.append(f"  {r.tensors} {noun}{'s' if r.tensors != 1 else ''}")
                if r.note:
                    left.append(f"  ({r.note})", style="dim")
            elif r.status == SKIPPED and r.note:
                pass  # the note is -v material, as pytest's skip reasons are
            _line(console, left, Text(WORD.get(r.status, r.status.upper()), style=STYLE.get(r.status, "")))

    if report.problems:
        _sep(console, "ERRORS", "=", "red")
        for p in report.problems:
            # one line however narrow the terminal: it names a file users grep for
            console.print(Text(p, style="red"), soft_wrap=True)

    for title, status in (("FAILURES", FAILED), ("WARNINGS", WARNING)):
        results = [r for r in report.results if r.status == status]
        if not results:
            continue
        _sep(console, title, "=", STYLE[status])
        for r in results:
            _rule_section(console, r, report, verbose)

    if report.diagnosis:
        _sep(console, "diagnosis", "=", "magenta")
        render_diagnosis(report, console)

    lines = summary_lines(report, verbose)
    if lines:
        _sep(console, "short test summary info", "=", "cyan", bold=False)
        for t in lines:
            console.print(t, no_wrap=True, overflow="ellipsis")


def restore_line(run: str, record: int | None) -> Text:
    t = Text("restore: ", style="bold cyan")
    t.append(f'weightwatch.restore(model, "{run}")')
    if record is not None:
        t.append(f"   # the weights of record {record}, the last that passed", style="dim")
    return t


def render_diagnosis(report: Report, console: Console, *, indent: str = "") -> None:
    """Each cause: what went wrong, where it started and what followed, the hint; a restore line."""
    for k, cause in enumerate(report.diagnosis):
        if k:
            console.print()
        style = "red" if cause.severity == "error" else "yellow"
        head = Text(indent)
        head.append(cause.title, style=f"bold {style}")
        head.append(f" · from {cause.at} (record {cause.onset})")
        console.print(head)
        first = Text(f"{indent}  first: ", style="bold")
        first.append(cause.first.subject, style="bold")
        first.append(f" ({cause.first.rule}) - {cause.first.message}")
        console.print(first)
        if cause.followed:
            shown = cause.followed[:MAX_FINDINGS]
            then = Text(f"{indent}  also:  ", style="bold")
            then.append(", ".join(f"{f.subject} ({f.at})" for f in shown))
            if len(cause.followed) > len(shown):
                then.append(f", … {len(cause.followed) - len(shown)} more", style="dim")
            console.print(then)
        if cause.detail:
            console.print(Text(f"{indent}  {cause.detail}"))
        if len(cause.rules) > 1:
            console.print(Text(f"{indent}  rules: {', '.join(cause.rules)}", style="dim"))
        if cause.hint:
            hint = Text(f"{indent}  hint: ", style="bold cyan")
            hint.append(cause.hint)
            console.print(hint)
    if report.healthy_record is not None and any(c.severity == "error" for c in report.diagnosis):
        line = Text(indent + "  ")
        line.append_text(restore_line(report.run, report.healthy_record))
        console.print(line, soft_wrap=True)  # a line to copy: never wrapped


# -- the summary line ----------------------------------------------------------------------

def _counts(reports: list[Report]) -> tuple[dict, int]:
    counts = {s: 0 for s in STATUS_ORDER}
    for rep in reports:
        for s, n in rep.counts().items():
            counts[s] = counts.get(s, 0) + n
    errors = sum(len(rep.problems) for rep in reports)
    return counts, errors


def _plural(n: int, noun: str) -> str:
    """pytest's plural rule: only "warning" and "error" take an s."""
    if noun in ("warning", "error") and n != 1:
        noun += "s"
    return f"{n} {noun}"


def _parts(reports: list[Report]) -> list[tuple[str, str]]:
    counts, errors = _counts(reports)
    parts = [(_plural(counts[s], s), STYLE[s]) for s in STATUS_ORDER if counts.get(s)]
    deselected = sum(rep.deselected for rep in reports)
    if deselected:
        parts.append((f"{deselected} deselected", "yellow"))
    if errors:
        parts.append((_plural(errors, "error"), "red"))
    return parts


def _main_color(reports: list[Report], strict: bool) -> str:
    counts, errors = _counts(reports)
    if counts[FAILED] or errors or (strict and counts[WARNING]):
        return "red"
    if counts[WARNING] or not counts[PASSED]:
        return "yellow"   # warnings, or no rule passed (all skipped, or nothing selected)
    return "green"


def summary_text(reports: list[Report], duration: float) -> str:
    """``2 failed, 1 warning, 9 passed, 1 skipped in 0.12s`` (plain text)."""
    parts = _parts(reports)
    body = ", ".join(p for p, _ in parts) if parts else "no rules ran"
    return f"{body} in {format_duration(duration)}"


def render_summary(reports: list[Report], console: Console, *, duration: float,
                   strict: bool = False) -> None:
    """The final ``==== 2 failed, 9 passed in 0.12s ====`` line, coloured by the worst outcome."""
    stopped = [r for r in reports if r.stopped_early]
    if stopped:
        n = sum(len(r.failed) for r in stopped)
        _sep(console, f"stopped after {n} failure{'s' if n != 1 else ''} (--maxfail)", "!", "red",
             bold=False)
    color = _main_color(reports, strict)
    parts = _parts(reports)
    title = Text()
    if not parts:
        title.append("no rules ran", style=f"bold {color}")
    for k, (text, style) in enumerate(parts):
        if k:
            title.append(", ", style=color)
        # pytest: the part that decides the colour is bold, the others plain in their own colour
        title.append(text, style=f"bold {style}" if style == color else style)
    title.append(f" in {format_duration(duration)}", style=color)
    console.rule(title, characters="=", style=color)


def emit(out: Emission) -> None:
    console = Console(file=out.stream, highlight=False)
    # Names come from the run: a tensor called "x\n::error ..." or holding ESC sequences is
    # shown, escaped, never acted on by the terminal or a CI runner.
    reports = [visible_copy(r) for r in out.reports]
    # Under GitHub Actions the runner reads any line that starts with "::" as a workflow
    # command; none in the report is one (the annotations come after it, on purpose).
    with no_workflow_commands(out.stream):
        for report in reports:
            render_report(report, console, verbosity=out.verbosity)
        render_summary(reports, console, duration=out.duration, strict=out.strict)


FORMAT = OutputFormat(name="terminal", help="pytest's layout, in colour on a terminal (the default)",
                      emit=emit)
