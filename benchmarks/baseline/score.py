"""Score baseline gating (issue 13) on the recorded benchmark, offline (no TensorFlow).

::

    python benchmarks/baseline/score.py --cache /work/basebench-cache
    python benchmarks/baseline/score.py --json outcomes.json        # every pair's outcome
    python benchmarks/baseline/score.py --sweep baseline-update-ratio.spread=3,4,6
    python benchmarks/baseline/score.py --sweep 'baseline-*.tolerance=1.5,2,3'   # every rule with it
    python benchmarks/baseline/score.py --set baseline-norm.tolerance=0.3 --rules my.toml
    python benchmarks/baseline/score.py --only 'mlp-*,cnn-c0'       # configurations (globs)
    python benchmarks/baseline/score.py --lofo baseline-relative-gradient.spread=4,6,8,10

Every candidate is checked twice:

* **absolute**: the built-in default pack alone (``load_rules(use_project_config=False)``);
* **baseline**: the same pack with a baseline learnt from its references
  (``learn_baseline([open_run(p) for p in refs])``, ``weightwatch.check(run, ruleset,
  baseline=base)``), in two modes: 3 references (seeds k+1..k+3 of the configuration) and
  1 reference (seed k+1).

A check *fails* when any result has status ``"failed"`` (an error finding).  The baseline
rules are those whose check is a baseline check (``rule.check_def.baseline``; ids
``baseline-*``); "baseline" below means a failure of a baseline rule, "either" a failure of
any rule of the combined check.

Tables: healthy pairs (n, failures, rate, 95% Wilson upper bound; per family and per rule);
recall per regression class, absolute vs baseline vs either, side by side, on all regression
runs and on the *visible* ones, with the baseline rule that fired first; the same in
one-reference mode.  ``--lofo RULE.OPTION=v1,v2,...`` (most sensitive first) calibrates one
option leaving one family out, as ``benchmarks/zoo/score.py`` does: for each held-out family,
the first value under which the pack fails no more healthy pairs of the *other* families than
under its least sensitive value (3 references), and the held-out family's false failures and
recall under it.  A regression run is **visible** when, on figures read straight from the
runs (never from the rules), it leaves the envelope of the configuration's 5 healthy seeds
widened by the envelope's own width on both sides (at least 5% of the value) -- on the last
logged loss, or on some tensor's last L2 norm or mean update ratio (``d_l2 / l2``; biases
left out, BatchNorm moving statistics in); a tensor missing from it or frozen where the seeds
train it is visible too.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ZOO = HERE.parent / "zoo"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
for p in (str(HERE), str(ZOO)):
    if p not in sys.path:
        sys.path.append(p)

import bench_specs  # noqa: E402




zoo_score = bench_specs.load_module("zoo_score", ZOO / "score.py")
wilson_upper = zoo_score.wilson_upper
_parse_sweep = zoo_score._parse_sweep

DEFAULT_CACHE = HERE / ".cache"


# --------------------------------------------------------------------------- loading


def load_cases(cache: Path, only: str | None = None, config_set: str = "tune"):
    """{id: Case} of the finished cases in the cache that match the current enumeration (of one
    :data:`bench_specs.CONFIG_SETS` set), and {id: info}.  A case whose training raised is kept
    (its run is whatever was recorded)."""
    current = {c.id: c for c in bench_specs.all_cases(config_set)}
    cases, infos, stale = {}, {}, 0
    for d in sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (d / "info.json").exists():
            continue
        c = current.get(d.name)
        if c is None or json.loads((d / "case.json").read_text()) != json.loads(json.dumps(c.to_dict())):
            stale += 1
            continue
        if only and not any(fnmatch.fnmatchcase(c.config, p) or fnmatch.fnmatchcase(c.id, p)
                            for p in only.split(",")):
            continue
        cases[c.id] = c
        infos[c.id] = json.loads((d / "info.json").read_text())
    return cases, infos, stale


def unhealthy_configs(cases: dict, infos: dict) -> dict[str, str]:
    """{configuration: why} for configurations that diverge whatever the seed: every healthy
    seed's logged loss went non-finite.  Their pairs say nothing about seed-to-seed spread and
    their regressions nothing about a change: the tables leave them out and say so.  A
    configuration only some of whose seeds diverge stays in (its failing pairs are counted)."""
    bad: dict[str, list[int]] = defaultdict(list)
    seeds: Counter = Counter()
    for cid, c in cases.items():
        if not c.healthy:
            continue
        seeds[c.config] += 1
        loss = infos[cid].get("loss") or []
        if any(v is None or not math.isfinite(v) for v in loss):
            bad[c.config].append(c.seed_index)
    return {cfg: f"the loss went non-finite in all {seeds[cfg]} of its seeds"
            for cfg, ks in sorted(bad.items()) if len(ks) == seeds[cfg]}


class Runs:
    """Opened runs by case id, opened once."""

    def __init__(self, cache: Path):
        from weightwatch.run.reader import open_run

        self.cache, self._open, self.runs = cache, open_run, {}

    def __getitem__(self, cid):
        if cid not in self.runs:
            self.runs[cid] = self._open(self.cache / cid / "run")
        return self.runs[cid]


# --------------------------------------------------------------------------- checking


def is_baseline_rule(rule) -> bool:
    cd = getattr(rule, "check_def", None)
    return bool(getattr(cd, "baseline", False)) or str(getattr(rule, "id", "")).startswith("baseline-")


def load_ruleset(rules_file: str | None, overrides: dict):
    from weightwatch.checking.config import load_rules

    docs = ([rules_file] if rules_file else []) + ([{"override": overrides}] if overrides else [])
    return load_rules(docs or None, use_project_config=False)


def _findings(report, baseline: bool):
    """(failed rule ids, first error finding as a dict) over the baseline or the other rules."""
    failed, first = [], None
    for order, r in enumerate(report.results):
        if is_baseline_rule(r.rule) != baseline or r.status != "failed":
            continue
        failed.append(r.rule.id)
        for f in r.findings:
            if getattr(f, "severity", "error") != "error":
                continue
            rec = f.record if f.record is not None else 10 ** 9
            key = (rec, order)
            if first is None or key < first[0]:
                first = (key, {"rule": r.rule.id, "record": f.record, "tensor": f.tensor,
                               "metric": getattr(f, "metric", None), "value": _num(getattr(f, "value", None)),
                               "limit": _num(getattr(f, "limit", None)),
                               "message": getattr(f, "message", "")[:300]})
    return failed, (first[1] if first else None)


def _num(x):
    """A finding's figure as strict JSON (non-finite and non-numbers: None)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


