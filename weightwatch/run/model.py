"""The run as data: its tensors, its records and every figure's history as arrays.

Checks work on whole histories (records x tensors) at once, so a run holds
one float array per column, filled by the reader from disk or, during
training, by the recording session record by record.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import RunFormatError
from .files import read_bytes, run_file
from .jsonio import loads
from .npz import load_npz
from .schema import COLUMNS, EPOCH, VERDICT, layer_of, output_units, where_label


@dataclass
class TensorInfo:
    """One tensor of the run: identity and static facts."""

    path: str
    layer: str
    shape: tuple | None = None
    dtype: str | None = None
    role: str = "other"          # kernel, bias, scale, embedding, moving_stat, other
    first_record: int = 0
    #: The names of the layers that own it, from the model down (``base/dense_1``): a nested
    #: Functional model's name can be missing from the variable's path. None when unknown.
    layer_path: str | None = None

    @classmethod
    def from_entry(cls, entry: dict, first_record: int = 0) -> "TensorInfo":
        """From a manifest entry (``{"path", "layer", "shape", "dtype", "kind"}``)."""
        shape = entry.get("shape")
        return cls(entry["path"], entry.get("layer", layer_of(entry["path"])),
                   None if shape is None else tuple(shape), entry.get("dtype"),
                   entry.get("kind", "other"), first_record, entry.get("layer_path"))

    def names(self, model: str | None = None) -> tuple[str, ...]:
        """Every name a user may select this tensor by: its path and layer, both also without
        the model's own prefix (``sequential_3/dense/kernel`` -> ``dense/kernel``), and the
        owning layers' names (``base/dense_1/kernel``)."""
        out = [self.path, self.layer]
        if model and self.path.startswith(model + "/"):
            out += [self.path[len(model) + 1:], self.layer[len(model) + 1:]]
        if self.layer_path:
            out += [f"{self.layer_path}/{self.name}", self.layer_path]
        return tuple(dict.fromkeys(n for n in out if n))

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def units(self) -> int | None:
        """Output units whose weights the tensor holds (a kernel's last axis, a bias's elements),
        for dead-unit checks."""
        return output_units(self.role, self.shape) if self.shape else None


@dataclass(slots=True)
class Record:
    """One snapshot: when it was taken and the training logs at that moment."""

    index: int
    epoch: int
    batch: int | None = None
    step: int | None = None
    trigger: str = EPOCH         # why it was taken: begin, epoch, batch, guard
    time: float | None = None
    logs: dict = field(default_factory=dict)
    file: str | None = None
    tensors_file: str | None = None

    @property
    def label(self) -> str:
        """How reports name this record: ``epoch 3`` or ``epoch 3 batch 200``."""
        return where_label(self.epoch, self.batch)


