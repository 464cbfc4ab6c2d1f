"""The run directory: its layout, its manifest, and the writer that keeps it whole.

A run directory is a public interface (documented in the README)::

    run/
      manifest.json          format, versions, model, the table of tensors
      record-000000.json     one snapshot per record, in order (0 = before training)
      record-000000.npz      the tensors themselves, with save_tensors=True
      history.bin            the records' figures again, in binary (see journal.py)
      verdict.json           why live checking halted the run, if it did
      healthy.npz            weights of the last record that passed live checks

Every file but the append-only, checksummed journal is written whole (see
:mod:`weightwatch.jsonio`); a record's files
are fsynced on a background thread after the rename (see :func:`sync_later`).
The writer knows nothing about Keras: it takes rows computed by
:mod:`weightwatch.stats`.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import fnmatch
import os
import platform
import re
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import __version__, journal
from .errors import RunDirNotEmptyError, RunFormatError
from .jsonio import atomic_write, dumps, loads, write_json
from .stats import COLUMNS

FORMAT = "weightwatch-run"
SNAPSHOT_FORMAT = "weightwatch-snapshot"
VERSION = 1

MANIFEST = "manifest.json"
VERDICT = "verdict.json"
HEALTHY = "healthy.npz"
HEALTHY_POINTER = "healthy.json"
RECORD_RE = re.compile(r"^record-(\d{6,})\.json$")


def record_name(index: int, suffix: str = ".json") -> str:
    return f"record-{index:06d}{suffix}"


#: Tensor kinds that rules can filter on, from the variable's own name.
_KIND_BY_NAME = {
    "kernel": "kernel", "recurrent_kernel": "kernel", "depthwise_kernel": "kernel",
    "pointwise_kernel": "kernel", "embeddings": "embedding", "bias": "bias",
    "gamma": "scale", "beta": "bias", "scale": "scale",
    "moving_mean": "moving_stat", "moving_variance": "moving_stat",
}


def tensor_kind(name: str, ndim: int | None) -> str:
    """Classify a tensor as kernel / bias / scale / embedding / moving_stat / other."""
    leaf = name.rsplit("/", 1)[-1]
    kind = _KIND_BY_NAME.get(leaf)
    if kind is None:
        if leaf.endswith("kernel"):
            kind = "kernel"
        elif leaf.endswith("bias"):
            kind = "bias"
        elif ndim is not None and ndim >= 2:
            kind = "kernel"
        else:
            kind = "other"
    return kind


def unique_paths(paths) -> list[str]:
    """The names variables are recorded under, given their paths in model order.

    Keras lets two layers share a name, and then their variables share a
    path; the second is recorded as ``path#1`` (the third ``path#2``...), so
    that neither hides the other and each is compared with its own previous
    values.  :func:`weightwatch.restore` names them the same way.
    """
    used: dict[str, int] = {}
    out = []
    for p in paths:
        n = used.get(p, 0)
        used[p] = n + 1
        out.append(p if n == 0 else f"{p}#{n}")
    return out


def select_tensors(paths, include=None, exclude=None):
    """Glob selection over tensor paths, as the recorder's include/exclude use it."""
    out = []
    for p in paths:
        if include and not any(fnmatch.fnmatchcase(p, g) for g in include):
            continue
        if exclude and any(fnmatch.fnmatchcase(p, g) for g in exclude):
            continue
        out.append(p)
    return out


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
        existing = self.dir / MANIFEST
        if self.dir.exists() and not self.dir.is_dir():
            raise RunFormatError("run directory is a file, not a directory", path=self.dir)
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
            self.dir.mkdir(parents=True, exist_ok=True)
            self.manifest = {
                "format": FORMAT,
                "version": VERSION,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "model": model_name,
                "columns": list(COLUMNS),
                "versions": {"weightwatch": __version__, "python": platform.python_version(),
                             "numpy": np.__version__},
                "tensors": self.tensors,
            }
            if info:
                self.manifest.update(info)
            self.write_manifest()

    def _resume(self, manifest_path: Path) -> None:
        try:
            manifest = loads(manifest_path.read_bytes())
        except (OSError, ValueError) as exc:
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
        self.manifest = manifest
        self.tensors = manifest.setdefault("tensors", [])
        self._index = {t["path"]: i for i, t in enumerate(self.tensors)}
        indices = [int(m.group(1)) for f in os.listdir(self.dir) if (m := RECORD_RE.match(f))]
        self.next_record = max(indices) + 1 if indices else 0
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

    def write_manifest(self) -> None:
        write_json(self.dir / MANIFEST, self.manifest)

    def add_tensors(self, entries: list[dict]) -> None:
        """Add tensors (path, layer, shape, dtype, kind) not yet in the table."""
        added = False
        for e in entries:
            if e["path"] not in self._index:
                e = dict(e, first_record=self.next_record)
                self._index[e["path"]] = len(self.tensors)
                self.tensors.append(e)
                added = True
        if added:
            self.write_manifest()

    def write_record(self, *, epoch: int, batch: int | None, step: int | None, kind: str,
                     logs: dict, wall: float, rows: dict[str, list] | None = None,
                     paths: list[str] | None = None, values: np.ndarray | None = None,
                     arrays: dict[str, np.ndarray] | None = None) -> int:
        """Write one snapshot (and its tensors first, so a snapshot never points at nothing).

        The figures come as ``paths`` and ``values`` (tensors x columns, NaN
        for undefined: what :class:`~weightwatch.recorder.Recorder` fills) or,
        for convenience, as ``rows``: ``{path: [figure per column]}``.
        ``values`` is put in :func:`canonical` form in place, so the caller
        goes on with exactly the figures the snapshot states.
        """
        if rows is not None:
            paths = list(rows)
            values = (np.array(list(rows.values()), dtype=np.float64) if rows
                      else np.empty((0, len(COLUMNS))))
        values = canonical(np.asarray(values, dtype=np.float64).reshape(len(paths), len(COLUMNS)))
        # The previous record's background fsync (long done, normally); an
        # error it met is raised here, where the caller handles write errors.
        wait_for_sync(self.dir)
        index = self.next_record
        tensors_file = None
        if arrays is not None:
            tensors_file = record_name(index, ".npz")
            save_npz(self.dir / tensors_file, arrays)
        meta = {
            "format": SNAPSHOT_FORMAT,
            "version": VERSION,
            "record": index,
            "epoch": epoch,
            "batch": batch,
            "step": step,
            "kind": kind,
            "time": wall,
            "logs": logs,
            "tensors_file": tensors_file,
        }
        path = self.dir / record_name(index)
        written = _SnapshotWriter(meta, paths, values)
        atomic_write(path, written, fsync=not _BACKGROUND_SYNC)
        self.next_record = index + 1
        if _BACKGROUND_SYNC:
            sync_later(path)
        self._journal(index, written, meta, paths, values)
        return index

    def _journal(self, index: int, written: _SnapshotWriter, meta: dict, paths: list[str],
                 values: np.ndarray) -> None:
        """Mirror the record just written into the journal (see :mod:`weightwatch.journal`).

        After the record's rename: a crash in between leaves a record without
        an entry, which readers parse from its JSON.
        """
        ids = [self._index.get(p) for p in paths]
        if not self._journaling or None in ids:
            return  # (a tensor missing from the manifest) this record is read from its JSON
        path = self.dir / journal.JOURNAL
        try:
            journal.append(path, record=index, file_size=written.size, file_crc=written.crc,
                           meta=dumps(meta), ids=ids, paths=paths, values=values)
        except OSError:
            # The record itself is on disk; only the reading shortcut is lost.
            # The next record's own write meets the full disk, if that is it.
            return
        if _BACKGROUND_SYNC:
            sync_later(path)

    def write_verdict(self, verdict: dict) -> None:
        write_json(self.dir / VERDICT, verdict)


