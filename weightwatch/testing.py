"""Helpers for tests that train: ``assert_healthy`` and the ``weightwatch_run`` fixture's object.

::

    from weightwatch.testing import assert_healthy

    def test_training_is_stable(tmp_path):
        model.fit(x, y, epochs=3, callbacks=[weightwatch.WatchCallback(tmp_path / "run")])
        assert_healthy(tmp_path / "run")

fails with the short summary as its message (the diagnosis, then one line per
failing rule), as :meth:`Report.raise_for_failures` does.  Nothing here
needs pytest: :class:`~weightwatch.ChecksFailed` is an ``AssertionError``, so
unittest and plain scripts read it the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ChecksFailed, ExitCode


def assert_healthy(run_or_report, rules=None, *, strict: bool = False, keyword: str | None = None):
    """Check a run (or take a report already made) and fail unless it is healthy; return the report.

    ``run_or_report``: a run directory, a :class:`~weightwatch.Run`, a
    :class:`~weightwatch.Report`, a ``WatchCallback`` or the ``weightwatch_run``
    fixture.  ``rules``: layered on top of the project configuration, as in
    :func:`weightwatch.check`.  ``strict``: warnings fail too.  ``keyword``: a
    ``-k`` expression over rules; selecting none fails (nothing was checked).
    Raises :class:`~weightwatch.ChecksFailed` (an AssertionError) whose message
    is the short summary.
    """
    __tracebackhide__ = True  # pytest: show the test's line, not this one
    from .checking.report import Report

    if isinstance(run_or_report, Report):
        if rules is not None or keyword is not None:
            raise TypeError("rules= and keyword= choose the rules to check a run with; "
                            "this report was already checked")
        report = run_or_report
    else:
        from .checking.engine import check

        target = getattr(run_or_report, "run_dir", run_or_report)
        report = check(target, rules, keyword=keyword)
    if report.exit_code(strict=strict) == ExitCode.NO_CHECKS_RAN:
        raise ChecksFailed(f"weightwatch: {report.run}: no rule selected ({report.summary()}): "
                           "nothing was checked", report=report)
    try:
        report.raise_for_failures(strict=strict)
    except ChecksFailed as exc:
        failure = exc
    else:
        return report
    raise failure.with_traceback(None)  # raised here, so pytest's traceback stops at the test


class WatchedRun:
    """A fresh run directory, its callback and its check: what the ``weightwatch_run`` fixture gives.

    ``callback`` is a :class:`~weightwatch.WatchCallback` with the default options
    (live checks on), made on first use; ``make_callback(**options)`` makes one with
    other options (``check=False``, ``save_tensors=True``, ...).  The object is
    path-like: ``weightwatch.open_run(weightwatch_run)`` works.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._callback = None

    @property
    def run_dir(self) -> Path:
        return self.path

    @property
    def callback(self):
        if self._callback is None:
            self.make_callback()
        return self._callback

    def make_callback(self, **options):
        """A ``WatchCallback(self.path, **options)``, remembered as :attr:`callback`."""
        from .recording.keras_callback import WatchCallback

        self._callback = WatchCallback(self.path, **options)
        return self._callback

    def open(self):
        """The recorded run (:class:`~weightwatch.Run`)."""
        from .run.reader import open_run

        return open_run(self.path)

    def check(self, rules=None, *, keyword: str | None = None):
        """The run's :class:`~weightwatch.Report` (project rules, plus ``rules``)."""
        from .checking.engine import check

        return check(self.path, rules, keyword=keyword)

    def assert_healthy(self, rules=None, *, strict: bool = False, keyword: str | None = None):
        """:func:`assert_healthy` on this run."""
        __tracebackhide__ = True
        return assert_healthy(self.path, rules, strict=strict, keyword=keyword)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __repr__(self) -> str:
        return f"<WatchedRun {self.path}>"
