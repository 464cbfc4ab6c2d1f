"""The writer that keeps a run directory whole: the manifest, then one snapshot per record.

Every file but the append-only, checksummed journal is written whole (see
:mod:`.jsonio`); a record's files are fsynced on a background thread after
the rename (see :mod:`.fsync`).  The writer knows nothing about any
framework: it takes rows of figures in :data:`~.schema.COLUMNS` order.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import threading
import zlib
from pathlib import Path

import numpy as np

from .._version import __version__
from ..errors import RunDirNotEmptyError, RunFormatError
from . import journal
from .digest import KEY, record_digest
from .fsync import BACKGROUND_SYNC, sync_later, wait_for_sync
from .lock import DirLock
from .files import read_bytes
from .jsonio import atomic_write, dumps, loads, write_json
from .npz import fingerprint, save_npz
from .schema import (
    COLUMNS, COUNT_COLUMNS, FLAG_COLUMNS, FORMAT, HEALTHY, HEALTHY_POINTER, JSON_TYPES, MANIFEST,
    RECORD_RE, SNAPSHOT_FORMAT, VERDICT, VERSION, record_name, where_label,
)

_FLAGS = [COLUMNS.index(c) for c in FLAG_COLUMNS]
_COUNTS = [COLUMNS.index(c) for c in COUNT_COLUMNS]


def canonical(values: np.ndarray) -> np.ndarray:
    """Figures (tensors x columns) as the snapshot states them, in place.

    Non-finite figures are null (NaN), flags are 0 or 1, counts whole
    numbers: the journal and the live checks then hold exactly what the
    JSON says.  The statistics never produce anything else; hand-made rows might.
    """
    if values.size:
        values[~np.isfinite(values)] = np.nan
        with np.errstate(invalid="ignore"):
            flags = values[:, _FLAGS]
            values[:, _FLAGS] = np.where(np.isnan(flags), np.nan, flags != 0)
        values[:, _COUNTS] = np.trunc(values[:, _COUNTS])
    return values


def json_row(row: list[float]) -> list:
    """One tensor's canonical figures as its snapshot row: booleans, counts, floats, null."""
    return [None if x != x else x if t is int and abs(x) >= 2 ** 53 else t(x)
            for t, x in zip(JSON_TYPES, row)]


class Missing:
    """What a writer could not write: kept apart by kind, so one failure never stops the others,
    and told in one line at the end (:meth:`summary`).

    Kinds: ``record`` (a snapshot not written), ``tensors`` (a record kept without its
    ``.npz``), ``journal`` (a record without its ``history.bin`` entry: read from its JSON
    instead), ``sync`` (a record whose fsync failed), ``healthy`` (``healthy.npz`` behind the
    last record that passed), ``verdict``.
    """

    def __init__(self):
        self.failed: dict[str, list] = {}     # kind -> [what]
        self.reasons: dict[str, str] = {}     # kind -> the last error
        #: Called with (kind, what, error) at each failure (the session's io_errors="raise").
        self.listener = None

    def add(self, kind: str, what, exc: BaseException) -> None:
        self.failed.setdefault(kind, []).append(what)
        self.reasons[kind] = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if self.listener is not None:
            self.listener(kind, what, exc)

    def __bool__(self) -> bool:
        return bool(self.failed)

    def clear(self) -> None:
        self.failed.clear()
        self.reasons.clear()

    def summary(self, healthy: tuple | None = None) -> str:
        """What is missing, in one line (``healthy``: (record kept, last record that passed))."""
        def items(kind):
            return _ranges(list(dict.fromkeys(self.failed[kind])))

        parts = []
        if "record" in self.failed:
            n = len(self.failed["record"])
            parts.append(f"{n} record{'s' if n != 1 else ''} not written ({items('record')}: "
                         f"{self.reasons['record']})")
        if "tensors" in self.failed:
            parts.append(f"the tensors of record{'s' if len(self.failed['tensors']) > 1 else ''} "
                         f"{items('tensors')} not saved ({self.reasons['tensors']}; the records are kept)")
        if "sync" in self.failed:
            parts.append(f"{items('sync')} may not have reached the disk (fsync: {self.reasons['sync']})")
        if healthy is not None and healthy[0] != healthy[1]:
            kept = "no weights" if healthy[0] is None else f"record {healthy[0]}"
            parts.append(f"healthy.npz holds {kept}, not record {healthy[1]}, the last that passed "
                         f"({self.reasons.get('healthy', 'not written')})")
        if "verdict" in self.failed:
            parts.append(f"verdict.json not written ({self.reasons['verdict']})")
        if "journal" in self.failed:
            parts.append(f"history.bin lacks record{'s' if len(self.failed['journal']) > 1 else ''} "
                         f"{items('journal')} (read from their JSON instead: {self.reasons['journal']})")
        return "; ".join(parts)


