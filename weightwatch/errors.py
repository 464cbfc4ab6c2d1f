"""Typed errors and exit codes.

Every problem a user can cause (a corrupt snapshot, a bad rule file, an empty
run directory) is a :class:`WeightwatchError` whose ``str()`` is one line
that names the file and, where it applies, the line, rule or tensor.  The CLI
prints that line and exits with :attr:`ExitCode.USAGE_ERROR`; a traceback is
only ever shown for a bug in weightwatch itself (exit 3).
"""

from __future__ import annotations

import difflib
import enum


class ExitCode(enum.IntEnum):
    """Exit codes, the same as pytest's so CI systems read them the same way."""

    #: Every check passed (warnings allowed unless ``--strict``).
    OK = 0
    #: At least one check failed.
    CHECKS_FAILED = 1
    #: Interrupted by the user (Ctrl-C).
    INTERRUPTED = 2
    #: A bug in weightwatch: please report it with the traceback.
    INTERNAL_ERROR = 3
    #: Bad command line, rule file, configuration or run directory.
    USAGE_ERROR = 4
    #: Nothing was checked: no rule selected, or the run recorded no tensor and no log.
    NO_CHECKS_RAN = 5


class WeightwatchError(Exception):
    """Base class: a problem the user can fix, described in one line."""

    def __init__(self, message: str, *, path: object = None, line: int | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        return f"{where}{self.message}"


class RunFormatError(WeightwatchError):
    """A run directory or one of its files cannot be read."""


class RunNotFoundError(RunFormatError):
    """The run directory is missing or holds no records."""


class RunDirNotEmptyError(WeightwatchError):
    """A new, unrelated run would be written over an existing one."""


class RunDirLockedError(WeightwatchError):
    """Another writer (another process) is writing this run directory: it holds its lock."""


class RestoreError(RunFormatError):
    """Recorded weights cannot be restored into a model as they are: nothing was restored."""


class RuleError(WeightwatchError):
    """A rule file, configuration file or rule option is invalid."""


class BaselineError(WeightwatchError):
    """Reference runs or a baseline file cannot serve as a baseline (unreadable, no common part)."""


class ChecksFailed(WeightwatchError, AssertionError):
    """Raised by ``Report.raise_for_failures()``: the run failed its checks.

    An AssertionError too, so a user's pytest reports it as a failed test
    whose message is the short summary.
    """

    def __init__(self, message: str, report=None):
        self.report = report
        super().__init__(message)


class CheckHalted(WeightwatchError):
    """Raised by ``WatchCallback(raise_error=True)`` when a check fails live."""

    def __init__(self, message: str, report=None):
        self.report = report
        super().__init__(message)


def did_you_mean(word: str, choices) -> str:
    """`` (did you mean "x"?)`` for the closest of ``choices``, or ``""``: every message that
    rejects a name offers the nearest valid one."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""
