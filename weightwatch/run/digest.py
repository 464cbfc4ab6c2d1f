"""A record's digest of its own figures: what binds the journal to the JSON.

A snapshot written by this weightwatch starts with ``"digest"``: a BLAKE2b
hash (128 bits, hex) of everything the record states - the columns its rows
hold, its metadata (record, epoch, step, logs...), its tensor paths in order
and its figures as float64 (null as NaN).  It is computed from the very array
the snapshot and the journal entry are written from, before either is.

Two uses:

* **the journal**: a journal entry's figures are used only if they, the
  entry's metadata and the manifest's paths for its tensor ids hash to the
  digest the record file states (read from its first bytes, without parsing
  it).  An entry rewritten with other figures, its frame CRC recomputed and
  the record untouched, no longer matches: the record is parsed from its
  JSON instead.  A collision-resistant hash, not a CRC, because a CRC can be
  forged on purpose.
* **damage**: a record whose parsed figures, names or logs do not hash to its
  digest (a bit flip in a tensor name, a log key or a digit) is damaged, and
  is reported as such.

The hash runs over one fixed encoding of the parsed values (see
:func:`canon`), not over the file's JSON text, so a file written with orjson
and read without it (or the other way round) gives the same digest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct

import numpy as np

#: The snapshot key, and how long its value is (hex digits).
KEY = "digest"
HEX_DIGITS = 32
#: How a snapshot written by :class:`~.writer.RunWriter` starts: the digest is read from
#: there without parsing the file.
PREFIX = b'{"digest":"'
_PERSON = b"ww-record-v1"


#: The one encoding hashed: the standard library's JSON encoder with sorted keys, ASCII only,
#: whatever encoder wrote the file (``repr`` of a float is the same everywhere).
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                           allow_nan=False).encode


def canon(obj) -> bytes:
    """``obj`` (parsed JSON values) as the bytes the digest hashes."""
    return _ENCODE(obj).encode("ascii")


@functools.lru_cache(maxsize=64)
def _columns_canon(columns: tuple) -> bytes:
    return canon(list(columns))


def record_digest(columns, meta: dict, paths, values: np.ndarray, *, paths_canon: bytes | None = None) -> str:
    """The digest of one record: ``meta`` is the snapshot without ``tensors`` and ``digest``;
    ``values[i]`` is the row of ``paths[i]`` (float64, NaN for null).

    ``columns`` are the run's columns; the digest covers those the rows hold.
    ``paths_canon`` is ``canon(list(paths))`` when the caller has it already.
    """
    values = np.ascontiguousarray(values, dtype="<f8")
    h = hashlib.blake2b(digest_size=HEX_DIGITS // 2, person=_PERSON)
    width = values.shape[1] if values.ndim == 2 else len(columns)
    h.update(_columns_canon(tuple(columns)[:width]))
    h.update(canon({k: v for k, v in meta.items() if k != KEY}))
    h.update(paths_canon if paths_canon is not None else canon(list(paths)))
    h.update(struct.pack("<QQ", *((values.shape[0], width) if values.ndim == 2 else (0, width))))
    h.update(memoryview(values.reshape(-1).view(np.uint8)))
    return h.hexdigest()


def stated(data: bytes) -> str | None:
    """The digest a record file states in its first bytes, or None (an older or foreign file)."""
    end = len(PREFIX) + HEX_DIGITS
    if data[:len(PREFIX)] != PREFIX or data[end:end + 2] != b'",':
        return None
    try:
        text = data[len(PREFIX):end].decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if is_digest(text) else None


def is_digest(value) -> bool:
    return (isinstance(value, str) and len(value) == HEX_DIGITS
            and all(c in "0123456789abcdef" for c in value))
