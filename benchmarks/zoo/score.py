"""Score a rule pack on the recorded zoo, offline (no TensorFlow).

::

    python benchmarks/zoo/score.py                          # the built-in default pack
    python benchmarks/zoo/score.py --rules mypack.toml      # another pack (layered on nothing else)
    python benchmarks/zoo/score.py --json outcomes.json     # every run's outcome, for calibration
    python benchmarks/zoo/score.py --sweep exploding-norm.max_ratio=3,5,8,12
    python benchmarks/zoo/score.py --lofo exploding-norm.max_ratio=3,5,8,12

Every case of the cache (see ``record.py``) is opened with
``weightwatch.run.reader.open_run`` and checked with
``weightwatch.checking.engine.evaluate``.  Its label comes from ``truth.json``
(ground truth from the runs themselves, see ``truth.py``); dropped cases are
left out.  Then:

* **false failures**: a healthy run fails when any *error* finding is reported;
  per rule and in total, with the 95% Wilson upper bound of the rate;
* **recall** per fault class: a faulty run is detected when any error finding is
  reported on it; also whether the first finding landed on the fault's tensors
  (or on the loss, for faults the loss shows) and within 1 record of the onset;
* **latency**: first error finding's record minus the truth's onset record
  (negative: flagged before the fault was visible, usually a false alarm on the
  healthy part of a mid-run fault);
* **lead time**: for faults whose weights grew before the first non-finite
  weight, the first non-finite weight's record minus the first error finding's;
* **held-out families** (leave one family out): the figures above for each
  family on its own; ``--lofo RULE.OPTION=v1,v2,...`` runs the protocol with a
  threshold choice: for each held-out family, pick the most sensitive candidate
  that gives no false failure of that rule on the *other* families' healthy
  runs, and report the held-out family's false failures and recall with it.

Loaded runs are cached in ``<cache>/.score/runs.pkl`` (rebuilt for cases whose
files changed) and evaluations in ``<cache>/.score/eval-<hash>.json`` per rule
pack, so scoring again takes a second or two and a new threshold a few.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import math
import os
import pickle
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for p in (str(HERE), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

from specs import FAMILIES, FAULT_CLASSES, GROWTH_FAULTS  # noqa: E402

#: Faults that live in particular tensors: a finding on the loss detects them but is not "on target".
TENSOR_FAULTS = ("frozen-trap", "disconnected", "dead-relu", "wrong-sign-reg", "oscillation",
                 "vanishing-sgd", "vanishing-adaptive", "exploding-rnn")
MAX_LATENCY = 1
EVAL_VERSION = 2


def wilson_upper(k: int, n: int, z: float = 1.959964) -> float:
    """Upper end of the 95% Wilson score interval of a rate k/n."""
    if n == 0:
        return 1.0
    p = k / n
    d = 1 + z * z / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + half) / d)


# --------------------------------------------------------------------------- loading


@dataclass
class Case:
    id: str
    family: str
    optimizer: str
    label: str                     # healthy / a fault class
    injected: str
    variant: str
    onset: int | None
    first_nonfinite_weight: int | None
    growth_before_nan: bool | None
    where: list
    records: int
    spec: dict = field(repr=False, default_factory=dict)
    truth: dict = field(repr=False, default_factory=dict)


def _stamp(case_dir: Path) -> tuple:
    """What the cached Run depends on: the run directory's files (names, sizes, mtimes) and truth."""
    run = case_dir / "run"
    items = []
    for p in sorted(run.iterdir()) if run.exists() else []:
        st = p.stat()
        items.append((p.name, st.st_size, st.st_mtime_ns))
    t = (case_dir / "truth.json").stat()
    return tuple(items) + (("truth.json", t.st_size, t.st_mtime_ns),)


