"""Reference bands: how a known-good run trains, learnt from the seed-to-seed spread of a few.

A candidate run (a pull request's training) is compared with reference runs
(the same configuration trained on ``main``, a few seeds): tensor by tensor
and record by record, its norm, update ratio and gradient, and every logged
metric, should sit inside the band the references span.  A learning rate
changed threefold, a layer frozen by mistake or an initialiser off by 10x
breaks no absolute rule but leaves that band.

The band is learnt in log10 space (these figures are scales: a factor of 3
is the same departure at 1e-4 as at 10), as a **median** and a **robust
spread** at each point (``sigma = range / d2(k)`` of k <= 9 references, see
:func:`spread_of`), raised to the tensor's (or log's) median ``sigma`` over
all records, because two or three references can agree at one record by
chance, and widened by the median's own error.  A check then accepts
``median +- max(spread * sigma, log10(tolerance))``: the band widens where
the references disagree (right after a learning-rate restart, say) and is
never narrower than ``tolerance`` either way.  With a single reference there
is no spread, and the band is ``single_tolerance`` either way of it.

Besides each tensor's own figures, the update ratio and the gradient are
also banded *relative to the run's median kernel* at each record
(:data:`RELATIVE_METRICS`): how the layers share the training between them,
which a global learning-rate change leaves alone and an activation,
normalisation or dropout change does not.

Matching between runs:

* **Tensors by path**, without the model's own prefix and surviving Keras'
  per-process instance counters (``sequential_3/dense_7/kernel`` is
  ``sequential/dense/kernel`` of another process): paths are grouped by their
  name with counters removed (``dense_7`` -> ``dense``) and, within a group of
  the same size on both sides, paired in model order; a shape that differs
  is no match.  Where a group's sizes differ (a layer added or removed) and
  the counters shifted, identical paths would pair the wrong layers: the
  group is then paired in model order by shape (the most pairs of equal
  shape that keep the order), unless identical paths pair more.  What does
  not match is listed, never dropped silently.
* **Records by epoch** (and by step, for batch records), the n-th occurrence
  with the n-th; runs of different lengths are compared over their common
  part, and the alignment says so.

Everything here is numpy over whole histories: learning is a median over
references per metric, aligning is two index arrays and a gather.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..errors import BaselineError
from ..run.model import Run
from ..run.schema import BATCH, GUARD, where_label

#: The tensor figures a baseline holds, and how each is read from a run.
TENSOR_METRICS = ("l2", "update_ratio", "grad_rms", "incoherence")
#: Figures of an update that compare it with the previous update as well: judged where both
#: spans are the baseline's.
TWO_SPAN_METRICS = ("incoherence",)
#: Figures of an update (its span must be the baseline's).
SPAN_METRICS = ("update_ratio", "rel_update_ratio") + TWO_SPAN_METRICS
#: The same figures relative to the run's own median kernel at each record (``rel_`` + figure):
#: a change that moves every layer together (a learning rate) cancels out, one that moves some
#: layers against the others (an activation swapped, input normalisation dropped, dropout)
#: stays.  See :func:`relative_log`.
RELATIVE_METRICS = ("rel_grad_rms", "rel_update_ratio")
ALL_METRICS = TENSOR_METRICS + RELATIVE_METRICS
#: The tensors whose median a relative figure is taken against: kernels and embeddings (biases
#: and normalisation parameters are judged relative to them, never part of the yardstick).
NORMALISER_ROLES = ("kernel", "embedding")
#: Values below this are taken as this before the log (an update ratio of exactly 0).
LOG_FLOOR = 1e-30
#: The update ratio's norm floor per element, as the absolute checks' default (see checks.update_ratio).
UPDATE_MIN_RMS = 1e-3
#: sigma = MAD_SCALE * MAD for normally distributed figures.
MAD_SCALE = 1.4826

_COUNTER = re.compile(r"_\d+$")


def canonical(path: str) -> str:
    """The path with Keras' instance counters removed from every part: ``dense_7`` -> ``dense``."""
    return "/".join(_COUNTER.sub("", part) for part in path.split("/"))


def local_path(path: str, model: str | None) -> str:
    """The path without the model's own prefix (``sequential_3/dense/kernel`` -> ``dense/kernel``)."""
    if model and path.startswith(model + "/"):
        return path[len(model) + 1:]
    return path


