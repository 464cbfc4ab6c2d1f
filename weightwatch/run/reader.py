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
import stat
import zipfile
from pathlib import Path

import numpy as np

from ..errors import RestoreError, RunFormatError, RunNotFoundError
from . import digest, journal, validate
from .files import read_bytes, run_file
from .jsonio import TMP_SUFFIX, loads
from .model import Record, Run, TensorInfo
from .npz import fingerprint, load_npz
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
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        raise RunNotFoundError("no such run directory", path=path) from None
    except OSError as exc:  # no permission to list or reach it, ...
        raise RunFormatError(f"cannot read the run directory ({exc.strerror or exc})", path=path) from None
    if not stat.S_ISDIR(mode):
        raise RunNotFoundError("not a directory (give the run directory, not a file in it)", path=path)
    manifest_path = path / MANIFEST
    if MANIFEST not in names:
        from .seeddump import looks_like_seed_run, open_seed_run

        if any(RECORD_RE.match(name) for name in names):
            # Not a naive dump with prefix "record-": a weightwatch run that lost its manifest.
            raise RunFormatError("weightwatch records without manifest.json: the run directory "
                                 "is incomplete (copied partially?)", path=manifest_path)

        if looks_like_seed_run(path):
            return open_seed_run(path)
        raise RunNotFoundError(
            "no weightwatch run here (no manifest.json and no <name><N>.json weight dumps)", path=path)
    return _open_weightwatch_run(path, manifest_path)


#: History arrays always allowed, whatever the run's files weigh; beyond, the arrays may weigh
#: at most DENSITY times the record files (a run's arrays weigh about what its records do:
#: far more means a manifest naming tensors its records do not hold).
MIN_HISTORY_BYTES = 256 * 2 ** 20
DENSITY = 16