def load_cases(cache: Path, only: str | None = None, quiet=False):
    """(cases, runs, dropped): labelled cases, their Run objects by id, and the dropped truths."""
    from weightwatch.run.reader import open_run

    t0 = time.perf_counter()
    store = cache / ".score"
    store.mkdir(exist_ok=True)
    pkl = store / "runs.pkl"
    old = {}
    if pkl.exists():
        try:
            with open(pkl, "rb") as fh:
                old = pickle.load(fh)
        except Exception:
            old = {}
    from specs import all_specs

    current = {s.id: json.loads(json.dumps(s.to_dict())) for s in all_specs()}
    new, cases, runs, dropped = {}, [], {}, []
    opened = stale = 0
    for d in sorted(cache.iterdir()):
        if not d.is_dir() or d.name.startswith(".") or not (d / "truth.json").exists():
            continue
        if only and not any(fnmatch.fnmatchcase(d.name, p) for p in only.split(",")):
            continue
        stamp = _stamp(d)
        hit = old.get(d.name)
        if hit and hit[0] == stamp:
            spec, truth, run = hit[1], hit[2], hit[3]
        else:
            spec = json.loads((d / "spec.json").read_text())
            truth = json.loads((d / "truth.json").read_text())
            run = open_run(d / "run") if truth["label"] != "dropped" else None
            opened += 1
        new[d.name] = (stamp, spec, truth, run)
        if current.get(d.name) != spec:
            stale += 1          # not in the zoo any more, or recorded from another spec
            continue
        if truth["label"] == "dropped":
            dropped.append(truth)
            continue
        cases.append(Case(d.name, spec["family"], spec["optimizer"], truth["label"], truth["injected"],
                          spec.get("variant", ""), truth.get("onset_record"), truth.get("first_nonfinite_weight"),
                          truth.get("growth_before_nan"), truth.get("where") or [], truth.get("records", 0),
                          spec, truth))
        runs[d.name] = run
    if opened or set(new) != set(old):
        if not only:
            with open(pkl, "wb") as fh:
                pickle.dump(new, fh, protocol=pickle.HIGHEST_PROTOCOL)
    if not quiet:
        print(f"loaded {len(cases)} labelled cases ({len(dropped)} dropped) in "
              f"{time.perf_counter() - t0:.2f} s ({opened} opened from disk"
              + (f"; {stale} stale cases ignored: record.py records them again" if stale else "") + ")",
              file=sys.stderr)
    return cases, runs, dropped


# --------------------------------------------------------------------------- evaluating


def load_ruleset(rules_file: str | None):
    from weightwatch.checking.config import load_rules

    if rules_file:
        return load_rules([rules_file], use_project_config=False)
    return load_rules(use_project_config=False)


def ruleset_key(ruleset) -> str:
    """A hash of the rules' content (ids, checks, options, filters, severities) and of the checking
    code itself: an edit to a check alone must not reuse evaluations made before it."""
    import weightwatch.checking as checking_pkg

    code = Path(checking_pkg.__file__).parent
    parts = [hashlib.sha1(b"".join(p.read_bytes() for p in sorted(code.glob("*.py")))).hexdigest()]
    for r in ruleset:
        parts.append(repr((r.id, r.check, r.severity, sorted(r.options.items()), r.select, r.exclude,
                           r.role, r.trainable, r.frozen, r.dtype, r.patience, r.after)))
    return hashlib.sha1(("\n".join(parts) + f"v{EVAL_VERSION}").encode()).hexdigest()[:16]


def _finding_row(f, result):
    return {"rule": f.rule, "severity": f.severity, "tensor": f.tensor, "record": f.record,
            "value": f.value, "limit": f.limit, "metric": f.metric, "status": result.status}


