"""Writing small run directories by hand, in the documented on-disk format.

Tests that need a run with a precise history (a NaN at record 2, a loss that
becomes non-finite) write it here instead of training a model::

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

from weightwatch.run.schema import FORMAT, MANIFEST, SNAPSHOT_FORMAT, VERSION, record_name, tensor_role
from weightwatch.run.schema import COLUMNS


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
    }
    if age > 0:
        row.update(d_l2=0.05, d_absmax=0.05, changed=True)
        if len(shape) >= 2:
            row["dead_units"] = 0
        if age > 1:
            row["d_cos"] = 0.2
    return row


def write_run(run_dir, tensors: dict, records: list[dict], *, model: str = "handmade",
              columns=COLUMNS) -> Path:
    """Write ``manifest.json`` and ``record-NNNNNN.json`` files; return the run directory.

    ``tensors``: path -> ``{shape, kind, layer, dtype, trainable, frozen, first_record}``
    (all optional; kind and layer are derived from the path).
    ``records``: one dict per record with ``epoch`` (default: its index), ``batch``,
    ``kind`` ("begin" for record 0, else "epoch"), ``logs`` and ``rows``
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
            "layer": spec.get("layer", path.rsplit("/", 1)[0] if "/" in path else path),
            "shape": shape,
            "dtype": spec.get("dtype", "float32"),
            "kind": spec.get("kind", tensor_role(path, len(shape))),
            "first_record": spec.get("first_record", 0),
        })
    manifest = {"format": FORMAT, "version": VERSION, "created": "2024-01-01T00:00:00+00:00",
                "model": model, "columns": list(columns), "versions": {"weightwatch": "test"},
                "tensors": table}
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
                "kind": rec.get("kind", "begin" if i == 0 else "epoch"), "time": 1000.0 + i,
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
