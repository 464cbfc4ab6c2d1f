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
from . import journal, validate
from .jsonio import TMP_SUFFIX, loads
from .model import Record, Run, TensorInfo
from .npz import load_npz
from .schema import HEALTHY, HEALTHY_POINTER, MANIFEST, RECORD_RE, layer_of, record_name


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
    try:
        info = validate.check_manifest(manifest)
    except validate.SchemaError as exc:
        raise RunFormatError(str(exc), path=manifest_path) from None
    run = Run(path, source="weightwatch", manifest=manifest, columns=info.columns)
    for t in info.tensors:
        shape = tuple(t["shape"]) if t.get("shape") is not None else None
        run.add_tensor(TensorInfo(
            path=t["path"], layer=t["layer"] if t.get("layer") is not None else layer_of(t["path"]),
            shape=shape, dtype=t.get("dtype"), role=t["kind"], layer_path=t.get("layer_path"),
            first_record=t["first_record"]))
    sequence = validate.Sequence(run.tensor_names, [t.first_record for t in run.tensors],
                                 sparse=info.sparse)

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
            read = None
            if entry is not None and entry.mirrors(data):
                in_order = _ids_in_order(run, entry, known_ids)
                if in_order is not None:
                    # The journal holds this very file's figures: no parsing.
                    meta = validate.check_meta(loads(entry.meta), index, with_tensors=False)
                    validate.check_values(entry.values, run.columns, _Paths(run, entry.ids))
                    read = meta, entry.ids, entry.values.T, in_order
            if read is None:
                snap, paths, values = _parse_snapshot(loads(data), index, name, run.columns)
                unknown = next((p for p in paths if p not in run), None)
                if unknown is not None:
                    raise validate.SchemaError(f"tensor {unknown!r} is not in the manifest")
                ids = [run.tensor_index(p) for p in paths]
                read = snap, ids, values.T, ids == list(range(len(ids)))
            meta, ids, columns, in_order = read
            record = _record(meta, index, name)
            notes = sequence.admit(index, record.epoch, record.step, record.trigger, record.logs,
                                   list(ids))
        except (OSError, ValueError, TypeError, KeyError, OverflowError) as exc:
            msg = str(exc) or type(exc).__name__
            run.problems.append(RunFormatError(f"unreadable record, skipped ({msg})", path=fp))
            continue
        run.problems.extend(RunFormatError(note, path=fp) for note in notes)
        run.append_columns(record, ids, columns, in_order=in_order)
    if not run.records:
        if run.problems:
            raise run.problems[0]
        raise RunNotFoundError("run has no records yet (training never reached its first record)",
                               path=path)
    return run


class _Paths:
    """The paths of a journal entry's tensors, looked up only to name one in a message."""

    def __init__(self, run: Run, ids):
        self.run, self.ids = run, ids

    def __getitem__(self, k: int) -> str:
        return self.run.tensors[int(self.ids[k])].path


def _parse_snapshot(snap, index: int, name: str, columns):
    """A parsed snapshot, validated: ``(snapshot, paths, values)``."""
    snap = validate.check_meta(snap, index)
    paths, values = validate.check_rows(snap["tensors"], columns)
    return snap, paths, values


def _record(snap: dict, index: int, name: str) -> Record:
    """The record a validated snapshot (or its journal entry's copy of it) describes."""
    return Record(index=index, epoch=snap["epoch"], batch=snap["batch"], step=snap["step"],
                  trigger=snap["kind"], time=snap["time"], logs=snap["logs"], file=name,
                  tensors_file=snap["tensors_file"])


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