def _open_weightwatch_run(path: Path, manifest_path: Path) -> Run:
    try:
        manifest = loads(read_bytes(manifest_path))
    except ValueError as exc:
        raise RunFormatError(f"invalid JSON ({exc})", path=manifest_path) from None
    except OSError as exc:
        raise RunFormatError(f"cannot read ({exc.strerror})", path=manifest_path) from None
    try:
        validate.check_manifest_head(manifest)
    except validate.SchemaError as exc:
        raise RunFormatError(str(exc), path=manifest_path) from None
    files, on_disk = [], 0
    with os.scandir(path) as entries:
        for e in entries:
            if not e.name.endswith(TMP_SUFFIX) and (m := RECORD_RE.match(e.name)):
                files.append((int(m.group(1)), e.name))
                try:
                    on_disk += e.stat(follow_symlinks=False).st_size
                except OSError:
                    pass
    files.sort()
    # Before the tensor table is even validated: a table of millions costs seconds.
    ntensors = len(manifest["tensors"]) if isinstance(manifest.get("tensors"), list) else 0
    columns = manifest.get("columns")
    need = 8 * (len(columns) if isinstance(columns, list) else 0) * len(files) * ntensors
    if need > MIN_HISTORY_BYTES and need > DENSITY * on_disk:
        raise RunFormatError(
            f"refusing to read: {ntensors:,} tensors x {len(files):,} records would take "
            f"{need / 2 ** 30:.1f} GiB of history, but the records hold {on_disk / 2 ** 20:.0f} MiB "
            "(a manifest naming tensors its records do not hold?)", path=manifest_path)
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

    try:
        run.reserve(len(files), len(run.tensors))
    except MemoryError:
        raise RunFormatError(f"not enough memory for the history of {len(run.tensors):,} tensors x "
                             f"{len(files):,} records ({need / 2 ** 30:.1f} GiB)", path=path) from None
    mirrored = journal.read(path / journal.JOURNAL)
    known_ids: dict[tuple, bool | None] = {}
    paths_canon: dict = {}   # the digest's encoding of a record's paths, by ids or paths
    names_ok: set = set()
    index_of = {t.path: i for i, t in enumerate(run.tensors)}
    problems: list[tuple[int, RunFormatError]] = []

    def problem(index, fp, message):
        problems.append((index, RunFormatError(message, path=fp)))

    # 1. Each record on its own: its fields, its figures' types, its digest.
    pending = []
    for index, name in files:
        fp = path / name
        try:
            data = read_bytes(fp)
            entry = mirrored.get(index)
            read = None
            stated = digest.stated(data)
            if stated is not None and entry is not None and entry.mirrors(data):
                in_order = _ids_in_order(run, entry, known_ids)
                if in_order is not None:
                    meta = validate.check_meta(loads(entry.meta), index, with_tensors=False)
                    key = entry.ids.tobytes()
                    if key not in paths_canon:
                        paths_canon[key] = digest.canon([run.tensors[i].path for i in entry.ids.tolist()])
                    # The journal holds this very file's figures, as the file's own digest says:
                    # no parsing.
                    if digest.record_digest(run.columns, meta, None, entry.values,
                                            paths_canon=paths_canon[key]) == stated:
                        read = meta, entry.ids, entry.values, in_order
            if read is None:
                snap, paths, values = _parse_snapshot(loads(data), index, name, run.columns, names_ok)
                ids = [index_of.get(p) for p in paths]
                if None in ids:
                    raise validate.SchemaError(f"tensor {paths[ids.index(None)]!r} is not in the manifest")
                key = tuple(paths)
                if key not in paths_canon:
                    paths_canon[key] = digest.canon(paths)
                _check_digest(snap, index, run.columns, paths_canon[key], values, info.digests_from)
                read = snap, ids, values, ids == list(range(len(ids)))
        except RunFormatError as exc:
            problem(index, fp, f"unreadable record, skipped ({exc.message})")
            continue
        except (OSError, ValueError) as exc:  # SchemaError is a ValueError; so is invalid JSON
            problem(index, fp, f"unreadable record, skipped ({str(exc) or type(exc).__name__})")
            continue
        meta, ids, values, in_order = read
        pending.append((index, fp, _record(meta, index, name), ids, values, in_order))

    # 2. Every figure's range, in one pass over all of them.
    bad = validate.bad_blocks([p[4] for p in pending], run.columns)
    # 3. The records against each other, in order.
    for k, (index, fp, record, ids, values, in_order) in enumerate(pending):
        try:
            if k in bad:
                validate.check_values(values, run.columns, _Paths(run, ids))
            notes = sequence.admit(index, record.epoch, record.step, record.trigger, record.logs,
                                   list(ids))
        except validate.SchemaError as exc:
            problem(index, fp, f"unreadable record, skipped ({exc})")
            continue
        for note in notes:
            problem(index, fp, note)
        run.append_columns(record, ids, values.T, in_order=in_order)
    problems.sort(key=lambda p: p[0])
    run.problems.extend(p for _, p in problems)
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

    def __len__(self) -> int:
        return len(self.ids)


def _check_digest(snap: dict, index: int, columns, paths_canon: bytes, values, digests_from) -> None:
    """A record's figures, names and logs against the digest it states (see digest.py)."""
    stated = snap.get(digest.KEY)
    if stated is None:
        if digests_from is not None and index >= digests_from:
            raise validate.SchemaError(f'missing "{digest.KEY}" (every record of this run from '
                                       f"record {digests_from} on states one)")
        return
    meta = {k: v for k, v in snap.items() if k != "tensors"}
    if digest.record_digest(columns, meta, None, values, paths_canon=paths_canon) != stated:
        raise validate.SchemaError("damaged: its figures, names or logs do not match the digest it "
                                   "states (a bit flip or an edit)")


def _parse_snapshot(snap, index: int, name: str, columns, names_ok=None):
    """A parsed snapshot, validated but for the ranges of its figures: ``(snapshot, paths, values)``."""
    snap = validate.check_meta(snap, index)
    paths, values = validate.check_rows(snap["tensors"], columns, names_ok=names_ok, ranges=False)
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
        valid = (validate.row_width_ok(entry.values.shape[1], len(run.columns))
                 and all(0 <= i < len(run.tensors) for i in ids)
                 and journal.paths_crc(run.tensors[i].path for i in ids) == entry.paths_crc)
        known[key] = (ids == list(range(len(ids)))) if valid else None
    return known[key]