_BOOL_COLUMNS = [i for i, c in enumerate(COLUMNS) if c in ("trainable", "frozen", "changed")]
_INT_COLUMNS = [i for i, c in enumerate(COLUMNS) if c in ("size", "nan", "inf", "dead_units")]
#: How a figure of each column is written in JSON (NaN is written null).
_JSON_TYPES = tuple(bool if i in _BOOL_COLUMNS else int if i in _INT_COLUMNS else float
                    for i in range(len(COLUMNS)))


def canonical(values: np.ndarray) -> np.ndarray:
    """Figures (tensors x columns) as the snapshot states them, in place.

    Non-finite figures are null (NaN), flags are 0 or 1, counts whole
    numbers: the journal and the live checks then hold exactly what the
    JSON says.  The statistics never produce anything else; hand-made rows might.
    """
    if values.size:
        values[~np.isfinite(values)] = np.nan
        with np.errstate(invalid="ignore"):
            flags = values[:, _BOOL_COLUMNS]
            values[:, _BOOL_COLUMNS] = np.where(np.isnan(flags), np.nan, flags != 0)
        values[:, _INT_COLUMNS] = np.trunc(values[:, _INT_COLUMNS])
    return values


def json_row(row: list[float]) -> list:
    """One tensor's canonical figures as its snapshot row: booleans, counts, floats, null."""
    return [None if x != x else x if t is int and abs(x) >= 2 ** 53 else t(x)
            for t, x in zip(_JSON_TYPES, row)]


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


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed .npz written whole; loads with ``np.load(allow_pickle=False)``.

    Renamed into place at once, fsynced in the background (see :func:`sync_later`).
    """
    # Streamed straight into the temporary file: no in-memory copy of the weights.
    atomic_write(path, lambda f: _write_npz(f, arrays), fsync=not _BACKGROUND_SYNC)
    if _BACKGROUND_SYNC:
        sync_later(path)


def _write_npz(f, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez(f, **arrays)``, the same file, without its copies.

    ``np.savez`` writes an array into a zip member through ``tobytes`` in
    16 MiB chunks: a copy of the weights, in fresh memory, on top of the CRC
    and the write.  A contiguous array's own buffer is handed to the member
    instead.  Anything else (object or user-defined dtypes, non-contiguous
    arrays, headers that need format 2.0) goes through numpy's own writer.
    """
    fmt = np.lib.format
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, value in arrays.items():
            array = np.asanyarray(value)
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                if (array.dtype.hasobject or not getattr(type(array.dtype), "_legacy", False)
                        or not array.flags.c_contiguous or array.itemsize == 0):
                    fmt.write_array(member, array)
                    continue
                try:
                    fmt.write_array_header_1_0(member, fmt.header_data_from_array_1_0(array))
                except ValueError:  # a header too long for format 1.0: nothing written yet
                    fmt.write_array(member, array)
                    continue
                member.write(memoryview(array.reshape(-1).view(np.uint8)))