def _ranges(items: list) -> str:
    """``3-5, 8`` for whole numbers, ``epoch 3-5, epoch 8`` for record labels; at most 8 parts."""
    import re

    keyed = []
    for x in items:
        m = re.fullmatch(r"(epoch )?(\d+)", str(x))
        keyed.append((m.group(1) or "", int(m.group(2))) if m else (str(x), None))
    parts: list[str] = []
    k = 0
    while k < len(keyed):
        prefix, n = keyed[k]
        j = k
        while n is not None and j + 1 < len(keyed) and keyed[j + 1] == (prefix, keyed[j][1] + 1):
            j += 1
        parts.append(prefix + (f"{n}-{keyed[j][1]}" if j > k else str(n)) if n is not None else prefix)
        k = j + 1
    return ", ".join(parts[:8]) + (f" and {len(parts) - 8} more" if len(parts) > 8 else "")


class RunWriter:
    """Writes one run directory: the manifest, then a snapshot per record.

    ``tensors`` in the manifest only grows: a subclassed model creates its
    variables at its first call, and a continued run may add layers.
    """

    def __init__(self, run_dir, *, overwrite: bool = False, resume: bool = False,
                 model_name: str | None = None, info: dict | None = None):
        self.dir = Path(run_dir)
        self.model_name = model_name
        self.tensors: list[dict] = []
        self._index: dict[str, int] = {}
        self.next_record = 0
        self._journaling = True
        #: The record whose weights ``healthy.npz`` holds (None: none yet).
        self.healthy_record: int | None = None
        self._healthy_thread: threading.Thread | None = None
        self._healthy_error: OSError | None = None
        #: The last record whose weights were to be kept as healthy.
        self.healthy_wanted: int | None = None
        #: What could not be written, by kind (each kind is retried at the next record).
        self.missing = Missing()
        self._manifest_dirty = False
        self._journal_torn = False
        existing = self.dir / MANIFEST
        if self.dir.exists() and not self.dir.is_dir():
            raise RunFormatError("run directory is a file, not a directory", path=self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        # One writer at a time, from before anything is read or cleared (see lock.py).
        self._lock = DirLock(self.dir)
        self._lock.acquire()
        try:
            self._open(existing, overwrite=overwrite, resume=resume, info=info)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, existing: Path, *, overwrite: bool, resume: bool, info: dict | None) -> None:
        model_name = self.model_name
        if existing.exists() and resume:
            self._resume(existing)
        else:
            if self.dir.exists() and any(self.dir.iterdir()):
                if not overwrite:
                    raise RunDirNotEmptyError(
                        "run directory is not empty; pass overwrite=True to replace it, "
                        "a new run_dir, or fit(initial_epoch=k) to continue the run it holds",
                        path=self.dir,
                    )
                self._clear()
            self.manifest = {
                "format": FORMAT,
                "version": VERSION,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "model": model_name,
                "columns": list(COLUMNS),
                # Every record from this one on states the digest of its figures (digest.py).
                "digests_from": 0,
                "versions": {"weightwatch": __version__, "python": platform.python_version(),
                             "numpy": np.__version__},
                "tensors": self.tensors,
            }
            if info:
                self.manifest.update(info)
            self.write_manifest()

    def _resume(self, manifest_path: Path) -> None:
        try:
            manifest = loads(read_bytes(manifest_path))
        except (OSError, ValueError, RunFormatError) as exc:
            raise RunFormatError(f"cannot continue this run: unreadable manifest ({exc})",
                                 path=manifest_path) from None
        if manifest.get("format") != FORMAT:
            raise RunFormatError("cannot continue this run: not a weightwatch run", path=manifest_path)
        if self.model_name and manifest.get("model") not in (None, self.model_name):
            raise RunDirNotEmptyError(
                f"run directory holds a run of model {manifest.get('model')!r}, not "
                f"{self.model_name!r}; pass overwrite=True or use another run_dir",
                path=self.dir,
            )
        columns = list(manifest.get("columns") or COLUMNS)
        if columns[:len(COLUMNS)] != list(COLUMNS[:len(columns)]):
            raise RunFormatError("cannot continue this run: its columns are not the ones this "
                                 "weightwatch writes", path=manifest_path)
        self.manifest = manifest
        self.tensors = manifest.setdefault("tensors", [])
        if len(columns) < len(COLUMNS):
            # A run recorded before the newer columns existed gains them from here on;
            # its earlier records, shorter, are read with those figures null.
            manifest["columns"] = list(COLUMNS)
            self.write_manifest()
        self._index = {t["path"]: i for i, t in enumerate(self.tensors)}
        indices = [int(m.group(1)) for f in os.listdir(self.dir) if (m := RECORD_RE.match(f))]
        self.next_record = max(indices) + 1 if indices else 0
        if "digests_from" not in manifest:  # a run written before records stated their digest
            manifest["digests_from"] = self.next_record
            self.write_manifest()
        try:
            journal.repair(self.dir / journal.JOURNAL)  # a torn last entry, if the run crashed
        except OSError:
            self._journaling = False  # unreadable or read-only: records are read from JSON

    def _clear(self) -> None:
        for f in self.dir.iterdir():
            if f.is_file() and (f.name in (MANIFEST, VERDICT, HEALTHY, HEALTHY_POINTER, journal.JOURNAL)
                                or RECORD_RE.match(f.name) or f.name.endswith(".npz")
                                or f.name.endswith(".tmp")):
                f.unlink()

    # -- the lock ---------------------------------------------------------------------------
    @property
    def locked(self) -> bool:
        """Whether this writer holds the run directory's lock."""
        return self._lock.held

    def close(self) -> None:
        """Let go of the run: waits for the healthy-weights write, releases the lock."""
        self.wait_healthy()
        self._lock.release()

    def reopen(self) -> None:
        """Take the lock again for another fit (after :meth:`close`): RunDirLockedError if
        another process took the run meanwhile; records it wrote meanwhile are kept."""
        if self._lock.held:
            return
        self._lock.acquire()
        indices = [int(m.group(1)) for f in os.listdir(self.dir) if (m := RECORD_RE.match(f))]
        self.next_record = max([self.next_record - 1, *indices]) + 1

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def mark_manifest_dirty(self) -> None:
        """The manifest in memory changed but could not be written: written before the next record."""
        self._manifest_dirty = True

    def write_manifest(self) -> None:
        self._lock.check()
        write_json(self.dir / MANIFEST, self.manifest)

    def add_tensors(self, entries: list[dict]) -> None:
        """Add tensors (path, layer, shape, dtype, kind = their role) not yet in the table.

        A manifest that cannot be rewritten now is rewritten before the next
        record (which :meth:`write_record` refuses to write until it is: a
        record never names a tensor the manifest on disk lacks).
        """
        added = False
        for e in entries:
            if e["path"] not in self._index:
                e = dict(e, first_record=self.next_record)
                self._index[e["path"]] = len(self.tensors)
                self.tensors.append(e)
                added = True
        if added:
            self._manifest_dirty = True
            try:
                self.write_manifest()
                self._manifest_dirty = False
            except OSError:
                pass  # retried, and reported, by the record that needs it

    def write_record(self, *, epoch: int, batch: int | None, step: int | None, trigger: str,
                     logs: dict, wall: float, rows: dict[str, list] | None = None,
                     paths: list[str] | None = None, values: np.ndarray | None = None,
                     arrays: dict[str, np.ndarray] | None = None) -> int:
        """Write one snapshot (and its tensors first, so a snapshot never points at nothing).

        The figures come as ``paths`` and ``values`` (tensors x columns, NaN
        for undefined: what :class:`~.rows.RowBuilder` fills) or,
        for convenience, as ``rows``: ``{path: [figure per column]}``.
        ``values`` is put in :func:`canonical` form in place, so the caller
        goes on with exactly the figures the snapshot states.
        """
        if rows is not None:
            paths = list(rows)
            values = (np.array(list(rows.values()), dtype=np.float64) if rows
                      else np.empty((0, len(COLUMNS))))
        values = canonical(np.asarray(values, dtype=np.float64).reshape(len(paths), len(COLUMNS)))
        self._lock.check()
        index = self.next_record
        # The previous record's background fsync (long done, normally).
        try:
            wait_for_sync(self.dir)
        except OSError as exc:
            self.missing.add("sync", record_name(index - 1), exc)
        try:
            if self._manifest_dirty:
                self.write_manifest()
                self._manifest_dirty = False
        except OSError as exc:
            self.missing.add("record", where_label(epoch, batch), exc)
            raise
        tensors_file = None
        if arrays is not None:
            try:
                save_npz(self.dir / record_name(index, ".npz"), arrays)
                tensors_file = record_name(index, ".npz")
            except OSError as exc:  # the record is kept, without its tensors
                self.missing.add("tensors", index, exc)
        meta = {
            "format": SNAPSHOT_FORMAT,
            "version": VERSION,
            "record": index,
            "epoch": epoch,
            "batch": batch,
            "step": step,
            "kind": trigger,  # on disk, a record's trigger is its "kind"
            "time": wall,
            "logs": logs,
            "tensors_file": tensors_file,
        }
        # First in the file, so a reader finds it without parsing (see digest.py).
        meta = {KEY: record_digest(self.manifest["columns"], meta, paths, values), **meta}
        path = self.dir / record_name(index)
        written = _SnapshotWriter(meta, paths, values)
        try:
            atomic_write(path, written, fsync=not BACKGROUND_SYNC)
        except OSError as exc:
            self.missing.add("record", where_label(epoch, batch), exc)
            raise
        self.next_record = index + 1
        if BACKGROUND_SYNC:
            sync_later(path)
        self._journal(index, written, meta, paths, values)
        return index

    def _journal(self, index: int, written: _SnapshotWriter, meta: dict, paths: list[str],
                 values: np.ndarray) -> None:
        """Mirror the record just written into the journal (see :mod:`.journal`).

        After the record's rename: a crash in between leaves a record without
        an entry, which readers parse from its JSON.
        """
        ids = [self._index.get(p) for p in paths]
        if not self._journaling or None in ids:
            return  # (a tensor missing from the manifest) this record is read from its JSON
        path = self.dir / journal.JOURNAL
        try:
            if self._journal_torn:  # a failed append whose cut failed too: cut it now
                journal.repair(path)
                self._journal_torn = False
            journal.append(path, record=index, file_size=written.size, file_crc=written.crc,
                           meta=dumps(meta), ids=ids, paths=paths, values=values)
        except OSError as exc:
            # The record itself is on disk; only the reading shortcut is lost, for this record.
            self._journal_torn = True
            self.missing.add("journal", index, exc)
            return
        if BACKGROUND_SYNC:
            sync_later(path)

    def write_verdict(self, verdict: dict) -> None:
        """``verdict.json``, after the healthy weights it names are on disk."""
        self.wait_healthy()
        try:
            write_json(self.dir / VERDICT, verdict)
        except OSError as exc:
            self.missing.add("verdict", VERDICT, exc)
            raise

    # -- the last healthy weights (healthy.npz) ----------------------------------------------
    def keep_healthy(self, index: int, arrays: dict) -> None:
        """Keep the weights of record ``index`` as the last healthy ones (``healthy.npz``).

        Written on a background thread so the next epoch trains meanwhile:
        ``arrays`` are the recording session's copies of this record, which are
        replaced, never mutated, at the next record - and the next record
        starts with :meth:`wait_healthy`, so no more than one copy is ever
        held.  When the record has its tensors on disk already
        (``save_tensors=True``) the file is hard-linked instead.
        """
        self.wait_healthy()
        self.healthy_wanted = index
        sidecar = self.dir / record_name(index, ".npz")
        if sidecar.exists() and self._link(sidecar, self.dir / HEALTHY):
            self._write_pointer(index, sidecar.name)
            self.healthy_record = index
            return
        snapshot = dict(arrays)

        def write():
            try:
                save_npz(self.dir / HEALTHY, snapshot)
                self._write_pointer(index, HEALTHY)
                self.healthy_record = index
            except OSError as exc:
                self._healthy_error = exc

        self._healthy_thread = threading.Thread(target=write, name="weightwatch-healthy", daemon=True)
        self._healthy_thread.start()

    def wait_healthy(self) -> OSError | None:
        """Wait for the healthy-weights write in flight; return the OSError it met, if any.

        A failed write leaves the previous healthy weights in place (and in
        :attr:`missing`); the next record that passes tries again.
        """
        thread = self._healthy_thread
        if thread is not None:
            thread.join()
            self._healthy_thread = None
        error = self._healthy_error
        if error is not None:
            self._healthy_error = None
            self.missing.add("healthy", self.healthy_wanted, error)
        return error

    @staticmethod
    def _link(source, target) -> bool:
        tmp = target.with_name(f".{target.name}.link.tmp")
        try:
            if tmp.exists():
                tmp.unlink()
            os.link(source, tmp)
            os.replace(tmp, target)
            return True
        except OSError:
            return False  # filesystems without hard links: write a copy

    def _write_pointer(self, index, file):
        path = self.dir / HEALTHY_POINTER
        # healthy.npz is in place already; the pointer pins its contents, so that a pointer
        # left behind by a failed write never names the wrong record (reader.read_weights).
        pointer = {"record": index, "file": file, "contents": fingerprint(self.dir / HEALTHY)}
        # Renamed into place now, fsynced off the training thread like the records.
        atomic_write(path, dumps(pointer), fsync=False)
        sync_later(path)


class _SnapshotWriter:
    """Writes the snapshot ``{**meta, "tensors": {path: row}}`` as compact JSON, a few dozen rows at a time.

    Byte for byte what one ``dumps`` would give, without holding the whole
    document (and its encoder's buffer, several times its size) in memory:
    on a model of many small tensors the snapshot is most of a record's
    memory.  Keeps the size and CRC-32 of what it wrote, for the journal.
    """

    ROWS_PER_WRITE = 16

    def __init__(self, meta: dict, paths: list[str], values: np.ndarray):
        self.meta, self.paths, self.values = meta, paths, values
        self.size = self.crc = 0

    def __call__(self, f) -> None:
        head = dumps(self.meta)
        self._put(f, head[:-1] + b',"tensors":{' if len(head) > 2 else b'{"tensors":{')
        step = self.ROWS_PER_WRITE
        for i in range(0, len(self.paths), step):
            chunk = dict(zip(self.paths[i:i + step], map(json_row, self.values[i:i + step].tolist())))
            self._put(f, (b"," if i else b"") + dumps(chunk)[1:-1])
        self._put(f, b"}}")

    def _put(self, f, data: bytes) -> None:
        f.write(data)
        self.size += len(data)
        self.crc = zlib.crc32(data, self.crc)

