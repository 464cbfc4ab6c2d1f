"""``history.bin``: every record's statistics again, in binary, so reading a run need not parse them.

Parsing a snapshot's few thousand numbers and turning them into floats is
most of what ``weightwatch check`` costs.  So the writer also appends each
record's statistics, as raw float64 rows, to one journal file, and the
reader copies them from there instead.

The JSON records stay the truth; the journal is a cache of them, and it can
never say what they do not.  The trust model:

* **A record file vouches for its own figures.**  It states, in its first
  bytes, a digest (BLAKE2b-128, see :mod:`.digest`) of its columns, its
  metadata, its tensor paths and its figures.  The reader uses a journal
  entry only when the record file still has the size and CRC-32 the entry
  was written for *and* the entry's metadata, figures and tensor paths (as
  the manifest names its tensor ids now) hash to the digest that file
  states.  So whoever can change ``history.bin`` but not the record files -
  a bit flip, a torn append, or an entry rewritten on purpose with another
  record's figures and its frame CRC recomputed - changes nothing: the
  record is parsed from its JSON instead.  The digest is a cryptographic
  hash because a CRC can be forged on purpose.
* **The JSON is checked against the same digest when it is parsed**, so a
  record whose figures, names or logs were changed (by accident or by an
  editor that did not restamp it) is reported as damaged, never read as
  data.  Records written before digests existed (the manifest's
  ``digests_from`` says from which record on every record states one) are
  never read from the journal.
* **Out of scope**: whoever can rewrite the record files themselves can make
  the run say anything, journal or not; a record file whose stated digest
  does not match its own rows is reported as damaged when parsed, while a
  journal entry forged to match that stated digest would be taken - which
  needs both files forged together.

An edited, replaced or damaged record, a record with no entry, an entry whose
tensor ids no longer name the same tensors in the manifest, a torn entry at
the end (a crash mid-append) or no journal at all: the record is parsed from
its JSON instead.  Same result, more time.

The framing is TFRecord's (TensorBoard's event files): append-only, each
entry length-prefixed and checksummed, so a torn or damaged entry is
recognised; it and everything after it are ignored by readers and cut off by
the next writer that continues the run.  A failed append is cut off at once.

An entry, little-endian.  Any change to the layout is a new magic; a reader
stops at the first entry it does not know, as at a damaged one, and parses
the records from there on::

    magic      4 bytes  b"WWH1"
    length     u32      bytes in the body
    body_crc   u32      CRC-32 of the body
    body:
      record     u32    record index
      file_size  u64    size of record-NNNNNN.json
      file_crc   u32    CRC-32 of it
      paths_crc  u32    CRC-32 of the record's tensor paths joined by "\\n"
      ntensors   u32
      ncols      u32
      meta_len   u32
      meta       meta_len bytes: the snapshot without "tensors" (its digest included), as JSON
      ids        i32[ntensors]          the tensors' rows in the manifest's table
      values     f64[ntensors][ncols]   the snapshot's rows, NaN where JSON has null
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import RunFormatError
from .files import not_regular, open_regular

JOURNAL = "history.bin"
MAGIC = b"WWH1"
_FRAME = struct.Struct("<4sII")
_BODY = struct.Struct("<IQIIIII")


def paths_crc(paths) -> int:
    return zlib.crc32("\n".join(paths).encode())


def append(path, *, record: int, file_size: int, file_crc: int, meta: bytes, ids, paths,
           values: np.ndarray) -> None:
    """Append one entry; ``values[i]`` is the row of tensor ``paths[i]`` (manifest row ``ids[i]``).

    Written from the caller's buffers (no copy of the figures).  A crash
    leaves the entry whole or torn, and readers take a torn one for absent;
    an append that fails (a full disk) is cut off before the error is raised,
    so that the entries appended after it can be read.
    """
    ids = np.ascontiguousarray(ids, dtype="<i4")
    values = np.ascontiguousarray(values, dtype="<f8")
    ntensors, ncols = values.shape
    parts = [_BODY.pack(record, file_size, file_crc, paths_crc(paths),
                        ntensors, ncols, len(meta)), meta, _bytes_of(ids), _bytes_of(values)]
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    parts.insert(0, _FRAME.pack(MAGIC, sum(len(p) for p in parts), crc))
    # Unbuffered: after a failure no buffer is left to be flushed behind the cut.
    # Never follows a link, never blocks on a FIFO, appends to a regular file only.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
                 | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), 0o666)
    try:
        if not_regular(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file; the journal is not appended to")
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            for part in parts:
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view):]
        except BaseException:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


def _bytes_of(a: np.ndarray) -> memoryview:
    return memoryview(a.reshape(-1).view(np.uint8))


@dataclass(frozen=True)
class Entry:
    record: int
    file_size: int
    file_crc: int
    paths_crc: int
    meta: bytes
    ids: np.ndarray          # (ntensors,) int32
    values: np.ndarray       # (ntensors, ncols) float64, a view into the journal

    def mirrors(self, file_bytes: bytes) -> bool:
        """Whether this entry was written for these record-file bytes (same size and CRC-32)."""
        return len(file_bytes) == self.file_size and zlib.crc32(file_bytes) == self.file_crc


def _scan(buf):
    """Yield (entry, end offset) for each whole entry, stopping at the first torn or damaged one."""
    view = memoryview(buf)
    off, n = 0, len(buf)
    while off + _FRAME.size <= n:
        magic, length, crc = _FRAME.unpack_from(buf, off)
        start, end = off + _FRAME.size, off + _FRAME.size + length
        if magic != MAGIC or end > n or length < _BODY.size or zlib.crc32(view[start:end]) != crc:
            return
        record, size, fcrc, pcrc, nt, nc, mlen = _BODY.unpack_from(buf, start)
        p = start + _BODY.size
        if p + mlen + 4 * nt + 8 * nt * nc != end:
            return
        meta = bytes(view[p:p + mlen])
        p += mlen
        ids = np.frombuffer(buf, dtype="<i4", count=nt, offset=p)
        p += 4 * nt
        values = np.frombuffer(buf, dtype="<f8", count=nt * nc, offset=p).reshape(nt, nc)
        yield Entry(record, size, fcrc, pcrc, meta, ids, values), end
        off = end


def _mapped(f):
    try:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (ValueError, OSError):  # empty, or a file system without mmap
        return f.read()


def read(path) -> dict[int, Entry]:
    """The journal's whole entries by record index (the last one wins); {} when there is none.

    Never raises for a damaged journal: readers then parse the JSON records.
    """
    try:
        with open_regular(path) as f:
            buf = _mapped(f)
    except (OSError, RunFormatError):  # absent, unreadable, or no regular file: no journal
        return {}
    return {e.record: e for e, _ in _scan(buf)}


def repair(path) -> None:
    """Cut a torn or damaged tail off, so that entries appended next can be read.

    Raises OSError when the journal cannot be read or cut (the caller then
    stops journaling: records are still written and read from JSON).
    """
    try:
        f = open_regular(path)
    except FileNotFoundError:
        return
    except RunFormatError as exc:  # a FIFO, a link...: not appended to
        raise OSError(exc.message) from None
    with f:
        buf = _mapped(f)
        good = max((end for _, end in _scan(buf)), default=0)
        size = len(buf)
        del buf  # the map closes with its last view
    if good != size:
        os.truncate(path, good)
