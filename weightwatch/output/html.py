"""A self-contained HTML report: ``weightwatch report RUN -o report.html`` and ``check --html PATH``.

One file that renders offline - no script, font, style or image is fetched
(a Content-Security-Policy of ``default-src 'none'`` forbids it) - so it can
be opened from a CI artifact or an e-mail.  Per run it shows:

* a header: the run, the verdict, the summary counts, the diagnosis, problems;
* every failing or warning rule: per offending tensor (or log), the judged
  figure over the records with the limit drawn, the violating records marked
  (the first one larger, with a vertical line), the message and the hint;
* a heatmap of tensors x records of the update ratio (``d_l2 / l2``) on a
  log scale, where frozen blocks are black and NaN/Inf magenta;
* the training logs (loss, metrics, learning rate) over the records;
* small multiples of every tensor's L2 norm, grouped by layer, with a filter.

The charts are drawn by :mod:`.svg` (inline SVG, a PNG heatmap); long
histories are downsampled for drawing, never for judging.

The reports do not carry their runs, so each run is opened again from
``report.run`` (fast: the journal holds its figures); a run that cannot be
opened gets its header and findings, without the run's own charts.
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path

import numpy as np

from ..checking.report import FAILED, WARNING, Report
from ..errors import ExitCode, WeightwatchError
from ..run.jsonio import atomic_write
from . import Emission, OutputFormat
from .svg import colorbar, data_uri, heatmap_image, line_chart
from .text import fmt_num, format_duration, limit_text

#: The policy every report carries: nothing may be loaded from anywhere.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "img-src data:")
#: Findings charted per rule; the rest are listed.
MAX_FINDING_CHARTS = 12
#: Bounds (log10) of the update-ratio colour scale: the same in every report.
GRAD_LO = -6.0   # log10 of the smallest gradient ratio drawn
RATIO_LO, RATIO_HI = -7.0, 0.0

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#212121;background:#fafafa}
main{max-width:1280px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 4px}code{font:12.5px ui-monospace,Menlo,Consolas,monospace}
.verdict{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff;font-weight:700;margin-right:8px}
.v-failed{background:#c62828}.v-passed{background:#2e7d32}.v-error{background:#6a1b9a}.v-none{background:#757575}
.s-failed{color:#c62828;font-weight:700}.s-warning{color:#b26a00;font-weight:700}.s-passed{color:#2e7d32}.s-skipped{color:#757575}
.cause{background:#fff;border-left:4px solid #c62828;padding:6px 12px;margin:6px 0}.cause.warning{border-color:#b26a00}
.rule{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:8px 14px;margin:10px 0}
.rule.warning{border-left:4px solid #b26a00}.rule.failed{border-left:4px solid #c62828}
.finding{display:inline-block;vertical-align:top;margin:6px 14px 6px 0;max-width:490px}
.msg{margin:2px 0}.hint{color:#455a64;margin:4px 0}.muted{color:#757575}
svg .plot{fill:#fff;stroke:#ccc}svg .line{fill:none;stroke:#1565c0;stroke-width:1.5}svg .pt{fill:#1565c0}
svg .band{fill:#1565c0;opacity:.16;stroke:none}svg .limit{stroke:#c62828;stroke-dasharray:5 3;stroke-width:1.2}svg .onset{stroke:#c62828;stroke-width:1;opacity:.45}
svg .violation{fill:#c62828}svg .violation.first{stroke:#fff;stroke-width:1.5}svg .nf{stroke:#ff00aa;stroke-width:2}
svg .ax{font-size:10px;fill:#616161}svg .ttl{font-size:11.5px;font-weight:600;fill:#212121}
.heat{position:relative;display:flex;gap:6px;align-items:flex-start}
.heat img{image-rendering:pixelated;width:100%;height:var(--h);border:1px solid #ccc;display:block}
.heat .names{font:10px/1 ui-monospace,monospace;white-space:nowrap;text-align:right}
.heat .names div{height:var(--row);line-height:var(--row);overflow:hidden}
#tip{position:fixed;pointer-events:none;background:#263238;color:#fff;padding:3px 6px;border-radius:3px;font-size:12px;display:none}
.logs .chart,.sm .chart{background:#fff}
.layer{margin:6px 0}.layer h4{margin:8px 0 2px;font:600 12.5px ui-monospace,monospace}
.sm{display:inline-block;margin:2px 6px 2px 0;vertical-align:top}.sm .nm{font:10.5px ui-monospace,monospace;max-width:230px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.sm.bad .chart{outline:2px solid #c62828}
#filter{font-size:14px;padding:4px 8px;width:320px;margin:4px 0 8px}
table{border-collapse:collapse}td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
"""