@dataclass
class Outcome:
    candidate: str
    config: str
    family: str
    optimizer: str
    kind: str                        # "healthy" or the regression class
    variant: str
    refs: list
    abs_failed: bool
    abs_rules: list
    base_failed: bool = False
    base_rules: list = field(default_factory=list)
    first: dict | None = None        # the baseline rule's first error finding
    error: str | None = None         # the engine raised (counted as a failure of the baseline)
    visible: bool | None = None      # regressions: outside the seeds' envelope (see the docstring)
    visible_why: str = ""
    train_error: str | None = None

    @property
    def either(self) -> bool:
        return self.abs_failed or self.base_failed


class Scorer:
    """Checks candidates against learnt baselines; caches the absolute checks and the baselines."""

    def __init__(self, runs: Runs, cases: dict, ruleset):
        import weightwatch
        from weightwatch.checking.baseline import learn_baseline

        self.runs, self.cases, self.ruleset = runs, cases, ruleset
        self._check, self._learn = weightwatch.check, learn_baseline
        self._abs, self._bases = {}, {}
        self.seconds = defaultdict(float)

    def absolute(self, cid):
        if cid not in self._abs:
            t = time.perf_counter()
            rep = self._check(self.runs[cid], self.ruleset)
            self._abs[cid] = _findings(rep, baseline=False)[0]
            self.seconds["absolute"] += time.perf_counter() - t
        return self._abs[cid]

    def baseline(self, refs: tuple):
        if refs not in self._bases:
            t = time.perf_counter()
            self._bases[refs] = self._learn([self.runs[r] for r in refs])
            self.seconds["learn"] += time.perf_counter() - t
        return self._bases[refs]

    def outcome(self, cand, refs) -> Outcome:
        c = self.cases[cand.id]
        abs_rules = self.absolute(c.id)
        o = Outcome(c.id, c.config, c.family, c.spec.optimizer, c.regression or "healthy", c.variant,
                    [r.id for r in refs], bool(abs_rules), abs_rules)
        t = time.perf_counter()
        try:
            rep = self._check(self.runs[c.id], self.ruleset, baseline=self.baseline(tuple(r.id for r in refs)))
            o.base_rules, o.first = _findings(rep, baseline=True)
            o.base_failed = bool(o.base_rules)
        except Exception as exc:      # an engine error on a pair is a failure, reported
            o.error = f"{type(exc).__name__}: {exc}"[:300]
            o.base_failed = True
        self.seconds["baseline"] += time.perf_counter() - t
        return o


