"""The one way tests build runs, at three levels of control.

* :func:`write_run` / :func:`make_run`: a run with a precise history of
  figures (a NaN at record 2, a loss that turns non-finite), on disk in the
  documented format or in memory, without training anything;
* :func:`record_arrays`: a run recorded from numpy arrays through the real,
  framework-free :class:`~weightwatch.recording.session.RecordingSession`,
  so its figures are the recorder's own.

Hand-written figures on disk::

    write_run(tmp_path / "run",
              tensors={"dense/kernel": {"shape": [4, 3]}, "dense/bias": {"shape": [3]}},
              records=[{"logs": {"loss": 1.0}},
                       {"logs": {"loss": 0.8}, "rows": {"dense/kernel": {"nan": 2}}}])

Every column that a record does not give gets a value from a healthy,
slowly-learning tensor (:func:`healthy_row`), so the default rules pass on
anything not overridden.  The files are written with the stdlib ``json``
(``allow_nan=False``): the format is strict JSON, and a test that wants a
bare ``NaN`` token must write it itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from weightwatch.recording.session import RecordingSession, Variable
from weightwatch.run.model import Record, Run, TensorInfo
from weightwatch.run.schema import (
    COLUMNS, FORMAT, MANIFEST, SNAPSHOT_FORMAT, VERSION, layer_of, record_name, tensor_role,
)


def _size(shape) -> int:
    n = 1
    for d in shape or ():
        n *= int(d)
    return n


def healthy_row(spec: dict, record: int, first_record: int = 0) -> dict:
    """The row of a healthy tensor at ``record``: norm growing 5% a record, small updates."""
    shape = spec.get("shape") or [4]
    size = _size(shape)
    age = record - first_record
    l2 = 1.0 + 0.05 * age
    rms = l2 / math.sqrt(size)
    row = {
        "trainable": spec.get("trainable", True),
        "frozen": spec.get("frozen", False),
        "size": size, "nan": 0, "inf": 0,
        "l2": l2, "mean": 0.0, "std": rms, "min": -2 * rms, "max": 2 * rms, "absmax": 2 * rms,
        "zero_frac": 0.0,
        "d_l2": None, "d_absmax": None, "changed": None, "dead_units": None, "d_cos": None,
        "grad_rms": None, "replica_spread": 0.0,  # as two replicas in agreement record it
        # a kernel's as an L2(1e-4) regulariser records it; a bias has none
        "penalty": 1e-4 * l2 * l2 if len(shape) >= 2 else None,
    }
    if age > 0:
        row.update(d_l2=0.05, d_absmax=0.05, changed=True, grad_rms=0.01)
        if len(shape) >= 2:
            row["dead_units"] = 0
        if age > 1:
            row["d_cos"] = 0.2
    return row


#: What a run recorded today states about the evidence beyond its weights.
MANIFEST_EXTRA = {"optimizer": "Adam", "gradients": "adam-velocity", "chance_loss": math.log(4), "loss_floor": 0.0}


def write_run(run_dir, tensors: dict, records: list[dict], *, model: str = "handmade",
              columns=COLUMNS, manifest_extra: dict = MANIFEST_EXTRA) -> Path:
    """Write ``manifest.json`` and ``record-NNNNNN.json`` files; return the run directory.

    ``tensors``: path -> ``{shape, role, layer, dtype, trainable, frozen, first_record}``
    (all optional; role and layer are derived from the path).
    ``manifest_extra``: more manifest keys (an older run had none of these).
    ``records``: one dict per record with ``epoch`` (default: its index), ``batch``,
    ``trigger`` ("begin" for record 0, else "epoch"), ``logs`` and ``rows``
    (path -> {column: value} overriding the healthy defaults; a value ``"absent"`` for
    the whole row leaves the tensor out of that record).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    table = []
    for path, spec in tensors.items():
        shape = list(spec.get("shape") or [4])
        table.append({
            "path": path,
            "layer": spec.get("layer", layer_of(path)),
            "shape": shape,
            "dtype": spec.get("dtype", "float32"),
            "kind": spec.get("role", tensor_role(path, len(shape))),
            "first_record": spec.get("first_record", 0),
        })
    manifest = {"format": FORMAT, "version": VERSION, "created": "2024-01-01T00:00:00+00:00",
                "model": model, "columns": list(columns), "versions": {"weightwatch": "test"},
                "tensors": table, **manifest_extra}
    _dump(run_dir / MANIFEST, manifest)
    for i, rec in enumerate(records):
        rows = {}
        overrides = rec.get("rows", {})
        for path, spec in tensors.items():
            first = spec.get("first_record", 0)
            if i < first or overrides.get(path) == "absent":
                continue
            row = healthy_row(spec, i, first)
            row.update(overrides.get(path, {}))
            rows[path] = [row.get(c) for c in columns]
        snap = {"format": SNAPSHOT_FORMAT, "version": VERSION, "record": i,
                "epoch": rec.get("epoch", i), "batch": rec.get("batch"), "step": rec.get("step", i * 10),
                "kind": rec.get("trigger", "begin" if i == 0 else "epoch"), "time": 1000.0 + i,
                "logs": rec.get("logs", {}), "tensors_file": None, "tensors": rows}
        _dump(run_dir / record_name(i), snap)
    return run_dir


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, allow_nan=False), encoding="utf-8")