# -- durability off the training thread ------------------------------------------------------
#
# A record is written to a temporary file and renamed into place before
# write_record returns, so readers (this process or another) see the whole
# file or none, and a killed process (SIGKILL, OOM, an exception) leaves at
# most a ``.*.tmp`` file.  Flushing it to the disk (fsync) is what survives a
# power loss or a kernel crash, and it is slow: about 8 ms for a snapshot and
# 70 ms for a 40 MB sidecar on a virtual disk, as much as the record itself.
# So on POSIX the fsync runs on a background thread after the rename, one
# record deep: the next write_record (and the callback's on_train_end) waits
# for it and raises the OSError it met, if any.  The trade-off: a power loss
# within that window (normally milliseconds, at most one record) can leave
# the newest record truncated under its final name; the reader reports it as
# damaged and keeps every other record.  Every other file of the run, and a
# record on a system that is not POSIX, is fsynced before the rename.

_BACKGROUND_SYNC = os.name == "posix"


class _Syncer:
    """One worker thread that fsyncs files in the order they were written.

    Started on first use (and afresh in a forked child); handing it a path
    costs microseconds, where starting a thread per record costs a scheduler
    round trip.  It is a daemon so that it never keeps a process alive, and
    an ``atexit`` hook lets the files already handed to it reach the disk.
    """

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        # Also the fork handler: the child gets fresh state and a fresh lock,
        # never a copy of one that the parent's worker held at the fork.
        self._cv = threading.Condition()
        self._queue: list = []
        self._pending = 0
        self._errors: list[tuple[Path, OSError]] = []
        self._thread: threading.Thread | None = None

    def submit(self, path) -> None:
        with self._cv:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="weightwatch-fsync",
                                                daemon=True)
                self._thread.start()
            self._queue.append(path)
            self._pending += 1
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    self._cv.wait()
                path = self._queue.pop(0)
            error = _fsync_file(path)
            with self._cv:
                if error is not None:
                    self._errors.append((Path(path).parent, error))
                self._pending -= 1
                self._cv.notify_all()

    def wait(self, directory=None, *, raise_errors: bool = True) -> None:
        with self._cv:
            while self._pending:
                self._cv.wait()
            if directory is None:
                errors, self._errors = self._errors, []
            else:  # another run's errors stay for its own writer
                directory = Path(directory)
                errors = [e for e in self._errors if e[0] == directory]
                self._errors = [e for e in self._errors if e[0] != directory]
        if errors and raise_errors:
            raise errors[0][1]


def _fsync_file(path) -> OSError | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None  # replaced or removed since: nothing left to flush
    except OSError as exc:
        return exc
    try:
        os.fsync(fd)
    except OSError as exc:
        return exc
    finally:
        os.close(fd)
    return None


_syncer = _Syncer()
atexit.register(_syncer.wait, raise_errors=False)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_syncer._reset)


def sync_later(*paths) -> None:
    """fsync ``paths`` on the background thread; :func:`wait_for_sync` collects it."""
    for path in paths:
        _syncer.submit(path)


def wait_for_sync(directory=None) -> None:
    """Wait for the background fsyncs handed over so far.

    Raises the first error met by one of a file in ``directory`` (any file,
    when None); the errors of other directories are left for their writers.
    """
    _syncer.wait(directory)


def load_npz(path) -> dict[str, np.ndarray]:
    """Load a sidecar written by :func:`save_npz`; never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise RunFormatError(f"cannot read tensors ({exc})", path=path) from None