@dataclass(frozen=True)
class TensorRef:
    """A tensor as matching sees it: its local path (model prefix removed) and shape; its role
    (kernel, bias, ...) only says which tensors a relative figure is measured against."""

    path: str
    shape: tuple | None = None
    role: str | None = field(default=None, compare=False)


def match_tensors(ours: list[TensorRef], theirs: list[TensorRef]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """For each of ``ours``, the index of its match in ``theirs`` (-1: none), and why some of
    ``theirs`` found no match: ``[(index, reason)]``.

    Groups by counter-free path; a group of equal size on both sides pairs in
    order (the same architecture creates its layers in the same order, whatever
    the counters).  Otherwise identical paths pair, unless pairing in model
    order by shape pairs more (a layer added in another process shifts the
    later counters: ``dense_5`` there is ``dense_4`` here).  A pair whose
    shapes differ is no match.
    """
    mine: dict[str, list[int]] = defaultdict(list)
    other: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(ours):
        mine[canonical(t.path)].append(i)
    for j, t in enumerate(theirs):
        other[canonical(t.path)].append(j)
    out = np.full(len(ours), -1, dtype=np.intp)
    unmatched: list[tuple[int, str]] = []
    for key, js in other.items():
        is_ = mine.get(key, [])
        if len(is_) == len(js):
            pairs = list(zip(is_, js))
        else:
            by_path = {ours[i].path: i for i in is_}
            pairs = [(by_path[theirs[j].path], j) for j in js if theirs[j].path in by_path]
            # A layer added or removed in another process shifts every later counter, so identical
            # paths name different layers: pair in model order by shape instead, when that pairs more.
            by_order = _pair_in_order(ours, theirs, is_, js)
            if len(by_order) > sum(_same_shape(ours[i].shape, theirs[j].shape) for i, j in pairs):
                pairs = by_order
        paired = set()
        for i, j in pairs:
            a, b = ours[i].shape, theirs[j].shape
            if a is not None and b is not None and tuple(a) != tuple(b):
                unmatched.append((j, f"shape {_shape(a)} here, {_shape(b)} in the reference"))
                paired.add(j)
                continue
            out[i] = j
            paired.add(j)
        unmatched += [(j, "not in this run") for j in js if j not in paired]
    unmatched.sort()
    return out, unmatched


def _same_shape(a, b) -> bool:
    return a is None or b is None or tuple(a) == tuple(b)


#: Above this many tensors on either side of one name group, order-and-shape pairing is skipped
#: (a quadratic alignment): identical paths pair, the rest are listed.
_ALIGN_MAX = 2000


def _pair_in_order(ours, theirs, is_: list[int], js: list[int]) -> list[tuple[int, int]]:
    """The most pairs of equal shape that keep both sides in model order (a longest common
    subsequence over the shapes of one counter-free name group)."""
    n, m = len(is_), len(js)
    if not n or not m or n > _ALIGN_MAX or m > _ALIGN_MAX:
        return []
    eq = np.array([[_same_shape(ours[i].shape, theirs[j].shape) for j in js] for i in is_], dtype=bool)
    table = np.zeros((n + 1, m + 1), dtype=np.int32)
    for a in range(n - 1, -1, -1):
        for b in range(m - 1, -1, -1):
            table[a, b] = table[a + 1, b + 1] + 1 if eq[a, b] else max(table[a + 1, b], table[a, b + 1])
    pairs, a, b = [], 0, 0
    while a < n and b < m:
        if eq[a, b] and table[a, b] == table[a + 1, b + 1] + 1:
            pairs.append((is_[a], js[b]))
            a, b = a + 1, b + 1
        elif table[a + 1, b] >= table[a, b + 1]:
            a += 1
        else:
            b += 1
    return pairs


def _shape(s) -> str:
    return "(" + ", ".join(map(str, s)) + ("," if len(s) == 1 else "") + ")"


def record_keys(run: Run) -> list[tuple]:
    """How records match between runs: ``("epoch", epoch, n)`` for the begin and epoch records,
    ``("batch", step, n)`` for batch records (n: the occurrence, 0 first); guard records
    (taken when a live check halted) match nothing."""
    seen: Counter = Counter()
    keys = []
    for r in run.records:
        if r.trigger == GUARD:
            keys.append(None)
            continue
        base = ("batch", r.step) if r.trigger == BATCH else ("epoch", r.epoch)
        keys.append(base + (seen[base],))
        seen[base] += 1
    return keys


def tensor_refs(run: Run) -> list[TensorRef]:
    model = run.model_name
    return [TensorRef(local_path(t.path, model), t.shape, t.role) for t in run.tensors]


def run_figure(run: Run, metric: str) -> np.ndarray:
    """A tensor figure's history (records, tensors) as a baseline compares it.

    ``incoherence`` is ``1 - cos`` between an update and the previous one: 0
    when consecutive updates point the same way, 1 when they are orthogonal.
    Why a baseline bands it: it measures how noisy the steps are, which
    heavier dropout, a smaller batch or noisier inputs raise while the
    update's size and the weights' norm may stay where the references have
    them.  Read from ``d_cos``; NaN where the run recorded none.
    """
    if metric == "incoherence":
        if not run.has_column("d_cos"):
            return np.full_like(run.metric("l2"), np.nan)
        return 1.0 - run.metric("d_cos")
    if metric != "update_ratio":
        return run.metric(metric)
    prev = np.full_like(run.metric("l2"), np.nan)
    prev[1:] = run.metric("l2")[:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        floor = np.fmax(prev, UPDATE_MIN_RMS * np.sqrt(run.metric("size")))
        return run.metric("d_l2") / np.where(np.isnan(prev), np.nan, floor)


def relative_log(logs: np.ndarray, yardstick: np.ndarray) -> np.ndarray:
    """A figure (log10, (..., records, tensors)) relative to the median of the ``yardstick``
    tensors (a boolean mask over the last axis) at each record: ``log10(v / median kernel v)``.

    Why: a tensor's own band must be wide enough for a reseeded run whose
    every layer learns a little faster; against the run's median kernel that
    common movement cancels, and what is left is how the layers share the
    training between them, which a swapped activation, dropped input
    normalisation or heavy dropout changes.  All NaN without a yardstick.
    """
    if not yardstick.any():
        return np.full_like(logs, np.nan)
    return logs - _nanmedian(logs[..., yardstick], -1)[..., None]


def to_log(v: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log10(np.where(np.isnan(v), np.nan, np.fmax(v, LOG_FLOOR)))


def _nanmedian(a: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmedian without its warning on all-NaN slices (they stay NaN), and fast.

    Why not np.nanmedian: with NaNs present (records without a band, tensors
    without a gradient) it falls back to one Python call per slice, which for
    1,000 records x 200 tensors cost more than the rest of the baseline
    checks together.  Here: one sort (NaN sorts last) and a gather.
    """
    a = np.moveaxis(np.asarray(a, dtype=float), axis, -1)
    if a.shape[-1] == 0:
        return np.full(a.shape[:-1], np.nan)
    ordered = np.sort(a, axis=-1)
    n = (~np.isnan(a)).sum(axis=-1)
    lo = np.maximum((n - 1) // 2, 0)[..., None]
    hi = np.maximum(n // 2, 0)[..., None]
    with np.errstate(invalid="ignore"):
        med = 0.5 * (np.take_along_axis(ordered, lo, -1) + np.take_along_axis(ordered, hi, -1))[..., 0]
    return np.where(n > 0, med, np.nan)


@dataclass
class Band:
    """One figure's band: median and robust sigma at each (record, subject), in log10 units."""

    center: np.ndarray
    sigma: np.ndarray

    @classmethod
    def learn(cls, stack: np.ndarray) -> "Band":
        """From the references' values (references, records, subjects), in log10 units."""
        center = _nanmedian(stack, 0)
        return cls(center, spread_of(stack, center))

    def limits(self, spread: float, tolerance: float, references: int) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) in the figure's own units, per (record, subject); NaN where no band.

        A new seed departs from the references' median by its own noise and
        the median's error: ``sigma * sqrt(1 + pi / (2 k))`` with k references.
        """
        if references > 1:
            typical = _nanmedian(self.sigma, 0)[None]       # the subject's usual spread
            sigma = np.fmax(self.sigma, typical) * np.sqrt(1 + np.pi / (2 * references))
            half = np.fmax(spread * sigma, np.log10(tolerance))
        else:
            half = np.full_like(self.center, np.log10(tolerance))
        half = np.where(np.isnan(self.center), np.nan, half)
        return 10.0 ** (self.center - half), 10.0 ** (self.center + half)


#: d2(n): the expected range of n standard normal samples (range / d2 estimates sigma), n = 0..9.
_D2 = np.array([np.nan, np.nan, 1.128, 1.693, 2.059, 2.326, 2.534, 2.704, 2.847, 2.970])


def spread_of(stack: np.ndarray, center: np.ndarray) -> np.ndarray:
    """The references' sigma at each point: range / d2(k) for k <= 9 references (the efficient
    estimate for so few: the median absolute deviation of three values is the smaller of two
    deviations, far too small), 1.4826 x the median absolute deviation from 10 references on
    (robust to an outlying reference)."""
    k = (~np.isnan(stack)).sum(axis=0)
    with np.errstate(invalid="ignore"):
        rng = np.fmax.reduce(stack, axis=0) - np.fmin.reduce(stack, axis=0)
    d2 = _D2[np.minimum(k, 9)]
    if (k >= 10).any():
        sigma = np.where(k >= 10, MAD_SCALE * _nanmedian(np.abs(stack - center[None]), 0), rng / d2)
    else:
        with np.errstate(invalid="ignore"):
            sigma = rng / d2
    return np.where(k >= 2, sigma, np.where(k == 1, 0.0, np.nan))


@dataclass
class Baseline:
    """What the reference runs say: bands per record (their common part) and tensor."""

    references: list[dict]                 # {"run", "records", "tensors", "model"} per reference
    records: list[dict]                    # {"epoch", "batch", "step", "trigger", "key", "prev"}
    tensors: list[TensorRef]
    metrics: dict[str, Band]               # tensor figure -> Band (records, tensors)
    logs: dict[str, Band]                  # log key -> Band (records, 1)
    notes: list[str] = field(default_factory=list)   # what learning left out, in words
    source: str = ""                       # the baseline file, or "" when learnt from run directories

    @property
    def n_references(self) -> int:
        return len(self.references)

    @property
    def keys(self) -> list[tuple]:
        return [tuple(r["key"]) for r in self.records]

    def describe(self) -> str:
        """``3 reference runs (runs/a, runs/b, runs/c)`` or ``main.baseline.json (3 reference runs)``."""
        n = self.n_references
        what = f"{n} reference run{'s' * (n != 1)}"
        if self.source:
            return f"{self.source} ({what})"
        return f"{what} ({', '.join(r['run'] for r in self.references)})"

    def align(self, run: Run) -> "Alignment":
        return Alignment(self, run)


def learn_baseline(references, *, source: str = "") -> Baseline:
    """Learn the bands from reference runs (:class:`Run` objects or run directories).

    The first reference fixes the tensors' names and the records; the others
    are matched to it as a candidate would be.  Tensors and records that are
    not in every reference are left out, and :attr:`Baseline.notes` says which.
    """
    from ..run.reader import open_run

    runs = [r if isinstance(r, Run) else open_run(r) for r in references]
    if not runs:
        raise BaselineError("no reference run given")
    for r in runs:
        if r.problems:
            raise BaselineError(f"the reference run is unreadable in part ({r.problems[0]}): a baseline "
                                "is learnt from whole runs only", path=r.path)
        if not r.records:
            raise BaselineError("the reference run holds no record", path=r.path)
    first = runs[0]
    names = tensor_refs(first)
    keys0 = record_keys(first)
    positions0 = {k: i for i, k in enumerate(keys0) if k is not None}
    notes: list[str] = []
    rec_maps, ten_maps = [], []
    for r in runs:
        tmap = np.full(len(names), -1, dtype=np.intp)
        theirs_in_ours, _ = match_tensors(tensor_refs(r), names)
        for i, j in enumerate(theirs_in_ours):
            if j >= 0:
                tmap[j] = i
        ten_maps.append(tmap)
        pos = {k: i for i, k in enumerate(record_keys(r)) if k is not None}
        rec_maps.append(np.array([pos.get(k, -1) for k in positions0], dtype=np.intp))
    in_all_t = np.all([m >= 0 for m in ten_maps], axis=0) if names else np.zeros(0, bool)
    in_all_r = np.all([m >= 0 for m in rec_maps], axis=0)
    left = [names[j].path for j in np.flatnonzero(~in_all_t)]
    if left:
        notes.append(f"{len(left)} tensor{'s' * (len(left) != 1)} not in every reference, left out: "
                     + _few(left))
    kept_keys = [k for k, keep in zip(positions0, in_all_r) if keep]
    if not kept_keys:
        raise BaselineError("the reference runs have no record (epoch) in common",
                            path=runs[0].path)
    if not in_all_r.all():
        notes.append(f"the references share {len(kept_keys)} of the first reference's "
                     f"{len(positions0)} records (they differ in length): the band covers those")
    tkeep = np.flatnonzero(in_all_t)
    rkeep = np.flatnonzero(in_all_r)
    # An update is a span: where a reference's previous record is not the first reference's
    # (another freq=), its update ratio measures something else and is left out of the band.
    first_prev = np.array([-1] + list(range(len(keys0) - 1)))   # positions in the first reference
    pos0 = np.array(list(positions0.values()), dtype=np.intp)[rkeep]
    span_ok = []
    for r, rm in zip(runs, rec_maps):
        mine = rm[rkeep]
        prev_here = np.where(mine > 0, mine - 1, -1)
        keys_r = record_keys(r)
        same = np.array([first_prev[p] >= 0 and q >= 0 and keys_r[q] == keys0[first_prev[p]]
                         for p, q in zip(pos0, prev_here)], dtype=bool)
        span_ok.append(same)
    if not all(ok[1:].all() if ok.size > 1 else True for ok in span_ok):
        notes.append("the references' updates span different records at some epochs (recorded with "
                     "different freq=?): their update ratios are left out there")
    metrics = {}
    yardstick = np.array([names[j].role in NORMALISER_ROLES for j in tkeep], dtype=bool)
    for metric in TENSOR_METRICS:
        stack = np.stack([to_log(run_figure(r, metric))[np.ix_(rm[rkeep], tm[tkeep])]
                          for r, rm, tm in zip(runs, rec_maps, ten_maps)])
        if metric in SPAN_METRICS:
            for i, ok in enumerate(span_ok):
                stack[i][~ok] = np.nan
                if metric in TWO_SPAN_METRICS:
                    stack[i][~np.r_[False, ok[:-1]]] = np.nan
        if np.isnan(stack).all():
            continue  # e.g. no gradient estimates: the gradient check will say so
        metrics[metric] = Band.learn(stack)
        if "rel_" + metric in RELATIVE_METRICS:
            rel = relative_log(stack, yardstick)
            if not np.isnan(rel).all():
                metrics["rel_" + metric] = Band.learn(rel)
    logs = {}
    skipped_logs, fewer = [], []
    for key in first.log_keys:
        cols = []
        for r, rm in zip(runs, rec_maps):
            v, present = r.log(key), r.log_present(key)
            cols.append(np.where(present, v, np.nan)[rm[rkeep]])
        stack = np.stack(cols)
        with np.errstate(invalid="ignore"):
            if not np.isfinite(stack).any() or (stack <= 0).any():
                skipped_logs.append(key)
                continue
        logs[key] = Band.learn(to_log(stack)[:, :, None])
        having = int(np.isfinite(stack).any(axis=1).sum())
        if having < len(runs):
            fewer.append(f"{key} ({having} of {len(runs)})")
    if skipped_logs:
        notes.append("logs not banded (a value <= 0 or non-finite in a reference): " + _few(skipped_logs))
    if fewer:
        # Why a note: a band from fewer references is narrower by chance than the others, and with
        # a single one it is the fixed tolerance around it, not a learnt spread.
        notes.append("logs banded from fewer references than the baseline has (the others do not log "
                     "them): " + _few(fewer))
    recs = []
    kept_pos = [positions0[k] for k in kept_keys]
    at = {p: i for i, p in enumerate(kept_pos)}
    for p in kept_pos:
        rec = first.records[p]
        prev = at.get(p - 1)
        recs.append({"epoch": rec.epoch, "batch": rec.batch, "step": rec.step, "trigger": rec.trigger,
                     "key": list(keys0[p]), "prev": prev})
    references_info = [{"run": str(r.path), "records": len(r.records), "tensors": len(r.tensors),
                        "model": r.model_name} for r in runs]
    return Baseline(references_info, recs, [names[j] for j in tkeep], metrics, logs, notes, source)


def _few(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


class Alignment:
    """A run laid over a baseline: which record and tensor of the baseline each of its own is.

    ``band(metric, index, ...)`` gives the band at the run's records for the
    run's tensors ``index``, NaN where the baseline has none (a record past
    its end, a tensor only this run has).
    """

    def __init__(self, baseline: Baseline, run: Run):
        self.baseline = baseline
        self.run = run
        keys = record_keys(run)
        pos = {tuple(k): i for i, k in enumerate(baseline.keys)}
        self.rec_map = np.array([pos.get(k, -1) if k is not None else -1 for k in keys], dtype=np.intp)
        # An update is compared only over the same span: the run's previous record must be the
        # baseline's previous record (a run recorded with another freq= has other spans).
        self.same_span = np.zeros(len(keys), dtype=bool)
        for i in range(1, len(keys)):
            b = self.rec_map[i]
            if b >= 0:
                prev = baseline.records[b]["prev"]
                self.same_span[i] = prev is not None and self.rec_map[i - 1] == prev
        self.ten_map, unmatched = match_tensors(tensor_refs(run), baseline.tensors)
        self.missing = [(baseline.tensors[j].path, why) for j, why in unmatched]
        # local paths (model prefix removed), as the baseline's own paths under "missing here"
        self.extra = [local_path(run.tensors[i].path, run.model_name) for i in np.flatnonzero(self.ten_map < 0)]
        self.missing_logs = [k for k in baseline.logs if not run.log_present(k).any()]
        self._cache: dict = {}

    def relative_figure(self, metric: str) -> np.ndarray:
        """A relative figure (``rel_update_ratio``, ``rel_grad_rms``) of the run's tensors, as a
        factor: each tensor's figure over the median of the run's kernels and embeddings that
        the baseline measures its own against (those matched to its yardstick tensors)."""
        got = self._cache.get(("relative", metric))
        if got is None:
            base = self.baseline.tensors
            yardstick = np.array([j >= 0 and base[j].role in NORMALISER_ROLES for j in self.ten_map],
                                 dtype=bool)
            with np.errstate(invalid="ignore", over="ignore"):
                got = 10.0 ** relative_log(to_log(run_figure(self.run, metric[len("rel_"):])), yardstick)
            self._cache[("relative", metric)] = got
        return got

    @property
    def compared_records(self) -> int:
        return int((self.rec_map >= 0).sum())

    def span(self) -> str:
        """Which part of the run was compared, in words: ``epochs 0-10`` and what was left out."""
        matched = np.flatnonzero(self.rec_map >= 0)
        if matched.size == 0:
            return "no record in common with the baseline"
        first, last = self.run.records[matched[0]], self.run.records[matched[-1]]
        text = f"{where_label(first.epoch, first.batch)} to {where_label(last.epoch, last.batch)}"
        left = len(self.run.records) - matched.size
        if left:
            text += f" ({left} of this run's {len(self.run.records)} records have no counterpart"
            end = self.baseline.records[-1]
            if self.run.records[-1].epoch > end["epoch"]:
                text += f"; the baseline ends at {where_label(end['epoch'], end['batch'])}"
            text += ")"
        elif self.compared_records < len(self.baseline.records):
            end = self.baseline.records[-1]
            text += (f" (this run ends before the baseline, which goes on to "
                     f"{where_label(end['epoch'], end['batch'])})")
        return text

    def summary(self) -> dict:
        """What a report prints and stores about the comparison."""
        return {"baseline": self.baseline.describe(), "references": self.baseline.n_references,
                "compared": self.span(), "compared_records": self.compared_records,
                "missing": [f"{p} ({why})" for p, why in self.missing],
                "only_here": list(self.extra), "missing_logs": list(self.missing_logs),
                "notes": list(self.baseline.notes)}

    def _limits(self, band: Band, spread, tolerance, single_tolerance):
        key = (id(band), spread, tolerance, single_tolerance)
        got = self._cache.get(key)
        if got is None:
            refs = self.baseline.n_references
            got = band.limits(spread, tolerance if refs > 1 else single_tolerance, refs)
            self._cache[key] = got
        return got

    def tensor_band(self, metric: str, index: np.ndarray, *, spread: float, tolerance: float,
                    single_tolerance: float) -> tuple[np.ndarray, np.ndarray] | None:
        """(lo, hi) of a tensor figure at the run's records x tensors ``index``; None: not held."""
        band = self.baseline.metrics.get(metric)
        if band is None:
            return None
        lo, hi = self._limits(band, spread, tolerance, single_tolerance)
        return self._gather(lo, index, metric), self._gather(hi, index, metric)

    def log_band(self, key: str, *, spread: float, tolerance: float,
                 single_tolerance: float) -> tuple[np.ndarray, np.ndarray] | None:
        band = self.baseline.logs.get(key)
        if band is None:
            return None
        lo, hi = self._limits(band, spread, tolerance, single_tolerance)
        rows = np.where(self.rec_map >= 0, self.rec_map, 0)
        ok = self.rec_map >= 0
        return np.where(ok, lo[rows, 0], np.nan), np.where(ok, hi[rows, 0], np.nan)

    def _gather(self, a: np.ndarray, index: np.ndarray, metric: str) -> np.ndarray:
        cols = self.ten_map[index]
        rows = np.where(self.rec_map >= 0, self.rec_map, 0)
        out = a[np.ix_(rows, np.where(cols >= 0, cols, 0))] if a.size else np.full(
            (rows.size, cols.size), np.nan)
        ok_r = self.rec_map >= 0
        if metric in SPAN_METRICS:
            ok_r = ok_r & self.same_span
        if metric in TWO_SPAN_METRICS:
            ok_r = ok_r & np.r_[False, self.same_span[:-1]]
        out = np.where(ok_r[:, None] & (cols >= 0)[None, :], out, np.nan)
        return out


@dataclass
class Departure:
    """How far one figure of run A is from run B's: the worst record, and both histories."""

    figure: str                      # "l2", "update_ratio", "grad_rms", or "log"
    subject: str                     # tensor path (A's) or log key
    ratio: float                     # A / B at the worst record
    at: str                          # that record, in words
    a: np.ndarray                    # A's history, at A's records
    b: np.ndarray                    # B's history, at the same records (NaN where B has none)

    @property
    def score(self) -> float:
        """|log10(ratio)|: a factor of 10 either way is 1."""
        return abs(float(np.log10(self.ratio))) if self.ratio > 0 and np.isfinite(self.ratio) else np.inf


def departures(a: Run, b: Run) -> tuple[list[Departure], Alignment]:
    """Every matched figure of ``a`` against ``b``'s, the largest departure first.

    ``b`` serves as a single reference; figures that are equal everywhere
    (``ratio`` 1) are left out.  The alignment says what did not match.
    """
    base = learn_baseline([b])
    al = base.align(a)
    out: list[Departure] = []
    rows = np.where(al.rec_map >= 0, al.rec_map, 0)
    ok_r = al.rec_map >= 0
    labels = [r.label for r in a.records]
    idx = np.arange(len(a.tensors))
    for metric, band in base.metrics.items():
        if metric in RELATIVE_METRICS or metric in TWO_SPAN_METRICS:
            continue  # diff shows the figures themselves; 1 - cos swings widely from seed to seed
        theirs = al._gather(10.0 ** band.center, idx, metric)
        with np.errstate(invalid="ignore", divide="ignore"):
            mine = run_figure(a, metric)
            gap = np.abs(to_log(mine) - to_log(theirs))
        gap[~np.isfinite(gap)] = np.nan
        for j in np.flatnonzero(~np.isnan(gap).all(axis=0)):
            r = int(np.nanargmax(gap[:, j]))
            if gap[r, j] == 0:
                continue
            ratio = _ratio(mine[r, j], theirs[r, j])
            out.append(Departure(metric, a.tensors[j].path, ratio, labels[r], mine[:, j], theirs[:, j]))
    for key, band in base.logs.items():
        if not a.log_present(key).any():
            continue
        mine = np.where(a.log_present(key), a.log(key), np.nan)
        theirs = np.where(ok_r, 10.0 ** band.center[rows, 0], np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            gap = np.abs(to_log(mine) - to_log(theirs))
        gap[~np.isfinite(gap)] = np.nan
        if np.isnan(gap).all() or np.nanmax(gap) == 0:
            continue
        r = int(np.nanargmax(gap))
        out.append(Departure("log", key, _ratio(mine[r], theirs[r]), labels[r], mine, theirs))
    out.sort(key=lambda d: -d.score)
    return out, al


def _ratio(x: float, y: float) -> float:
    """A / B for the table; NaN where it has no meaning (a figure <= 0 against a positive one)."""
    if y == 0:
        return np.inf if x > 0 else 1.0
    return float(x / y) if x >= 0 and y > 0 else np.nan