def score_pairs(scorer: Scorer, cases: dict, infos: dict, refs: int) -> list[Outcome]:
    outs = []
    for cand, rs in bench_specs.pairs(list(cases.values()), refs=refs):
        o = scorer.outcome(cand, rs)
        o.train_error = infos[cand.id].get("error")
        outs.append(o)
    return outs


# --------------------------------------------------------------------------- visibility (no rules)


def _envelope_out(h: list, r: float, floor: float = 0.05) -> bool:
    """Is r outside [min h - w, max h + w] (log scale), w = max(max h - min h, log(1 + floor))?"""
    h = [math.log(v) for v in h if v is not None and math.isfinite(v) and v > 0]
    if r is None or not math.isfinite(r) or len(h) < 2:
        return r is not None and not math.isfinite(r)
    if r <= 0:
        return True
    lo, hi = min(h), max(h)
    w = max(hi - lo, math.log1p(floor))
    return not (lo - w <= math.log(r) <= hi + w)


def _figures(run):
    """{name: value} straight from a run: the last finite loss, per tensor its last L2 norm and
    mean update ratio; and the set of tensors recorded frozen."""
    import numpy as np

    out, frozen = {}, set()
    loss = run.log("loss")
    loss = loss[np.isfinite(loss)]
    if loss.size:
        out["loss"] = float(loss[-1])
    l2s, dl2s, fzs = run.metric("l2"), run.metric("d_l2"), run.metric("frozen")
    for j, t in enumerate(run.tensors):
        if t.role == "bias":       # biases (before a BatchNorm ~1e-8) are too small to say anything
            continue
        p = t.path
        l2, d = l2s[:, j], dl2s[:, j]
        fin = l2[np.isfinite(l2)]
        if fin.size:
            out[f"{p}:l2"] = float(fin[-1])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = d[1:] / l2[:-1]
        ratio = ratio[np.isfinite(ratio)]
        if ratio.size:
            out[f"{p}:ratio"] = float(ratio.mean())
        fz = fzs[:, j]
        if np.any(fz[np.isfinite(fz)] > 0):
            frozen.add(p)
    return out, frozen


def mark_visible(outs: list[Outcome], runs: Runs, cases: dict) -> None:
    seeds = defaultdict(list)
    for c in cases.values():
        if c.healthy:
            seeds[c.config].append(c.id)
    cache = {}

    def figs(cid):
        if cid not in cache:
            cache[cid] = _figures(runs[cid])
        return cache[cid]

    for o in outs:
        if o.kind == "healthy":
            continue
        hs = [figs(s) for s in seeds[o.config]]
        (rf, rfrozen) = figs(o.candidate)
        why = []
        if any(rfrozen - h[1] for h in hs):
            why.append("frozen: " + ", ".join(sorted(rfrozen - hs[0][1]))[:80])
        missing = set().union(*(set(h[0]) for h in hs)) - set(rf)
        if missing:
            why.append(f"{len(missing)} figures missing")
        for name, hv in sorted(hs[0][0].items()):
            vals = [h[0].get(name) for h in hs]
            if name in rf and _envelope_out(vals, rf[name]):
                why.append(f"{name} {rf[name]:.3g} vs seeds {min(v for v in vals if v is not None):.3g}"
                           f"..{max(v for v in vals if v is not None):.3g}")
        o.visible = bool(why)
        o.visible_why = "; ".join(why[:3]) + (f" (+{len(why) - 3})" if len(why) > 3 else "")


