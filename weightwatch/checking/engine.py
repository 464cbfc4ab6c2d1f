"""The rule engine: rules x run -> :class:`~.report.Report`.

For each rule the engine picks the tensors it applies to, hands their
histories to the rule's check (one vectorised call over all records and
tensors), masks records where the rule does not apply (``after`` and
``until``, the per-record ``trainable``/``frozen`` flags, records the check
cannot judge such as a batch record for a whole-epoch check), applies
``patience`` over the records it judges, and turns
the first failing record of each tensor into a :class:`Finding`.  The same
function serves ``weightwatch check``, the live callback and user tests.
"""

from __future__ import annotations

import difflib
import time

import numpy as np

from ..run.model import Run
from ..run.reader import open_run
from .checks import JUDGES, SUBJECTS, Histories, NotApplicable, record_mask
from .diagnosis import diagnose
from .config import RuleSet, load_rules
from .keyword import compile_keyword
from .report import FAILED, PASSED, SKIPPED, WARNING, Finding, Report, RuleResult
from .rules import Rule


def check(run_or_path, rules=None, *, keyword: str | None = None, maxfail: int | None = None,
          config=None, baseline=None) -> Report:
    """Check a run against rules and return the report.

    ``run_or_path`` is a :class:`Run` or a run directory.  ``rules`` is
    layered on top of the project configuration (see
    :func:`.config.load_rules`); pass a :class:`RuleSet` to use
    exactly those rules.  ``baseline`` (reference run directories, a
    baseline file, or a :class:`~.baseline.Baseline`) adds the baseline
    checks; without it the project configuration's ``baseline`` applies, if
    it has one (``baseline=False``: none).

    Example::

        report = weightwatch.check("runs/exp1", baseline=["runs/main-s0", "runs/main-s1"])
        assert not report.failed, [f.message for r in report.failed for f in r.findings]
    """
    from .baseline_file import load_baseline

    run = run_or_path if isinstance(run_or_path, Run) else open_run(run_or_path)
    ruleset = load_rules(rules, config=config)
    if baseline is None:
        baseline = ruleset.baseline or None
    return evaluate(run, ruleset, keyword=keyword, maxfail=maxfail,
                    baseline=load_baseline(baseline) if baseline else None)


def evaluate(run: Run, ruleset: RuleSet, *, keyword: str | None = None,
             maxfail: int | None = None, baseline=None) -> Report:
    """``baseline``: a :class:`~.baseline.Baseline`; without one, baseline rules are not run."""
    started = time.perf_counter()
    match = compile_keyword(keyword) if keyword else None
    verdict = run.verdict  # read first: an unreadable verdict is one of the run's problems
    report = Report(run=str(run.path), source=run.source, records=len(run.records),
                    tensors=len(run.tensors), rule_sources=list(ruleset.sources), config=ruleset.config,
                    problems=[str(p) for p in run.problems],
                    nothing_recorded=not run.tensors and not run.log_keys)
    alignment = baseline.align(run) if baseline is not None else None
    if alignment is not None:
        report.baseline = alignment.summary()
        if not alignment.compared_records and run.records:
            # Nothing compared is no pass: the gate would say nothing about this run.
            report.problems.append(f"{run.path}: no record of this run has a counterpart in the baseline "
                                   f"({alignment.baseline.describe()}): compare runs of the same "
                                   "configuration (epochs, freq=)")
        report.reference_l2 = _norm_band(run, ruleset, alignment)
    failures = 0
    # Histories gathered for one rule serve every later rule with the same
    # selection, for this evaluation only (the run may grow before the next).
    cache: dict = {}
    for rule in ruleset:
        if rule.check_def.baseline and alignment is None:
            continue  # a baseline rule without a baseline: not collected, like pytest's unused plugins
        if match is not None and not match(rule):
            report.deselected += 1
            continue
        if maxfail is not None and failures >= maxfail:
            report.stopped_early = True
            break
        result = evaluate_rule(run, rule, cache, alignment)
        report.results.append(result)
        if result.status == FAILED:
            failures += 1
    report.diagnosis = diagnose(report, run)
    if isinstance(verdict, dict) and isinstance(verdict.get("healthy_record"), int):
        report.healthy_record = verdict["healthy_record"]
    report.duration = time.perf_counter() - started
    return report


