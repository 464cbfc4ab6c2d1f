"""Tensors on disk: uncompressed ``.npz`` files, written whole, read without unpickling."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import RunFormatError
from .files import open_regular
from .fsync import BACKGROUND_SYNC, sync_later
from .jsonio import atomic_write


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed .npz written whole; loads with ``np.load(allow_pickle=False)``.

    Renamed into place at once, fsynced in the background (see :func:`sync_later`).
    """
    # Streamed straight into the temporary file: no in-memory copy of the weights.
    atomic_write(path, lambda f: _write_npz(f, arrays), fsync=not BACKGROUND_SYNC)
    if BACKGROUND_SYNC:
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



def fingerprint(path) -> str:
    """A digest of an .npz's table of contents (each member's name, size and CRC-32), read
    from its central directory without reading the arrays: what ``healthy.json`` pins the
    healthy weights by, since each member's CRC covers its data."""
    import hashlib

    with open_regular(path) as f, zipfile.ZipFile(f) as zf:
        toc = sorted((i.filename, i.file_size, i.CRC) for i in zf.infolist())
    return hashlib.blake2b(repr(toc).encode(), digest_size=16).hexdigest()


#: The most a deflated member may expand (DEFLATE's own limit is about 1032:1).
_MAX_EXPANSION = 1032


def load_npz(path) -> dict[str, np.ndarray]:
    """Load a sidecar written by :func:`save_npz`: ``{name: array}``.

    Never unpickles, opens only a regular file (see :mod:`.files`), and reads
    a member only after its header: an object array, a member that is no
    ``.npy``, or a header that declares more data than the member holds (an
    allocation of any size from a few bytes) is refused.
    """
    try:
        with open_regular(path) as f, zipfile.ZipFile(f) as zf:
            out = {}
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"member {info.filename!r} is not a .npy array")
                with zf.open(info) as member:
                    shape, dtype = _header(member)
                nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if nbytes > info.file_size or (info.compress_type != zipfile.ZIP_STORED and
                                               info.file_size > _MAX_EXPANSION * info.compress_size + 4096):
                    raise ValueError(f"member {info.filename!r} declares more data than it holds")
                with zf.open(info) as member:
                    out[info.filename[:-4]] = np.lib.format.read_array(member, allow_pickle=False)
            return out
    except RunFormatError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError, MemoryError) as exc:
        raise RunFormatError(f"cannot read tensors ({exc or type(exc).__name__})", path=path) from None


def _header(member) -> tuple[tuple, np.dtype]:
    fmt = np.lib.format
    version = fmt.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(member)
    else:
        raise ValueError(f".npy format version {version} is not one weightwatch writes")
    if dtype.hasobject:
        raise ValueError("an object array (weightwatch never unpickles)")
    return shape, dtype