# --------------------------------------------------------------------------- tables


def _pct(k, n):
    return f"{100 * k / n:5.1f}%" if n else "    -"


def table_healthy(outs: list[Outcome], title: str) -> list[str]:
    h = [o for o in outs if o.kind == "healthy"]
    n = len(h)
    lines = [f"Healthy pairs, {title} (n = {n}; a check fails on any error finding)",
             f"  {'':14s} {'failures':>8s} {'rate':>7s} {'95% upper':>10s}"]
    for label, key in (("baseline", lambda o: o.base_failed), ("absolute", lambda o: o.abs_failed),
                       ("either", lambda o: o.either)):
        k = sum(key(o) for o in h)
        lines.append(f"  {label:14s} {k:8d} {_pct(k, n):>7s} {100 * wilson_upper(k, n):9.2f}%")
    rules = Counter(r for o in h for r in o.base_rules)
    if rules:
        lines.append("  baseline rules failing healthy pairs: " + ", ".join(f"{k} {v}" for k, v in rules.most_common()))
    errs = [o for o in h if o.error]
    if errs:
        lines.append(f"  engine errors: {len(errs)} (counted as failures), e.g. {errs[0].candidate}: {errs[0].error}")
    lines.append(f"  {'family':12s} {'pairs':>6s} {'baseline':>9s} {'95% upper':>10s} {'absolute':>9s}")
    for fam in bench_specs.FAMILIES:
        fh = [o for o in h if o.family == fam]
        if not fh:
            continue
        k = sum(o.base_failed for o in fh)
        lines.append(f"  {fam:12s} {len(fh):6d} {k:9d} {100 * wilson_upper(k, len(fh)):9.2f}% "
                     f"{sum(o.abs_failed for o in fh):9d}")
    return lines


def table_recall(outs: list[Outcome], title: str) -> list[str]:
    r = [o for o in outs if o.kind != "healthy"]
    lines = [f"Recall per regression class, {title} (all runs | visible runs: outside the seeds' envelope)",
             f"  {'class':17s} {'runs':>4s} {'absolute':>9s} {'baseline':>9s} {'either':>8s} | "
             f"{'visible':>7s} {'absolute':>9s} {'baseline':>9s} {'either':>8s}  first baseline rules"]
    tot = Counter()
    for cls in bench_specs.REGRESSION_CLASSES:
        rc = [o for o in r if o.kind == cls]
        if not rc:
            continue
        vis = [o for o in rc if o.visible]
        first = Counter(o.first["rule"] for o in rc if o.first)
        row = [len(rc), sum(o.abs_failed for o in rc), sum(o.base_failed for o in rc), sum(o.either for o in rc),
               len(vis), sum(o.abs_failed for o in vis), sum(o.base_failed for o in vis), sum(o.either for o in vis)]
        for k, v in zip(("n", "a", "b", "e", "vn", "va", "vb", "ve"), row):
            tot[k] += v
        lines.append(f"  {cls:17s} {row[0]:4d} {_pct(row[1], row[0]):>9s} {_pct(row[2], row[0]):>9s} "
                     f"{_pct(row[3], row[0]):>8s} | {row[4]:7d} {_pct(row[5], row[4]):>9s} "
                     f"{_pct(row[6], row[4]):>9s} {_pct(row[7], row[4]):>8s}  "
                     + ", ".join(f"{k} {v}" for k, v in first.most_common(3)))
    lines.append(f"  {'ALL':17s} {tot['n']:4d} {_pct(tot['a'], tot['n']):>9s} {_pct(tot['b'], tot['n']):>9s} "
                 f"{_pct(tot['e'], tot['n']):>8s} | {tot['vn']:7d} {_pct(tot['va'], tot['vn']):>9s} "
                 f"{_pct(tot['vb'], tot['vn']):>9s} {_pct(tot['ve'], tot['vn']):>8s}")
    quiet = [o for o in r if not o.abs_failed]
    qv = [o for o in quiet if o.visible]
    lines.append(f"  the absolute pack passes {len(quiet)} of them ({len(qv)} visible): the baseline fails "
                 f"{sum(o.base_failed for o in quiet)} ({_pct(sum(o.base_failed for o in quiet), len(quiet)).strip()}) "
                 f"of those, {sum(o.base_failed for o in qv)} ({_pct(sum(o.base_failed for o in qv), len(qv)).strip()}) "
                 "of the visible ones  <- the issue's target: >= 90%")
    return lines


