"""Ground truth of a zoo run, from what the run itself did -- never from weightwatch's rules.

``derive(case_dir)`` reads the recorded run (its figures and logs, read with
``open_run``: the data, not the checks), the separate probe (``probe.json``:
gradient norms and dead/saturated unit fractions on a fixed batch) and the
spec, and decides:

* ``label``: the fault class that manifested, ``"healthy"``, or ``"dropped"``;
* ``relabelled_from`` / ``reason``: when the injected fault did not manifest
  as intended (relabelled as another class or healthy), or a healthy run
  that diverged or did not learn (dropped);
* ``onset_record``: the first record at or after the injection at which the
  fault is visible in the recorded weights or logs (what latency counts from),
  and ``evidence``: which symptom made it visible and the figures;
* ``first_nonfinite_record`` (weights or loss) and ``first_nonfinite_weight``
  and ``growth_before_nan``: for lead time;
* ``where``: the recorded tensor paths the fault lives in.

Symptoms are deliberately plain physical facts with round thresholds
(``SYMPTOMS`` documents them); they decide what is a fault, not how early a
checker should see it.  ``python benchmarks/zoo/truth.py [--cache DIR]``
re-derives every ``truth.json`` in the cache (no training) and prints the
relabel/drop counts.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for p in (str(HERE), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

from specs import Spec  # noqa: E402

#: The thresholds of the symptoms, in one place.
SYMPTOMS = {
    # weights: a norm this many times its value just before the injection
    "growth": 2.0,
    "growth_reg": 1.5,          # wrong-sign regulariser from the start: the pushed tensor's norm
    "growth_reg_mid": 1.2,      # ... injected mid-run (the pre-injection weights are trained)
    # loss (mid-run faults): this many times the best loss before the injection
    "loss_jump": 2.0,
    # update ratio ||dW||/||W|| (median over kernels) this many times the pre-injection median
    "update_jump": 10.0,
    # labels shuffled: the loss stays at or above this fraction of the constant predictor's loss
    "chance": 0.9,
    # dead ReLU: fraction of the target layer's units that output 0 on every probe sample
    "dead": 0.5,
    # vanishing: first-kernel / last-kernel RMS gradient (probe) at or below this
    "vanishing_ratio": 1e-3,
    # ... while the loss stays at or above this fraction of the constant predictor's
    "vanishing_loss": 0.9,
    # oscillation: consecutive updates' cosine at or below this, on 2 records in a row
    "osc_cos": -0.5,
    # lr zero: the update ratio collapses by this factor (momentum keeps moving the weights)
    "lr_zero_collapse": 1e-4,
    # exploding RNN: probe RMS gradient of the recurrent kernel this many times the output kernel's
    "rnn_grad": 100.0,
    # ... or the loss this many times the constant predictor's
    "rnn_loss": 3.0,
    # healthy runs: dropped when the last loss is above this many times the best one ...
    "healthy_diverged": 2.0,
    # ... or the loss never falls below this fraction of the constant predictor's loss
    "healthy_stuck": 0.95,
    # ... and improved by less than this fraction of it over the second half of the run (a slow
    # run that is still learning is healthy, and a useful hard case)
    "healthy_progress": 0.02,
    # ... or by less than this fraction of it over the second half (stuck after a first drop)
    "healthy_flat": 0.002,
}


def _load(case: Path):
    from weightwatch.run.reader import open_run

    spec = Spec.from_dict(json.loads((case / "spec.json").read_text()))
    info = json.loads((case / "probe.json").read_text())
    run = open_run(case / "run") if (case / "run" / "manifest.json").exists() else None
    return spec, info, run


class View:
    """The figures truth needs, as arrays over records."""

    def __init__(self, spec: Spec, info: dict, run):
        self.spec, self.info, self.run = spec, info, run
        self.R = len(run.records)
        self.paths = run.tensor_names
        self.roles = [t.role for t in run.tensors]
        self.epochs = np.array([r.epoch for r in run.records])
        self.trigger = [r.trigger for r in run.records]
        steps = [r.step for r in run.records]
        # a record taken at the same step as the previous one (a batch record at the last batch of
        # an epoch, then the epoch record) has no update by construction
        self.advanced = np.array([i > 0 and steps[i] != steps[i - 1] for i in range(len(steps))])
        self.l2 = run.metric("l2")
        self.size = run.metric("size")
        self.d_l2 = run.metric("d_l2")
        self.changed = run.metric("changed")
        self.trainable = run.metric("trainable")
        self.frozen = run.metric("frozen")
        self.d_cos = run.metric("d_cos")
        self.nonfinite_w = (np.nan_to_num(run.metric("nan")) + np.nan_to_num(run.metric("inf"))) > 0
        self.loss = run.log("loss")
        present = run.log_present("loss")
        self.loss_bad = present & ~np.isfinite(self.loss)
        task = info["task"]
        self.const = task.get("const_loss")
        self.kind = task.get("kind")
        k = max(1, spec.onset_epoch or 1)
        later = [i for i in range(self.R) if self.trigger[i] != "begin" and self.epochs[i] >= k]
        self.r0 = later[0] if later else self.R
        self.ref = self.r0 - 1   # the last record before the fault
        self.kernels = [i for i, r in enumerate(self.roles) if r in ("kernel", "embedding")]
        self.fault = self.match(info.get("fault_tensors") or [])
        # probe: epochs -> record index of that epoch's record (epoch end, or record 0)
        self.probe = info.get("probe") or {}
        self.probe_rec = {}
        for i, r in enumerate(run.records):
            if r.trigger in ("begin", "epoch"):
                self.probe_rec[r.epoch if r.trigger == "epoch" else 0] = i

    def match(self, globs) -> list[int]:
        return [i for i, p in enumerate(self.paths) if any(fnmatch.fnmatchcase(p, g) for g in globs)]

    # -- symptoms at record i (bool arrays over records) ----------------------------------
    def nonfinite(self):
        return self.nonfinite_w.any(axis=1) | self.loss_bad

    def growth(self, idx, factor):
        if not idx or self.ref < 0:
            return np.zeros(self.R, bool)
        ref = np.fmax(self.l2[self.ref, idx], 0.01 * np.sqrt(self.size[self.ref, idx]))
        with np.errstate(invalid="ignore"):
            g = self.l2[:, idx] / ref
        out = (g >= factor).any(axis=1)
        out[: self.r0] = False
        return out

    def best_before(self):
        pre = self.loss[1: self.r0]
        pre = pre[np.isfinite(pre)]
        return float(pre.min()) if pre.size else None

    def loss_jump(self, factor):
        """Loss far above its best before the fault (mid-run), or above the constant predictor's
        (from the start)."""
        out = np.zeros(self.R, bool)
        ref = self.best_before() if self.r0 > 1 else None
        with np.errstate(invalid="ignore"):
            if ref is not None:
                out = self.loss >= factor * ref
            elif self.const is not None:
                out = self.loss >= self.const
        out = out | self.loss_bad
        out[: self.r0] = False
        return out

    def update_ratio(self):
        prev = np.full_like(self.l2, np.nan)
        prev[1:] = self.l2[:-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.d_l2 / np.fmax(prev, 1e-3 * np.sqrt(self.size))

    def update_jump(self, factor):
        out = np.zeros(self.R, bool)
        if self.r0 <= 1 or not self.kernels:
            return out
        ur = self.update_ratio()[:, self.kernels]
        with np.errstate(invalid="ignore"):
            med = np.nanmedian(np.where(np.isfinite(ur), ur, np.nan), axis=1)
        before = med[1: self.r0]
        before = before[np.isfinite(before)]
        if not before.size:
            return out
        with np.errstate(invalid="ignore"):
            out = med >= factor * np.median(before)
        out[: self.r0] = False
        return out

    def negative_loss(self):
        with np.errstate(invalid="ignore"):
            out = self.loss < 0
        out[: self.r0] = False
        return out

    def at_probe(self, values) -> np.ndarray:
        """A probe series (one value per probed epoch) spread onto records (NaN elsewhere)."""
        out = np.full(self.R, np.nan)
        for e, v in zip(self.probe.get("epochs", []), values):
            i = self.probe_rec.get(e)
            if i is not None and v is not None:
                out[i] = v
        return out

    def grad_rms(self, path):
        g = self.probe.get("grad_l2", {}).get(path)
        n = self.probe.get("grad_size", {}).get(path)
        if g is None or not n:
            return None
        return np.array([np.nan if v is None else v / math.sqrt(n) for v in g])


def _first(mask: np.ndarray, start: int = 0):
    idx = np.flatnonzero(mask[start:])
    return int(idx[0] + start) if idx.size else None


def derive(case) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN medians of runs without kernels
        return _derive(Path(case))


def _derive(case: Path) -> dict:
    spec, info, run = _load(case)
    out = {"id": spec.id, "family": spec.family, "injected": spec.fault or "healthy",
           "variant": spec.variant, "onset_epoch": spec.onset_epoch, "label": None,
           "relabelled_from": None, "reason": "", "onset_record": None, "evidence": {},
           "first_nonfinite_record": None, "first_nonfinite_weight": None,
           "growth_before_nan": None, "where": [], "records": 0, "const_loss": None,
           "task": info.get("task"), "seconds": info.get("seconds")}
    if run is None:
        out.update(label="dropped", reason=f"no run recorded ({info.get('error')})")
        return out
    v = View(spec, info, run)
    out["records"] = v.R
    out["const_loss"] = v.const
    nf = v.nonfinite()
    out["first_nonfinite_record"] = _first(nf)
    out["first_nonfinite_weight"] = _first(v.nonfinite_w.any(axis=1))
    if info.get("error") and v.R < 2:
        out.update(label="dropped", reason=f"training failed: {info['error'][:200]}")
        return out
    if spec.healthy:
        return _healthy(v, out)
    return _faulty(spec, v, out)


def _healthy(v: View, out: dict) -> dict:
    loss = v.loss[1:]
    fin = loss[np.isfinite(loss)]
    out["label"] = "healthy"
    if out["first_nonfinite_record"] is not None:
        out.update(label="dropped", reason="healthy config diverged: non-finite weights or loss")
    elif fin.size and fin[-1] - fin.min() > (SYMPTOMS["healthy_diverged"] - 1) * abs(fin.min()):
        # (last > 2x best for a positive loss; for one that legitimately went below 0, a last
        # loss back above 0 from a negative best)
        out.update(label="dropped", reason=f"healthy config diverged: last loss {fin[-1]:.3g} > "
                   f"{SYMPTOMS['healthy_diverged']}x best {fin.min():.3g}")
    elif (v.const and fin.size and fin.min() >= SYMPTOMS["healthy_stuck"] * v.const
          and (fin[0] - fin.min() < SYMPTOMS["healthy_progress"] * v.const
               or fin[len(fin) // 2] - fin[-1] < SYMPTOMS["healthy_flat"] * v.const)):
        out.update(label="dropped", reason=f"healthy config did not learn: best loss {fin.min():.3g} "
                   f">= {SYMPTOMS['healthy_stuck']} x constant predictor {v.const:.3g}, and no progress "
                   "(overall, or over the second half of the run)")
    elif dead_layer(v) is not None:
        name, frac = dead_layer(v)
        out.update(label="dropped", reason=f"healthy config broke: {frac:.0%} of {name}'s units dead at the end")
    out["evidence"] = {"best_loss": float(fin.min()) if fin.size else None,
                       "last_loss": float(fin[-1]) if fin.size else None}
    return out


def dead_layer(v: View):
    """(layer, fraction) of a probed ReLU layer with >= 90% dead units at the last probe, or None."""
    for name, series in (v.probe.get("dead_frac") or {}).items():
        if series and series[-1] is not None and series[-1] >= 0.9:
            return name, series[-1]
    return None


def _onset(mask, r0, name, ev, out, v):
    r = _first(mask, r0)
    if r is not None:
        ev.setdefault("symptom", name)
    return r


def _oscillation_onset(v: View, idx, r0):
    """First record of the first pair of consecutive records whose updates reverse (any of ``idx``)."""
    if not idx:
        return None
    with np.errstate(invalid="ignore"):
        rev = (v.d_cos[:, idx] <= SYMPTOMS["osc_cos"]).any(axis=1)
    two = rev & np.concatenate([[False], rev[:-1]])
    r = _first(two, r0)
    if r is None:
        return None
    return r - 1 if r - 1 >= r0 else r


def _faulty(spec: Spec, v: View, out: dict) -> dict:
    f = spec.fault
    ev = out["evidence"]
    nf = v.nonfinite()
    r0 = v.r0
    out["where"] = [v.paths[i] for i in v.fault]
    out["injection_record"] = r0 if r0 < v.R else None
    label, onset, reason = f, None, ""
    kern = v.kernels

    def first_of(*named):
        """Earliest record at which any of the named symptoms holds; records which one."""
        best = None
        for name, mask in named:
            r = _first(mask, r0)
            if r is not None and (best is None or r < best[0]):
                best = (r, name)
        if best:
            ev["symptom"] = best[1]
            return best[0]
        return None

    if f in ("lr-high-nan", "lr-high"):
        lossy = v.loss_jump(SYMPTOMS["loss_jump"])
        if r0 <= 1:
            # from the start: the loss never got below the constant predictor's (training broken throughout)
            lossy = np.where(np.arange(v.R) >= r0, lossy[r0:].all(), False) if r0 < v.R else lossy
        onset = first_of(("non-finite", nf), (f"kernel norm >= {SYMPTOMS['growth']}x", v.growth(kern, SYMPTOMS["growth"])),
                         ("loss jump" if r0 > 1 else "loss never below the constant predictor's", lossy))
        visible = v.growth(kern, SYMPTOMS["growth"]) | lossy | nf
        persistent = onset is not None and (visible[-1] or visible[r0:].sum() >= 2)
        has_nan = _first(nf, r0) is not None
        osc = _oscillation_onset(v, kern, r0)
        if (onset is None or not persistent) and osc is not None:
            label, onset, reason = "oscillation", osc, "no growth or NaN, but the updates oscillate"
            ev["symptom"] = f"consecutive updates reverse (cos <= {SYMPTOMS['osc_cos']}) twice in a row"
        elif onset is None or not persistent:
            label, reason = "healthy", "learning rate too high did not break training (no growth, loss fine)"
        elif f == "lr-high-nan" and not has_nan:
            label, reason = "lr-high", "no NaN/Inf within the run: diverged but stayed finite"
        elif f == "lr-high" and has_nan:
            label, reason = "lr-high-nan", "went non-finite"
        out["where"] = [v.paths[i] for i in kern]
    elif f == "lr-spike":
        onset = first_of(("update ratio jump", v.update_jump(SYMPTOMS["update_jump"])),
                         ("loss jump", v.loss_jump(SYMPTOMS["loss_jump"])), ("non-finite", nf),
                         ("kernel norm growth", v.growth(kern, SYMPTOMS["growth"])))
        if onset is None:
            label, reason = "healthy", "the spike left no mark on the updates or the loss"
        out["where"] = [v.paths[i] for i in kern]
        # did it hurt?  (a spike can also leave the loss as good as before, or better)
        best = v.best_before()
        at = v.loss[r0] if r0 < v.R else np.nan
        ev["loss_over_best_before"] = None if best is None or not np.isfinite(at) else float(f"{at / best:.3g}")
        ev["harmful"] = bool(nf[r0:].any() or v.growth(kern, SYMPTOMS["growth"]).any()
                             or (best is not None and np.nanmax(v.loss[r0:]) >= 1.5 * best))
    elif f == "lr-zero":
        train = [i for i in range(len(v.paths)) if np.nanmax(v.trainable[:, i]) == 1]
        still = ((v.changed[:, train] == 0).all(axis=1) & v.advanced) if train else np.zeros(v.R, bool)
        ur = v.update_ratio()[:, [i for i in train if i in kern]]
        with np.errstate(invalid="ignore"):
            med = np.nanmedian(ur, axis=1) if ur.size else np.full(v.R, np.nan)
        pre = med[1:r0][np.isfinite(med[1:r0])]
        collapse = np.zeros(v.R, bool)
        if pre.size:
            with np.errstate(invalid="ignore"):
                collapse = med <= SYMPTOMS["lr_zero_collapse"] * np.median(pre)
        onset = first_of(("no trainable tensor changed", still), ("update ratio collapsed", collapse))
        lr = v.run.log("learning_rate")
        ev["lr_logged_zero_at"] = _first(lr == 0)
        if onset is None:
            label, reason = "healthy", "the learning rate never reached 0 (or the weights kept moving)"
        out["where"] = [v.paths[i] for i in train]
    elif f == "wrong-sign-reg":
        factor = SYMPTOMS["growth_reg"] if r0 <= 1 else SYMPTOMS["growth_reg_mid"]
        grow = v.growth(v.fault, factor)
        onset = first_of((f"pushed tensor norm >= {factor}x", grow), ("loss below 0", v.negative_loss()),
                         ("non-finite", nf))
        # sustained: the pushed tensor's norm at the end is above its norm at the injection
        if v.fault:
            ev["norm_end_over_ref"] = float(np.nanmax(v.l2[-1, v.fault] / np.fmax(v.l2[max(v.ref, 0), v.fault], 1e-12)))
        if onset is None:
            # not healthy either: the bug is in the model (a rule reading the penalty sees it), it
            # only did no visible harm within the run
            label, reason = "dropped", ("the wrong-sign penalty did not make its tensor grow: a latent "
                                        "bug, neither a healthy run nor a fault that showed")
    elif f == "wrong-sign-loss":
        onset = first_of(("loss below 0", v.negative_loss()), ("non-finite", nf),
                         ("kernel norm >= 2x", v.growth(kern, SYMPTOMS["growth"])))
        if onset is None:
            label, reason = "healthy", "no sign of gradient ascent"
    elif f == "log-zero":
        onset = first_of(("non-finite", nf))
        if onset is None:
            label, reason = "healthy", "the unclipped log never met 0 within the run"
    elif f == "frozen-trap":
        fz = v.fault
        moved = ((v.frozen[:, fz] == 1) & (v.changed[:, fz] == 1)).any(axis=1) if fz else np.zeros(v.R, bool)
        onset = first_of(("frozen tensor changed", moved))
        if onset is None:
            label, reason = "healthy", "the frozen layer did not change"
    elif f == "dead-relu":
        target = spec and v.info.get("target")
        dead = v.probe.get("dead_frac", {}).get(target)
        if dead is None:
            label, reason = "dropped", f"no dead-unit probe for {target}"
        else:
            d = v.at_probe(dead)
            ev["dead_frac"] = [None if not np.isfinite(x) else round(float(x), 3) for x in d]
            with np.errstate(invalid="ignore"):
                mask = d >= SYMPTOMS["dead"]
            mask[: r0] = False if spec.variant == "spike" else mask[:r0]
            # bias variant: dead from record 0, visible from the first record after training starts
            if spec.variant == "bias":
                mask[0] = False
            last = d[np.isfinite(d)]
            onset = first_of((f"probe: >= {SYMPTOMS['dead']:.0%} of {target}'s units dead", mask))
            if onset is None or not (last.size and last[-1] >= SYMPTOMS["dead"]):
                label, onset = "healthy", None
                reason = "fewer than half the units died (or they recovered)"
                # the spike variant is a learning-rate spike (50-100x for one epoch): when no unit
                # died it is judged as one, by the lr-spike symptom (the update-ratio jump)
                jump = v.update_jump(SYMPTOMS["update_jump"]) if spec.variant == "spike" else None
                if jump is not None and _first(jump, r0) is not None:
                    label, onset = "lr-spike", first_of(("update ratio jump", jump))
                    reason = "fewer than half the units died, but the spike showed in the updates"
                    out["where"] = [v.paths[i] for i in kern]
    elif f in ("vanishing-sgd", "vanishing-adaptive"):
        trainable_k = [i for i in kern if v.paths[i] in v.probe.get("grad_l2", {})]
        if len(trainable_k) < 2:
            label, reason = "dropped", "no probe gradients"
        else:
            first, last = v.paths[trainable_k[0]], v.paths[trainable_k[-1]]
            g1, g2 = v.grad_rms(first), v.grad_rms(last)
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = v.at_probe(list(g1 / g2))
            ev["grad_ratio_first_last"] = [None if not np.isfinite(x) else float(f"{x:.3g}") for x in ratio]
            small = np.nan_to_num(ratio, nan=np.inf) <= SYMPTOMS["vanishing_ratio"]
            stuck = np.ones(v.R, bool)
            if v.const:
                with np.errstate(invalid="ignore"):
                    stuck = v.loss >= SYMPTOMS["vanishing_loss"] * v.const
            # the probe at record 0 speaks for record 1 (the first record after training starts)
            small_rec = small.copy()
            small_rec[1] = small[0] or small[1]
            mask = small_rec & stuck
            mask[0] = False
            onset = first_of((f"probe: first/last RMS gradient <= {SYMPTOMS['vanishing_ratio']:g} while the loss "
                              f"stays at chance", mask))
            ev["first"], ev["last"] = first, last
            out["where"] = [v.paths[i] for i in trainable_k[:-1]]
            if onset is None:
                reason = "gradients did not vanish (or the loss still fell)"
                label = "healthy"
    elif f == "exploding-rnn":
        # the recurrent layer's kernels: its bias starts at 0, where any healthy movement is "2x"
        rnn = [i for i in v.fault if not v.paths[i].endswith("bias")]
        rec = next((p for p in v.probe.get("grad_l2", {}) if "rnn1" in p and p.endswith("recurrent_kernel")), None)
        out_k = next((p for p in reversed(list(v.probe.get("grad_l2", {}))) if p.endswith("kernel")), None)
        grad_up = np.zeros(v.R, bool)
        if rec and out_k:
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = v.at_probe(list(v.grad_rms(rec) / v.grad_rms(out_k)))
            ev["grad_recurrent_over_out"] = [None if not np.isfinite(x) else float(f"{x:.3g}") for x in ratio]
            with np.errstate(invalid="ignore"):
                grad_up = np.nan_to_num(ratio, nan=0) >= SYMPTOMS["rnn_grad"]
            grad_up[1] = grad_up[0] or grad_up[1]    # record 0's probe speaks for record 1
            grad_up[0] = False
        loss_up = np.zeros(v.R, bool)
        if v.const:
            with np.errstate(invalid="ignore"):
                loss_up = v.loss >= SYMPTOMS["rnn_loss"] * v.const
        onset = first_of(("non-finite", nf), ("recurrent layer norm >= 2x", v.growth(rnn, SYMPTOMS["growth"])),
                         (f"probe: recurrent-kernel gradient >= {SYMPTOMS['rnn_grad']:g}x the output kernel's", grad_up),
                         (f"loss >= {SYMPTOMS['rnn_loss']:g}x the constant predictor's", loss_up))
        if onset is None:
            label, reason = "healthy", "the recurrent layer did not explode"
    elif f == "labels-shuffled":
        with np.errstate(invalid="ignore"):
            chance = v.loss >= SYMPTOMS["chance"] * v.const if v.const else np.zeros(v.R, bool)
        chance[:r0] = False
        onset = first_of((f"loss >= {SYMPTOMS['chance']} x chance", chance))
        ev["loss_over_chance"] = [None if not np.isfinite(x) else round(float(x / v.const), 3)
                                  for x in v.loss] if v.const else None
        if onset is None or chance[r0:].sum() < 2:
            label, onset, reason = "healthy", None, "the loss did not sit at chance (the model fit the shuffled labels)"
    elif f == "disconnected":
        fz = v.fault
        others = [i for i in kern if i not in fz]
        still = (v.changed[:, fz] == 0).all(axis=1) if fz else np.zeros(v.R, bool)
        moving = (v.changed[:, others] == 1).any(axis=1) if others else np.zeros(v.R, bool)
        mask = still & moving & v.advanced
        onset = first_of(("cut-off tensors unchanged while others learn", mask))
        adv = v.advanced[max(r0, 1):]
        if onset is None or not mask[max(r0, 1):][adv].all():
            label, onset, reason = "healthy", None, "the cut-off layer still changed"
    elif f == "oscillation":
        fz = v.fault
        onset = _oscillation_onset(v, fz, r0)
        if onset is not None:
            ev["symptom"] = f"consecutive updates reverse (cos <= {SYMPTOMS['osc_cos']}) twice in a row"
        ev["d_cos"] = [None if not np.isfinite(x) else round(float(x), 3) for x in
                       (np.nanmin(v.d_cos[:, fz], axis=1) if fz else [])]
        if onset is None:
            label, reason = "healthy", "updates did not reverse"
    else:
        raise ValueError(f)

    pre = _first(nf)
    if r0 > 1 and pre is not None and pre < r0:
        label, onset = "dropped", None
        reason = f"the healthy part before the injection already went non-finite (record {pre})"
    if label != f:
        out["relabelled_from"] = f
    out["label"] = label
    out["reason"] = reason
    out["onset_record"] = onset if label not in ("healthy", "dropped") else None
    if label == "healthy":
        # a healthy label still has to be healthy
        res = _healthy(v, dict(out))
        if res["label"] == "dropped":
            out.update(label="dropped", reason=reason + "; and " + res["reason"])
    fn = out["first_nonfinite_record"]
    if fn is not None and out["onset_record"] is not None:
        # growth before NaN: some kernel grew >= 2x its pre-fault norm before the first non-finite
        # record (weights or loss: a squared error overflows float32 while weights near 1e18 are
        # still finite, and from then on the run is garbage)
        grow = v.growth(kern, SYMPTOMS["growth"])
        out["growth_before_nan"] = bool(grow[:fn].any())
    if info_error(v) and out["label"] == "healthy":
        out.update(label="dropped", reason=f"training raised {info_error(v)[:120]}")
    return out


def info_error(v: View):
    return v.info.get("error")


# --------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=str(HERE / ".cache"))
    ap.add_argument("--only", help="glob over ids")
    ap.add_argument("--show", action="store_true", help="print every truth")
    args = ap.parse_args(argv)
    from record import _dumps

    cases = sorted(p for p in Path(args.cache).iterdir() if p.is_dir() and not p.name.startswith("."))
    if args.only:
        cases = [c for c in cases if fnmatch.fnmatchcase(c.name, args.only)]
    counts = Counter()
    for c in cases:
        if not (c / "probe.json").exists():
            continue
        t = derive(c)
        (c / "truth.json").write_text(_dumps(t))
        counts[(t["injected"], t["label"])] += 1
        if args.show:
            print(f"{t['id']:34s} {t['label']:20s} onset={t['onset_record']} nf={t['first_nonfinite_record']} "
                  f"{t['evidence'].get('symptom', '')} {t['reason']}")
    print(f"{len(cases)} cases")
    for (inj, lab), n in sorted(counts.items()):
        print(f"  {inj:20s} -> {lab:20s} {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
