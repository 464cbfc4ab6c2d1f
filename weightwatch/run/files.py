"""Reading a run's files, bounded.

Every file of a run directory is read through :func:`read_bytes`: a file
larger than :data:`MAX_JSON_BYTES` is refused with one line instead of being
read into memory (a record of a hundred thousand tensors is about 14 MB).
"""

from __future__ import annotations

import os

from ..errors import RunFormatError

#: Largest JSON file of a run that is read (manifest, record, verdict, a seed dump).
MAX_JSON_BYTES = 512 * 2 ** 20


def _size(n: int) -> str:
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"


def read_bytes(path, *, limit: int = MAX_JSON_BYTES) -> bytes:
    """The whole file at ``path``; RunFormatError when it is larger than ``limit``.

    Other failures are the OSError of the read.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise RunFormatError(f"file of {_size(size)}, larger than the {_size(limit)} a run file "
                                 "may be", path=path)
        data = f.read(limit + 1)
    if len(data) > limit:
        raise RunFormatError(f"file larger than the {_size(limit)} a run file may be", path=path)
    return data
