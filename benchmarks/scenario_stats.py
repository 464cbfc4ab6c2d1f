"""Build the labelled scenarios and print the figures rules are calibrated on.

    python benchmarks/scenario_stats.py [--out DIR] [--no-build] [name ...]

For every scenario (tests/scenarios.py) this builds the run (timing it) and
prints one row per record:

  upd     update ratio   d_l2 / l2 of the previous record (tensors whose previous
                         l2 is 0 -- biases at init -- are left out)
  grow    growth         l2 / l2 of the previous record (same exclusion)
  dead    dead fraction  dead_units / units, trainable unfrozen kernels (max over tensors)
  dcos    d_cos          cosine between this update and the previous one
  nf      non-finite     nan + inf elements, summed over tensors
  frzchg  frozen tensors whose values changed (frozen == 1 and changed == 1)
  stall   trainable, not frozen tensors that did not change / how many there are
  mov     BatchNorm moving statistics that changed / how many there are

Extremes are over every tensor, then over kernels only ("kernels:"), because
one-element biases dominate the raw extremes: their d_cos is always +-1 and
their update ratio is large whenever the bias is near 0.

``a..b`` is min..max over the tensors in scope.  Faulty scenarios print two
rows per record: ``F`` over the tensors matching ``where`` and ``R`` over the
rest, from record 1, with ``*`` marking first_visible; below them the figures
on the fault's tensors at first_visible and the extremes after it.  Healthy
scenarios print one row (``A``, all tensors) and then the extremes over all
tensors and records -- the values closest to a false alarm, with the tensor
and record they come from.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import scenarios as sc  # noqa: E402
from weightwatch.run.reader import open_run  # noqa: E402


def g(x, w=8):
    """A number in ``w`` characters, 3 significant digits."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-".rjust(w)
    if isinstance(x, (int, np.integer)):
        return str(int(x)).rjust(w)
    if math.isinf(x):
        return ("inf" if x > 0 else "-inf").rjust(w)
    return f"{x:.3g}".rjust(w)


def rng(a, b, w=8):
    return f"{g(a, w)}..{g(b, w).strip():<{w}}"