def _norm_band(run: Run, ruleset: RuleSet, alignment):
    """The L2-norm band of every tensor, with the options of the pack's baseline-norm rule."""
    from .checks import CHECKS

    rule = next((r for r in ruleset if r.check == "baseline-norm"), None)
    options = rule.options if rule is not None else {k: o.default for k, o in CHECKS["baseline-norm"].options.items()}
    return alignment.tensor_band("l2", np.arange(len(run.tensors)), **options)


def _static_selection(run: Run, rule: Rule, model: str | None) -> np.ndarray:
    everything = "*" in rule.select and not rule.exclude
    idx = []
    for i, t in enumerate(run.tensors):
        if rule.role and t.role not in rule.role:
            continue
        if rule.dtype == "float" and t.dtype and not (t.dtype.startswith("float") or t.dtype == "bfloat16"):
            continue
        if isinstance(rule.dtype, tuple) and t.dtype and t.dtype not in rule.dtype:
            continue
        if not everything and not rule.matches(*t.names(model)):
            continue
        idx.append(i)
    return np.array(idx, dtype=np.intp)


def _flag_mask(h: Histories, name: str, wanted: bool | None) -> np.ndarray | None:
    """Records x tensors where the per-record flag matches; unknown flags (seed runs) match the
    healthy default (trainable, not frozen)."""
    if wanted is None:
        return None
    values = h(name)
    unknown = np.isnan(values)
    default = (name == "trainable")
    return np.where(unknown, wanted == default, values == float(wanted))


def _closest_names(run: Run, rule: Rule, model: str | None) -> str:
    """``; closest names: a/kernel, b/kernel`` for a select that matched nothing."""
    names = sorted({n for t in run.tensors for n in t.names(model)}, key=len)
    close: list[str] = []
    for g in rule.select:
        plain = g.replace("*", "").replace("?", "").strip("/")
        close += difflib.get_close_matches(plain, names, n=3, cutoff=0.3) if plain else []
    close = list(dict.fromkeys(close))[:3] or names[:3]
    return f"; closest names: {', '.join(close)}" if close else ""


