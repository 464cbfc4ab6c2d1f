"""Checks: small pure functions over metric histories.

A rule (see :mod:`.rules`) names one check and gives it options.  A check
sees the histories of the tensors the rule selected,
as ``(records, tensors)`` arrays, and returns the figure it judged and where
that figure violates its limit.  It never loops over records' figures in
Python and never reads files: the engine does the selection, the patience and the
reporting, so each check is a few lines that can be tested on plain arrays
(which records a check may judge is computed once per evaluation, by
:func:`record_mask`).

Each check's docstring is its documentation, printed by
``weightwatch rules --checks`` (what it does, why, its options).  Its options
declare their type and the values they allow (``choices``, ``minimum``), and
a ``validate`` hook checks how options combine, as yamllint's ``VALIDATE``
does: a bad value is a configuration error, found when the rule loads.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..run.schema import copy_suffix

#: A check's subjects: one column per tensor; one per log key; or named by the check itself
#: (a baseline check judges tensors and logs of the reference that the run may lack).
TENSOR, LOG, SUBJECTS = "tensor", "log", "subjects"

#: What a check judges, which decides the records where it applies (see :func:`record_mask`):
#: the state of the weights at the record (every record); the update since the previous record
#: (records after at least one training step: with ``freq=N`` the epoch-end record can follow a
#: batch record at the same step, and holds the same weights); an update over a whole epoch
#: (a few minibatches are too few to say a unit never gets a gradient); two consecutive
#: whole-epoch updates (consecutive minibatch updates are anti-correlated by nature).
STATE, UPDATE, EPOCH_UPDATE, EPOCH_UPDATES = "state", "update", "epoch-update", "epoch-updates"
#: ... and the epoch's own figures: the begin and epoch records only (a batch record's logs are
#: running means over part of an epoch, so a loss window counts epochs, not batch records).
EPOCHS = "epochs"
JUDGES = {STATE: "every record", UPDATE: "records after at least one training step",
          EPOCH_UPDATE: "updates over a whole epoch", EPOCH_UPDATES: "two consecutive whole-epoch updates",
          EPOCHS: "the begin and epoch records (not batch records)"}


class NotApplicable(Exception):
    """Raised by a check when the run lacks the evidence it judges (a column, a manifest entry).

    The engine reports the rule SKIPPED with the exception's message as its
    note: never a pass on evidence that is not there.
    """


@dataclass
class Option:
    type: type | tuple
    default: object
    doc: str
    choices: tuple | None = None     # the only values allowed
    minimum: float | None = None     # smallest value allowed
    above: float | None = None       # values must be greater than this
    maximum: float | None = None     # largest value allowed


@dataclass
class Check:
    id: str
    scope: str                       # TENSOR: one column per tensor; LOG: one per log key
    fn: Callable
    options: dict[str, Option]
    message: str                     # default message template
    metric: str                      # what `value` is, for the report
    doc: str = ""
    needs: tuple = ()                # columns the run must have
    #: ``validate(options) -> problem or None``: how the options combine.
    validate: Callable | None = None
    judges: str = STATE              # STATE, UPDATE, EPOCH_UPDATE or EPOCH_UPDATES
    #: Words ``-k`` also matches for rules of this check (pytest's keywords), e.g. "nan".
    keywords: tuple = ()
    #: Figures of the outcome (``Outcome.extra``) a message may name besides the options.
    fields: tuple = ()
    #: Compares the run with a baseline (``--baseline``): evaluated only when one is given.
    baseline: bool = False

    def log_keys(self, options: dict) -> list[str]:
        """The training logs a log check watches (``keys`` or ``key``); [] for tensor checks."""
        if self.scope != LOG:
            return []
        keys = options.get("keys")
        return list(keys) if keys is not None else [options.get("key", "loss")]


@dataclass
class Outcome:
    """What a check found: the judged figure and where it crosses the limit."""

    value: np.ndarray                # (records, subjects) float
    bad: np.ndarray                  # (records, subjects) bool
    limit: object                    # float, or an array like `value`
    subjects: list | None = None     # log keys, for LOG checks; names, for SUBJECTS checks
    #: For SUBJECTS checks: the subjects are tensors (else logs).
    subject_tensors: bool = False
    #: Further figures for the message: scalars, arrays like ``value`` (taken at the finding), or
    #: callables ``(record, subject) -> value`` computed for the findings only.
    extra: dict = field(default_factory=dict)


class Histories:
    """The view a check gets: histories of the selected tensors, and the logs.

    ``cache`` is shared by the rules of one evaluation (the engine owns it):
    rules that select the same tensors (all kernels, say) share the gathered
    histories.
    """

    def __init__(self, run, index: np.ndarray, cache: dict | None = None, baseline=None):
        self.run = run
        #: The run laid over the baseline (:class:`~.baseline.Alignment`), for baseline checks.
        self.baseline = baseline
        self.index = index
        self.tensors = [run.tensors[i] for i in index]
        # Every tensor, in order (the usual case): histories are the run's own
        # arrays, not copies.
        self._whole = index.size == len(run.tensors) and bool((index == np.arange(index.size)).all())
        self._cache = {} if cache is None else cache
        self._key = None if self._whole else index.tobytes()

    def __call__(self, metric: str) -> np.ndarray:
        """The metric's history, (records, selected tensors); read-only, shared between calls."""
        key = (metric, self._key)
        m = self._cache.get(key)
        if m is None:
            m = self.run.metric(metric)
            m = m.view() if self._whole else m[:, self.index]
            m.flags.writeable = False
            self._cache[key] = m
        return m

    def prev(self, metric: str) -> np.ndarray:
        """The metric at the previous record (NaN at the first record)."""
        m = self(metric)
        out = np.full_like(m, np.nan)
        out[1:] = m[:-1]
        return out

    @property
    def records(self):
        return self.run.records

    def log(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(values, present): NaN values where present means non-finite."""
        return self.run.log(key), self.run.log_present(key)

    def epoch_log(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`log` at the begin and epoch records only (NaN and absent elsewhere)."""
        v, present = self.log(key)
        epochs = record_mask(self.run.records, EPOCHS)
        return np.where(epochs, v, np.nan), present & epochs


#: Every check, by id: the explicit registry rules name checks from.
CHECKS: dict[str, Check] = {}


def check(id, *, scope=TENSOR, message, metric, options=None, needs=(), validate=None,
          judges=STATE, keywords=(), fields=(), baseline=False):
    """Register the decorated function as the check ``id``."""
    def register(fn):
        CHECKS[id] = Check(id=id, scope=scope, fn=fn, options=options or {}, message=message,
                           metric=metric, doc=(fn.__doc__ or "").strip(), needs=needs,
                           validate=validate, judges=judges, keywords=tuple(keywords),
                           fields=tuple(fields), baseline=baseline)
        return fn
    return register


def record_mask(records, judges: str) -> np.ndarray:
    """Where a check that ``judges`` this applies, per record (see :data:`STATE` and the others).

    A record's steps are its ``step`` minus the previous record's; unknown
    steps (naive dumps) count as some.  A whole-epoch update is an epoch
    record whose previous record is the run's begin record or an epoch record.
    """
    n = len(records)
    if judges == STATE or n == 0:
        return np.ones(n, dtype=bool)
    if judges == EPOCHS:
        return np.array([r.trigger in ("begin", "epoch") for r in records], dtype=bool)
    steps = np.array([np.nan if r.step is None else r.step for r in records], dtype=float)
    some = np.ones(n, dtype=bool)
    some[1:] = ~(np.diff(steps) == 0)
    if judges == UPDATE:
        return some
    triggers = [r.trigger for r in records]
    whole = np.zeros(n, dtype=bool)
    for i in range(1, n):
        whole[i] = triggers[i] == "epoch" and triggers[i - 1] in ("begin", "epoch") and some[i]
    if judges == EPOCH_UPDATE:
        return whole
    both = whole.copy()
    both[1:] &= whole[:-1]
    both[:1] = False
    return both


def _gt(a, b):
    with np.errstate(invalid="ignore"):
        return np.greater(a, b) & ~np.isnan(a)


def _lt(a, b):
    with np.errstate(invalid="ignore"):
        return np.less(a, b) & ~np.isnan(a)


def _streaks(mask: np.ndarray) -> np.ndarray:
    """How many True values in a row end at each position of ``mask`` (0 where it is False)."""
    pos = np.arange(mask.size)
    return pos - np.maximum.accumulate(np.where(mask, -1, pos))


def update_ratio(h: Histories, min_rms: float) -> np.ndarray:
    """||W_t - W_t-1|| / max(||W_t-1||, min_rms * sqrt(size)).

    The floor keeps a bias that starts at exactly zero from producing an
    infinite ratio on its first update.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        return h("d_l2") / _floored_prev_norm(h, min_rms)


def _shifted(a: np.ndarray, k: int, fill) -> np.ndarray:
    """``a`` moved ``k`` records later: row t holds row t-k (``fill`` before the start)."""
    if k == 0:
        return a
    out = np.full_like(a, fill)
    out[k:] = a[:-k]
    return out


def _floored_prev_norm(h: Histories, min_rms: float) -> np.ndarray:
    """The previous record's L2 norm, raised to a floor; NaN where there is no previous record."""
    prev = h.prev("l2")
    return np.where(np.isnan(prev), np.nan, np.fmax(prev, min_rms * np.sqrt(h("size"))))


# -- weights ------------------------------------------------------------------------
@check("nonfinite", message="{tensor} holds {value:g} NaN/Inf values",
       metric="nan+inf", keywords=("nan", "inf"))
def nonfinite(h: Histories):
    """Fails when a tensor holds NaN or Inf values.

    Why: one NaN spreads to every weight it touches within a step or two, and
    training cannot recover; the records before it show how it got there.
    Typical causes: a learning rate far too high, log/sqrt/division of zero in
    a custom loss, float16 overflow without loss scaling.
    """
    v = h("nan") + h("inf")
    return Outcome(v, _gt(v, 0), 0.0)


@check("norm-growth",
       message="{tensor} L2 norm grew {value:.3g}x in one record (limit {limit:g}x)",
       metric="growth", options={
                "max_ratio": Option((int, float), 3.0, "largest allowed ||W_t|| / ||W_t-1||", above=1),
                "min_rms": Option((int, float), 0.01,
                                  "norm floor per element: growth from a norm below "
                                  "min_rms * sqrt(size) is measured from that floor", above=0),
            }, judges=UPDATE)
def norm_growth(h: Histories, max_ratio, min_rms):
    """Fails when a tensor's L2 norm multiplies by more than ``max_ratio`` between records.

    Why: exploding weights grow geometrically long before they overflow; the
    growth ratio catches them records before NaN appears.  The floor
    (``min_rms``) keeps small tensors that start at zero, such as biases,
    from tripping it on their first update.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        g = h("l2") / _floored_prev_norm(h, min_rms)
    return Outcome(g, _gt(g, max_ratio), float(max_ratio))


@check("norm-runaway",
       message="{tensor} norm grew {value:.3g}x in a record, and faster each record for {records} records",
       metric="growth", options={
                "min_growth": Option((int, float), 1.2, "growth per record that counts as fast", above=1),
                "records": Option(int, 2, "consecutive records of fast, non-slowing growth", minimum=1,
                                  maximum=1000),
                "min_rms": Option((int, float), 0.01, "norm floor per element, as for norm-growth",
                                  above=0),
            }, judges=UPDATE)
def norm_runaway(h: Histories, min_growth, records, min_rms):
    """Fails when a norm grows fast and does not slow down: geometric, runaway growth.

    Why: weights move away from their initialisation quickly at first and
    then settle, so healthy growth decelerates from record to record.  A norm
    that keeps growing by ``min_growth`` or more per record at an equal or
    faster rate is being pushed outward by something other than the data - a
    regulariser with the wrong sign, a learning rate slightly too high - and
    it ends in overflow, without the single big jump norm-growth waits for.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        g = h("l2") / _floored_prev_norm(h, min_rms)
    with np.errstate(invalid="ignore"):
        fast = np.greater_equal(g, min_growth)               # NaN compares False
        not_slowing = np.greater_equal(g, _shifted(g, 1, np.nan))  # g[t] >= g[t-1]
    bad = fast.copy()
    # A streak longer than the run is never complete: no need to look further back than its start.
    for k in range(1, min(max(1, records), len(g) + 1)):
        bad &= _shifted(fast, k, False) & _shifted(not_slowing, k - 1, False)
    return Outcome(g, bad, float(min_growth), extra={"records": records})


@check("norm-limit", message="{tensor} {metric} is {value:.4g} (limit {limit:g})",
       metric="absmax", options={
                "metric": Option(str, "absmax", "figure to bound: absmax, l2 or rms",
                                 choices=("absmax", "l2", "rms")),
                "max": Option((int, float), 1e4, "largest allowed value", minimum=0),
            })
def norm_limit(h: Histories, metric, max):
    """Fails when a tensor's largest |weight| (or L2 norm, or RMS) exceeds a limit.

    Why: healthy weights of a normalised network stay within a few units;
    values in the thousands mean the optimisation is running away even if
    the growth per record looks moderate.
    """
    if metric == "rms":
        with np.errstate(invalid="ignore", divide="ignore"):
            v = h("l2") / np.sqrt(h("size"))
    else:  # "absmax" or "l2": the option's choices
        v = h(metric)
    return Outcome(v, _gt(v, max), float(max), extra={"metric": metric})


@check("unchanged", message="{tensor} changed (max |update| {value:.3g}) but must stay unchanged",
       metric="d_absmax", options={
                "tolerance": Option((int, float), 0.0,
                                    "largest |update| still counted as unchanged", minimum=0),
            }, judges=UPDATE)
def unchanged(h: Histories, tolerance):
    """Fails when a tensor that must stay unchanged changes.

    Why: a layer with ``trainable=False`` - or a base you declared frozen -
    must be bit-identical from record to record.  This also catches the real
    Keras trap of setting ``trainable=False`` after ``fit`` has built its
    train function without calling ``compile()`` again: the layer reports
    itself frozen and goes on learning.
    """
    v = h("d_absmax").copy()
    changed = h("changed")
    # an update involving NaN/Inf has no size but is a change
    v[np.isnan(v) & (changed == 1)] = np.inf
    return Outcome(v, _gt(v, tolerance), float(tolerance))


@check("stalled", message="{tensor} did not learn: update ratio {value:.3g} (floor {limit:g})",
       metric="update_ratio", options={
                "min_ratio": Option((int, float), 1e-8,
                                    "smallest ||dW|| / ||W|| counted as learning", minimum=0),
                "min_rms": Option((int, float), 1e-3, "norm floor per element for the ratio", above=0),
                "cancelled": Option((int, float), 10.0,
                                    "a bias feeding a BatchNorm (one of the next few layers holds "
                                    "moving statistics of its shape) that moved at under 1/this of "
                                    "its layer's kernels' update ratio at every record has no "
                                    "gradient of its own and is not judged while it moves; 0 judges "
                                    "every bias", minimum=0),
            }, judges=UPDATE)
def stalled(h: Histories, min_ratio, min_rms, cancelled):
    """Fails when a trainable tensor does not change between records.

    Why: a learning rate of 0 (a schedule bug), a layer cut off from the
    loss, or a layer left ``trainable=False`` by mistake all look like a
    tensor that never moves.  Healthy updates shrink as a run converges but
    stay many orders of magnitude above the floor.

    A bias that feeds a BatchNorm directly (``Conv2D -> BatchNormalization``
    with Keras' default ``use_bias=True``) is subtracted again with the batch
    mean: its gradient is zero up to rounding, and under SGD it moves by
    rounding only, below any floor once a schedule decays.  Two facts tell
    such a bias apart: one of the next :data:`CANCELLED_WINDOW` layers with
    weights holds moving statistics of its shape (``model.weights`` lists
    parallel branches depth by depth, so a shortcut's BatchNorm may come after
    the main path's convolution), and it moves far slower than its own
    kernels at every record (in the run zoo and the baseline benchmark, 10
    times slower or more, most of them over 1,000 times; a bias behind an
    activation ahead of the BatchNorm, ``Dense(activation="relu") ->
    BatchNormalization``, learns, at a third of its kernel's pace or faster).
    While it moves it is left to its kernel, which stalls with it when the
    layer really stops (a learning rate of 0, a cut connection).  A bias that
    did not move at all is still judged: that is a dead ReLU's, whose kernel
    an L2 penalty keeps moving.
    """
    r = update_ratio(h, min_rms)
    bad = _lt(r, min_ratio) | ((h("changed") == 0) & (min_ratio > 0))
    if cancelled > 0:
        changed = h("changed")
        moved = (changed == 1) | (np.isnan(changed) & (h("d_l2") > 0))
        bad &= ~(_cancelled_biases(h, r, min_rms, cancelled)[None, :] & moved)
    return Outcome(r, bad, float(min_ratio))


#: How many layers after a bias's own (in model order) a BatchNorm over its channels may come:
#: ``model.weights`` lists the layers of parallel branches depth by depth (a ResNet's shortcut
#: convolution, then the main path's, then their BatchNorms), not each one next to its consumer.
CANCELLED_WINDOW = 4


def _layer_key(t) -> str:
    """The tensor's layer, told apart from another layer of the same name (``dense/bias#1``)."""
    return t.layer + copy_suffix(t.path)


def _cancelled_biases(h: Histories, r: np.ndarray, min_rms: float, factor: float) -> np.ndarray:
    """Per selected tensor: a bias a BatchNorm follows, whose update ratio stayed under 1/factor
    of each of its layer's kernels' at every record where they moved (see :func:`stalled`)."""
    out = np.zeros(len(h.tensors), dtype=bool)
    run = h.run
    order = list(dict.fromkeys(_layer_key(t) for t in run.tensors))     # layers in model order
    place = {k: i for i, k in enumerate(order)}
    stats: dict[str, set] = {}
    kernels: dict[str, list[int]] = {}
    for i, t in enumerate(run.tensors):
        if t.role == "moving_stat" and t.shape:
            stats.setdefault(_layer_key(t), set()).add(tuple(t.shape))
        elif t.role == "kernel":
            kernels.setdefault(_layer_key(t), []).append(i)
    for j, t in enumerate(h.tensors):
        key = _layer_key(t)
        if t.role != "bias" or not t.shape or key not in kernels:
            continue
        nxt = order[place[key] + 1:place[key] + 1 + CANCELLED_WINDOW]
        if not any(tuple(t.shape) in stats.get(k, ()) for k in nxt):
            continue
        kr = update_ratio(Histories(run, np.array(kernels[key]), cache=h._cache), min_rms)
        with np.errstate(invalid="ignore", divide="ignore"):
            slowest = np.min(kr, axis=1)                 # NaN where any kernel has no ratio
            moving = np.isfinite(slowest) & (slowest > 0)
            pace = slowest / r[:, j]                     # inf where the bias did not move
        out[j] = moving.any() and bool(np.where(moving, pace >= factor, True).all())
    return out


@check("update-ratio",
       message="{tensor} update ratio {value:.3g} outside [{min:g}, {max:g}]",
       metric="update_ratio", options={
                "min": Option((int, float), 1e-6, "smallest healthy ||dW|| / ||W|| per record", minimum=0),
                "max": Option((int, float), 1.0, "largest healthy ||dW|| / ||W|| per record", above=0),
                "min_rms": Option((int, float), 1e-3, "norm floor per element for the ratio", above=0),
            }, validate=lambda o: None if o["min"] < o["max"] else
               f'"min" ({o["min"]:g}) must be below "max" ({o["max"]:g})', judges=UPDATE)
def update_ratio_band(h: Histories, min, max, min_rms):
    """Flags updates that are far too large or far too small for the weights they change.

    Why: the ratio ||dW|| / ||W|| is the learning rate as the weights feel it.
    Above ~1 per record the weights are being rewritten rather than refined;
    far below the band the layer has effectively stopped learning.
    """
    r = update_ratio(h, min_rms)
    bad = _gt(r, max) | (_lt(r, min) & (h("changed") == 1))
    limit = np.where(_gt(r, max), max, min)
    return Outcome(r, bad, limit, extra={"min": min, "max": max})


@check("dead-units",
       message="{tensor}: {value:.0%} of output units received no update (limit {limit:.0%})",
       metric="dead_fraction", options={
                "max_fraction": Option((int, float), 0.6, minimum=0,
                                       doc="largest fraction of units allowed to get no update"),
            }, judges=EPOCH_UPDATE)
def dead_units(h: Histories, max_fraction):
    """Fails when most output units of a kernel, or elements of a bias, received no update at all.

    Why: a ReLU unit whose pre-activation is negative for every input gets
    zero gradient and never recovers ("dead ReLU"); its column of the kernel
    is then bit-identical between records.  Sparse but alive units change in
    at least some records, so the check looks at whole units, not elements.
    An L1 or L2 penalty (or weight decay) on the kernel keeps a dead unit's
    column moving towards 0, so the kernel shows it alive; its bias, which
    such penalties rarely cover, gets nothing and stays bit-identical.
    """
    units = np.array([t.units or np.nan for t in h.tensors], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = h("dead_units") / units
    # A kernel that did not change at all is not "dead units" but a stalled layer
    # (learning rate 0, frozen): the stalled / unchanged checks report that.
    return Outcome(f, _gt(f, max_fraction) & (h("changed") == 1), float(max_fraction))


@check("oscillation",
       message="{tensor} update reversed direction (cosine {value:.2f} to the previous update)",
       metric="d_cos", options={
                "max_cos": Option((int, float), -0.8,
                                  "cosine between consecutive updates at or below which they count as reversed",
                                  minimum=-1),
                "min_size": Option(int, 4, "skip tensors with fewer elements: the direction of a "
                                           "1-3 element update flips by chance", minimum=1),
                "min_ratio": Option((int, float), 0.13,
                                    "judge only updates of at least this ||dW|| / ||W||: a jump across "
                                    "the valley, not a bounce at the bottom of it", minimum=0),
            }, judges=EPOCH_UPDATES)
def oscillation(h: Histories, max_cos, min_size, min_ratio):
    """Fails when consecutive updates point in opposite directions, each rewriting the weights.

    Why: with a step size just above the stability limit, gradient descent
    overshoots the minimum and jumps back: the update of each record undoes
    the previous one (cosine near -1) while the loss stalls.  Healthy updates
    are uncorrelated or aligned (cosine >= 0), but a model that has reached
    its minimum under a constant step size (Adam at 0.01, a few steps an
    epoch) bounces around it and its epoch updates reverse too: by a few
    percent of the weights, while those of an unstable descent rewrite a
    fifth of them or more.  Updates smaller than ``min_ratio`` times the
    weights' norm (``update-ratio``'s figure, floored the same way) are not
    judged.
    """
    c = h("d_cos")
    with np.errstate(invalid="ignore"):
        bad = (np.less_equal(c, max_cos) & ~np.isnan(c) & (h("size") >= min_size)
               & ~_lt(update_ratio(h, 1e-3), min_ratio))
    return Outcome(c, bad, float(max_cos))


@check("update-disparity",
       message="{tensor} updates {value:.3g}x smaller than the last layer's (limit {limit:g}x)",
       metric="disparity", options={
                "max_disparity": Option((int, float), 1e3,
                                        "largest ratio between the last tensor's update ratio and this one's",
                                        above=1),
                "min_rms": Option((int, float), 1e-3, "norm floor per element for the ratio", above=0),
            }, judges=UPDATE)
def update_disparity(h: Histories, max_disparity, min_rms):
    """Fails when early layers learn orders of magnitude slower than the last one.

    Why: in a deep network with saturating activations (sigmoid, tanh) the
    gradient shrinks layer by layer on its way back ("vanishing gradients"),
    so the early layers barely move while the head learns.  The reference is
    the last selected tensor in model order, normally the output kernel.
    """
    r = update_ratio(h, min_rms)
    ref = r[:, -1:] if r.shape[1] else r
    with np.errstate(invalid="ignore", divide="ignore"):
        d = ref / r
    d[:, -1:] = np.nan
    return Outcome(d, _gt(d, max_disparity), float(max_disparity))


def _steps_between(records) -> np.ndarray:
    """Training steps since the previous record (NaN at the first; 1 where a step is unknown)."""
    steps = np.array([np.nan if r.step is None else r.step for r in records], dtype=float)
    d = np.full(len(steps), np.nan)
    if len(steps) > 1:
        d[1:] = np.diff(steps)
        d[1:][np.isnan(d[1:])] = 1.0
    return d


def _median_of_previous(a: np.ndarray, window: int) -> np.ndarray:
    """Per row, the median of the (up to) ``window`` rows before it, ignoring NaN (NaN: none)."""
    n = a.shape[0]
    if n == 0:
        return a.copy()
    pad = np.concatenate([np.full((window,) + a.shape[1:], np.nan), a[:-1]])
    win = np.lib.stride_tricks.sliding_window_view(pad, window, axis=0)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # all-NaN windows: NaN, as wanted
        return np.nanmedian(win, axis=-1)


@check("update-jump",
       message="{tensor} update ratio per step jumped {value:.3g}x its median of the previous "
               "{window} updates, and the network's median update ratio {network:.3g}x "
               "(limit {limit:g}x)",
       metric="update_jump", fields=("network",), options={
                "max_jump": Option((int, float), 8.0,
                                   "largest allowed update ratio per step / median of the previous "
                                   "updates, for the tensor and for the network's median", above=1),
                "window": Option(int, 5, "previous updates the median is taken over", minimum=1,
                                 maximum=1000),
                "min_rms": Option((int, float), 1e-3, "norm floor per element for the ratio", above=0),
            }, judges=UPDATE)
def update_jump(h: Histories, max_jump, window, min_rms):
    """Fails when the whole network's updates jump far above their own recent size.

    Why: a learning rate that spikes for an epoch (a schedule bug, a
    callback that sets the wrong value, a resumed run given the wrong rate)
    rewrites the weights in one record and may never show as a NaN or a
    loss jump.  The learning rate as the weights feel it is the update ratio
    ||dW|| / ||W||; this check divides it by the training steps since the
    previous record (batch records cover fewer steps than epochs) and
    compares it with its median over the previous ``window`` updates.  It
    fails where a tensor's ratio and the network's median ratio (over the
    selected trainable, unfrozen tensors that moved) both jumped more than
    ``max_jump`` times: one layer that wakes up is healthy, every layer at
    once is the step size.  Warm-up raises the rate smoothly (at most a few
    times per record) and decays only lower it; a record where the logged
    ``learning_rate`` rose back to a level no higher than it had before (a
    warm restart, a cyclic schedule) is not judged, and neither is one where
    the logged rate did not rise at all (a small network escaping a plateau
    under SGD jumps 10-20x with the step size unchanged).

    Passes: updates 1e-3, 8e-4, 6e-4, 2e-3 (a 3x rise).  Fails: 1e-3,
    8e-4, 6e-4, 5e-2 for every kernel (a 60x jump).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        r = update_ratio(h, min_rms) / _steps_between(h.records)[:, None]
    moving = _gt(r, 0) & ~(h("trainable") == 0) & ~(h("frozen") == 1)
    r = np.where(moving, r, np.nan)
    at = np.flatnonzero(record_mask(h.records, UPDATE))
    at = at[at > 0]
    jump = np.full(r.shape, np.nan)
    network = np.full(r.shape[0], np.nan)
    if at.size and r.shape[1]:
        e = r[at]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # records where nothing moved
            net = np.nanmedian(e, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            jump[at] = e / _median_of_previous(e, window)
            network[at] = net / _median_of_previous(net, window)
    lr, present = h.log("learning_rate")
    if present.any():
        with np.errstate(invalid="ignore"):
            seen = np.fmax.accumulate(np.where(present & np.isfinite(lr), lr, -np.inf))
            restart = np.zeros(len(lr), dtype=bool)
            restart[1:] = present[1:] & (lr[1:] > _shifted(lr, 1, np.inf)[1:]) & (lr[1:] <= seen[:-1])
            # The logged rate did not rise: whatever made the updates jump, it was not the step size.
            steady = np.zeros(len(lr), dtype=bool)
            steady[1:] = present[1:] & present[:-1] & (lr[1:] <= lr[:-1])
        network[restart | steady] = np.nan
    bad = _gt(jump, max_jump) & _gt(network, max_jump)[:, None]
    return Outcome(jump, bad, float(max_jump), extra={"window": window, "network": np.broadcast_to(
        network[:, None], jump.shape)})


# -- regularisation penalties ---------------------------------------------------------

@check("negative-penalty",
       message="{tensor}'s regularisation penalty is {value:.3g} at {where}, below {limit:g}: a "
               "penalty below 0 rewards the weights for growing",
       metric="penalty", needs=("penalty",),
       keywords=("regulariser", "regularizer", "regularisation", "regularization", "penalty"),
       options={
                "min": Option((int, float), 0.0, "lowest penalty a regulariser of the right sign "
                              "gives"),
            })
def negative_penalty(h: Histories, min):
    """Fails when a weight's regularisation penalty is below 0.

    Why: a weight regulariser (a layer's ``kernel_regularizer``, a custom
    ``keras.regularizers.Regularizer``) is a penalty added to the loss, so
    minimising the loss keeps the weights small: L1, L2, L1L2 and
    orthogonality penalties are sums of magnitudes, never below 0.  One that
    returns its negative (``return -self.l2 * ops.sum(ops.square(w))``) pays
    the optimizer for every unit the weights grow; they drift outward for as
    long as training lasts, at a pace a healthy run's weights can also grow
    at, and the loss stays above 0 when the penalty is small beside it, so
    neither the norms nor the loss show it early.  The recorder evaluates
    each regularised tensor's penalty at every record (``penalty``: what
    training adds to the loss for that tensor, null without a regulariser);
    the first record whose penalty is below 0 names the tensor, before
    training has moved it at all when the penalty is wrong from the start.
    Skipped for runs without regularisers and runs recorded before
    weightwatch read them.  A deliberately negative term (a reward for
    spread-out weights) is the one legitimate case: lower ``min`` or disable
    the rule for it.

    Passing: ``penalty`` ``0.0106, 0.0106, 0.0105``.  Failing: ``-0.0873``.
    """
    p = h("penalty")
    if np.isnan(p).all():
        if not h.run.has_column("penalty"):
            raise NotApplicable("the run has no penalty column (recorded before weightwatch read "
                                "regularisers)")
        if h.run.source != "weightwatch":
            raise NotApplicable("a weight dump records no regularisers")
        raise NotApplicable("no penalty recorded for the selected tensors (no weight regulariser, "
                            "or one that could not be evaluated: see the recording's warnings)")
    return Outcome(p, _lt(p, min), float(min))


# -- gradients (from the optimizer's state) -------------------------------------------
def _gradients(h: Histories) -> np.ndarray:
    """The selected tensors' ``grad_rms``; NotApplicable when the run holds no estimate."""
    g = h("grad_rms")
    if not np.isfinite(g).any():
        if not h.run.has_column("grad_rms"):
            raise NotApplicable("the run has no grad_rms column (recorded before weightwatch "
                                "recorded gradient estimates, or imported from a weight dump)")
        estimator = h.run.manifest.get("gradients")
        raise NotApplicable("no gradient estimate recorded for the selected tensors"
                            + (f" (estimator {estimator})" if estimator else
                               f" (the optimizer, {h.run.manifest.get('optimizer') or 'unknown'}, "
                               "has no state to estimate it from)"))
    return g


@check("grad-disparity",
       message="{tensor}: the last layer's gradient RMS is {value:.3g} times this one's "
               "(limit {limit:g})",
       metric="grad_disparity", needs=("grad_rms",), options={
                "max_disparity": Option((int, float), 100.0,
                                        "largest ratio between the last tensor's gradient RMS and "
                                        "this one's", above=1),
            })
def grad_disparity(h: Histories, max_disparity):
    """Fails when a tensor's gradient is orders of magnitude smaller than the last layer's.

    Why: in a deep network with saturating activations (sigmoid, tanh) the
    gradient shrinks layer by layer on its way back ("vanishing gradients").
    Under SGD the weights show it (see update-disparity), but Adam, RMSprop
    and Adagrad divide each update by the gradient's own running size, so
    the early layers keep moving at about the learning rate while their
    gradient is 10^6 times smaller.  ``grad_rms``, read from the optimizer's
    own state, shows it whatever the optimizer.  The reference at each
    record is the last selected tensor (in model order, normally the output
    kernel) that has an estimate; ``inf`` means the optimizer's state holds
    no gradient at all for the tensor.
    """
    g = _gradients(h)
    finite = np.isfinite(g)
    ref = np.full(g.shape[0], np.nan)
    rows = np.flatnonzero(finite.any(axis=1))
    last = g.shape[1] - 1 - np.argmax(finite[rows, ::-1], axis=1)
    ref[rows] = g[rows, last]
    with np.errstate(invalid="ignore", divide="ignore"):
        d = ref[:, None] / g
    d[rows, last] = np.nan
    d[~(ref > 0)[:, None] | ~finite] = np.nan
    return Outcome(d, _gt(d, max_disparity), float(max_disparity))


@check("grad-growth",
       message="{tensor} gradient RMS grew {value:.3g}x in one record (limit {limit:g}x)",
       metric="grad_growth", needs=("grad_rms",), options={
                "max_ratio": Option((int, float), 100.0, "largest allowed grad_rms_t / grad_rms_t-1",
                                    above=1),
                "min_fraction": Option((int, float), 0.01,
                                       "growth is measured from at least this fraction of the "
                                       "largest selected gradient RMS at the previous record",
                                       above=0),
            })
def grad_growth(h: Histories, max_ratio, min_fraction):
    """Fails when a tensor's gradient multiplies by more than ``max_ratio`` between records.

    Why: exploding gradients (a learning rate far too high, a recurrent
    network whose Jacobians grow with the sequence) multiply from record to
    record long before the weights overflow, and under an adaptive optimizer
    the weights need not show it at all: each step stays about the learning
    rate in size.  Healthy gradients shrink or drift as a run converges;
    they grow by a few times at most, when a layer starts to learn.  Growth
    is measured from a floor of ``min_fraction`` of the network's largest
    gradient at the previous record, so a vanishingly small gradient that
    recovers is not taken for an explosion.
    """
    g = _gradients(h)
    prev = h.prev("grad_rms")
    with np.errstate(invalid="ignore"):
        top = np.fmax.reduce(np.where(np.isfinite(prev), prev, np.nan), axis=1, initial=-np.inf)
    floor = np.where(np.isfinite(top) & (top > 0), top * min_fraction, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = g / np.fmax(prev, floor[:, None])
    r[~np.isfinite(prev) | ~np.isfinite(g)] = np.nan
    return Outcome(r, _gt(r, max_ratio), float(max_ratio))


# -- training logs ------------------------------------------------------------------
@check("nonfinite-log", scope=LOG, message="{key} became non-finite (NaN or Inf) at {where}",
       metric="log", keywords=("nan", "inf"), options={
                "keys": Option(list, ["loss"], "log entries that must stay finite"),
            }, validate=lambda o: None if o["keys"] and len(o["keys"]) <= 1000 and all(
                isinstance(k, str) for k in o["keys"]) else '"keys" must be a non-empty list of log names '
               "(at most 1000)")
def nonfinite_log(h: Histories, keys):
    """Fails when the loss (or another logged metric) becomes NaN or Inf.

    Why: a non-finite loss means every following update is garbage; Keras'
    ``TerminateOnNaN`` stops on it, and so should the gate on the run.
    """
    cols, bads = [], []
    for k in keys:
        v, present = h.log(k)
        cols.append(np.where(present & np.isnan(v), np.nan, v))
        bads.append(present & ~np.isfinite(v))
    return Outcome(np.stack(cols, 1), np.stack(bads, 1), None, subjects=list(keys))


@check("loss-divergence", scope=LOG,
       message="{key} rose to {loss:.4g}, {value:.3g}x its best so far ({best:.4g}; limit {limit:g}x)",
       metric="loss/best", fields=("loss", "best"), judges=EPOCHS, options={
                "key": Option(str, "loss", "log entry to watch"),
                "max_ratio": Option((int, float), 3.0, "largest allowed loss / best loss so far", above=1),
            })
def loss_divergence(h: Histories, key, max_ratio):
    """Fails when the loss climbs far above the best value it reached.

    Why: a loss that was falling and then grows several-fold is diverging:
    the step size is too large for the region the weights reached, or the
    data changed.  Measured against the best loss so far, so noise around a
    plateau does not trip it.  The figure judged is loss / best loss so far;
    the message gives the loss itself and that best.
    """
    v, _ = h.epoch_log(key)
    best = np.fmin.accumulate(np.where(np.isfinite(v), v, np.inf))
    prev_best = np.concatenate([[np.inf], best[:-1]])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(prev_best > 0, v / prev_best, np.nan)
    ratio[~np.isfinite(prev_best)] = np.nan
    return Outcome(ratio[:, None], _gt(ratio, max_ratio)[:, None], float(max_ratio), subjects=[key],
                   extra={"loss": v[:, None], "best": np.where(np.isfinite(prev_best), prev_best, np.nan)[:, None]})


@check("loss-plateau", scope=LOG,
       message="{key} improved by {value:.2%} over the last {window} epochs (needs {limit:.2%})",
       metric="improvement", judges=EPOCHS, options={
                "key": Option(str, "loss", "log entry to watch"),
                "window": Option(int, 5, "epochs over which the loss must improve", minimum=1,
                                 maximum=1_000_000),
                "min_improvement": Option((int, float), 0.001,
                                          "smallest relative improvement of the best loss over the window",
                                          minimum=0),
            })
def loss_plateau(h: Histories, key, window, min_improvement):
    """Flags a loss that stopped improving for ``window`` epochs.

    Why: a run that plateaus early burns compute for nothing; it is usually a
    learning rate too small, a saturated network, or a finished run whose
    schedule should stop it (EarlyStopping).
    """
    v, present = h.epoch_log(key)
    at = np.flatnonzero(record_mask(h.records, EPOCHS))   # the window counts epochs
    e = v[at]
    best = np.fmin.accumulate(np.where(np.isfinite(e), e, np.inf))
    imp_e = np.full(len(e), np.nan)
    if len(e) > window:
        old = best[:-window]
        new = best[window:]
        with np.errstate(invalid="ignore", divide="ignore"):
            imp_e[window:] = np.where(np.isfinite(old) & (old != 0), (old - new) / np.abs(old), np.nan)
    imp = np.full(len(v), np.nan)
    imp[at] = imp_e
    return Outcome(imp[:, None], _lt(imp, min_improvement)[:, None], float(min_improvement),
                   subjects=[key], extra={"window": window})


def _chance_loss(h: Histories) -> float:
    """The manifest's ``chance_loss``; NotApplicable when the run has none."""
    chance = h.run.manifest.get("chance_loss")
    if (not isinstance(chance, (int, float)) or isinstance(chance, bool)
            or not np.isfinite(chance) or not chance > 0):
        raise NotApplicable("the run records no chance_loss (its loss is no crossentropy, the "
                            "model has several outputs, or the run was recorded before "
                            "weightwatch recorded it)")
    return float(chance)


@check("loss-at-chance", scope=LOG,
       message="{key} has sat at chance level for {records} records: {value:.1%} from the loss of "
               "a constant predictor (tolerance {limit:.0%})",
       metric="from_chance", options={
                "key": Option(str, "loss", "log entry to watch"),
                "tolerance": Option((int, float), 0.02,
                                    "largest relative distance from the chance loss that counts as at "
                                    "chance", above=0),
                "records": Option(int, 2, "consecutive epoch records at chance", minimum=1),
            })
def loss_at_chance(h: Histories, key, tolerance, records):
    """Fails when the loss has sat at the loss of a constant predictor for ``records`` epochs.

    Why: a crossentropy over C classes is ln C (ln 2 for a binary one) when
    the model predicts the same uniform distribution for every input: the
    loss of a model that has learned nothing.  A loss that settles there and
    stays means no signal reaches the weights - labels shuffled apart from
    their inputs by a pipeline bug, gradients that vanish before the early
    layers, dead units - however much the weights move.  The chance loss
    comes from the run's manifest (``chance_loss``); runs without one are
    skipped.  Only epoch-end records count (a batch record's loss is a
    running mean over part of an epoch); the value judged is the loss's
    relative distance from the chance loss, ``|loss - chance| / chance``.
    """
    chance = _chance_loss(h)
    v, _ = h.log(key)
    epoch_end = np.array([r.trigger == "epoch" for r in h.records], dtype=bool)
    with np.errstate(invalid="ignore"):
        dist = np.where(epoch_end, np.abs(v - chance) / chance, np.nan)
    # The streak of consecutive epoch records at chance, ending at each of them.
    e = np.flatnonzero(epoch_end)
    near = ~_gt(dist[e], tolerance) & ~np.isnan(dist[e])
    bad = np.zeros(len(v), dtype=bool)
    bad[e] = _streaks(near) >= records
    return Outcome(dist[:, None], bad[:, None], float(tolerance), subjects=[key],
                   extra={"records": records})


@check("loss-back-to-chance", scope=LOG,
       message="{key} rose to {value:.1%} of the chance loss after it had been down to {best:.1%} of it "
               "(back at chance from {limit:.1%})",
       metric="loss/chance", fields=("best",), judges=EPOCHS, options={
                "key": Option(str, "loss", "log entry to watch"),
                "below": Option((int, float), 0.03,
                                "how far below the chance loss (relative) the loss must have been "
                                "for a climb back to count", above=0, maximum=1),
                "tolerance": Option((int, float), 0.0,
                                    "how close to the chance loss (relative, from below) counts as "
                                    "back at chance", minimum=0, maximum=1),
                "max_ratio": Option((int, float), 2.0,
                                    "loss / chance loss above which the rise is a divergence, not a "
                                    "return to chance (loss-diverging and loss-above-chance judge it)",
                                    above=1),
            }, validate=lambda o: None if o["tolerance"] < o["below"] else
               f'"tolerance" ({o["tolerance"]:g}) must be below "below" ({o["below"]:g}): a loss still '
               'falling would count as back at chance')
def loss_back_to_chance(h: Histories, key, below, tolerance, max_ratio):
    """Fails when a loss that had fallen below chance climbs back to it.

    Why: a model that beat the loss of a constant predictor had found signal
    in its inputs; the loss climbing back to chance means the signal is gone
    - labels come apart from their inputs mid-run (a shuffle applied to one
    and not the other, a sharded pipeline that restarts out of step), or a
    learning-rate spike wiped out what was learnt.  Healthy runs wander near
    chance before they learn, which ``loss-at-chance`` cannot tell from
    shuffled labels; a return after having left it is what they do not do.
    The value judged is loss / chance loss at epoch records, against the
    lowest value before it; a loss far above chance (``max_ratio``) is a
    divergence, which other checks report.  The chance loss is that of the
    uniform predictor (ln C), so a task whose classes are imbalanced starts
    below it without having learnt anything.  Skipped when the manifest has no
    ``chance_loss``.

    Passes: chance ln 4, losses/chance 1.00, 0.90, 0.85, 0.98.  Fails:
    1.00, 0.90, 0.85, 1.02 (back at chance after 15% below it).
    """
    chance = _chance_loss(h)
    v, _ = h.epoch_log(key)
    ratio = v / chance
    best = np.fmin.accumulate(np.where(np.isfinite(ratio), ratio, np.inf))
    prev_best = np.concatenate([[np.inf], best[:-1]])
    bad = ~_lt(ratio, 1.0 - tolerance) & ~_gt(ratio, max_ratio) & ~np.isnan(ratio) & (prev_best <= 1.0 - below)
    return Outcome(ratio[:, None], bad[:, None], 1.0 - float(tolerance), subjects=[key],
                   extra={"best": np.where(np.isfinite(prev_best), prev_best, np.nan)[:, None]})


def _loss_floor(h: Histories) -> float | None:
    """The manifest's ``loss_floor`` (the least value the compiled loss can take), or None."""
    floor = h.run.manifest.get("loss_floor")
    if isinstance(floor, (int, float)) and not isinstance(floor, bool) and np.isfinite(floor):
        return float(floor)
    return None


def _learning_rate_at(h: Histories, at: np.ndarray) -> np.ndarray | None:
    """The logged ``learning_rate`` at the records ``at`` (NaN where absent), or None without one."""
    lr, present = h.log("learning_rate")
    return np.where(present, lr, np.nan)[at] if present.any() else None


@check("loss-unbounded", scope=LOG,
       message="{key} is below 0 and falls faster every epoch: {loss:.4g}, its fall grown {limit:g}x or "
               "more each epoch for {records} epochs (the last {value:.3g}x)",
       metric="fall growth", fields=("loss",), judges=EPOCHS, options={
                "key": Option(str, "loss", "log entry to watch"),
                "growth": Option((int, float), 1.1,
                                 "smallest ratio of an epoch's fall to the one before that counts as "
                                 "speeding up", above=1),
                "records": Option(int, 3, "consecutive epochs whose fall speeds up", minimum=1,
                                  maximum=1000),
                "min_fall": Option((int, float), 0.01,
                                   "smallest fall that counts, relative to the largest loss so far "
                                   "(the built-in loss-unbounded asks 0.35 and 5 epochs: a healthy "
                                   "negative log-likelihood escaping a plateau speeds up too)",
                                   minimum=0),
            })
def loss_unbounded(h: Histories, key, growth, records, min_fall):
    """Fails when a negative loss falls faster and faster: the optimizer climbs, not descends.

    Why: a loss whose floor is unknown (a custom loss, a negative
    log-likelihood) may legitimately go below 0, so ``loss-below-zero``
    cannot judge it; but a loss that is minimised converges, its
    epoch-to-epoch fall shrinking in the end.  A loss negated by mistake
    (gradient ascent on a squared error or a crossentropy) has no floor: it
    falls geometrically, each epoch's fall larger than the last.  The value
    judged at an epoch record is its fall over the fall of the epoch before,
    where the loss is below 0 at both ends of the later fall (the earlier
    one may start above 0: a loss crossing 0); a fall smaller than
    ``min_fall`` times the largest loss so far (in size) does not count -
    not the loss just before it, whose size is no yardstick right after it
    crossed 0 - and neither do
    epochs whose logged ``learning_rate``
    rose (warm-up, a restart), since a larger step speeds up any fall.  A
    run whose manifest records a ``loss_floor`` passes: its loss is bounded
    below, and ``loss-below-floor`` judges whether it stays above the floor.
    The check's defaults are its sensitive side (the warning
    ``loss-unbounded-slow``); the built-in error rule asks falls of 35% of
    the largest loss for 5 epochs, because a healthy negative
    log-likelihood speeds its fall up for epochs too, escaping a plateau
    (-0.83, -0.85, -0.87, -0.89, -0.92 ...) or descending from a small
    positive start (-0.003, -0.015, -0.03 ... -0.66, 1.6x an epoch for 8
    epochs), while the run zoo's negated squared errors grow by half an
    epoch and go on.

    Passes: -0.2, -0.39, -0.61, -0.78, -0.95 (falls 0.19, 0.22, 0.17, 0.17).
    Fails: -1.21, -1.8, -2.69, -3.98, -5.79 (falls 0.59, 0.89, 1.29, 1.81).
    """
    v, _ = h.epoch_log(key)
    if _loss_floor(h) is not None:
        # The loss function is bounded below: it cannot fall without end (loss-below-floor judges
        # whether it stays above its floor), and a plateau escape towards the floor is no ascent.
        return Outcome(np.full((len(v), 1), np.nan), np.zeros((len(v), 1), dtype=bool), float(growth),
                       subjects=[key], extra={"loss": v[:, None], "records": records})
    at = np.flatnonzero(record_mask(h.records, EPOCHS))
    e = v[at]
    fall = np.full(len(e), np.nan)
    fall[1:] = e[:-1] - e[1:]
    # A fall's yardstick is the loss's largest size so far, not the loss just before the fall: right
    # after a crossing that is near 0, and a healthy NLL descending from a small positive start
    # grows 1.6x an epoch for 8 epochs there (-0.003, -0.015, -0.03 ... -0.66).  The price: after a
    # large positive start, a negated loss counts only once its falls reach a third of that size.
    scale = np.fmax.accumulate(np.where(np.isfinite(e), np.abs(e), np.nan))
    with np.errstate(invalid="ignore"):
        fall[1:][~(fall[1:] >= min_fall * scale[:-1])] = np.nan   # too small to count
    speed = np.full(len(e), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        speed[2:] = np.where((fall[1:-1] > 0) & (e[1:-1] < 0) & (e[2:] < 0), fall[2:] / fall[1:-1], np.nan)
    l = _learning_rate_at(h, at)
    if l is not None:
        with np.errstate(invalid="ignore"):
            speed[1:][l[1:] > l[:-1]] = np.nan
    fast = ~_lt(speed, growth) & ~np.isnan(speed)
    out = np.full(len(v), np.nan)
    out[at] = speed
    bad = np.zeros(len(v), dtype=bool)
    bad[at] = _streaks(fast) >= records
    return Outcome(out[:, None], bad[:, None], float(growth), subjects=[key],
                   extra={"loss": v[:, None], "records": records})


#: A loss term whose sign flipped lands about as far below 0 as the loss was above it (a
#: crossentropy negated at 0.91 reads -0.76); a loss that only dips below 0 lands far closer to it
#: (a healthy NLL near its floor: 0.063 to -0.006).  A crossing counts when it lands at least this
#: fraction of the loss before it below 0.
FLIP_DEPTH = 0.25
#: ... and moves it by about twice its size: a crossing counts when it falls by at least this
#: fraction of the largest loss so far (noise around 0 crosses it by far less: 0.014 to -0.018,
#: a healthy NLL whose loss had been 0.18).
FLIP_SIZE = 0.5

#: A learning rate that fell to this fraction of the epoch before's or less was cut (a step decay,
#: ReduceLROnPlateau), not decayed smoothly (exponential or cosine decay lose a few percent an
#: epoch): a cut can drop the loss at once, as a plateau escape does.
LR_CUT = 2 / 3


@check("loss-sign-flip", scope=LOG,
       message="{key} fell from {prev:.4g} to {loss:.4g} in one epoch, to below 0: a fall {value:.3g}x "
               "{against} (limit {limit:g}x)",
       metric="fall / previous fall", fields=("prev", "loss", "against"), judges=EPOCHS, options={
                "key": Option(str, "loss", "log entry to watch"),
                "ratio": Option((int, float), 5.0,
                                "smallest ratio of the fall across 0 to the epoch before's that "
                                "counts as a flip", above=1),
                "min_fall": Option((int, float), 0.01,
                                   "the epoch before's fall is taken as at least this, relative to "
                                   "the largest loss so far (a loss on a plateau, or rising, before "
                                   "it flips; noise around a loss converged near 0)", above=0),
                "min_drop": Option((int, float), 2.0,
                                   "a fall between two losses already below 0 counts only when at "
                                   "least this times the largest loss so far (a loss blowing up, "
                                   "not one converging below 0)", above=0),
            })
def loss_sign_flip(h: Histories, key, ratio, min_fall, min_drop):
    """Fails when a loss jumps below 0 in one epoch, its fall many times the last one.

    Why: a loss whose floor is unknown (a custom loss, a negative
    log-likelihood) may cross 0, but a minimised one does so smoothly, its
    fall no larger than the epochs before it.  A term whose sign flips in
    the middle of a run (a loss weight scheduled through 0, a maximised
    objective switched on, a custom loss negated on some branch) turns the
    loss over at once: about the same size, the other sign, a fall many
    times the previous epoch's; ``loss-unbounded`` needs five epochs of an
    accelerating fall to say so.  The value judged at an epoch record whose
    loss is below 0 while the epoch before's was above it is its fall over
    the epoch before's fall, the latter taken as at least ``min_fall`` times
    the largest loss so far (a loss flat on a plateau, or rising, before it
    flips; and a loss converged near 0, whose noise crosses 0 both ways, is
    measured against the loss's own scale, not against how close to 0 it
    got).  The first epoch of a run has no fall before it and is not judged,
    nor are epochs whose logged ``learning_rate`` rose (a warm-up, a restart)
    or was cut to 2/3 or less (a step decay, ReduceLROnPlateau: a new step
    size changes any fall; a smooth decay is judged), nor a fall to a
    non-finite loss (``nonfinite-loss`` reports it).  A run whose manifest
    records a ``loss_floor`` passes: ``loss-below-floor`` judges it exactly.

    A loss that has been below 0 before and comes back across it is
    recovering from a spike, not flipping (a Gaussian NLL at a large step
    size: -2.16, +4.21, -0.81), and is not judged; nor is one that lands
    less than :data:`FLIP_DEPTH` of its size below 0, or falls by less than
    :data:`FLIP_SIZE` of its largest size (it dipped under 0: noise).  A dip
    that shallow does not count as having been below 0.  A loss already below 0
    that falls by more than ``min_drop`` times its largest size so far, many
    times faster than it fell the epoch before, is the same term taking over
    after it crossed (or a loss negated from the start whose weights begin
    to blow up): it is judged the same way.  A healthy loss converging below
    0 falls by a fraction of its size (a Gaussian NLL sped its fall up 5.4x
    from -0.28 to -0.49, a fall of 0.23x its largest loss, 0.88); one that
    rose the epoch before is recovering, and is not judged.

    Passes: 0.39, 0.18, -0.006, -0.2 (falls 0.21, 0.19 across 0); 0.3, 0.1,
    0.0101, 0.0100, -0.002 (noise at 0 after a flat epoch: a fall of 0.012,
    4x 1% of 0.3, to a landing 0.2x the loss below 0); 0.88, 0.19, -0.05,
    -0.24, -0.28, -0.49.  Fails:
    1.05, 0.91, -0.76 (a fall of 1.67 after one of 0.14: 12x); 1.07, 0.28,
    0.012, -0.023, -64 (a fall of 64 after one of 0.035, 60x the largest loss).
    """
    v, _ = h.epoch_log(key)
    prev = np.full((len(v), 1), np.nan)
    if _loss_floor(h) is not None:
        return Outcome(np.full((len(v), 1), np.nan), np.zeros((len(v), 1), dtype=bool), float(ratio),
                       subjects=[key], extra={"prev": prev, "loss": v[:, None], "against": ""})
    at = np.flatnonzero(record_mask(h.records, EPOCHS))
    e = v[at]
    value = np.full(len(e), np.nan)
    prior = np.full(len(v), np.nan)       # the fall into the epoch before, at each judged record
    if len(e) >= 3:
        before = e[:-2] - e[1:-1]                       # the fall into the epoch before the flip
        scale = np.fmax.accumulate(np.where(np.isfinite(e), np.abs(e), np.nan))   # the loss's size so far
        with np.errstate(invalid="ignore"):
            base = np.where(np.isnan(before), np.nan, np.fmax(before, min_fall * scale[1:-1]))
            fall = e[1:-1] - e[2:]
            below = (e[2:] < 0) & np.isfinite(e[2:])
            # A crossing counts while the loss had never been below 0: one that was, rose across 0
            # (a spike) and comes back is recovering.  Below 0, the epoch before must have fallen too.
            # Been below 0: by a quarter of its size so far or more; a shallow dip, which is no flip
            # either, does not stop a later crossing from being judged.
            deep = np.where(np.isnan(e), False, (e < 0) & (-e >= FLIP_DEPTH * scale))
            never_below = ~np.logical_or.accumulate(deep)[:-2]
            flip = below & (((e[1:-1] >= 0) & never_below & (-e[2:] >= FLIP_DEPTH * e[1:-1])
                             & (fall >= FLIP_SIZE * scale[1:-1]))
                            | ((e[1:-1] < 0) & (before > 0) & (fall >= min_drop * scale[1:-1])))
            value[2:] = np.where(flip & np.isfinite(base), fall / base, np.nan)
            prior[at[2:]] = np.where(before < min_fall * scale[1:-1], -np.inf, before)

    def against(r: int, j: int) -> str:   # what the fall is measured against, in words
        if prior[r] == -np.inf:
            return (f"the floor of the epoch before's fall, {min_fall:g} x the largest loss so far, "
                    f"as the epoch before {_before(r)}")
        return "the epoch before's"

    def _before(r: int) -> str:
        k = int(np.searchsorted(at, r))
        d = e[k - 1] - e[k - 2] if k >= 2 else np.nan
        return "rose" if d > 0 else "did not fall" if d == 0 else "barely fell"

    l = _learning_rate_at(h, at)
    if l is not None:
        with np.errstate(invalid="ignore"):
            value[1:][(l[1:] > l[:-1]) | (l[1:] <= LR_CUT * l[:-1])] = np.nan
    out = np.full(len(v), np.nan)
    out[at] = value
    p = np.full(len(v), np.nan)
    p[at[1:]] = e[:-1]
    return Outcome(out[:, None], (~_lt(out, ratio) & ~np.isnan(out))[:, None], float(ratio),
                   subjects=[key], extra={"prev": p[:, None], "loss": v[:, None], "against": against})


@check("loss-below-floor", scope=LOG,
       message="{key} fell to {value:.4g}, below {limit:g}, which its loss function cannot reach",
       metric="log", options={
                "key": Option(str, "loss", "log entry to watch"),
                "tolerance": Option((int, float), 1e-6,
                                    "how far below the floor still counts as rounding", minimum=0),
            })
def loss_below_floor(h: Histories, key, tolerance):
    """Fails when a loss that cannot be negative goes below zero.

    Why: mean squared error, crossentropies, hinge and Keras' other
    non-negative losses are at least 0, and so are regularisation penalties;
    the loss Keras logs is their sum.  A logged loss below 0 means a term
    enters with the wrong sign - a regulariser or a custom loss term negated
    by mistake - and the optimizer is being rewarded for pushing weights
    outward.  The floor comes from the run's manifest (``loss_floor``, set
    when every compiled loss is such a built-in, or declared for a custom
    loss with ``WatchCallback(loss_floor=0.0)``; a declared floor that is
    wrong fails this rule too); runs without one are skipped (a custom loss,
    cosine similarity and Poisson can go below 0).
    """
    floor = _loss_floor(h)
    if floor is None:
        raise NotApplicable("the run records no loss_floor (a custom or possibly negative loss: "
                            "declare a custom loss's floor with WatchCallback(loss_floor=...); or a "
                            "run recorded before weightwatch recorded it)")
    v, present = h.log(key)
    return Outcome(v[:, None], _lt(v, floor - tolerance)[:, None] & present[:, None], float(floor),
                   subjects=[key])


@check("loss-above-chance", scope=LOG,
       message="{key} is {value:.3g}x the loss of a constant predictor (limit {limit:g}x)",
       metric="loss/chance", judges=EPOCHS, options={
                "key": Option(str, "loss", "log entry to watch"),
                "max_ratio": Option((int, float), 8.0,
                                    "largest allowed loss / chance loss at an epoch record", above=1),
            })
def loss_above_chance(h: Histories, key, max_ratio):
    """Fails when a crossentropy is many times the loss of a constant, uniform predictor.

    Why: predicting the uniform distribution for every input scores the
    chance loss (ln C over C classes, ln 2 for a binary crossentropy); a
    model that scores many times worse is not merely untrained but
    confidently wrong, its logits blown up - an exploding recurrent network,
    a learning rate far too high - even while every weight and the loss stay
    finite and the loss slowly falls.  Early in a healthy run the loss can be
    a few times the chance loss (an unlucky initialisation); the value
    judged is loss / chance loss at the begin and epoch records.  Skipped
    when the manifest has no ``chance_loss``.

    Passes: chance ln 4 = 1.386, losses 3.1, 1.2, 0.6.  Fails: losses 55,
    60, 48 (40x the chance loss).
    """
    chance = _chance_loss(h)
    v, _ = h.epoch_log(key)
    ratio = v / chance
    return Outcome(ratio[:, None], _gt(ratio, max_ratio)[:, None], float(max_ratio), subjects=[key])
# -- data-parallel replicas -----------------------------------------------------------
@check("replica-divergence",
       message="{tensor} differs between data-parallel replicas at {where}: checksum spread "
               "{value:.3g} (limit {limit:g})",
       metric="replica_spread", needs=("replica_spread",), keywords=("replica", "distributed"),
       options={
                "max_spread": Option((int, float), 1e-6,
                                     "largest relative difference between a replica's checksum of "
                                     "the tensor and the first replica's", minimum=0),
            })
def replica_divergence(h: Histories, max_spread):
    """Fails when the replicas of a data-parallel run hold different copies of a tensor.

    Why: in data-parallel training (``tf.distribute.MirroredStrategy``,
    ``keras.distribution.DataParallel``, several processes on JAX or torch)
    every replica applies the same all-reduced update to its own copy of
    every weight, so the copies must stay identical.  When they do not - an
    all-reduce that is skipped or wrong, BatchNorm moving statistics updated
    from each replica's own batch, a random seed that differs between
    processes, a callback that changes the weights on one process - each
    replica trains a different model and nothing fails: the loss of process
    0 looks fine.  At every record each replica sends three float64 figures
    per tensor (sum, sum of |x|, sum of squares; no tensor crosses the
    network) and ``replica_spread`` is the largest relative difference from
    the first replica's.  Replicas of a healthy run agree bit for bit
    (spread 0 in every calibration run: MirroredStrategy over 2 devices, JAX
    DataParallel over 2 devices and over 2 processes, torch with gloo); noise
    of 1e-3 on one replica's kernel gives 1e-4 and more, float32 rounding of
    a single element 1e-10.  Skipped for runs with one replica (one process
    on one device) and runs recorded before weightwatch compared replicas.

    Passing: ``replica_spread`` ``0, 0, 0``.  Failing: ``0, 0, 3.2e-4``.
    """
    s = h("replica_spread")
    if np.isnan(s).all():
        if not h.run.has_column("replica_spread"):
            raise NotApplicable("the run has no replica_spread column (recorded before weightwatch "
                                "compared data-parallel replicas, or imported from a weight dump)")
        raise NotApplicable("the run has one replica (one process on one device): there are no "
                            "copies of the weights to compare")
    return Outcome(s, _gt(s, max_spread), float(max_spread))