class Figures:
    """Every figure as a (records, tensors) array, NaN where undefined."""

    def __init__(self, run):
        self.run = run
        self.names = run.tensor_names
        m = run.metric
        self.l2 = m("l2")
        prev = np.full_like(self.l2, np.nan)
        prev[1:] = self.l2[:-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = prev > 0
            self.upd = np.where(ok, m("d_l2") / prev, np.nan)
            self.grow = np.where(ok, self.l2 / prev, np.nan)
        self.frozen = m("frozen") == 1
        self.trainable = m("trainable") == 1
        units = np.array([t.units or np.nan for t in run.tensors], dtype=float)
        kernel = self.kernel = np.array([t.role == "kernel" for t in run.tensors])
        self.size = np.nanmax(m("size"), axis=0) if len(run.records) else np.zeros(len(self.names))
        with np.errstate(invalid="ignore"):  # a frozen kernel is all "dead": leave it out
            self.dead = np.where(kernel & self.trainable & ~self.frozen, m("dead_units") / units,
                                 np.nan)
        self.dcos = m("d_cos")
        self.nonfin = np.nan_to_num(m("nan")) + np.nan_to_num(m("inf"))
        self.changed = m("changed")
        self.moving = np.array([t.role == "moving_stat" for t in run.tensors])
        self.loss = run.log("loss")
        self.lr = run.log("learning_rate")
        self.scale = run.log("loss_scale") if "loss_scale" in run.log_keys else None

    def mask(self, patterns):
        return np.array([any(fnmatch.fnmatchcase(n, p) for p in patterns) for n in self.names])

    def row(self, r, cols):
        """The figures of record ``r`` over the tensor columns ``cols`` (bool mask)."""
        def mm(a):
            v = a[r, cols]
            v = v[~np.isnan(v)]
            return (v.min(), v.max()) if v.size else (np.nan, np.nan)

        ch = self.changed[r, cols]
        fr, tr = self.frozen[r, cols], self.trainable[r, cols]
        active = tr & ~fr & ~np.isnan(ch)
        mov = self.moving[cols] & ~np.isnan(ch)
        return {
            "upd": mm(self.upd), "grow": mm(self.grow), "dead": mm(self.dead)[1],
            "dcos": mm(self.dcos), "nf": int(self.nonfin[r, cols].sum()),
            "frzchg": int(np.sum(fr & (ch == 1))),
            "stall": f"{int(np.sum(active & (ch == 0)))}/{int(active.sum())}",
            "mov": f"{int(np.sum(mov & (ch == 1)))}/{int(mov.sum())}",
        }

    def extreme(self, a, recs, cols, fn):
        """(value, tensor, record) of ``fn`` (nanargmin/nanargmax) over records x cols."""
        sub = a[np.ix_(recs, np.flatnonzero(cols))]
        if sub.size == 0 or np.all(np.isnan(sub)):
            return None
        i, j = np.unravel_index(fn(sub), sub.shape)
        return float(sub[i, j]), self.names[np.flatnonzero(cols)[j]], int(recs[i])


HEADER = (f"{'rec':>4} {'':1} {'loss':>8} {'lr':>8} | {'upd':^18} | {'grow':^18} | {'dead':>5} | "
          f"{'dcos':^18} | {'nf':>5} {'frzchg':>6} {'stall':>6} {'mov':>5}")


def fmt_row(rec, tag, loss, lr, f, mark=" "):
    return (f"{rec:>3}{mark} {tag} {g(loss)} {g(lr)} | {rng(*f['upd'])} | {rng(*f['grow'])} | "
            f"{g(f['dead'], 5)} | {rng(*f['dcos'])} | {f['nf']:>5} {f['frzchg']:>6} {f['stall']:>6} "
            f"{f['mov']:>5}")


def describe_extreme(label, ext):
    if ext is None:
        return f"    {label:<22} -"
    v, name, r = ext
    return f"    {label:<22} {g(v).strip():>10}  ({name} @ record {r})"


def report(s, run_dir, secs):
    run = open_run(run_dir)
    F = Figures(run)
    nrec = len(run.records)
    tag = "HEALTHY" if s.healthy else f"FAULTY {s.fault_class}"
    print(f"\n=== {s.name}  [{tag}]  build {secs:.1f} s, {nrec} records, {len(F.names)} tensors")
    if not s.healthy:
        print(f"    where={s.where}  first_visible={s.first_visible}  intent={s.intent}")
    if s.known_gap:
        print(f"    KNOWN GAP: {s.known_gap}")
    if F.scale is not None:
        print(f"    loss_scale per record: {' '.join(g(v).strip() for v in F.scale)}")
    if run.problems:
        print(f"    PROBLEMS: {run.problems}")
    print("  " + HEADER)
    everything = np.ones(len(F.names), bool)
    recs = np.arange(1, nrec)
    if s.healthy:
        for r in range(nrec):
            print("  " + fmt_row(r, "A", F.loss[r], F.lr[r], F.row(r, everything)))
        print("  extremes over all tensors, records 1..:")
        active = F.trainable & ~F.frozen
        changed_active = np.where(active & (F.changed == 1), F.upd, np.nan)
        lines = [
            ("max update ratio", F.extreme(F.upd, recs, everything, np.nanargmax)),
            ("min update ratio", F.extreme(changed_active, recs, everything, np.nanargmin)),
            ("max growth", F.extreme(F.grow, recs, everything, np.nanargmax)),
            ("min growth", F.extreme(F.grow, recs, everything, np.nanargmin)),
            ("max dead fraction", F.extreme(F.dead, recs, everything, np.nanargmax)),
            ("min d_cos", F.extreme(F.dcos, recs, everything, np.nanargmin)),
            ("max d_cos", F.extreme(F.dcos, recs, everything, np.nanargmax)),
        ]
        kern = F.kernel & (F.size > 1)
        lines += [
            ("kernels: max upd", F.extreme(F.upd, recs, kern, np.nanargmax)),
            ("kernels: max growth", F.extreme(F.grow, recs, kern, np.nanargmax)),
            ("kernels: min growth", F.extreme(F.grow, recs, kern, np.nanargmin)),
            ("kernels: min d_cos", F.extreme(F.dcos, recs, kern, np.nanargmin)),
        ]
        for label, ext in lines:
            print(describe_extreme(label, ext))
        # ratio of the smallest to the largest update ratio within one record (vanishing-like)
        spread = []
        for r in recs:
            v = changed_active[r][~np.isnan(changed_active[r])]
            if v.size > 1:
                spread.append(v.min() / v.max())
        print(f"    {'min upd spread':<22} {g(min(spread) if spread else None).strip():>10}  "
              "(min/max update ratio among changed trainable tensors within a record)")
        stall = int(np.sum(active[1:] & (F.changed[1:] == 0)))
        frzchg = int(np.sum(F.frozen[1:] & (F.changed[1:] == 1)))
        print(f"    stalled trainable tensor-records: {stall}; frozen-but-changed: {frzchg}; "
              f"non-finite elements: {int(F.nonfin.sum())}; "
              f"loss {g(F.loss[1]).strip()} -> {g(F.loss[-1]).strip()}")
        return
    fault = F.mask(s.where)
    rest = ~fault
    for r in range(nrec):
        mark = "*" if r == s.first_visible else " "
        print("  " + fmt_row(r, "F", F.loss[r], F.lr[r], F.row(r, fault), mark))
        if rest.any():
            print("  " + fmt_row(r, "R", float("nan"), float("nan"), F.row(r, rest), mark))
    fv = s.first_visible
    after = np.arange(fv, nrec)
    print(f"  fault tensors ({int(fault.sum())}) at first_visible={fv} and after:")
    lines = [
        ("max update ratio", F.extreme(F.upd, after, fault, np.nanargmax)),
        ("min update ratio", F.extreme(F.upd, after, fault, np.nanargmin)),
        ("max growth", F.extreme(F.grow, after, fault, np.nanargmax)),
        ("min growth", F.extreme(F.grow, after, fault, np.nanargmin)),
        ("max dead fraction", F.extreme(F.dead, after, fault, np.nanargmax)),
        ("min d_cos", F.extreme(F.dcos, after, fault, np.nanargmin)),
        ("max d_cos", F.extreme(F.dcos, after, fault, np.nanargmax)),
    ]
    for label, ext in lines:
        print(describe_extreme(label, ext))
    if rest.any():
        rest_upd = F.extreme(F.upd, after, rest, np.nanargmin)
        print(describe_extreme("others: min upd", rest_upd))
        print(describe_extreme("others: max upd", F.extreme(F.upd, after, rest, np.nanargmax)))
    lossv = F.loss[fv] if fv < nrec else float("nan")
    print(f"    loss at first_visible {g(lossv).strip()}, non-finite elements at first_visible "
          f"{int(F.nonfin[fv, fault].sum()) if fv < nrec else '-'}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="scenarios to build (default: all)")
    ap.add_argument("--out", help="directory for the runs (default: a temporary one)")
    ap.add_argument("--no-build", action="store_true", help="read runs already in --out")
    args = ap.parse_args(argv)
    chosen = [sc.get(n) for n in args.names] if args.names else sc.SCENARIOS
    tmp = None
    if args.out:
        out = Path(args.out)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="ww-scenarios-")
        out = Path(tmp.name)
    times = {}
    t0 = time.perf_counter()
    if not args.no_build:  # import TensorFlow before timing the first scenario
        sc._keras()
        import weightwatch.recording.keras_callback  # noqa: F401
    print(f"TensorFlow/Keras import: {time.perf_counter() - t0:.1f} s")
    t_all = time.perf_counter()
    for s in chosen:
        if args.no_build:
            run_dir, secs = out / s.name, float("nan")
        else:
            run_dir, secs = sc.build(s, out)
        times[s.name] = secs
        report(s, run_dir, secs)
        sys.stdout.flush()
    print("\n=== build times (s)")
    for s in chosen:
        print(f"  {s.name:<36} {'healthy' if s.healthy else s.fault_class:<18} {times[s.name]:6.1f}")
    print(f"  total {time.perf_counter() - t_all:.1f} s for {len(chosen)} scenarios "
          f"({sum(not s.healthy for s in chosen)} faulty, {sum(s.healthy for s in chosen)} healthy)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
