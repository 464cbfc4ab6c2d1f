"""Strict JSON and whole-file writes.

Two promises live here.  Output is RFC 8259 JSON: a bare ``NaN`` or
``Infinity`` token never reaches disk (the stdlib encoder is run with
``allow_nan=False``, orjson never writes them).  And a file is either absent
or complete: it is written under a hidden temporary name in the same folder,
flushed, fsynced and renamed into place, so a crash or a SIGKILL mid-write
leaves at most a ``.*.tmp`` file that readers ignore.

orjson is used when installed (``pip install weightwatch[fast]``) because it
parses and writes snapshots several times faster; the stdlib is the fallback.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

try:  # optional speed-up
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised when orjson is absent
    _orjson = None

TMP_SUFFIX = ".tmp"


def _file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the umask (mkstemp gives 0o600)."""
    try:
        with open("/proc/self/status") as f:  # Linux: read the umask without changing it
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def dumps(obj: Any) -> bytes:
    """Serialise ``obj`` as compact, strict JSON bytes."""
    if _orjson is not None:
        return _orjson.dumps(obj)
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    """Parse strict JSON: ``NaN``/``Infinity`` tokens are rejected; a ValueError for anything
    that is not JSON, arrays or objects nested too deeply for the parser included."""
    try:
        if _orjson is not None:
            return _orjson.loads(data)
        return json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("arrays or objects nested too deeply") from None


def _reject_constant(token: str):
    raise ValueError(f"non-standard JSON token {token!r} (strict JSON has no NaN/Infinity)")


def atomic_write(path: str | os.PathLike, data, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    ``data`` is bytes, or a function that writes into the open binary file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), _FILE_MODE)  # as readable as a plainly written file
            if callable(data):
                data(f)
            else:
                f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: str | os.PathLike, obj: Any, *, fsync: bool = True) -> None:
    atomic_write(path, dumps(obj), fsync=fsync)
