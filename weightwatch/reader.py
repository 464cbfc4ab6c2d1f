"""Reading a run: ``open_run(path)`` -> :class:`Run`, with metric histories as arrays.

Checks work on whole histories (records x tensors) at once, so the reader's
job is to turn a folder of snapshots into one float array per metric, as
cheaply as parsing them allows.  It never imports TensorFlow.

A damaged record does not hide the others: every readable snapshot is read,
and each unreadable one becomes an entry in :attr:`Run.problems` that the
report shows and that makes ``weightwatch check`` exit non-zero.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import journal
from .errors import RunFormatError, RunNotFoundError
from .jsonio import TMP_SUFFIX, loads
from .runformat import (
    FORMAT, MANIFEST, RECORD_RE, SNAPSHOT_FORMAT, VERDICT, VERSION, load_npz,
    tensor_kind,
)
from .stats import COLUMNS


@dataclass
class TensorInfo:
    """One tensor of the run: identity and static facts."""

    path: str
    layer: str
    shape: tuple | None = None
    dtype: str | None = None
    kind: str = "other"
    first_record: int = 0

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def units(self) -> int | None:
        """Output units of a kernel (its last axis), for dead-unit checks."""
        if self.shape and len(self.shape) >= 2:
            return int(self.shape[-1])
        return None


@dataclass
class Record:
    """One snapshot: when it was taken and the training logs at that moment."""

    index: int
    epoch: int
    batch: int | None = None
    step: int | None = None
    kind: str = "epoch"
    time: float | None = None
    logs: dict = field(default_factory=dict)
    file: str | None = None
    tensors_file: str | None = None

    @property
    def label(self) -> str:
        """How reports name this record: ``epoch 3`` or ``epoch 3 batch 200``."""
        if self.batch is not None:
            return f"epoch {self.epoch} batch {self.batch}"
        return f"epoch {self.epoch}"


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
        self._histories_cache = None  # see checks.Histories

    # -- building ---------------------------------------------------------------
    def add_tensor(self, info: TensorInfo) -> int:
        i = self._tindex.get(info.path)
        if i is None:
            i = self._tindex[info.path] = len(self.tensors)
            self.tensors.append(info)
        return i

    def append(self, record: Record, paths: list[str], values: np.ndarray) -> None:
        """Add one record: ``values[i]`` is tensor ``paths[i]``'s row in :attr:`columns` order."""
        for p in paths:
            if p not in self._tindex:
                self.add_tensor(TensorInfo(p, p.rsplit("/", 1)[0] if "/" in p else p,
                                           first_record=len(self.records)))
        idx = [self._tindex[p] for p in paths]
        self._store(record, idx, np.asarray(values).T, in_order=idx == list(range(len(idx))))

    def _store(self, record: Record, idx, columns: np.ndarray, *, in_order: bool) -> None:
        """Add one record whose ``columns[c, i]`` is column c of tensor ``idx[i]``.

        ``in_order``: ``idx`` is 0, 1, 2...
        """
        r = len(self.records)
        self._grow(r + 1, len(self.tensors))
        n = len(idx)
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

    def tensor_index(self, path: str) -> int:
        try:
            return self._tindex[path]
        except KeyError:
            raise KeyError(f"no tensor {path!r} in run {self.path}") from None

    def metric(self, name: str) -> np.ndarray:
        """History of one column for all tensors: shape (records, tensors)."""
        try:
            c = self._col[name]
        except KeyError:
            raise KeyError(f"unknown metric {name!r}; known: {', '.join(self.columns)}") from None
        return self._data[c, : len(self.records), : len(self.tensors)]

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
        """Why live checking halted this run, if it did (see ``verdict.json``)."""
        p = self.path / VERDICT
        if self.source != "weightwatch" or not p.exists():
            return None
        try:
            return loads(p.read_bytes())
        except (OSError, ValueError) as exc:
            self.problems.append(RunFormatError(f"unreadable verdict ({exc})", path=p))
            return None

    def tensors_at(self, record: int | None = None) -> dict[str, np.ndarray]:
        """The saved tensors of a record (``save_tensors=True`` runs)."""
        if record is None:
            record = self.records[-1].index
        rec = next((r for r in self.records if r.index == record), None)
        if rec is None or not rec.tensors_file:
            raise RunFormatError(f"record {record} has no saved tensors (record with save_tensors=True)",
                                 path=self.path)
        return load_npz(self.path / rec.tensors_file)

    def __repr__(self) -> str:
        return (f"<Run {str(self.path)!r} source={self.source} records={len(self.records)} "
                f"tensors={len(self.tensors)}>")


def open_run(path) -> Run:
    """Open a run directory written by :class:`~weightwatch.WatchCallback`.

    Also opens folders written the naive way (one ``<prefix><N>.json`` per
    epoch holding ``{layer_name: [nested lists]}``); see
    :mod:`weightwatch.seedformat`.  Raises :class:`RunNotFoundError` for a
    missing or empty directory and :class:`RunFormatError` when the manifest
    itself is unusable; damaged records are listed in ``run.problems``.
    """
    path = Path(path)
    if not path.exists():
        raise RunNotFoundError("no such run directory", path=path)
    if not path.is_dir():
        raise RunNotFoundError("not a directory (give the run directory, not a file in it)", path=path)
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        from .seedformat import looks_like_seed_run, open_seed_run

        if any(RECORD_RE.match(name) for name in os.listdir(path)):
            # Not a naive dump with prefix "record-": a weightwatch run that lost its manifest.
            raise RunFormatError("weightwatch records without manifest.json: the run directory "
                                 "is incomplete (copied partially?)", path=manifest_path)

        if looks_like_seed_run(path):
            return open_seed_run(path)
        raise RunNotFoundError(
            "no weightwatch run here (no manifest.json and no <name><N>.json weight dumps)", path=path)
    return _open_weightwatch_run(path, manifest_path)