def read_weights(run_dir, record: int | None = None) -> tuple[int, dict]:
    """``(record, {path: array})``: the kept healthy weights, or record ``N``'s saved tensors.

    What :func:`weightwatch.restore` loads into a model (see :func:`plan_restore`); the
    matching of paths to a framework's variables is the adapter's job.  Raises
    :class:`~weightwatch.errors.RestoreError` for a ``record`` that is no record index,
    :class:`RunFormatError` when the weights were not kept, cannot be read, or are not the
    ones ``healthy.json`` names.
    """
    run_dir = Path(run_dir)
    if record is not None and (not validate.is_int(record) or record < 0):
        raise RestoreError(f"record must be a record index (a whole number >= 0) or None, got {record!r}",
                           path=run_dir)
    if record is None:
        pointer = run_dir / HEALTHY_POINTER
        if not os.path.lexists(run_dir / HEALTHY) or not os.path.lexists(pointer):
            raise RunFormatError("no healthy weights kept in this run (record with check=True, "
                                 "or pass record=N of a run recorded with save_tensors=True)",
                                 path=run_dir)
        try:
            data = loads(read_bytes(pointer))
        except (OSError, ValueError) as exc:
            raise RunFormatError(f"unreadable healthy-weights pointer ({exc})", path=pointer) from None
        record = data.get("record") if isinstance(data, dict) else None
        if not validate.is_int(record) or record < 0:
            raise RunFormatError(f'unreadable healthy-weights pointer ("record" must be a record index, '
                                 f"got {record!r})", path=pointer)
        contents = data.get("contents")
        if contents is not None:
            try:
                pinned = fingerprint(run_dir / HEALTHY)
            except (OSError, ValueError, zipfile.BadZipFile) as exc:
                raise RunFormatError(f"cannot read tensors ({exc})", path=run_dir / HEALTHY) from None
            if pinned != contents:
                raise RunFormatError(f"healthy.npz does not hold the weights of record {record} that "
                                     "healthy.json names (a write cut short?): not restored", path=run_dir / HEALTHY)
        return record, load_npz(run_dir / HEALTHY)
    path = run_file(run_dir, record_name(record, ".npz"))
    if not os.path.lexists(path):
        raise RunFormatError(f"record {record} has no saved tensors (record with save_tensors=True)",
                             path=run_dir)
    return record, load_npz(path)


def plan_restore(arrays: dict, variables: dict, *, allow_nonfinite: bool = False, where=None) -> list:
    """``[(path, array)]`` to assign, once every check passed; else RestoreError, nothing assigned.

    ``variables`` is ``{path: (shape, dtype)}`` of the model's variables, named as recording
    names them.  All or nothing: every variable is matched by a recorded array of the same
    name, shape and dtype and every array by a variable, and every value is finite unless
    ``allow_nonfinite``.
    """
    def fail(message):
        raise RestoreError(message + ": nothing restored", path=where)

    if not arrays:
        fail("the recorded weights hold no tensors")
    unknown = [p for p in arrays if p not in variables]
    if unknown:
        fail(f"the model has no variable {unknown[0]!r}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1
                                                           else "") + " recorded in this run: is it the same model?")
    absent = [p for p in variables if p not in arrays]
    if absent:
        fail(f"no recorded weights for the model's variable {absent[0]!r}"
             + (f" (and {len(absent) - 1} more)" if len(absent) > 1 else "")
             + " (recorded with include/exclude or trainable_only?)")
    plan = []
    for path, (shape, dtype) in variables.items():
        a = arrays[path]
        if not isinstance(a, np.ndarray):
            fail(f"tensor {path!r} is not an array")
        if tuple(a.shape) != tuple(shape):
            fail(f"tensor {path!r}: recorded shape {tuple(a.shape)} != model shape {tuple(shape)}")
        try:
            same = a.dtype == np.dtype(dtype)
        except TypeError:  # a dtype numpy does not know by name (bfloat16 without ml_dtypes)
            same = str(a.dtype) == str(dtype)
        if not same:
            fail(f"tensor {path!r}: recorded dtype {a.dtype} != model dtype {dtype}")
        if not allow_nonfinite and a.dtype.kind in "fc" and not np.isfinite(a).all():
            n = int(a.size - np.isfinite(a).sum())
            fail(f"tensor {path!r} holds {n} NaN/Inf value{'s' if n != 1 else ''} "
                 "(allow_nonfinite=True restores them anyway)")
        plan.append((path, a))
    return plan