# -- ready-made runs ------------------------------------------------------------------------

#: A two-layer dense model: kernels and biases.
MLP = {
    "dense/kernel": {"shape": [6, 8]},
    "dense/bias": {"shape": [8]},
    "out/kernel": {"shape": [8, 1]},
    "out/bias": {"shape": [1]},
}


def write_healthy_run(run_dir, n_records: int = 4) -> Path:
    """A run every default rule passes: norms grow slowly, the loss falls."""
    records = [{"epoch": i, "logs": {"loss": round(1.0 / (1 + i), 6)} if i else {}}
               for i in range(n_records)]
    return write_run(run_dir, MLP, records)


def write_nan_run(run_dir) -> Path:
    """``dense/kernel`` holds 3 NaN from record 2 on and the loss becomes non-finite (null)."""
    nan_row = {"nan": 3, "d_l2": None, "d_absmax": None, "changed": True, "d_cos": None,
               "dead_units": None}
    records = [
        {"epoch": 0, "logs": {}},
        {"epoch": 1, "logs": {"loss": 1.0}},
        {"epoch": 2, "logs": {"loss": None}, "rows": {"dense/kernel": nan_row}},
        {"epoch": 3, "logs": {"loss": None}, "rows": {"dense/kernel": dict(nan_row)}},
    ]
    return write_run(run_dir, MLP, records)


# -- in memory ----------------------------------------------------------------------------------

DEFAULTS = dict(trainable=1.0, frozen=0.0, size=100.0, nan=0.0, inf=0.0, l2=1.0, mean=0.0, std=0.1,
                min=-0.3, max=0.3, absmax=0.3, zero_frac=0.0, d_l2=0.01, d_absmax=0.001, changed=1.0,
                dead_units=0.0, d_cos=0.1, grad_rms=np.nan,
                replica_spread=np.nan, penalty=np.nan)


def make_run(tensors: dict, records: int, logs: list | None = None, shapes: dict | None = None,
             roles: dict | None = None) -> Run:
    """An in-memory run: ``tensors`` is {path: {column: list of values per record (or a scalar)}}.

    Columns not given take :data:`DEFAULTS`; record 0 gets NaN deltas, as recording writes them.
    """
    run = Run("/tmp/memrun", source="weightwatch")
    shapes = shapes or {}
    roles = roles or {}
    for p in tensors:
        shape = shapes.get(p, (10, 10))
        run.add_tensor(TensorInfo(p, layer_of(p), shape, "float32",
                                  roles.get(p, "kernel" if len(shape) >= 2 else "bias")))
    for r in range(records):
        rows = []
        for p, cols in tensors.items():
            row = []
            for c in COLUMNS:
                v = cols.get(c, DEFAULTS[c])
                v = v[r] if isinstance(v, (list, tuple, np.ndarray)) else v
                if r == 0 and c.startswith("d_") or (r == 0 and c in ("changed", "dead_units")):
                    v = np.nan if c not in cols else v
                row.append(np.nan if v is None else v)
            rows.append(row)
        record_logs = (logs[r] if logs else {"loss": 1.0 / (r + 1)}) if r > 0 else {}
        run.append(Record(index=r, epoch=r, trigger="begin" if r == 0 else "epoch", logs=record_logs),
                   list(tensors), np.array(rows, dtype=float))
    return run