def _open_weightwatch_run(path: Path, manifest_path: Path) -> Run:
    try:
        manifest = loads(manifest_path.read_bytes())
    except ValueError as exc:
        raise RunFormatError(f"invalid JSON ({exc})", path=manifest_path) from None
    except OSError as exc:
        raise RunFormatError(f"cannot read ({exc.strerror})", path=manifest_path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RunFormatError(f"not a weightwatch manifest (format should be {FORMAT!r})",
                             path=manifest_path)
    version = manifest.get("version")
    if version != VERSION:
        raise RunFormatError(
            f"unsupported format version {version!r} (this weightwatch reads version {VERSION}; "
            "upgrade weightwatch to read newer runs)", path=manifest_path)
    columns = manifest.get("columns") or list(COLUMNS)
    run = Run(path, source="weightwatch", manifest=manifest, columns=columns)
    for t in manifest.get("tensors", []):
        try:
            shape = tuple(t["shape"]) if t.get("shape") is not None else None
            run.add_tensor(TensorInfo(
                path=t["path"], layer=t.get("layer") or t["path"].rsplit("/", 1)[0],
                shape=shape, dtype=t.get("dtype"),
                kind=t.get("kind") or tensor_kind(t["path"], len(shape) if shape else None),
                first_record=int(t.get("first_record", 0))))
        except (KeyError, TypeError, ValueError):
            raise RunFormatError(f"malformed tensor entry {t!r} in the tensor table",
                                 path=manifest_path) from None

    files = sorted((int(m.group(1)), name) for name in os.listdir(path)
                   if not name.endswith(TMP_SUFFIX) and (m := RECORD_RE.match(name)))
    run.reserve(len(files), len(run.tensors))
    mirrored = journal.read(path / journal.JOURNAL)
    known_ids: dict[tuple, bool | None] = {}
    for index, name in files:
        fp = path / name
        try:
            data = fp.read_bytes()
            entry = mirrored.get(index)
            if entry is not None and entry.mirrors(data):
                in_order = _ids_in_order(run, entry, known_ids)
                if in_order is not None:
                    # The journal holds this very file's figures: no parsing.
                    run._store(_record(loads(entry.meta), index, name), entry.ids, entry.values.T,
                               in_order=in_order)
                    continue
            snap = loads(data)
            record, paths, values = _parse_snapshot(snap, index, name, len(run.columns))
        except (OSError, ValueError, TypeError, KeyError, OverflowError) as exc:
            msg = str(exc) or type(exc).__name__
            run.problems.append(RunFormatError(f"unreadable record, skipped ({msg})", path=fp))
            continue
        run.append(record, paths, values)
    if not run.records:
        if run.problems:
            raise run.problems[0]
        raise RunNotFoundError("run has no records yet (training never reached its first record)",
                               path=path)
    return run


def _parse_snapshot(snap, index: int, name: str, ncols: int):
    record = _record(snap, index, name)
    rows = snap["tensors"]
    if not isinstance(rows, dict):
        raise ValueError("'tensors' is not an object")
    paths = list(rows)
    # Records without a journal entry: numpy reads null as NaN and booleans as 0/1.
    try:
        values = (np.array(list(rows.values()), dtype=np.float64) if rows
                  else np.empty((0, ncols)))
    except (TypeError, ValueError):
        values = None
    if values is None or values.shape != (len(paths), ncols):
        # Name the offending tensor: numpy's own message does not.
        bad = next((p for p, row in rows.items() if not isinstance(row, list) or len(row) != ncols
                    or not all(v is None or isinstance(v, (int, float)) for v in row)), "?")
        raise ValueError(f"tensor {bad!r}: expected {ncols} numbers")
    return record, paths, values


def _record(snap, index: int, name: str) -> Record:
    """The record a snapshot (or its journal entry's copy of it, without tensors) describes."""
    if not isinstance(snap, dict) or snap.get("format") != SNAPSHOT_FORMAT:
        raise ValueError("not a weightwatch snapshot")
    if snap.get("version") != VERSION:
        raise ValueError(f"unsupported snapshot version {snap.get('version')!r}")
    return Record(index=int(snap.get("record", index)), epoch=int(snap["epoch"]),
                  batch=snap.get("batch"), step=snap.get("step"), kind=snap.get("kind", "epoch"),
                  time=snap.get("time"), logs=snap.get("logs") or {}, file=name,
                  tensors_file=snap.get("tensors_file"))


def _ids_in_order(run: Run, entry, known: dict) -> bool | None:
    """None when the entry's tensor ids no longer name, in this manifest, the tensors
    they named when written; else whether they are 0, 1, 2..."""
    key = (entry.ids.tobytes(), entry.paths_crc, entry.values.shape[1])
    if key not in known:
        ids = entry.ids.tolist()
        valid = (entry.values.shape[1] == len(run.columns)
                 and all(0 <= i < len(run.tensors) for i in ids)
                 and journal.paths_crc(run.tensors[i].path for i in ids) == entry.paths_crc)
        known[key] = (ids == list(range(len(ids)))) if valid else None
    return known[key]