SCRIPT = """
(function(){
var errors=[];window.addEventListener('error',function(e){errors.push(String(e.message));
document.documentElement.setAttribute('data-errors',errors.join(' | '));});
function ready(){
  var f=document.getElementById('filter');
  if(f){f.addEventListener('input',function(){var q=f.value.toLowerCase();
    document.querySelectorAll('.sm').forEach(function(el){
      el.style.display=el.getAttribute('data-name').toLowerCase().indexOf(q)>=0?'':'none';});
    document.querySelectorAll('.layer').forEach(function(l){
      var any=Array.prototype.some.call(l.querySelectorAll('.sm'),function(e){return e.style.display!=='none';});
      l.style.display=any?'':'none';});});}
  var tip=document.getElementById('tip');
  document.querySelectorAll('.heat img').forEach(function(img){
    var meta=JSON.parse(img.getAttribute('data-meta'));
    img.addEventListener('mousemove',function(e){var r=img.getBoundingClientRect();
      var c=Math.min(meta.cols.length-1,Math.floor((e.clientX-r.left)/r.width*meta.cols.length));
      var t=Math.min(meta.tensors.length-1,Math.floor((e.clientY-r.top)/r.height*meta.tensors.length));
      tip.textContent=meta.tensors[t]+' @ '+meta.cols[c];tip.style.display='block';
      tip.style.left=(e.clientX+12)+'px';tip.style.top=(e.clientY+12)+'px';});
    img.addEventListener('mouseleave',function(){tip.style.display='none';});});
  var shown=0;document.querySelectorAll('.violation').forEach(function(c){
    var b=c.getBoundingClientRect();if(b.width>0&&b.height>0)shown++;});
  document.documentElement.setAttribute('data-violations-shown',String(shown));
  document.documentElement.setAttribute('data-ready','1');
}
if(document.readyState==='loading')document.addEventListener('DOMContentLoaded',ready);else ready();
})();
"""


def _verdict(report: Report, strict: bool) -> tuple[str, str]:
    code = report.exit_code(strict=strict)
    if code == ExitCode.CHECKS_FAILED:
        return "FAILED", "v-failed"
    if code == ExitCode.USAGE_ERROR:
        return "ERROR", "v-error"
    if code == ExitCode.NO_CHECKS_RAN:
        return "NO RULES RAN", "v-none"
    return "PASSED", "v-passed"


def _open(report: Report):
    """The report's run, opened again (None when it cannot be)."""
    if report.source == "?":
        return None
    from ..run.reader import open_run

    try:
        return open_run(report.run)
    except (WeightwatchError, OSError):
        return None


def _labels(run, n: int) -> list[str]:
    if run is not None and len(run.records) == n:
        return [r.label for r in run.records]
    return [f"record {i}" for i in range(n)]


def _violations(history: np.ndarray, f) -> list[int]:
    """The records to mark: the first violation and every record past the limit on its side
    (or every non-finite one, for a non-finite first value).  Drawing only."""
    with np.errstate(invalid="ignore"):
        if f.value is None or not math.isfinite(f.value):
            bad = ~np.isfinite(history)
        elif f.limit is not None and math.isfinite(f.limit) and f.value != f.limit:
            bad = history > f.limit if f.value > f.limit else history < f.limit
        else:
            bad = np.zeros(history.shape, bool)
    marks = {int(m) for m in np.flatnonzero(bad) if m >= f.record}
    marks.add(int(f.record))
    return sorted(marks)


def _header(report: Report, strict: bool) -> str:
    verdict, cls = _verdict(report, strict)
    c = report.counts()
    counts = ", ".join(f'<span class="s-{s}">{n} {s}</span>' for s, n in c.items() if n) or "no rules ran"
    if report.deselected:
        counts += f", {report.deselected} deselected"
    parts = [f'<h1 id="run"><span class="verdict {cls}">{verdict}</span><code>{escape(report.run)}</code></h1>',
             f'<p>{counts} in {escape(format_duration(report.duration))} &middot; {report.records} records, '
             f'{report.tensors} tensors &middot; rules from {escape(", ".join(report.rule_sources) or "-")}'
             + (" &middot; stopped early (-x/--maxfail)" if report.stopped_early else "") + "</p>"]
    for cause in report.diagnosis:
        if cause.severity != "error" and not strict and cause.severity != "warning":
            continue
        followed = ", ".join(f"<code>{escape(f.subject)}</code> ({escape(f.at)})" for f in cause.followed[:6])
        more = len(cause.followed) - 6
        parts.append(
            f'<div class="cause {escape(cause.severity)}"><b>{escape(cause.title)}</b> at {escape(cause.at)}: '
            f'first <code>{escape(cause.first.subject)}</code> ({escape(cause.first.rule)})'
            + (f". {escape(cause.detail)}" if cause.detail else "")
            + (f"<br>then {followed}" + (f" and {more} more" if more > 0 else "") if followed else "")
            + (f'<div class="hint">hint: {escape(cause.hint)}</div>' if cause.hint else "") + "</div>")
    for p in report.problems:
        parts.append(f'<p class="s-failed">error: {escape(p)}</p>')
    return "".join(parts)


