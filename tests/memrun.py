"""Build small in-memory runs from per-record figures, for engine and check tests."""

from __future__ import annotations

import numpy as np

from weightwatch.run.model import Record, Run, TensorInfo
from weightwatch.run.schema import COLUMNS

DEFAULTS = dict(trainable=1.0, frozen=0.0, size=100.0, nan=0.0, inf=0.0, l2=1.0, mean=0.0, std=0.1,
                min=-0.3, max=0.3, absmax=0.3, zero_frac=0.0, d_l2=0.01, d_absmax=0.001, changed=1.0,
                dead_units=0.0, d_cos=0.1)


def make_run(tensors: dict, records: int, logs: list | None = None, shapes: dict | None = None,
             kinds: dict | None = None) -> Run:
    """``tensors``: {path: {column: list of values per record (or a scalar)}}.

    Record 0 gets NaN deltas, as the recorder writes them.
    """
    run = Run("/tmp/memrun", source="weightwatch")
    shapes = shapes or {}
    kinds = kinds or {}
    for p in tensors:
        shape = shapes.get(p, (10, 10))
        run.add_tensor(TensorInfo(p, p.rsplit("/", 1)[0], shape, "float32",
                                  kinds.get(p, "kernel" if len(shape) >= 2 else "bias")))
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