# -- recorded from arrays ---------------------------------------------------------------------

def record_arrays(run_dir, records: list[dict], *, flags: dict | None = None, logs: list | None = None,
                  model: str = "m", **session_options) -> Path:
    """Record ``records`` (one ``{path: array}`` per record; record 0 is "begin") through the
    real recording session, without a framework; return the run directory.

    ``flags``: path -> ``(trainable, frozen)`` (default: trainable, not frozen).
    """
    flags = flags or {}
    session = RecordingSession(run_dir, check=False, verbose=0, **session_options)
    session.start_fit()
    session.open(model_name=model, info={"framework": "numpy"}, initial_epoch=0)
    for k, arrays in enumerate(records):
        variables = [Variable(a, p, *flags.get(p, (True, False))) for p, a in arrays.items()]
        session.record(variables, lambda a: a, epoch=k, batch=None, step=k,
                       trigger="begin" if k == 0 else "epoch", logs=(logs[k] if logs else {}))
    session.end()
    return Path(run_dir)


# -- checking one rule -----------------------------------------------------------------------

def run_check(run, check: str, **options):
    """Evaluate one rule ``{"id": "t", "check": check, **options}`` on ``run``: its RuleResult."""
    from weightwatch.checking.engine import evaluate_rule
    from weightwatch.checking.rules import parse_rule

    return evaluate_rule(run, parse_rule({"id": "t", "check": check, **options}, source="test", line=None))


def first(result):
    """The first finding of a RuleResult; fails the test, saying why, when there is none."""
    assert result.findings, f"{result.id} found nothing ({result.status}, {result.note})"
    return result.findings[0]


def default_rule_count() -> int:
    """Rules of the default pack a check without a baseline runs (baseline rules wait for one)."""
    from weightwatch.checking.config import load_rules

    return sum(not r.check_def.baseline for r in load_rules(use_project_config=False))


TRAJECTORY_TENSORS = {"dense/kernel": {"shape": [4, 3]}, "dense/bias": {"shape": [3]},
                      "dense_1/kernel": {"shape": [3, 2]}}


def trajectory_run(path, *, scale=1.0, lr=1.0, loss_scale=1.0, records=6, names=None, model="sequential",
         jitter=0.0, drop=(), grad=None, update=None, cos=None, layout=None):
    """A run for baseline tests, whose tensors' norms and updates follow a smooth curve: ``scale`` multiplies the
    norms, ``lr`` the updates, ``loss_scale`` the loss; ``jitter`` is a seed's spread (relative); ``grad`` and
    ``update`` ({path: factor}) multiply one tensor's gradient RMS or update (a factor None: no gradient); ``cos``, where given, is the cosine between consecutive updates
    (from the second update on; its distance from 1 jittered); ``layout`` ({path: spec}, in model order)
    replaces :data:`TRAJECTORY_TENSORS` (a layer inserted, say)."""
    grad, update = grad or {}, update or {}
    layout = layout or TRAJECTORY_TENSORS
    rng = np.random.default_rng(int(jitter * 1e6) % 2 ** 32)
    names = names or {p: p for p in layout}
    tensors = {f"{model}/{names[p]}": spec for p, spec in layout.items() if p not in drop}
    recs = []
    for r in range(records):
        rows = {}
        for p in layout:
            if p in drop:
                continue
            noise = 1 + jitter * rng.standard_normal()
            l2 = scale * (1.0 + 0.1 * r) * noise
            rows[f"{model}/{names[p]}"] = {"l2": l2} | ({} if r == 0 else {
                "d_l2": update.get(p, 1.0) * lr * 0.05 * scale * (1 + 0.1 * (r - 1)) * noise / (1 + 0.2 * r),
                "changed": True, "grad_rms": None if grad.get(p, 1.0) is None else grad.get(p, 1.0) * 0.01 * noise}
                | ({"d_cos": 1 - (1 - cos) * noise} if cos is not None and r >= 2 else {}))
        recs.append({"logs": {"loss": loss_scale * 2.0 / (1 + r) * (1 + jitter * rng.standard_normal())},
                     "rows": rows})
    return write_run(path, tensors=tensors, records=recs, model=model)