def _rules(report: Report, run, strict: bool) -> str:
    bad = [r for r in report.results if r.status in (FAILED, WARNING)]
    if not bad:
        return '<h2>Rules</h2><p class="s-passed">No rule failed or warned.</p>' + _rule_table(report)
    out = ['<h2>Failing and warning rules</h2>']
    for result in bad:
        status = FAILED if result.status == FAILED or strict else WARNING
        rule = result.rule
        out.append(f'<section class="rule {status}" data-rule="{escape(result.id)}">'
                   f'<h3><span class="s-{status}">{result.status.upper()}</span> <code>{escape(result.id)}</code> '
                   f'<span class="muted">{escape(getattr(rule, "check", ""))}</span></h3>')
        if not result.findings:
            out.append(f'<p class="msg">{escape(result.note or result.status)}</p>')
        for f in result.findings[:MAX_FINDING_CHARTS]:
            history = np.asarray([np.nan if v is None else v for v in f.history], dtype=np.float64)
            labels = _labels(run, history.size)
            title = f"{f.subject} - {f.metric or 'value'}"
            chart = line_chart(history, labels=labels, title=title, limit=f.limit,
                               marks=_violations(history, f), first=f.record,
                               band=tuple(zip(*f.band_history)) if f.band_history else None,
                               attrs=f'data-tensor="{escape(f.subject)}" data-first="{f.record}"') \
                if history.size else '<p class="muted">(no history recorded for this finding)</p>'
            value = "non-finite" if f.value is None else fmt_num(f.value, 6)
            limit = escape(limit_text(f, 6))
            out.append(f'<div class="finding">{chart}<p class="msg"><b>{escape(f.where)}</b>: {escape(f.message)}'
                       f'<br><span class="muted">{escape(f.metric or "value")} {escape(value)}{limit}; '
                       f'violated in {f.count} of {report.records} records</span></p></div>')
        rest = result.findings[MAX_FINDING_CHARTS:]
        if rest:
            out.append("<p>and " + ", ".join(f"<code>{escape(f.where)}</code>" for f in rest) + "</p>")
        hint = getattr(rule, "hint", "")
        if hint:
            out.append(f'<p class="hint">hint: {escape(hint)}</p>')
        out.append("</section>")
    return "".join(out) + _rule_table(report)


def _rule_table(report: Report) -> str:
    rows = "".join(
        f'<tr><td><code>{escape(r.id)}</code></td><td class="s-{r.status}">{r.status}</td>'
        f'<td>{escape(r.findings[0].message if r.findings else r.note)}</td></tr>'
        for r in report.results)
    return (f'<details><summary>All {len(report.results)} rules</summary><table>{rows}</table></details>'
            if rows else "")


def _heatmap(run) -> str:
    if run is None or not run.records or not run.tensors:
        return ""
    l2, d = run.metric("l2"), run.metric("d_l2")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(l2 > 0, d / l2, np.nan)
    nonfinite = (np.nan_to_num(run.metric("nan")) + np.nan_to_num(run.metric("inf"))) > 0
    out = _heat(run, ratio, nonfinite, "Update ratio, tensors &times; records",
                "|&Delta;w| / |w| per record (d_l2 / l2), log scale: vanishing or exploding layers and "
                "frozen blocks stand out.", RATIO_LO, RATIO_HI, "update ratio heatmap")
    grad = run.metric("grad_rms") if run.has_column("grad_rms") else None
    if grad is None or not np.isfinite(grad).any():
        return out + ('<p class="muted">Gradient magnitude is not recorded in this run (an optimizer '
                      'without an estimate, or a run recorded before the column), so only the update '
                      'ratio is shown.</p>')
    with np.errstate(divide="ignore", invalid="ignore"):
        finite = np.where(np.isfinite(grad), grad, -np.inf)
        top = finite.max(axis=1, keepdims=True)   # per record; -inf where none is recorded
        rel = np.where(top > 0, grad / top, np.nan)
    return out + _heat(run, rel, nonfinite, "Gradient magnitude, tensors &times; records",
                       "grad_rms (from the optimizer's state) over the largest tensor's at that record, log "
                       "scale: under adaptive optimizers this shows vanishing gradients that the update "
                       "ratio hides.", GRAD_LO, 0.0, "gradient heatmap")