def evaluate_rule(run: Run, rule: Rule, cache: dict | None = None, baseline=None) -> RuleResult:
    check_def = rule.check_def
    model = run.model_name
    nrec = len(run.records)
    if check_def.scope == SUBJECTS:
        h = Histories(run, np.array([], dtype=np.intp), cache, baseline)
        try:
            outcome = check_def.fn(h, **rule.options)
        except NotApplicable as why:
            return RuleResult(rule, SKIPPED, note=str(why))
        names = outcome.subjects
        keep = [j for j, n in enumerate(names) if rule.matches(n)]
        if len(keep) < len(names):  # select / exclude apply to the names it judges
            outcome.value, outcome.bad = outcome.value[:, keep], outcome.bad[:, keep]
            if isinstance(outcome.limit, np.ndarray) and outcome.limit.ndim == 2:
                outcome.limit = outcome.limit[:, keep]
            outcome.extra = {k: (v[:, keep] if isinstance(v, np.ndarray) and v.ndim == 2
                                 else (lambda r, j, f=v: f(r, keep[j])) if callable(v) else v)
                             for k, v in outcome.extra.items()}
            names = [names[j] for j in keep]
        applicable = np.ones_like(outcome.bad)
        layers = [None] * len(names)
        tensors = names if outcome.subject_tensors else [None] * len(names)
    elif rule.is_log_check:
        h = Histories(run, np.array([], dtype=np.intp), cache)
        keys = rule.log_keys
        if not any(run.log_present(k).any() for k in keys):
            return RuleResult(rule, SKIPPED, note=f"run has no {' / '.join(map(repr, keys))} log")
        try:
            outcome = check_def.fn(h, **rule.options)
        except NotApplicable as why:
            return RuleResult(rule, SKIPPED, note=str(why))
        applicable = np.ones_like(outcome.bad)
        names = outcome.subjects
        layers = [None] * len(names)
        tensors = [None] * len(names)
    else:
        idx = _static_selection(run, rule, model)
        if idx.size == 0:
            if rule.select != ("*",):
                return RuleResult(rule, WARNING,
                                  note=f"select {list(rule.select)} matched no tensor of this run"
                                       + _closest_names(run, rule, model))
            return RuleResult(rule, SKIPPED, note="no tensor of the selected role")
        h = Histories(run, idx, cache, baseline)
        applicable = np.ones((nrec, idx.size), dtype=bool)
        for name, wanted in (("trainable", rule.trainable), ("frozen", rule.frozen)):
            m = _flag_mask(h, name, wanted)
            if m is not None:
                applicable &= m
        if not applicable.any():
            note = "no selected tensor is " + ", ".join(
                f"{n}={str(w).lower()}" for n, w in (("trainable", rule.trainable), ("frozen", rule.frozen))
                if w is not None)
            if np.isnan(h("frozen")).all():
                note += " (this run has no trainable/frozen flags)"
            return RuleResult(rule, SKIPPED, note=note, tensors=int(idx.size))
        try:
            outcome = check_def.fn(h, **rule.options)
        except NotApplicable as why:
            return RuleResult(rule, SKIPPED, note=str(why), tensors=int(idx.size))
        names = [t.path for t in h.tensors]
        layers = [t.layer for t in h.tensors]
        tensors = names
    judged = record_mask(run.records, check_def.judges)
    if nrec > 1 and not judged[1:].any():
        return RuleResult(rule, SKIPPED, tensors=len(names),
                          note=f"judges {JUDGES[check_def.judges]}: this run has none")
    bad = outcome.bad & applicable & judged[:, None]
    if rule.after or rule.until is not None:
        index = np.array([r.index for r in run.records])  # record numbers, not list positions
        bad[index < rule.after] = False
        if rule.until is not None:
            bad[index > rule.until] = False
    # Records the check cannot judge neither count towards nor break a streak of violations.
    positions = np.flatnonzero(judged)
    streak = _first_streak(bad[positions], rule.patience)
    fire = np.where(streak >= 0, positions[np.maximum(streak, 0)], -1) if positions.size else streak
    counts = bad.sum(axis=0)
    findings = []
    for j in np.flatnonzero(fire >= 0):
        r = int(fire[j])
        rec = run.records[r]
        value = _num(outcome.value[r, j])
        limit = outcome.limit
        if isinstance(limit, np.ndarray):
            limit = limit[r, j] if limit.ndim == 2 else limit[r]
        limit = _num(limit)
        metric = outcome.extra.get("metric", check_def.metric)
        if metric == "log":  # a log check's history is the log itself
            metric = names[j]
        extra = {k: (_at(v, r, j) if isinstance(v, np.ndarray) or callable(v) else v)
                 for k, v in outcome.extra.items() if k != "metric"}
        band = band_history = None
        if check_def.baseline and "lo" in outcome.extra and "hi" in outcome.extra:
            band = [extra["lo"], extra["hi"]]
            lo, hi = outcome.extra["lo"], outcome.extra["hi"]
            band_history = [[_num(a), _num(b)] for a, b in zip(lo[:, j], hi[:, j])]
        fields = dict(tensor=tensors[j], layer=layers[j], epoch=rec.epoch, record=rec.index,
                      value=value, limit=limit, metric=metric, key=names[j], where=rec.label, **extra)
        findings.append(Finding(
            rule=rule.id, severity=rule.severity, tensor=tensors[j], layer=layers[j],
            record=rec.index, epoch=rec.epoch, batch=rec.batch, value=value, limit=limit,
            message=rule.format_message(**fields), metric=metric, key=None if tensors[j] else names[j],
            history=[_num(x) for x in outcome.value[:, j]], count=int(counts[j]), file=rec.file,
            band=band, band_history=band_history))
    if not findings:
        return RuleResult(rule, PASSED, tensors=len(names))
    return RuleResult(rule, FAILED if rule.severity == "error" else WARNING, findings,
                      tensors=len(names))


def _first_streak(bad: np.ndarray, patience: int) -> np.ndarray:
    """Per column, the record where ``patience`` consecutive violations are first reached (-1: never)."""
    if bad.shape[0] < max(patience, 1):
        return np.full(bad.shape[1], -1)
    if patience <= 1:
        return np.where(bad.any(axis=0), bad.argmax(axis=0), -1)
    # A streak of `patience` ending at record r: bad at r, r-1, ..., r-patience+1.
    streak = bad[patience - 1:].copy()
    for k in range(1, patience):
        streak &= bad[patience - 1 - k: bad.shape[0] - k]
    return np.where(streak.any(axis=0), streak.argmax(axis=0) + patience - 1, -1)


def _at(v: np.ndarray, r: int, j: int):
    """A figure of ``Outcome.extra`` at the finding: per record and subject, or per record, or
    computed for the finding alone (a callable of record and subject, for words)."""
    if callable(v):
        return v(r, j)
    x = v[r, j] if v.ndim == 2 else v[r]
    return x if v.dtype == object else _num(x)


def _num(x):
    if x is None:
        return None
    x = float(x)
    return None if np.isnan(x) else x
