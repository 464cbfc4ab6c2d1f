"""Held-out check of the rules for losses of unknown floor: Gaussian NLL runs nobody tuned on.

The run zoo's healthy losses below 0 are 14 short (8-epoch) regression runs, so the rules that
judge such losses (``loss-unbounded``, ``loss-unbounded-slow``, ``loss-sign-flip``) and
``oscillating-updates`` (whose healthy side is mostly short runs too) were recalibrated against
32 longer Gaussian NLL runs made to review them.  This benchmark draws *other* configurations,
from its own seeds, and reports what the default pack does on them:

* **healthy**: a Gaussian negative log-likelihood (softplus variance head) fitted to a smooth
  target (a sine of a random projection of 1-4 inputs) with little noise (0.001-0.1), so the
  loss falls below 0 and keeps falling as the fit sharpens; Adam, Nadam, RMSprop or SGD with
  momentum at a learning rate drawn from its range (``OPTIMIZERS``), batch 16-128, 20-60
  epochs, 256 or 512 samples, 1-3 hidden layers of 16-64 units;
* **negated**: the same configurations trained on a squared error with its sign flipped (the
  custom-loss bug ``loss-unbounded`` is for), which has no floor.

A healthy run *fails* on any error finding; the table counts false failures per rule (with the
95% Wilson upper bound) and warnings per rule, and for the negated runs how many fail (and how
many through ``loss-unbounded``), how many only warn, which error rule flagged them first (a
warning only where none did) and how many epochs after the first.

Usage: ``python benchmarks/negative_losses.py [--healthy N] [--negated N] [--seed S]``
(defaults 40, 20, 2027: about 3 minutes on 2 CPU cores).  A run drawn as healthy that went
non-finite, had a kernel's norm grow 10x in one record or ended with a loss no lower than its
first epoch's is dropped and listed (ground truth from the run itself, as the zoo's).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

#: Learning rates drawn log-uniformly: the run zoo's sane ranges (specs.LR_RANGE), with
#: the adaptive ones' reaching 5-10x higher, as the review runs did (small models, few steps an epoch).
OPTIMIZERS = {"adam": (3e-4, 3e-2), "nadam": (3e-4, 3e-2), "rmsprop": (3e-4, 1e-2), "sgdm": (3e-3, 3e-2)}


def draw(k: int, seed: int) -> dict:
    """The k-th configuration: everything a run needs, from its own generator."""
    r = np.random.default_rng([seed, k])
    opt = str(r.choice(list(OPTIMIZERS)))
    lo, hi = OPTIMIZERS[opt]
    return {"k": k, "data_seed": int(r.integers(1 << 30)), "opt": opt,
            "lr": float(np.exp(r.uniform(np.log(lo), np.log(hi)))),
            "batch": int(r.choice([16, 32, 64, 128])), "epochs": int(r.integers(20, 61)),
            "n": int(r.choice([256, 512])), "d": int(r.integers(1, 5)),
            "depth": int(r.integers(1, 4)), "width": int(r.choice([16, 32, 64])),
            "act": str(r.choice(["tanh", "gelu", "relu"])),
            "noise": float(r.choice([0.001, 0.003, 0.01, 0.03, 0.1])),
            "freq": float(r.uniform(1, 6))}


def train(cfg: dict, negated: bool, run_dir: Path):
    import keras
    from keras import layers, ops

    import weightwatch

    r = np.random.default_rng(cfg["data_seed"])
    x = r.uniform(-1, 1, (cfg["n"], cfg["d"])).astype("float32")
    w = r.normal(size=(cfg["d"],))
    y = (np.sin(cfg["freq"] * x @ w / np.sqrt(cfg["d"]))[:, None]
         + cfg["noise"] * r.standard_normal((cfg["n"], 1))).astype("float32")

    def gaussian_nll(y_true, out):
        mu, var = out[:, :1], ops.softplus(out[:, 1:]) + 1e-6
        return ops.mean(0.5 * ops.log(var) + 0.5 * ops.square(y_true - mu) / var)

    def negated_mse(y_true, out):             # the bug: the sign
        return -ops.mean(ops.square(y_true - out[:, :1]))

    keras.utils.set_random_seed(cfg["data_seed"] % (1 << 31))
    stack = [keras.Input((cfg["d"],))] + [layers.Dense(cfg["width"], activation=cfg["act"])
                                          for _ in range(cfg["depth"])] + [layers.Dense(2)]
    model = keras.Sequential(stack)
    opt = {"adam": keras.optimizers.Adam, "nadam": keras.optimizers.Nadam,
           "rmsprop": keras.optimizers.RMSprop,
           "sgdm": lambda lr: keras.optimizers.SGD(lr, momentum=0.9)}[cfg["opt"]](cfg["lr"])
    model.compile(opt, negated_mse if negated else gaussian_nll)
    model.fit(x, y, batch_size=cfg["batch"], epochs=cfg["epochs"], verbose=0,
              callbacks=[weightwatch.WatchCallback(run_dir, check=False, verbose=0)])
    return weightwatch.open_run(run_dir)


def diverged_or_stuck(run) -> str:
    """Why a run drawn as healthy is not one, from the run itself ("" when it trained): the zoo's
    truth drops such runs too (a learning rate at the top of its range can diverge)."""
    loss = run.log("loss")[1:]
    l2 = run.metric("l2")
    if not np.isfinite(loss).all() or not np.isfinite(l2).all():
        return "went non-finite"
    kernels = [i for i, t in enumerate(run.tensors) if t.role == "kernel"]
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = np.nanmax(l2[1:, kernels] / l2[:-1, kernels]) if len(l2) > 1 else 1.0
    if growth >= 10:
        return f"a kernel's norm grew {growth:.3g}x in one record"
    if not loss[-1] < loss[0]:
        return f"did not learn (loss {loss[0]:.3g} -> {loss[-1]:.3g})"
    return ""


def wilson_upper(k: int, n: int, z: float = 1.96) -> float:
    if n == 0:
        return math.nan
    p = k / n
    return (p + z * z / (2 * n) + z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--healthy", type=int, default=40)
    ap.add_argument("--negated", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2027)
    ap.add_argument("--keep", type=Path, help="keep the runs in this directory (healthy-K, negated-K)")
    args = ap.parse_args(argv)

    from weightwatch.checking.config import load_rules
    from weightwatch.checking.engine import evaluate

    pack = load_rules(use_project_config=False)
    t0 = time.perf_counter()
    errors, warnings, failed_runs, below_zero, dropped = Counter(), Counter(), [], 0, []
    flagged, lat, by_error, by_warning, unbounded = Counter(), [], 0, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.healthy + args.negated):
            negated = i >= args.healthy
            cfg = draw(i, args.seed)
            where = Path(args.keep) if args.keep else Path(tmp)
            run = train(cfg, negated, where / f"{'negated' if negated else 'healthy'}-{i:03d}")
            report = evaluate(run, pack)
            bad = [r for r in report.results if r.status == "failed"]
            warned = [r for r in report.results if r.status == "warning"]
            loss = run.log("loss")
            why = "" if negated else diverged_or_stuck(run)
            if why:
                dropped.append((cfg, why))
            elif not negated:
                below_zero += bool(np.nanmin(loss) < 0)
                errors.update(r.id for r in bad)
                warnings.update(r.id for r in warned)
                if bad:
                    failed_runs.append((cfg, [(r.id, r.findings[0].message) for r in bad]))
            else:
                by_error += bool(bad)
                by_warning += bool(warned) and not bad
                unbounded += any(r.id == "loss-unbounded" for r in bad)
                # the first error finding, else the first warning: a warning fires earlier than
                # the error it foreshadows, and would hide it
                found = ([(f.record, r.id, r.status) for r in bad for f in r.findings[:1]]
                         or [(f.record, r.id, r.status) for r in warned for f in r.findings[:1]])
                if found:
                    record, rid, status = min(found)
                    flagged[(rid, status)] += 1
                    lat.append(record - 1)
                else:
                    flagged[("missed", "")] += 1
            print(f"[{i + 1}/{args.healthy + args.negated}] {'negated' if negated else 'healthy'} "
                  f"{cfg['opt']} lr={cfg['lr']:.2g} bs={cfg['batch']} ep={cfg['epochs']} noise={cfg['noise']}: "
                  f"{[r.id for r in bad] or '-'} {[r.id for r in warned] or ''}", file=sys.stderr, flush=True)

    n = args.healthy - len(dropped)
    print(f"Held-out Gaussian NLL runs (seed {args.seed}): {n} healthy ({below_zero} with the loss below 0), "
          f"{args.negated} with a negated squared error; {time.perf_counter() - t0:.0f} s")
    print(f"Dropped {len(dropped)} drawn as healthy that did not train (truth from the runs themselves):")
    for cfg, why in dropped:
        print(f"  {cfg['opt']} lr={cfg['lr']:.2g} batch={cfg['batch']}: {why}")
    rate = f"{len(failed_runs) / n:.1%}" if n else "-"
    print(f"\nHealthy runs failing (any error finding): {len(failed_runs)} of {n} "
          f"({rate}, 95% upper {wilson_upper(len(failed_runs), n):.1%})")
    for rid, k in sorted(errors.items(), key=lambda kv: -kv[1]):
        print(f"  {rid:24s} {k:3d}   95% upper {wilson_upper(k, n):.1%}")
    print("Warnings on healthy runs: " + (", ".join(f"{r} {k}" for r, k in warnings.most_common()) or "none"))
    for cfg, found in failed_runs:
        print(f"  failed: {cfg}: {found[0][0]}: {found[0][1]}")
    print(f"\nNegated losses ({args.negated}): {by_error} fail (an error finding; {unbounded} of them "
          f"loss-unbounded), {by_warning} only warn, {args.negated - by_error - by_warning} pass; "
          "the first error rule to flag them (else the first warning):")
    for (rid, status), k in flagged.most_common():
        print(f"  {rid:24s} {status:8s} {k:3d}")
    if lat:
        print(f"  epochs after the first until so flagged: median {np.median(lat):.0f}, max {max(lat)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