def _heat(run, values, nonfinite, title: str, blurb: str, lo: float, hi: float, alt: str) -> str:
    img, starts = heatmap_image(values, lo=lo, hi=hi, nonfinite=nonfinite)
    T = len(run.tensors)
    row = max(2, min(14, 720 // T))
    names = [t.path for t in run.tensors]
    labels = [run.records[i].label for i in starts]
    meta = json.dumps({"tensors": names, "cols": labels}, separators=(",", ":"))
    name_col = ("<div class='names'>" + "".join(f"<div>{escape(n)}</div>" for n in names) + "</div>"
                if row >= 9 else "")
    return (f'<h2>{title}</h2><p class="muted">{blurb} Hover for names.</p>{colorbar(lo, hi)}'
            f'<div class="heat" style="--row:{row}px;--h:{row * T}px">{name_col}'
            f'<div style="flex:1"><img alt="{alt}" src="{data_uri(img)}" '
            f"data-meta='{escape(meta, quote=True)}'></div></div>")


def _logs(run) -> str:
    if run is None or not run.records:
        return ""
    keys = run.log_keys
    labels = [r.label for r in run.records]
    charts = []
    for key in keys:
        charts.append(f'<div class="sm">{line_chart(run.log(key), labels=labels, title=key, width=400, height=170)}</div>')
    lr = any(k in ("learning_rate", "lr") for k in keys)
    note = "" if lr else '<p class="muted">The learning rate was not logged in this run.</p>'
    body = "".join(charts) or '<p class="muted">No training logs were recorded.</p>'
    return f'<h2>Loss, metrics and learning rate</h2><div class="logs">{body}</div>{note}'


def _multiples(report: Report, run) -> str:
    if run is None or not run.tensors:
        return ""
    bad: dict[str, list[int]] = {}
    for r in report.results:
        if r.status in (FAILED, WARNING):
            for f in r.findings:
                if f.tensor:
                    bad.setdefault(f.tensor, []).append(f.record)
    l2 = run.metric("l2")
    labels = [r.label for r in run.records]
    ref = report.reference_l2
    if ref is not None and (ref[0].shape != l2.shape or ref[1].shape != l2.shape):
        ref = None   # the run changed since it was checked
    layers: dict[str, list[str]] = {}
    for i, t in enumerate(run.tensors):
        marks = bad.get(t.path, [])
        chart = line_chart(l2[:, i], labels=labels, width=230, height=64, axes=False, marks=marks,
                           first=min(marks) if marks else None,
                           band=(ref[0][:, i], ref[1][:, i]) if ref is not None else None)
        cls = "sm bad" if marks else "sm"
        layers.setdefault(t.layer, []).append(
            f'<div class="{cls}" data-name="{escape(t.path)}"><div class="nm" title="{escape(t.path)}">'
            f'{escape(t.path.rsplit("/", 1)[-1])} <span class="muted">{escape(t.role)} '
            f'{escape(fmt_num(_last_finite(l2[:, i])))}</span></div>{chart}</div>')
    body = "".join(f'<div class="layer"><h4>{escape(layer)}</h4>{"".join(items)}</div>'
                   for layer, items in layers.items())
    shaded = (' <span class="muted">(shaded: the reference runs\' band)</span>'
              if ref is not None else "")
    return (f'<h2>L2 norm of every tensor{shaded}</h2><input id="filter" type="search" '
            'placeholder="filter tensors by name" aria-label="filter tensors">' + body)


def _last_finite(y):
    ok = np.flatnonzero(np.isfinite(y))
    return float(y[ok[-1]]) if ok.size else None


def html_report(reports: list[Report], *, strict: bool = False, runs: list | None = None) -> str:
    """The HTML document for ``reports`` (``runs``: the runs, else opened from ``report.run``)."""
    sections = []
    for k, report in enumerate(reports):
        run = runs[k] if runs is not None else _open(report)
        sections.append(f'<article class="report">{_header(report, strict)}{_rules(report, run, strict)}'
                        f'{_heatmap(run)}{_logs(run)}{_multiples(report, run)}</article>')
    title = "weightwatch: " + ", ".join(r.run for r in reports)
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<title>{escape(title)}</title><style>{STYLE}</style></head><body><main>'
            + "<hr>".join(sections) + f'</main><div id="tip"></div><script>{SCRIPT}</script></body></html>\n')


def write_html(reports: list[Report], path, *, strict: bool = False, runs: list | None = None) -> Path:
    """Write the HTML report to ``path`` (whole or not at all; parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, html_report(reports, strict=strict, runs=runs).encode("utf-8"))
    return path


def emit(out: Emission) -> None:
    write_html(out.reports, out.path, strict=out.strict)


FORMAT = OutputFormat(name="html", flag="--html",
                      help="also write a self-contained HTML report (charts, heatmap) to PATH", emit=emit)
