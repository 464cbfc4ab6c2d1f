"""How far do healthy seeds and regressions depart from their references?  (No rules involved.)

::

    python benchmarks/baseline/separation.py --cache /work/basebench-cache [--outliers 1.6]

For every pair of the benchmark (3 references) and for the update ratio (``d_l2 / l2`` of the
previous record), the gradient RMS and the L2 norm of every kernel and embedding matched by
path: the candidate's deviation from the references' median, in log10 units, per record and
tensor.  Two summaries per pair, as factors (x):

* **per tensor**: the largest deviation over (record, tensor) -- what a band on each tensor
  at each record must tolerate;
* **run level**: the largest over records of the *median over tensors* of the deviation -- a
  learning-rate change moves every layer together, seed noise moves tensors one at a time.

Printed as quantiles (5%, 50%, 95%, max) per class, so a threshold's false-failure rate and
recall can be read off before any rule is written; ``--outliers X`` lists the healthy pairs
whose run-level update-ratio deviation exceeds X.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
for p in (str(HERE), str(HERE.parent / "zoo")):
    if p not in sys.path:
        sys.path.append(p)

import bench_specs  # noqa: E402

METRICS = ("update_ratio", "grad_rms", "l2")


def figures(run, metric: str) -> dict:
    """{path: values per record} of the run's kernels and embeddings."""
    l2 = run.metric("l2")
    if metric == "update_ratio":
        v = np.full_like(l2, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            v[1:] = run.metric("d_l2")[1:] / l2[:-1]
    else:
        v = np.array(run.metric(metric), dtype=float)
    return {t.path: v[:, i] for i, t in enumerate(run.tensors) if t.role in ("kernel", "embedding")}


def deviations(cand, refs, metric: str):
    """(records - 1, tensors) log10 deviations of cand from the references' median (record 0 left
    out), over the tensors all of them have and their common records."""
    c = figures(cand, metric)
    rs = [figures(r, metric) for r in refs]
    common = [p for p in c if all(p in r for r in rs)]
    if not common:
        return np.full((0, 0), np.nan)
    n = min(len(c[common[0]]), *(len(r[common[0]]) for r in rs))
    C = np.array([c[p][:n] for p in common]).T
    Rs = np.stack([np.array([r[p][:n] for p in common]).T for r in rs], axis=2)
    with np.errstate(divide="ignore", invalid="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", RuntimeWarning)
        lc = np.log10(np.clip(C, 1e-12, None))
        med = np.nanmedian(np.log10(np.clip(Rs, 1e-12, None)), axis=2)
    return (lc - med)[1:]


def summarise(dev: np.ndarray) -> tuple[float, float, int]:
    """(per-tensor max, run-level max, the run-level max's record) as factors."""
    import warnings

    if not np.isfinite(dev).any():
        return np.nan, np.nan, -1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_record = np.nanmedian(dev, axis=1)
    k = int(np.nanargmax(np.abs(per_record)))
    return 10 ** np.nanmax(np.abs(dev)), 10 ** abs(per_record[k]), k + 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=str(HERE / ".cache"))
    ap.add_argument("--outliers", type=float, default=None, metavar="X",
                    help="list healthy pairs whose run-level update-ratio deviation exceeds X")
    args = ap.parse_args(argv)
    from weightwatch.run.reader import open_run

    cache = Path(args.cache)
    done = {p.name for p in cache.iterdir() if (p / "info.json").exists()}
    runs: dict = {}

    def run(cid):
        if cid not in runs:
            runs[cid] = open_run(cache / cid / "run")
        return runs[cid]

    pairs = [(c, rs) for c, rs in bench_specs.pairs() if c.id in done and all(r.id in done for r in rs)]
    outliers = []
    for metric in METRICS:
        by = {}
        for cand, refs in pairs:
            a, b, k = summarise(deviations(run(cand.id), [run(r.id) for r in refs], metric))
            by.setdefault(cand.regression or "healthy", []).append((a, b))
            if metric == "update_ratio" and cand.healthy and args.outliers and b > args.outliers:
                s = cand.spec
                outliers.append(f"  {cand.id:20s} {s.optimizer:8s} lr {s.lr:<8g} {s.schedule:14s} "
                                f"record {k}: x{b:.2f}")
        print(f"{metric}: deviation from the references' median as a factor, quantiles 5% / 50% / 95% / max")
        print(f"  {'class':17s} {'pairs':>5s}   {'per tensor':^27s}   {'run level':^27s}")
        for cls in ("healthy",) + bench_specs.REGRESSION_CLASSES:
            v = np.array(by.get(cls, []), dtype=float)
            if not len(v):
                continue
            qa, qb = (np.nanpercentile(v[:, i], [5, 50, 95, 100]) for i in (0, 1))
            fmt = lambda q: " ".join(f"{x:6.3g}" for x in q)  # noqa: E731
            print(f"  {cls:17s} {len(v):5d}   {fmt(qa)}   {fmt(qb)}")
        print()
    if args.outliers:
        print(f"Healthy pairs whose run-level update-ratio deviation exceeds x{args.outliers:g}:")
        print("\n".join(outliers) or "  none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