def evaluate_cases(cases, runs, ruleset, cache: Path | None = None, quiet=False) -> dict:
    """{id: [finding rows]} (every finding of every failed or warning rule), cached per rule pack."""
    from weightwatch.checking.engine import evaluate

    t0 = time.perf_counter()
    key = ruleset_key(ruleset)
    path = cache / ".score" / f"eval-{key}.json" if cache else None
    stored = {}
    if path and path.exists():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            stored = {}
    out, fresh = {}, 0
    for c in cases:
        ent = stored.get(c.id)
        sig = f"{c.records}:{c.truth.get('seconds')}"
        if ent and ent["sig"] == sig:
            out[c.id] = ent["findings"]
            continue
        rep = evaluate(runs[c.id], ruleset)
        rows = [_finding_row(f, r) for r in rep.results if r.status in ("failed", "warning") for f in r.findings]
        out[c.id] = rows
        stored[c.id] = {"sig": sig, "findings": rows}
        fresh += 1
    if path and fresh:
        path.write_text(json.dumps(stored))
    if not quiet:
        print(f"evaluated {fresh} runs ({len(cases) - fresh} from the evaluation cache) in "
              f"{time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return out


# --------------------------------------------------------------------------- judging


@dataclass
class Outcome:
    id: str
    family: str
    optimizer: str
    label: str
    variant: str
    failed: bool                   # any error finding
    error_rules: list
    warning_rules: list
    first_record: int | None = None
    first_rule: str = ""
    first_tensor: str | None = None
    onset: int | None = None
    latency: int | None = None
    on_target: bool | None = None  # the first finding at or after onset lands on the fault
    before_injection: bool = False # the first finding precedes the fault's injection (a false alarm
                                   # on the healthy part of a mid-run fault)
    lead: int | None = None        # first non-finite weight - first finding (growth-before-NaN faults)
    growth_before_nan: bool | None = None
    findings: list = field(default_factory=list)


#: Fault classes that are part of the model itself when injected from the start: a rule can see
#: them at record 0, before any training (a regulariser's penalty of the wrong sign).
IN_THE_MODEL_AT_START = ("wrong-sign-reg",)


def judge(c: Case, rows: list) -> Outcome:
    errors = [r for r in rows if r["severity"] == "error"]
    warnings = [r for r in rows if r["severity"] != "error"]
    o = Outcome(c.id, c.family, c.optimizer, c.label, c.variant, bool(errors),
                sorted({r["rule"] for r in errors}), sorted({r["rule"] for r in warnings}),
                onset=c.onset, growth_before_nan=c.growth_before_nan, findings=errors)
    if not errors:
        return o
    first = min(errors, key=lambda r: (r["record"], r["tensor"] is not None))
    o.first_record, o.first_rule, o.first_tensor = first["record"], first["rule"], first["tensor"]
    if c.label != "healthy" and c.onset is not None:
        o.latency = first["record"] - c.onset
        inj = c.truth.get("injection_record")
        if c.label in IN_THE_MODEL_AT_START and (c.spec.get("onset_epoch") or 1) <= 1:
            inj = 0   # in the model before fit: record 0 holds it already
        o.before_injection = inj is not None and first["record"] < inj
        # the first finding at or after onset (or the first at all, when it caught the fault
        # after its injection but before it showed): does it name the fault?
        start = c.onset if o.before_injection else min(c.onset, first["record"])
        after = [r for r in errors if r["record"] >= start] or errors
        r1 = min(r["record"] for r in after)
        where = set(c.where)
        o.on_target = any((r["tensor"] in where) if r["tensor"] is not None else c.label not in TENSOR_FAULTS
                          for r in after if r["record"] == r1)
    fn = c.truth.get("first_nonfinite_record")
    if c.growth_before_nan and fn is not None:
        o.lead = fn - first["record"]
    return o


# --------------------------------------------------------------------------- tables


def _pct(k, n):
    return f"{100 * k / n:5.1f}%" if n else "    -"


def table_false_failures(outs, ruleset) -> list[str]:
    healthy = [o for o in outs if o.label == "healthy"]
    n = len(healthy)
    lines = [f"False failures on healthy runs (n = {n}; a run fails on any error finding)",
             f"  {'rule':22s} {'severity':8s} {'runs':>6s} {'rate':>7s} {'95% upper':>10s}   families (runs)"]
    for r in ruleset:
        hit = [o for o in healthy if r.id in (o.error_rules if r.severity == "error" else o.warning_rules)]
        fams = Counter(o.family for o in hit)
        lines.append(f"  {r.id:22s} {r.severity:8s} {len(hit):6d} {_pct(len(hit), n):>7s} "
                     f"{100 * wilson_upper(len(hit), n):9.2f}%   "
                     + ", ".join(f"{f} {k}" for f, k in fams.most_common()))
    k = sum(o.failed for o in healthy)
    lines.append(f"  {'TOTAL (errors)':22s} {'':8s} {k:6d} {_pct(k, n):>7s} {100 * wilson_upper(k, n):9.2f}%   "
                 + ", ".join(f"{f} {v}" for f, v in Counter(o.family for o in healthy if o.failed).most_common()))
    lines.append("  (warning rows count runs with a warning of that rule; warnings do not fail a run)")
    return lines


def _lat_hist(lats):
    h = Counter()
    for x in lats:
        h["<0" if x < 0 else str(x) if x <= 2 else "3+"] += 1
    return " ".join(f"{k}:{h[k]}" for k in ("<0", "0", "1", "2", "3+") if h[k])


def _within(o) -> bool:
    return o.failed and o.latency is not None and o.latency <= MAX_LATENCY and not o.before_injection


def table_recall(outs) -> list[str]:
    lines = ["Recall per fault class (detected: any error finding; <=1: first finding after the injection "
             f"and at most {MAX_LATENCY} record after onset; early: first finding before the injection, "
             "a false alarm on the healthy part of a mid-run fault; on target: the first finding after "
             "onset names the fault's tensors, or the loss for faults the loss shows)",
             f"  {'class':20s} {'runs':>5s} {'detected':>9s} {'<=1 rec':>8s} {'early':>6s} {'on target':>10s} "
             f"{'median lat':>10s} {'max lat':>8s}  latency histogram   first rules"]
    tot = Counter()
    for cls in FAULT_CLASSES:
        os_ = [o for o in outs if o.label == cls]
        if not os_:
            continue
        det = [o for o in os_ if o.failed]
        lat = [o.latency for o in det if o.latency is not None]
        within = [o for o in det if _within(o)]
        early = [o for o in det if o.before_injection]
        tgt = [o for o in det if o.on_target]
        rules = Counter(o.first_rule for o in det)
        med = statistics.median(lat) if lat else None
        lines.append(f"  {cls:20s} {len(os_):5d} {len(det):4d} {_pct(len(det), len(os_))} "
                     f"{_pct(len(within), len(os_)):>8s} {len(early):6d} {_pct(len(tgt), len(det)):>10s} "
                     f"{'' if med is None else f'{med:g}':>10s} {'' if not lat else max(lat):>8}  "
                     f"{_lat_hist(lat):18s}  " + ", ".join(f"{k} {v}" for k, v in rules.most_common(3)))
        tot["n"] += len(os_)
        tot["det"] += len(det)
        tot["within"] += len(within)
    lines.append(f"  {'ALL':20s} {tot['n']:5d} {tot['det']:4d} {_pct(tot['det'], tot['n'])} "
                 f"{_pct(tot['within'], tot['n']):>8s}")
    lat_all = [o.latency for o in outs if o.label != "healthy" and o.failed and o.latency is not None]
    if lat_all:
        lines.append(f"  latency over all detected faults: median {statistics.median(lat_all):g}, "
                     f"{sum(x <= 1 for x in lat_all)}/{len(lat_all)} at most 1 record, "
                     f"{sum(x < 0 for x in lat_all)} before onset; histogram {_lat_hist(lat_all)}")
    return lines


def table_variants(outs) -> list[str]:
    """Recall by class and variant (from-start vs mid-run, optimizer, mechanism)."""
    lines = ["Recall by variant", f"  {'class':20s} {'variant':26s} {'runs':>5s} {'detected':>9s} {'<=1 rec':>8s}  first rules"]
    for cls in FAULT_CLASSES:
        vs = sorted({o.variant for o in outs if o.label == cls})
        if len(vs) < 2:
            continue
        for var in vs:
            os_ = [o for o in outs if o.label == cls and o.variant == var]
            det = [o for o in os_ if o.failed]
            w = [o for o in det if _within(o)]
            rules = Counter(o.first_rule for o in det)
            lines.append(f"  {cls:20s} {var:26s} {len(os_):5d} {len(det):3d} {_pct(len(det), len(os_))} "
                         f"{_pct(len(w), len(os_)):>8s}  " + ", ".join(f"{k} {v}" for k, v in rules.most_common(2)))
    return lines


def _best_over_chance(run, upto: int | None = None) -> float | None:
    """The run's best epoch loss (records 1..upto-1) over its manifest's chance_loss, or None."""
    chance = run.manifest.get("chance_loss") if run is not None else None
    if not chance:
        return None
    loss = [float(x) for x in run.log("loss")[1:upto] if math.isfinite(x)]
    return min(loss) / chance if loss else None


def table_chance_overlap(outs, runs, cases_by_id) -> list[str]:
    """Why the missed shuffles are not visible in what is recorded: their loss beside healthy runs'.

    A model fed labels permuted apart from their inputs can fit nothing but the label marginal:
    its loss sits near the chance loss.  So does a healthy model that has not started learning
    yet (slow recurrent, embedding and conv nets), and the absolute pack sees only the loss and
    the weights.  Each missed shuffle is listed with how many healthy runs were at least as stuck
    (best loss at or above its best, over the chance loss): when that number is not 0, no rule
    on the loss can flag the shuffle without failing those healthy runs.  A mid-run shuffle that
    came before the loss had left chance changed nothing recorded either (its best before the
    shuffle is listed).  Baseline gating, which compares against known-good runs of the same
    configuration, is what catches it: see benchmarks/baseline (class labels-shuffled).
    """
    healthy = [b for o in outs if o.label == "healthy" and (b := _best_over_chance(runs.get(o.id))) is not None]
    missed = [o for o in outs if o.label == "labels-shuffled" and not o.failed]
    if not missed:
        return []
    lines = ["Missed label shuffles beside healthy runs (best epoch loss over the manifest's chance_loss;",
             f"  'healthy as stuck': of the {len(healthy)} healthy runs with a chance_loss, those whose best is at or above it)",
             f"  {'id':34s} {'variant':11s} {'best':>6s} {'before shuffle':>15s} {'healthy as stuck':>17s}"]
    for o in sorted(missed, key=lambda o: o.id):
        run = runs.get(o.id)
        best = _best_over_chance(run)
        inj = cases_by_id[o.id].truth.get("injection_record")
        before = _best_over_chance(run, inj) if o.variant != "from-start" and inj else None
        stuck = sum(b >= best for b in healthy) if best is not None else None
        lines.append(f"  {o.id:34s} {o.variant:11s} {_num(best):>6s} {_num(before):>15s} "
                     f"{'-' if stuck is None else stuck:>17}")
    return lines


def table_declared_floor(cases, runs, ruleset) -> list[str]:
    """The wrong-sign losses again, as they are judged when the loss's author declares its floor.

    A custom loss has no floor weightwatch can read, so a negation of one is judged by how its
    fall runs away (``loss-unbounded``, ``loss-sign-flip``).  Its author knows the floor:
    ``WatchCallback(loss_floor=0.0)`` declares it, and ``loss-below-zero`` judges the loss from
    its first epoch.  Every negation in the zoo wraps a non-negative loss (a squared or absolute
    error, a crossentropy), so each is scored with 0 declared, its manifest changed in memory.
    """
    wsl = [c for c in cases if c.label == "wrong-sign-loss"]
    if not wsl:
        return []
    absent = object()
    saved = {c.id: runs[c.id].manifest.get("loss_floor", absent) for c in wsl}
    try:
        for c in wsl:
            runs[c.id].manifest["loss_floor"] = 0.0
        ev = evaluate_cases(wsl, runs, ruleset, None, quiet=True)   # no evaluation cache: not these
    finally:
        for c in wsl:
            if saved[c.id] is absent:
                del runs[c.id].manifest["loss_floor"]
            else:
                runs[c.id].manifest["loss_floor"] = saved[c.id]
    outs = [judge(c, ev[c.id]) for c in wsl]
    det = [o for o in outs if o.failed]
    within = [o for o in det if _within(o)]
    lats = [o.latency for o in det if o.latency is not None]
    rules = Counter(o.first_rule for o in det)
    return ["Wrong-sign losses with their floor declared (WatchCallback(loss_floor=0.0), as the author of a "
            "custom loss wrapping a non-negative one would)",
            f"  {len(wsl)} runs: detected {len(det)} {_pct(len(det), len(wsl))}, <=1 rec {len(within)} "
            f"{_pct(len(within), len(wsl))}, median latency {f'{statistics.median(lats):g}' if lats else '-'}, "
            f"max {max(lats) if lats else '-'}; first rules " + ", ".join(f"{k} {v}" for k, v in rules.most_common(3))]


def table_lead(outs) -> list[str]:
    """Lead time on the classes whose growth drives the NaN (specs.GROWTH_FAULTS); a class whose
    NaN has another cause (log(0)) but whose weights happened to grow 2x is listed apart."""
    g = [o for o in outs if o.growth_before_nan and o.label in GROWTH_FAULTS]
    other = [o for o in outs if o.growth_before_nan and o.label not in GROWTH_FAULTS]
    lines = [f"Lead time before the first non-finite record (a NaN/Inf weight or loss; faults of the classes "
             f"whose growth drives the NaN, where weights grew >= 2x before it; n = {len(g)})",
             "  (possible: the first non-finite record - the onset, the lead a flag at the onset would have; "
             "'>= 2 where possible' counts the runs where that is 2 or more)",
             f"  {'class':20s} {'runs':>5s} {'flagged before':>15s} {'>= 2 records':>13s} "
             f"{'>= 2 where possible':>20s} {'median lead':>12s}  lead/possible"]
    for cls in FAULT_CLASSES:
        os_ = [o for o in g if o.label == cls]
        if not os_:
            continue
        leads = [o.lead for o in os_ if o.lead is not None]
        before = [x for x in leads if x > 0]
        ge2 = [x for x in leads if x >= 2]
        pairs = sorted((o.lead, o.lead + o.latency) for o in os_ if o.lead is not None and o.latency is not None)
        can = [(a, b) for a, b in pairs if b >= 2]
        lines.append(f"  {cls:20s} {len(os_):5d} {len(before):8d} {_pct(len(before), len(os_))} "
                     f"{len(ge2):6d} {_pct(len(ge2), len(os_))} "
                     f"{sum(a >= 2 for a, _ in can):6d} of {len(can):<2d} {_pct(sum(a >= 2 for a, _ in can), len(can))} "
                     f"{'' if not leads else f'{statistics.median(leads):g}':>12s}  "
                     + ", ".join(f"{a}/{b}" for a, b in pairs))
    if other:
        lines.append("  not counted (the NaN has another cause; weights also grew 2x): " + ", ".join(
            f"{cls} {[o.lead for o in other if o.label == cls]}" for cls in dict.fromkeys(o.label for o in other)))
    return lines


def table_families(outs) -> list[str]:
    lines = ["Held-out families (leave one family out: each family's figures on its own, for a pack "
             "calibrated without it)",
             f"  {'family':12s} {'healthy':>8s} {'false fail':>11s} {'95% upper':>10s} {'faulty':>7s} "
             f"{'detected':>9s} {'<=1 rec':>8s} {'median lat':>11s}   missed classes"]
    for fam in FAMILIES:
        h = [o for o in outs if o.family == fam and o.label == "healthy"]
        f = [o for o in outs if o.family == fam and o.label != "healthy"]
        ff = sum(o.failed for o in h)
        det = [o for o in f if o.failed]
        within = [o for o in det if _within(o)]
        lat = [o.latency for o in det if o.latency is not None]
        missed = Counter(o.label for o in f if not o.failed)
        lines.append(f"  {fam:12s} {len(h):8d} {ff:5d} {_pct(ff, len(h))} {100 * wilson_upper(ff, len(h)):9.2f}% "
                     f"{len(f):7d} {len(det):3d} {_pct(len(det), len(f))} {_pct(len(within), len(f)):>8s} "
                     f"{'' if not lat else f'{statistics.median(lat):g}':>11s}   "
                     + ", ".join(f"{k} {v}" for k, v in missed.most_common()))
    return lines


def table_optimizers(outs) -> list[str]:
    from specs import OPTIMIZERS

    lines = ["By optimizer", f"  {'optimizer':10s} {'healthy':>8s} {'false fail':>11s} {'faulty':>7s} {'detected':>9s}"]
    for opt in OPTIMIZERS:
        h = [o for o in outs if o.optimizer == opt and o.label == "healthy"]
        f = [o for o in outs if o.optimizer == opt and o.label != "healthy"]
        ff = sum(o.failed for o in h)
        det = sum(o.failed for o in f)
        lines.append(f"  {opt:10s} {len(h):8d} {ff:5d} {_pct(ff, len(h))} {len(f):7d} {det:3d} {_pct(det, len(f))}")
    return lines


def list_alarms(outs, cases_by_id) -> list[str]:
    lines = ["False failures (healthy runs with an error finding): id, config, first findings"]
    for o in sorted((o for o in outs if o.label == "healthy" and o.failed), key=lambda o: (o.family, o.id)):
        s = cases_by_id[o.id].spec
        conf = f"{s['optimizer']} lr={s['lr']:g} bs={s['batch_size']} {s['schedule']}" + (
            " mp16" if s["mixed_precision"] else "") + (f" {s['regularizer']}" if s["regularizer"] else "")
        fs = sorted(o.findings, key=lambda r: r["record"])[:3]
        lines.append(f"  {o.id:22s} {conf:44s} " + "; ".join(
            f"{r['rule']} {r['tensor'] or r['metric']} @{r['record']} value {_num(r['value'])} limit {_num(r['limit'])}"
            for r in fs))
    lines.append("")
    lines.append("Missed faults (no error finding) and late ones (latency > 1): id, variant, onset, truth evidence")
    for o in sorted((o for o in outs if o.label != "healthy" and (not o.failed or not _within(o))),
                    key=lambda o: (o.label, o.id)):
        t = cases_by_id[o.id].truth
        ev = t.get("evidence", {}).get("symptom", "")
        if "harmful" in t.get("evidence", {}):
            e = t["evidence"]
            ev += f" ({'harmful' if e['harmful'] else 'harmless'}: loss {e.get('loss_over_best_before')}x its best before)"
        state = ("MISSED" if not o.failed else
                 f"early {o.latency:+d} ({o.first_rule} {o.first_tensor or 'loss'})" if o.before_injection else
                 f"late +{o.latency} ({o.first_rule})")
        lines.append(f"  {o.id:34s} {o.label:18s} {o.variant:22s} onset {o.onset}  {state:32s} {ev}"
                     + (f"  [{', '.join(o.warning_rules)} warned]" if o.warning_rules else ""))
    return lines


def _num(x):
    return "-" if x is None else f"{x:.3g}"


def summary_counts(cases, dropped) -> list[str]:
    lines = ["Zoo: labelled cases and what truth did with the injected faults"]
    lab = Counter(c.label for c in cases)
    lines.append(f"  {len(cases)} labelled runs: {lab['healthy']} healthy, {len(cases) - lab['healthy']} faulty; "
                 f"{len(dropped)} dropped")
    rel = Counter((c.injected, c.label) for c in cases if c.injected != c.label)
    for (a, b), n in sorted(rel.items()):
        lines.append(f"  relabelled {a} -> {b}: {n}")
    why = Counter((d["injected"], d["reason"].split(":")[0]) for d in dropped)
    for (a, b), n in sorted(why.items()):
        lines.append(f"  dropped {a}: {b}: {n}")
    return lines


def render(outs, cases, runs, dropped, ruleset, rules_label) -> str:
    by_id = {c.id: c for c in cases}
    parts = [f"rule pack: {rules_label}", ""]
    parts += summary_counts(cases, dropped) + [""]
    parts += table_false_failures(outs, ruleset) + [""]
    parts += table_recall(outs) + [""]
    parts += table_variants(outs) + [""]
    parts += table_lead(outs) + [""]
    parts += table_chance_overlap(outs, runs, by_id) + [""]
    parts += table_declared_floor(cases, runs, ruleset) + [""]
    parts += table_families(outs) + [""]
    parts += table_optimizers(outs) + [""]
    parts += list_alarms(outs, by_id)
    return "\n".join(parts)


# --------------------------------------------------------------------------- sweeps and LOFO


def _with_option(ruleset, rule_id, option, value):
    """The pack with one rule's option changed (``severity`` too)."""
    import dataclasses

    from weightwatch.checking.config import RuleSet

    ruleset.get(rule_id)   # an unknown id is an error
    rules = []
    for r in ruleset.rules:
        if r.id == rule_id:
            r = (dataclasses.replace(r, **{option: value}) if option in ("severity", "patience", "after")
                 else dataclasses.replace(r, options=dict(r.options, **{option: value})))
        rules.append(r)
    return RuleSet(rules, list(ruleset.sources))


def _parse_sweep(text):
    target, values = text.split("=", 1)
    rule_id, option = target.rsplit(".", 1)
    vals = [v if option == "severity" else float(v) if any(ch in v for ch in ".e") else int(v)
            for v in values.split(",")]
    return rule_id, option, vals


def sweep(cases, runs, ruleset, spec, cache) -> list[str]:
    rule_id, option, vals = _parse_sweep(spec)
    lines = [f"Sweep of {rule_id}.{option} (other rules as in the pack)",
             f"  {'value':>10s} {'rule ff':>8s} {'total ff':>9s} {'95% upper':>10s} {'recall':>8s} {'<=1 rec':>8s}"]
    for v in vals:
        rs = _with_option(ruleset, rule_id, option, v)
        outs = [judge(c, rows) for c, rows in zip(cases, evaluate_cases(cases, runs, rs, cache, quiet=True).values())]
        h = [o for o in outs if o.label == "healthy"]
        f = [o for o in outs if o.label != "healthy"]
        rff = sum(rule_id in o.error_rules for o in h)
        ff = sum(o.failed for o in h)
        det = sum(o.failed for o in f)
        within = sum(_within(o) for o in f)
        lines.append(f"  {v:>10g} {rff:8d} {ff:9d} {100 * wilson_upper(ff, len(h)):9.2f}% "
                     f"{_pct(det, len(f)):>8s} {_pct(within, len(f)):>8s}")
    return lines


def lofo(cases, runs, ruleset, spec, cache) -> list[str]:
    """Leave-one-family-out calibration of one threshold over candidate values."""
    rule_id, option, vals = _parse_sweep(spec)
    per_value = {}
    for v in vals:
        rs = _with_option(ruleset, rule_id, option, v)
        ev = evaluate_cases(cases, runs, rs, cache, quiet=True)
        per_value[v] = [judge(c, ev[c.id]) for c in cases]
    # candidates in order of sensitivity: the order given (most sensitive first)
    lines = [f"Leave-one-family-out calibration of {rule_id}.{option} over {vals} (most sensitive first)",
             f"  {'held out':12s} {'chosen':>8s} {'rule ff':>8s} {'pack ff':>12s} {'95% upper':>10s} {'recall':>8s} {'<=1 rec':>8s}"]
    tot_ff = tot_h = tot_det = tot_f = tot_w = tot_rff = 0
    for fam in FAMILIES:
        chosen = None
        for v in vals:
            rest = [o for o in per_value[v] if o.family != fam and o.label == "healthy"]
            if not any(rule_id in o.error_rules for o in rest):
                chosen = v
                break
        if chosen is None:
            lines.append(f"  {fam:12s} {'none':>8s}  (every candidate fails healthy runs of other families)")
            continue
        outs = [o for o in per_value[chosen] if o.family == fam]
        h = [o for o in outs if o.label == "healthy"]
        f = [o for o in outs if o.label != "healthy"]
        ff = sum(o.failed for o in h)
        rff = sum(rule_id in o.error_rules for o in h)
        tot_rff += rff
        det = sum(o.failed for o in f)
        w = sum(_within(o) for o in f)
        tot_ff, tot_h, tot_det, tot_f, tot_w = tot_ff + ff, tot_h + len(h), tot_det + det, tot_f + len(f), tot_w + w
        lines.append(f"  {fam:12s} {chosen:>8g} {rff:8d} {ff:5d}/{len(h):<5d} {100 * wilson_upper(ff, len(h)):9.2f}% "
                     f"{_pct(det, len(f)):>8s} {_pct(w, len(f)):>8s}")
    lines.append(f"  {'ALL':12s} {'':>8s} {tot_rff:8d} {tot_ff:5d}/{tot_h:<5d} {100 * wilson_upper(tot_ff, tot_h):9.2f}% "
                 f"{_pct(tot_det, tot_f):>8s} {_pct(tot_w, tot_f):>8s}")
    return lines


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=str(HERE / ".cache"))
    ap.add_argument("--rules", help="rule file to score instead of the built-in default pack")
    ap.add_argument("--only", help="comma-separated globs over case ids")
    ap.add_argument("--json", help="write every run's outcome here")
    ap.add_argument("--sweep", action="append", default=[], help="RULE.OPTION=v1,v2,...: score each value")
    ap.add_argument("--lofo", action="append", default=[],
                    help="RULE.OPTION=v1,v2,... (most sensitive first): leave-one-family-out calibration")
    ap.add_argument("--no-lists", action="store_true", help="leave out the lists of false alarms and misses")
    args = ap.parse_args(argv)
    cache = Path(args.cache)
    t0 = time.perf_counter()
    cases, runs, dropped = load_cases(cache, args.only)
    ruleset = load_ruleset(args.rules)
    ev = evaluate_cases(cases, runs, ruleset, cache)
    outs = [judge(c, ev[c.id]) for c in cases]
    label = args.rules or "default (built-in, load_rules(use_project_config=False))"
    text = render(outs, cases, runs, dropped, ruleset, label)
    if args.no_lists:
        text = text.split("\nFalse failures (healthy runs")[0]
    print(text)
    for s in args.sweep:
        print()
        print("\n".join(sweep(cases, runs, ruleset, s, cache)))
    for s in args.lofo:
        print()
        print("\n".join(lofo(cases, runs, ruleset, s, cache)))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "rules": label, "dropped": dropped,
            "outcomes": [dict(o.__dict__) for o in outs]}, indent=1))
    print(f"\n(scored in {time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