def list_details(outs: list[Outcome]) -> list[str]:
    lines = ["Healthy pairs that fail a baseline rule: candidate <- references, first finding"]
    for o in outs:
        if o.kind == "healthy" and o.base_failed:
            f = o.first or {}
            lines.append(f"  {o.candidate:22s} <- {','.join(x.rsplit('-', 1)[1] for x in o.refs):9s} "
                         f"{o.error or (str(f.get('rule')) + ' @' + str(f.get('record')) + ': ' + str(f.get('message')))[:150]}")
    lines.append("")
    lines.append("Regressions the baseline misses: candidate, variant, absolute rules, visible (why)")
    for o in outs:
        if o.kind != "healthy" and not o.base_failed:
            lines.append(f"  {o.candidate:30s} {o.variant:17s} abs: {','.join(o.abs_rules) or '-':24s} "
                         f"{'visible: ' + o.visible_why if o.visible else 'not visible'}"[:220])
    return lines


# --------------------------------------------------------------------------- leave one family out


def lofo(runs, cases, infos, ruleset, rules_file, overrides, spec: str, abs_cache: dict) -> list[str]:
    """Leave-one-family-out calibration of one option over candidate values (most sensitive
    first): a threshold chosen without the family it is then judged on."""
    rule, option, vals = _parse_sweep(spec)
    rids = expand_rules(ruleset, rule, option)
    per_value = {}
    for v in vals:
        ov = json.loads(json.dumps(overrides))
        for rid in rids:
            ov.setdefault(rid, {})[option] = v
        sc = Scorer(runs, cases, load_ruleset(rules_file, ov))
        sc._abs = abs_cache if option not in RULE_FIELDS or all(r.startswith("baseline-") for r in rids) else {}
        per_value[v] = score_pairs(sc, cases, infos, bench_specs.REFS)

    def rule_ff(o):
        return o.kind == "healthy" and any(x in rids for x in o.base_rules)

    lines = [(f"Leave-one-family-out calibration of {rule}.{option} over {vals} (most sensitive first; "
              f"{bench_specs.REFS} references; recall: of the regressions the absolute pack passes)"),
             f"  {'held out':12s} {'chosen':>8s} {'rule ff':>8s} {'pack ff':>12s} {'95% upper':>10s} {'recall':>12s}"]
    tot = Counter()
    for fam in bench_specs.FAMILIES:
        # the first value that fails no healthy pair of the other families the least sensitive
        # value passes (a pair other rules fail anyway, a bad seed, does not veto every value)
        ff_rest = {v: {o.candidate for o in per_value[v] if o.family != fam and o.kind == "healthy"
                       and o.base_failed} for v in vals}
        floor = min(len(x) for x in ff_rest.values())
        chosen = next(v for v in vals if len(ff_rest[v]) == floor)
        outs = [o for o in per_value[chosen] if o.family == fam]
        h = [o for o in outs if o.kind == "healthy"]
        q = [o for o in outs if o.kind != "healthy" and not o.abs_failed]
        row = Counter(rff=sum(map(rule_ff, h)), ff=sum(o.base_failed for o in h), h=len(h),
                      det=sum(o.base_failed for o in q), q=len(q))
        tot.update(row)
        vv = chosen if isinstance(chosen, str) else f"{chosen:g}"
        lines.append(f"  {fam:12s} {vv:>8s} {row['rff']:8d} {row['ff']:5d}/{row['h']:<5d} "
                     f"{100 * wilson_upper(row['ff'], row['h']):9.2f}% {row['det']:4d}/{row['q']:<3d}{_pct(row['det'], row['q']):>6s}")
    lines.append(f"  {'ALL':12s} {'':>8s} {tot['rff']:8d} {tot['ff']:5d}/{tot['h']:<5d} "
                 f"{100 * wilson_upper(tot['ff'], tot['h']):9.2f}% {tot['det']:4d}/{tot['q']:<3d}{_pct(tot['det'], tot['q']):>6s}")
    return lines


