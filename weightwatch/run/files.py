"""Opening a run's files: inside the run directory, regular files only, bounded.

A run directory is input, and input can be hostile.  Every file weightwatch
reads from a run goes through :func:`open_regular`:

* it is named by the run's own layout (``record-000003.npz``), never by a
  path a file states: :func:`run_file` refuses a name with a separator or
  ``..`` (and the schema allows ``tensors_file`` to be only the record's own
  name), so nothing outside the run directory is opened;
* it is opened without following a symbolic link (``O_NOFOLLOW``): a
  ``record-000001.npz`` that links to ``/etc/passwd`` is refused, not read;
* it is opened non-blocking and must be a regular file (``fstat``): a FIFO,
  a device (``/dev/zero``), a socket or a directory under a run file's name
  is refused at once instead of hanging the reader or feeding it forever;
* a JSON file larger than :data:`MAX_JSON_BYTES` is refused with one line
  instead of being read into memory (a record of a hundred thousand tensors
  is about 14 MB).
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from ..errors import RunFormatError

#: Largest JSON file of a run that is read (manifest, record, verdict, pointer).
MAX_JSON_BYTES = 512 * 2 ** 20

_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
          | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))


def _size(n: int) -> str:
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"


def run_file(run_dir, name: str) -> Path:
    """``run_dir / name`` for a plain file name; RunFormatError for anything that could leave it."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\0" in name or os.path.isabs(name)):
        raise RunFormatError(f"{name!r} is not a file name of the run directory (weightwatch "
                             "opens nothing outside it)", path=run_dir)
    return Path(run_dir) / name


def not_regular(mode: int) -> str | None:
    """What a file of this mode is, when it is not a regular file ("a FIFO"...); else None."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def open_regular(path) -> io.BufferedReader:
    """``path`` opened for reading, if it is a regular file (see the module doc).

    Raises RunFormatError for a symbolic link or anything but a regular file,
    and the OSError of the open otherwise (FileNotFoundError...).
    """
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        if exc.errno in (getattr(os, "ELOOP", -1), getattr(os, "EMLINK", -1)) and os.path.islink(path):
            raise RunFormatError("a symbolic link; weightwatch opens only regular files inside the run "
                                 "directory", path=path) from None
        if exc.errno == getattr(os, "ENXIO", -1):  # a socket, or a device without its driver
            raise RunFormatError("not a regular file; weightwatch opens only regular files", path=path) from None
        raise
    try:
        what = not_regular(os.fstat(fd).st_mode)
        if what is not None:
            raise RunFormatError(f"{what}, not a regular file; weightwatch opens only regular files",
                                 path=path)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path, *, limit: int = MAX_JSON_BYTES) -> bytes:
    """The whole regular file at ``path``; RunFormatError when it is larger than ``limit``.

    Other failures are the OSError of the open or the read.
    """
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise RunFormatError(f"file of {_size(size)}, larger than the {_size(limit)} a run file "
                                 "may be", path=path)
        data = f.read(size + 1)  # (a file that grew since: read one byte more, and check)
    if len(data) > limit:
        raise RunFormatError(f"file larger than the {_size(limit)} a run file may be", path=path)
    return data
