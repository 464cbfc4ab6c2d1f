"""Reading a run: ``open_run(path)`` -> :class:`~.model.Run`.

Its job is to turn a folder of snapshots into one float array per column, as
cheaply as parsing them allows: each record's figures come from the journal
when it still mirrors the record's file, else from the JSON.

A damaged record does not hide the others: every readable snapshot is read,
and each unreadable one becomes an entry in :attr:`Run.problems` that the
report shows and that makes ``weightwatch check`` exit non-zero.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import RunFormatError, RunNotFoundError
from . import journal
from .jsonio import TMP_SUFFIX, loads
from .model import Record, Run, TensorInfo
from .npz import load_npz
from .schema import (
    COLUMNS, FIRST_COLUMNS, FORMAT, HEALTHY, HEALTHY_POINTER, MANIFEST, RECORD_RE, SNAPSHOT_FORMAT,
    VERSION, layer_of, record_name, tensor_role,
)


def open_run(path) -> Run:
    """Open a run directory written by :class:`~weightwatch.WatchCallback`.

    Also opens folders written the naive way (one ``<prefix><N>.json`` per
    epoch holding ``{layer_name: [nested lists]}``); see
    :mod:`.seeddump`.  Raises :class:`RunNotFoundError` for a
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
        from .seeddump import looks_like_seed_run, open_seed_run

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
                path=t["path"], layer=t.get("layer", layer_of(t["path"])),
                shape=shape, dtype=t.get("dtype"),
                role=t.get("kind") or tensor_role(t["path"], len(shape) if shape else None),
                layer_path=t.get("layer_path"),
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
                    run.append_columns(_record(loads(entry.meta), index, name), entry.ids, entry.values.T,
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
    if (values is None or values.ndim != 2 or values.shape[0] != len(paths)
            or not _row_width_ok(values.shape[1], ncols)):
        # Name the offending tensor: numpy's own message does not.
        first_row = next(iter(rows.values()))
        width = len(first_row) if isinstance(first_row, list) else ncols
        bad = next((p for p, row in rows.items() if not isinstance(row, list) or len(row) != width
                    or not _row_width_ok(len(row), ncols)
                    or not all(v is None or isinstance(v, (int, float)) for v in row)), "?")
        raise ValueError(f"tensor {bad!r}: expected {ncols} numbers")
    return record, paths, values


def _row_width_ok(width: int, ncols: int) -> bool:
    """Whether a row of ``width`` figures fits a run of ``ncols`` columns.

    Columns are only ever appended, so a record written by a weightwatch that
    knew fewer of them (an old run continued by a newer version, or the other
    way round) has shorter rows: they hold the first columns, and the rest
    are read as null.
    """
    return min(ncols, len(FIRST_COLUMNS)) <= width <= ncols


def _record(snap, index: int, name: str) -> Record:
    """The record a snapshot (or its journal entry's copy of it, without tensors) describes."""
    if not isinstance(snap, dict) or snap.get("format") != SNAPSHOT_FORMAT:
        raise ValueError("not a weightwatch snapshot")
    if snap.get("version") != VERSION:
        raise ValueError(f"unsupported snapshot version {snap.get('version')!r}")
    logs = snap.get("logs") or {}
    if not isinstance(logs, dict):
        raise ValueError("'logs' is not an object")
    return Record(index=_whole(snap.get("record", index), "record"), epoch=_whole(snap.get("epoch"), "epoch"),
                  batch=_whole(snap.get("batch"), "batch", null=True),
                  step=_whole(snap.get("step"), "step", null=True), trigger=snap.get("kind", "epoch"),
                  time=snap.get("time"), logs=logs, file=name, tensors_file=snap.get("tensors_file"))


def _whole(v, key: str, null: bool = False):
    """A record's counter: a whole number (or null where allowed), else the record is unreadable."""
    if v is None and null:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{key!r} must be a whole number, got {v!r}")
    return v


def _ids_in_order(run: Run, entry, known: dict) -> bool | None:
    """None when the entry's tensor ids no longer name, in this manifest, the tensors
    they named when written; else whether they are 0, 1, 2..."""
    key = (entry.ids.tobytes(), entry.paths_crc, entry.values.shape[1])
    if key not in known:
        ids = entry.ids.tolist()
        valid = (_row_width_ok(entry.values.shape[1], len(run.columns))
                 and all(0 <= i < len(run.tensors) for i in ids)
                 and journal.paths_crc(run.tensors[i].path for i in ids) == entry.paths_crc)
        known[key] = (ids == list(range(len(ids)))) if valid else None
    return known[key]


def read_weights(run_dir, record: int | None = None) -> tuple[int, dict]:
    """``(record, {path: array})``: the kept healthy weights, or record ``N``'s saved tensors.

    What :func:`weightwatch.restore` loads into a model; the matching of
    paths to a framework's variables is the adapter's job.
    """
    run_dir = Path(run_dir)
    if record is None:
        pointer = run_dir / HEALTHY_POINTER
        if not (run_dir / HEALTHY).exists() or not pointer.exists():
            raise RunFormatError("no healthy weights kept in this run (record with check=True, "
                                 "or pass record=N of a run recorded with save_tensors=True)",
                                 path=run_dir)
        try:
            record = int(loads(pointer.read_bytes())["record"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunFormatError(f"unreadable healthy-weights pointer ({exc})", path=pointer) from None
        return record, load_npz(run_dir / HEALTHY)
    path = run_dir / record_name(record, ".npz")
    if not path.exists():
        raise RunFormatError(f"record {record} has no saved tensors (record with save_tensors=True)",
                             path=run_dir)
    return record, load_npz(path)
