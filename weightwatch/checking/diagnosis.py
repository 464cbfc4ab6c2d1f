"""From findings to a diagnosis: what went wrong first, where, and what to do.

One learning rate that is ten times too high fails three rules on the same
tensors and trips a warning: nine findings, one cause.  The per-rule results
stay as they are (CI and JUnit keep their shape); the diagnosis groups the
findings by their likely cause, names the first offender (the tensor, or
log, and record where the first symptom appeared) and the layers that
followed, and gives one hint per cause.

The cause of a finding follows from its check (a user's own rule gets the
cause of the check it runs); ``update-ratio`` is a divergence above its
band and a stalled layer below it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..run.schema import where_label
from .report import FAILED, WARNING, Finding, Report

#: (title, hint) of each cause.
CAUSES = {
    "divergence": (
        "training diverged: weights or loss grew without bound",
        "Lower the learning rate (a factor of 3 to 10), add gradient clipping (clipnorm=1.0) or a "
        "warm-up; if the loss went NaN before any weight grew, look for log(0), sqrt of a negative "
        "or x/0 in a custom loss."),
    "frozen-changed": (
        "a frozen layer changed",
        "Call model.compile() again after setting layer.trainable = False: a train function built "
        "before the change keeps updating the layer."),
    "not-learning": (
        "a layer stopped learning",
        "Check the learning rate actually used (a schedule that reaches 0), that the layer is "
        "connected to the loss, and that it is not frozen by mistake."),
    "dead-units": (
        "ReLU units died",
        "Use a smaller learning rate, He initialisation, a zero or small positive bias, or "
        "LeakyReLU/GELU; dead units never recover by themselves."),
    "vanishing": (
        "gradients vanish before the early layers",
        "Use ReLU-family activations, He/Glorot initialisation, BatchNormalization or residual "
        "connections."),
    "wrong-sign": (
        "a loss or penalty term has the wrong sign",
        "A weight's penalty is below 0, the loss went below what its loss function can reach, or "
        "it keeps falling faster below 0: check the sign of custom regularisers and loss terms; the "
        "optimizer is climbing the loss, rewarded for making the model worse."),
    "signal-lost": (
        "the loss climbed back to chance: what the model had learnt is gone",
        "Check that labels still line up with their inputs after any shuffle, split or resharding "
        "done mid-run (a shuffle applied to one and not the other), and the learning rate at that "
        "epoch (a spike wipes out what was learnt)."),
    "plateau": (
        "the loss stopped improving",
        "If the run is finished, stop it (EarlyStopping); otherwise raise the learning rate or "
        "check that the labels match the inputs."),
    "baseline": (
        "training departs from the reference runs",
        "The change under test trains differently from the baseline; the first tensor to depart is "
        "where to look (a changed initialiser, learning rate, activation, normalisation or freeze). "
        "`weightwatch diff RUN REF` shows the departures side by side; if the change is intended, "
        "record new reference runs."),
    "architecture": (
        "the architecture differs from the reference runs",
        "A layer was removed, renamed or resized; if that is intended, record new reference runs."),
    "replicas": (
        "data-parallel replicas hold different weights",
        "Each replica trains its own model now: check the gradient all-reduce (a custom train_step "
        "must do it), synchronise BatchNormalization, seed every process the same, and keep "
        "callbacks that change weights off non-zero processes."),
    "other": ("other findings", ""),
}

#: The cause each check's findings point to.
CAUSE_OF_CHECK = {
    "nonfinite": "divergence", "nonfinite-log": "divergence", "norm-growth": "divergence",
    "norm-runaway": "divergence", "norm-limit": "divergence", "loss-divergence": "divergence",
    "oscillation": "divergence", "unchanged": "frozen-changed", "stalled": "not-learning",
    "dead-units": "dead-units", "update-disparity": "vanishing", "loss-plateau": "plateau",
    "loss-below-floor": "wrong-sign", "negative-penalty": "wrong-sign", "grad-disparity": "vanishing",
    "grad-growth": "divergence",
    "loss-at-chance": "not-learning", "update-jump": "divergence",
    "loss-above-chance": "divergence", "loss-unbounded": "wrong-sign", "loss-sign-flip": "wrong-sign",
    "loss-back-to-chance": "signal-lost",
    "baseline-norm": "baseline", "baseline-update-ratio": "baseline", "baseline-gradient": "baseline",
    "baseline-log": "baseline", "baseline-tensors": "architecture", "baseline-update-noise": "baseline",
    "baseline-relative-gradient": "baseline", "baseline-relative-update": "baseline",
    "replica-divergence": "replicas",
}


@dataclass
class Cause:
    """One likely cause and the findings that point to it."""

    id: str
    title: str
    hint: str
    first: Finding                        # the first offender
    rules: list[str] = field(default_factory=list)
    followed: list[Finding] = field(default_factory=list)   # the other symptoms, first per subject
    severity: str = "error"               # the worst severity among its findings
    detail: str = ""                      # e.g. the loss before and at the onset

    @property
    def onset(self) -> int:
        return self.first.record

    @property
    def at(self) -> str:
        return where_label(self.first.epoch, self.first.batch)

    def to_dict(self) -> dict:
        return {"cause": self.id, "title": self.title, "severity": self.severity,
                "record": self.first.record, "epoch": self.first.epoch, "batch": self.first.batch,
                "first": {"rule": self.first.rule, "subject": self.first.subject,
                          "message": self.first.message},
                "followed": [{"subject": f.subject, "record": f.record, "epoch": f.epoch} for f in self.followed],
                "rules": self.rules, "detail": self.detail, "hint": self.hint}


def cause_of(check: str, finding: Finding) -> str:
    if check == "update-ratio":
        above = finding.value is not None and finding.limit is not None and finding.value > finding.limit
        return "divergence" if above else "not-learning"
    return CAUSE_OF_CHECK.get(check, "other")


def diagnose(report: Report, run=None) -> list[Cause]:
    """The causes behind a report's failures and warnings, the earliest onset first.

    ``run`` (optional) adds the loss before and at a divergence's onset.
    """
    order = {r.id: k for k, r in enumerate(report.results)}
    # Failures and warnings are diagnosed apart: a warning that came first must not stand for
    # the failure of the same cause that came later.
    grouped: dict[tuple[str, str], list[tuple[Finding, str]]] = {}
    for result in report.results:
        if result.status not in (FAILED, WARNING):
            continue
        check = getattr(result.rule, "check", "")
        for f in result.findings:
            grouped.setdefault((cause_of(check, f), result.status), []).append((f, result.status))
    causes = []
    for (cid, status), items in grouped.items():
        # The first offender: the earliest record; then the rules' order in the pack, then
        # the tensors' order in the model (findings come in it).
        ranked = sorted(items, key=lambda fs: (fs[0].record, order[fs[0].rule]))
        first = ranked[0][0]
        followed, seen = [], {first.subject}
        for f, _ in ranked[1:]:
            if f.subject not in seen:
                seen.add(f.subject)
                followed.append(f)
        title, hint = CAUSES[cid]
        cause = Cause(cid, title, hint, first, rules=list(dict.fromkeys(f.rule for f, _ in ranked)),
                      followed=followed, severity="error" if status == FAILED else "warning")
        if cid == "divergence" and run is not None:
            cause.detail = _loss_story(run, first.record)
        causes.append(cause)
    causes.sort(key=lambda c: (c.severity != "error", c.onset, list(CAUSES).index(c.id)))
    # A warning of a cause that also failed adds nothing the failure does not say.
    failed = {c.id for c in causes if c.severity == "error"}
    # A loss back at chance after a divergence has begun is the divergence's doing; a loss sitting
    # at chance once it came back is what the lost signal looks like, not another cause.
    first_error = {c.id: c.onset for c in reversed(causes) if c.severity == "error"}
    check_of = {r.id: getattr(r.rule, "check", "") for r in report.results}
    return [c for c in causes if (c.severity == "error" or c.id not in failed)
            and not (c.id == "signal-lost" and c.onset >= first_error.get("divergence", c.onset + 1))
            and not (c.severity == "warning" and c.onset >= first_error.get("signal-lost", c.onset + 1)
                     and all(check_of.get(rule) == "loss-at-chance" for rule in c.rules))]


def _loss_story(run, record: int) -> str:
    """``loss 0.62 at epoch 1, 23.65 at epoch 2``: the best loss up to a divergence's onset,
    then the worst after it (non-finite, if it went so far)."""
    import math

    losses = run.log("loss")
    present = run.log_present("loss")
    upto = [(v, r) for r, v in enumerate(losses[: record + 1]) if not math.isnan(v)]
    if not upto or record >= len(losses):
        return ""
    best, at = min(upto)
    later = [(r, v) for r, v in enumerate(losses) if r > at and present[r]]
    if not later:
        return ""
    bad = next(((r, v) for r, v in later if math.isnan(v)), None) or max(later, key=lambda rv: rv[1])
    if not math.isnan(bad[1]) and bad[1] <= best:
        return ""
    worst = "non-finite" if math.isnan(bad[1]) else f"{bad[1]:.4g}"
    return f"loss {best:.4g} at {run.records[at].label}, {worst} at {run.records[bad[0]].label}"
