"""One writer per run directory: an OS lock on the directory itself.

A :class:`~.writer.RunWriter` holds an exclusive ``flock`` on the run
directory (opened read-only; no lock file is added to the run) from the
moment it opens the run until :meth:`~.writer.RunWriter.close`.  A second
writer - another process's ``fit(initial_epoch=k)`` into a run being
recorded - gets :class:`~weightwatch.errors.RunDirLockedError` at once
instead of interleaving its records with the first one's.  The kernel
releases the lock when the holder dies (``kill -9`` included), so a killed
run can always be continued.  Readers take no lock: they never see a
half-written file anyway.

Within one process, a new writer of a directory takes the lock over from an
earlier writer of it (a notebook re-running ``fit`` after an interrupted
one, whose callback was never closed): the earlier writer can then write
nothing more.  On systems without ``flock`` (Windows) there is no lock.

The lock is held by an open file description: a child forked without exec
holds it too until it exits.
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path

from ..errors import RunDirLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_held: dict[str, "weakref.ref"] = {}    # real path -> the DirLock that holds it, in this process
_guard = threading.Lock()


class DirLock:
    """An exclusive lock on a directory, held until :meth:`release` (or this object's end)."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self._key = os.path.realpath(self.dir)
        self._fd: int | None = None
        self._finalizer = None
        self.lost = False   # taken over by a later writer in this process

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock; RunDirLockedError when another process (or a live writer of this
        process that this one cannot take over) holds it."""
        if fcntl is None or self.held:
            return
        with _guard:
            earlier = _held.get(self._key)
            earlier = earlier() if earlier is not None else None
            if earlier is not None and earlier is not self:
                earlier._give_up()
            fd = os.open(self.dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunDirLockedError(
                    "another process is writing this run (it holds the run directory's lock): let it "
                    "finish, or record into another run_dir", path=self.dir) from None
            except OSError:  # a file system without locks (some network mounts): go on unlocked
                os.close(fd)
                return
            self._fd = fd
            self.lost = False
            self._finalizer = weakref.finalize(self, os.close, fd)
            _held[self._key] = weakref.ref(self)

    def _give_up(self) -> None:
        self.release()
        self.lost = True

    def release(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # closes the descriptor, which drops the lock
            self._finalizer = None
        self._fd = None
        ref = _held.get(self._key)
        if ref is not None and ref() is self:
            del _held[self._key]

    def check(self) -> None:
        """Before a write: RunDirLockedError if a later writer of this process took the run over."""
        if self.lost:
            raise RunDirLockedError("another writer of this process took this run over; this one writes "
                                    "nothing more", path=self.dir)
