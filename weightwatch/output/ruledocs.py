"""``weightwatch rules``: every rule and check documented from its source.

Like ``ruff rule``: the text shown is the rule's own rationale and hint from
its TOML file and the check's docstring, so the documentation cannot
drift from what runs.
"""

from __future__ import annotations

import re

from rich.markup import escape as _escape
from rich.table import Table

from ..checking.checks import CHECKS, JUDGES
from ..checking.config import RuleSet, builtin_packs, load_rules
from ..errors import RuleError, did_you_mean
from .text import visible


def escape(text) -> str:
    """Rule-file text as rich markup that prints it as written, control characters escaped."""
    return _escape(visible(text))


def rst(text: str) -> str:
    """Docstring text as rich markup: ``literal`` becomes highlighted code, the rest is escaped."""
    return re.sub(r"``(.+?)``", lambda m: f"[bold cyan]{m.group(1)}[/]", escape(text))


def _ruleset(pack: str | None) -> RuleSet:
    if pack is None:
        return load_rules()
    packs = builtin_packs()
    if pack not in packs:
        raise RuleError(f'no built-in pack "{pack}"{did_you_mean(pack, packs)}; '
                        f'built-in packs: {", ".join(packs)}')
    return load_rules(config=packs[pack])


def list_rules(console, pack: str | None = None) -> None:
    rs = _ruleset(pack)
    console.print(f"[bold]{len(rs)} rules[/] from {escape(', '.join(rs.sources))}")
    # The check column repeats most rule ids: on a narrow terminal it gives its room to the text
    # (`weightwatch rules ID` names the check).
    with_check = console.width >= 120
    table = Table(show_edge=False, pad_edge=False, box=None)
    table.add_column("rule", style="bold", no_wrap=True)
    if with_check:
        table.add_column("check", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("applies to")
    table.add_column("what it catches")
    for r in rs:
        scope = ", ".join(
            [*(f"select {s}" for s in r.select if s != "*"), *(f"role {k}" for k in r.role),
             *([f"trainable={str(r.trainable).lower()}"] if r.trainable is not None else []),
             *([f"frozen={str(r.frozen).lower()}"] if r.frozen is not None else []),
             *([f"records {r.after}..{'' if r.until is None else r.until}"] if r.after or r.until is not None
               else [])]) or \
            ("training logs" if r.is_log_check or r.check == "baseline-log" else "all tensors")
        if r.check_def.baseline:
            scope += " (with --baseline)"
        what = (r.check_def.doc.splitlines() or [""])[0]
        sev = "[red]error[/]" if r.severity == "error" else "[yellow]warning[/]"
        table.add_row(*([r.id, r.check] if with_check else [r.id]), sev, escape(scope), rst(what))
    console.print(table)
    console.print("\n[dim]weightwatch rules ID explains one rule; weightwatch rules --checks documents "
                  "every check.[/]")


def explain(name: str, console, pack: str | None = None) -> None:
    rs = _ruleset(pack)
    rule = next((r for r in rs if r.id == name), None)
    if rule is None:
        if name in CHECKS:
            _explain_check(name, console)
            return
        raise RuleError(f'unknown rule or check "{name}"'
                        f'{did_you_mean(name, [r.id for r in rs] + list(CHECKS))}; '
                        "'weightwatch rules' lists them")
    check = rule.check_def
    console.print(f"[bold]{rule.id}[/] ({rule.check}, {rule.severity})", highlight=False)
    console.print(f"[dim]defined in {escape(rule.source)}[/]\n")
    console.print("[bold]What it does[/]")
    console.print(rst(_unwrap(check.doc.split("\n\n")[0])) + "\n")
    console.print("[bold]Why[/]")
    console.print(rst(_unwrap(rule.rationale or check.doc)) + "\n")
    console.print("[bold]Applies to[/]")
    console.print(escape(_scope_text(rule)) + "\n")
    if rule.options:
        console.print("[bold]Options[/] (current value; default of the check)")
        for key, value in rule.options.items():
            opt = check.options[key]
            console.print(f"  [bold]{key}[/] = {escape(_toml(value))}   [dim](default {escape(_toml(opt.default))}"
                          f"{escape(_allowed(opt))}) {escape(opt.doc)}[/]", highlight=False)
        console.print()
    if rule.hint:
        console.print("[bold]How to fix[/]")
        console.print(rst(rule.hint) + "\n")
    example_opt = next(iter(rule.options), None)
    console.print("[bold]Tune it[/] in weightwatch.toml or " + escape("[tool.weightwatch]") + ":")
    lines = [f"[override.{rule.id}]"]
    if example_opt:
        lines.append(f"{example_opt} = {_toml(rule.options[example_opt])}")
    lines.append('severity = "warning"')
    console.print("  " + "\n  ".join(escape(x) for x in lines))
    console.print(f"  [dim]or turn it off:[/] disable = [{rule.id!r}]".replace("'", '"'))


def _scope_text(rule) -> str:
    text = _subjects_text(rule)
    if rule.check_def.baseline:
        text += "; only when a baseline is given (--baseline, or baseline = [...] in the configuration)"
    return text


def _subjects_text(rule) -> str:
    if rule.is_log_check:
        return f"the training logs {', '.join(rule.log_keys)}, judging {JUDGES[rule.check_def.judges]}"
    if rule.check == "baseline-log":
        keys = rule.options.get("keys") or []
        logs = ", ".join(keys) if keys else "every log the baseline holds"
        if rule.exclude:
            logs += f" except {', '.join(rule.exclude)}"
        return f"the training logs: {logs}, judging {JUDGES[rule.check_def.judges]}" + (
            f", failing after {rule.patience} consecutive violating records" if rule.patience > 1 else "")
    if rule.check == "baseline-tensors":
        return "every tensor of the reference runs"
    parts = [f"tensors matching {list(rule.select)}"]
    if rule.exclude:
        parts.append(f"except {list(rule.exclude)}")
    if rule.role:
        parts.append(f"of role {', '.join(rule.role)}")
    if rule.dtype == "float":
        parts.append("of a floating-point dtype")
    elif isinstance(rule.dtype, tuple):
        parts.append(f"of dtype {', '.join(rule.dtype)}")
    if rule.trainable is not None:
        parts.append("whose variable is trainable" if rule.trainable else "whose variable is not trainable")
    if rule.frozen is not None:
        parts.append("in a frozen layer (trainable=False)" if rule.frozen else "not in a frozen layer")
    if rule.after and rule.until is not None:
        parts.append(f"from record {rule.after} to record {rule.until}")
    elif rule.after:
        parts.append(f"from record {rule.after} on")
    elif rule.until is not None:
        parts.append(f"up to record {rule.until}")
    parts.append(f"judging {JUDGES[rule.check_def.judges]}")
    if rule.patience > 1:
        parts.append(f"failing after {rule.patience} consecutive violating records")
    return ", ".join(parts)


def _unwrap(text: str) -> str:
    """A paragraph as one line, so the console wraps it to its own width."""
    return " ".join(text.split())


def _allowed(opt) -> str:
    """``; allowed: a, b`` / ``; allowed: >= 1`` / ``; allowed: > 0``: the values an option allows."""
    if opt.choices:
        return f"; allowed: {', '.join(map(str, opt.choices))}"
    low = (f">= {opt.minimum:g}" if opt.minimum is not None else
           f"> {opt.above:g}" if opt.above is not None else "")
    if opt.maximum is not None:
        return f"; allowed: {low + ' and ' if low else ''}<= {opt.maximum:g}"
    return f"; allowed: {low}" if low else ""


def _toml(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def _explain_check(name: str, console) -> None:
    check = CHECKS[name]
    console.print(f"[bold]{name}[/] (check, scope: {check.scope}; judges {JUDGES[check.judges]})\n")
    for para in check.doc.split("\n\n"):
        console.print(rst(_unwrap(para)) + "\n")
    if check.options:
        console.print("[bold]Options[/]")
        for key, opt in check.options.items():
            console.print(f"  [bold]{key}[/] = {escape(_toml(opt.default))}   [dim]{escape(opt.doc)}"
                          f"{escape(_allowed(opt))}[/]", highlight=False)
        console.print()


def list_checks(console) -> None:
    for name in CHECKS:
        _explain_check(name, console)