class Run:
    """A recorded run: its tensors, its records and every metric's history.

    ``run.metric("l2")`` is a float array of shape ``(records, tensors)``
    holding NaN where a tensor did not exist yet or the figure is undefined;
    ``run.history("dense/kernel", "l2")`` is one column of it.
    """

    def __init__(self, path, *, source: str, manifest: dict | None = None,
                 columns=COLUMNS):
        self.path = Path(path)
        self.source = source
        self.manifest = manifest or {}
        self.tensors: list[TensorInfo] = []
        self.records: list[Record] = []
        self.problems: list[RunFormatError] = []
        self.columns = tuple(columns)
        self._col = {c: i for i, c in enumerate(self.columns)}
        self._tindex: dict[str, int] = {}
        # (columns, records, tensors): one metric's history is one contiguous
        # block, so a check reads it without a copy (see Run.metric).
        self._data = np.full((len(self.columns), 0, 0), np.nan)
        self._verdict: dict | None = None
        self._verdict_read = False   # a flag, not a sentinel object: a Run survives pickling

    # -- building ---------------------------------------------------------------
    def add_tensor(self, info: TensorInfo) -> int:
        i = self._tindex.get(info.path)
        if i is None:
            i = self._tindex[info.path] = len(self.tensors)
            self.tensors.append(info)
        return i

    def append(self, record: Record, paths: list[str], values: np.ndarray,
               entries: list[dict] | None = None) -> None:
        """Add one record: ``values[i]`` is tensor ``paths[i]``'s row in :attr:`columns` order.

        ``entries`` (manifest entries, as :class:`~.rows.Rows` carries them)
        describe tensors this run has not seen yet; a path without one gets a
        bare :class:`TensorInfo`.
        """
        first = len(self.records)
        for k, p in enumerate(paths):
            if p not in self._tindex:
                self.add_tensor(TensorInfo.from_entry(entries[k], first) if entries
                                else TensorInfo(p, layer_of(p), first_record=first))
        idx = [self._tindex[p] for p in paths]
        self.append_columns(record, idx, np.asarray(values).T, in_order=idx == list(range(len(idx))))

    def append_columns(self, record: Record, idx, columns: np.ndarray, *, in_order: bool) -> None:
        """Add one record whose ``columns[c, i]`` is column c of tensor ``idx[i]``.

        ``in_order``: ``idx`` is 0, 1, 2...  Rows with fewer figures than
        :attr:`columns` hold the first ones (a record written before the later
        columns were appended); the rest are NaN.
        """
        r = len(self.records)
        self._grow(r + 1, len(self.tensors))
        n = len(idx)
        if n and len(columns) < len(self.columns):
            columns = np.concatenate([columns, np.full((len(self.columns) - len(columns), n), np.nan)])
        if n:
            if in_order and n == len(self.tensors):
                self._data[:, r, :n] = columns  # the usual case: manifest order, no gaps
            else:
                self._data[:, r, idx] = columns
        self.records.append(record)

    def reserve(self, nrec: int, ntens: int) -> None:
        """Allocate the history arrays once when the number of records is known."""
        self._grow(nrec, ntens, exact=True)

    def _grow(self, nrec: int, ntens: int, exact: bool = False) -> None:
        C, R, T = self._data.shape
        if nrec <= R and ntens <= T:
            return
        newR = nrec if exact else max(nrec, 2 * R if nrec > R else R, 8)
        newT = max(ntens, T)
        grown = np.full((C, newR, newT), np.nan)
        grown[:, :R, :T] = self._data
        self._data = grown

    # -- reading ----------------------------------------------------------------
    @property
    def tensor_names(self) -> list[str]:
        return [t.path for t in self.tensors]

    @property
    def model_name(self) -> str | None:
        """The recorded model's name (the prefix Keras gives a Sequential's paths), if known."""
        model = self.manifest.get("model") if isinstance(self.manifest, dict) else None
        return model if isinstance(model, str) and model else None

    def __contains__(self, path: str) -> bool:
        """Whether the run has a tensor recorded under ``path``."""
        return path in self._tindex

    def tensor_index(self, path: str) -> int:
        try:
            return self._tindex[path]
        except KeyError:
            raise KeyError(f"no tensor {path!r} in run {self.path}") from None

    def metric(self, name: str) -> np.ndarray:
        """History of one column for all tensors: shape (records, tensors).

        A column this weightwatch writes but the run lacks (``grad_rms`` in a
        run recorded before it existed) is all NaN, as an undefined figure is.
        """
        c = self._col.get(name)
        if c is None:
            if name not in COLUMNS:
                raise KeyError(f"unknown metric {name!r}; known: {', '.join(self.columns)}")
            absent = np.full((len(self.records), len(self.tensors)), np.nan)
            absent.flags.writeable = False
            return absent
        return self._data[c, : len(self.records), : len(self.tensors)]

    def has_column(self, name: str) -> bool:
        """Whether the run was recorded with this column (old runs lack the newer ones)."""
        return name in self._col

    def history(self, tensor: str, metric: str) -> np.ndarray:
        return self.metric(metric)[:, self.tensor_index(tensor)]

    @property
    def log_keys(self) -> list[str]:
        keys: dict[str, None] = {}
        for r in self.records:
            keys.update(dict.fromkeys(r.logs))
        return list(keys)

    def log(self, key: str) -> np.ndarray:
        """History of one training log (``loss``, ``val_loss``...), NaN where absent."""
        out = np.full(len(self.records), np.nan)
        for i, r in enumerate(self.records):
            v = r.logs.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[i] = v
            elif v is None and key in r.logs:
                out[i] = np.nan  # recorded as null: non-finite at record time
        return out

    def log_present(self, key: str) -> np.ndarray:
        """Where ``key`` was logged at all (a null value means it was non-finite)."""
        return np.array([key in r.logs for r in self.records], dtype=bool)

    @property
    def epochs(self) -> np.ndarray:
        return np.array([r.epoch for r in self.records], dtype=np.int64)

    @property
    def verdict(self) -> dict | None:
        """Why live checking halted this run, if it did (see ``verdict.json``).

        Read once; an unreadable verdict is one entry in :attr:`problems`.
        """
        if self._verdict_read:
            return self._verdict
        self._verdict_read = True
        p = self.path / VERDICT
        if self.source != "weightwatch" or not os.path.lexists(p):
            return None
        try:
            verdict = loads(read_bytes(p))
        except RunFormatError as exc:
            self.problems.append(RunFormatError(f"unreadable verdict ({exc.message})", path=p))
            return None
        except (OSError, ValueError) as exc:
            self.problems.append(RunFormatError(f"unreadable verdict ({exc})", path=p))
            return None
        if not isinstance(verdict, dict):
            self.problems.append(RunFormatError("unreadable verdict (not an object)", path=p))
            return None
        self._verdict = verdict
        return verdict

    def tensors_at(self, record: int | None = None) -> dict[str, np.ndarray]:
        """The saved tensors of a record (``save_tensors=True`` runs)."""
        if record is None:
            record = self.records[-1].index
        rec = next((r for r in self.records if r.index == record), None)
        if rec is None or not rec.tensors_file:
            raise RunFormatError(f"record {record} has no saved tensors (record with save_tensors=True)",
                                 path=self.path)
        return load_npz(run_file(self.path, rec.tensors_file))

    def __repr__(self) -> str:
        return (f"<Run {str(self.path)!r} source={self.source} records={len(self.records)} "
                f"tensors={len(self.tensors)}>")