# --------------------------------------------------------------------------- main


def _parse_set(text: str) -> tuple[str, str, object]:
    rule, option, vals = _parse_sweep(text)
    return rule, option, vals[0]


RULE_FIELDS = ("severity", "patience", "after", "until")


def expand_rules(ruleset, pattern: str, option: str) -> list[str]:
    """The rule ids a RULE part names: an id, or a glob (``baseline-*``) over the rules that
    have ``option`` (a rule field such as patience, or one of the check's options)."""
    if not any(ch in pattern for ch in "*?["):
        return [pattern]
    out = [r.id for r in ruleset if fnmatch.fnmatchcase(r.id, pattern)
           and (option in RULE_FIELDS or option in getattr(getattr(r, "check_def", None), "options", {}))]
    if not out:
        raise SystemExit(f"no rule matching {pattern!r} has an option {option!r}")
    return out


def run_all(cache: Path, cases, infos, ruleset, *, visible=True):
    runs = Runs(cache)
    scorer = Scorer(runs, cases, ruleset)
    three = score_pairs(scorer, cases, infos, bench_specs.REFS)
    one = score_pairs(scorer, cases, infos, 1)
    if visible:
        mark_visible(three, runs, cases)
        vis = {o.candidate: (o.visible, o.visible_why) for o in three}
        for o in one:
            o.visible, o.visible_why = vis.get(o.candidate, (None, ""))
    return three, one, scorer, runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=str(DEFAULT_CACHE))
    ap.add_argument("--rules", help="a rule file layered on the built-in default pack")
    ap.add_argument("--set", action="append", default=[], metavar="RULE.OPTION=V",
                    help="override one rule option for every table (repeatable)")
    ap.add_argument("--sweep", action="append", default=[], metavar="RULE.OPTION=v1,v2,...",
                    help="score each value of one rule option (3 and 1 references)")
    ap.add_argument("--lofo", action="append", default=[], metavar="RULE.OPTION=v1,v2,...",
                    help="leave-one-family-out calibration of one option (values most sensitive first)")
    ap.add_argument("--only", help="comma-separated globs over configurations or case ids")
    ap.add_argument("--configs", choices=[*bench_specs.CONFIG_SETS, "all"], default="tune",
                    help="configuration set: 'tune' (calibrated on), 'heldout' or 'proof' (held out; "
                         "each its own --cache; see the README) (default: %(default)s)")
    ap.add_argument("--json", help="write every pair's outcome here")
    ap.add_argument("--no-lists", action="store_true", help="leave out the lists of failures and misses")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    cache = Path(args.cache)
    cases, infos, stale = load_cases(cache, args.only, args.configs)
    dropped = unhealthy_configs(cases, infos)
    cases = {k: c for k, c in cases.items() if c.config not in dropped}
    overrides: dict = {}
    plain = load_ruleset(args.rules, {})
    for s in args.set:
        rule, option, v = _parse_set(s)
        for rid in expand_rules(plain, rule, option):
            overrides.setdefault(rid, {})[option] = v
    ruleset = load_ruleset(args.rules, overrides)
    three, one, scorer, runs = run_all(cache, cases, infos, ruleset)
    n_h = sum(c.healthy for c in cases.values())
    train_err = [c for c in cases if infos[c].get("error")]
    head = [f"cache: {cache}: {len(cases)} cases ({n_h} healthy seeds, {len(cases) - n_h} regressions)"
            + (f"; {stale} stale cases ignored" if stale else "")
            + (f"; {len(train_err)} with a training error: {', '.join(train_err[:5])}" if train_err else ""),
            *(f"dropped configuration {cfg} and its regressions: {why}" for cfg, why in dropped.items()),
            f"rules: default pack" + (f" + {args.rules}" if args.rules else "")
            + (f"; overrides {json.dumps(overrides)}" if overrides else ""), ""]
    parts = head + table_healthy(three, f"{bench_specs.REFS} references") + [""]
    parts += table_recall(three, f"{bench_specs.REFS} references") + [""]
    parts += table_healthy(one, "1 reference") + [""]
    parts += table_recall(one, "1 reference") + [""]
    if not args.no_lists:
        parts += list_details(three) + [""]
    print("\n".join(parts))
    for s in args.sweep:
        rule, option, vals = _parse_sweep(s)
        rids = expand_rules(ruleset, rule, option)
        print(f"Sweep of {rule}.{option} (other rules as above; rule ff: healthy pairs this rule fails; "
              "ff: healthy pairs any baseline rule fails; recall: baseline rules, all regressions / visible "
              "ones / those the absolute pack passes; rule first: regressions this rule flags first)")
        print(f"  {'value':>8s} {'refs':>4s} {'pairs':>5s} {'rule ff':>7s} {'ff':>4s} {'95% upper':>10s} "
              f"{'regs':>5s} {'recall':>8s} {'visible':>8s} {'abs-quiet':>9s} {'rule first':>10s}")
        for v in vals:
            ov = json.loads(json.dumps(overrides))
            for rid in rids:
                ov.setdefault(rid, {})[option] = v
            rs = load_ruleset(args.rules, ov)
            sc = Scorer(runs, cases, rs)
            sc._abs = scorer._abs if all(is_baseline_rule(r) for r in rs if r.id in ov) else {}
            sc._bases = scorer._bases
            for k in (bench_specs.REFS, 1):
                outs = score_pairs(sc, cases, infos, k)
                vis = {o.candidate: o.visible for o in three}
                h = [o for o in outs if o.kind == "healthy"]
                r = [o for o in outs if o.kind != "healthy"]
                rv = [o for o in r if vis.get(o.candidate)]
                rq = [o for o in r if not o.abs_failed]
                ff = sum(o.base_failed for o in h)
                rff = sum(any(x in rids for x in o.base_rules) for o in h)
                rfirst = sum(bool(o.first) and o.first["rule"] in rids for o in r)
                vv = v if isinstance(v, str) else f"{v:g}"
                print(f"  {vv:>8s} {k:4d} {len(h):5d} {rff:7d} {ff:4d} {100 * wilson_upper(ff, len(h)):9.2f}% "
                      f"{len(r):5d} {_pct(sum(o.base_failed for o in r), len(r)):>8s} "
                      f"{_pct(sum(o.base_failed for o in rv), len(rv)):>8s} "
                      f"{_pct(sum(o.base_failed for o in rq), len(rq)):>9s} {rfirst:10d}")
        print()
    for s in args.lofo:
        print("\n".join(lofo(runs, cases, infos, ruleset, args.rules, overrides, s, scorer._abs)))
        print()
    if args.json:
        Path(args.json).write_text(json.dumps({
            "cache": str(cache), "rules": args.rules, "overrides": overrides,
            "three_refs": [dict(asdict(o), either=o.either) for o in three],
            "one_ref": [dict(asdict(o), either=o.either) for o in one]}, indent=1))
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in scorer.seconds.items())
    print(f"(scored {len(three) + len(one)} pairs in {time.perf_counter() - t0:.1f} s: {secs})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
