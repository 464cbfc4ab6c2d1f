"""The pytest plugin: recorded training runs become test items, one per (run, rule).

Registered through the ``pytest11`` entry point ``weightwatch`` (``pip install
weightwatch`` makes it available; ``-p no:weightwatch`` turns it off)::

    pytest --weightwatch runs/exp1 --weightwatch "runs/sweep-*"

collects ``runs/exp1::exploding-norm``, ``runs/exp1::frozen-changed``, ... next to
the project's tests, so pytest's own ``-k``, ``-m weightwatch``, ``-x``,
``--maxfail``, ``--lf``, ``--junitxml``, ``-q``/``-v`` and reporting apply.

* **Inert unless asked.**  Without ``--weightwatch`` and without ``runs`` in the
  project configuration this module registers its options, a marker and the
  ``weightwatch_run`` fixture, and nothing else: it imports neither numpy, rich
  nor Keras and collects nothing.
* **Runs from the configuration.**  ``[tool.weightwatch] runs = ["runs/*"]`` (or
  ``runs`` in ``weightwatch.toml``) lists run directories and glob patterns,
  relative to that file.  Like pytest's ``testpaths``, they are collected when
  pytest is given no file or directory arguments; ``--weightwatch`` replaces them.
* **Rules** are the ones ``weightwatch check`` uses from the same directory (the
  project configuration, or the default pack), plus ``--weightwatch-rules FILE``.
* **Outcomes**, as ``weightwatch check`` decides them: a passing rule passes; a
  failing rule fails, shown as weightwatch's own failure section (evidence,
  history sparkline, hint), never as a traceback; a skipped rule is a pytest
  skip with the rule's note as reason; a rule **warning** passes and issues a
  :class:`RuleWarning` (listed in pytest's warnings summary), and fails instead
  under ``--weightwatch-strict``, pytest's own strict mode (``--strict``,
  ``strict = true``) or a filter that turns it into an error (``-W error``).
* A run that cannot be read, or holds an unreadable record, is a collection
  error whose message is weightwatch's one line.  A rule file that does not load
  is a usage error (exit 4), as in ``weightwatch check``.
* After the failures, the diagnosis of each run with findings (the likely cause,
  the first offender, the hint, the restore line) is printed, as the CLI prints it.
"""

from __future__ import annotations

import glob
import io
import os
import warnings
from pathlib import Path

import pytest

_SESSION_PLUGIN = "weightwatch-session"


class WeightwatchWarning(UserWarning):
    """Base class of the warnings the pytest plugin issues."""


class RuleWarning(WeightwatchWarning):
    """A rule of severity ``warning`` found something; fails under strict mode or ``-W error``."""


# -- options and activation ------------------------------------------------------------------

def pytest_addoption(parser):
    group = parser.getgroup("weightwatch", "weightwatch: recorded training runs as test items")
    group.addoption("--weightwatch", action="append", default=[], dest="weightwatch_runs",
                    metavar="RUN_DIR",
                    help="check this run directory (or glob pattern) against the rules, one test "
                         "item per rule (repeatable); replaces the runs of [tool.weightwatch]")
    group.addoption("--weightwatch-rules", action="append", default=[], dest="weightwatch_rules",
                    metavar="FILE",
                    help="rule file layered on top of the project configuration (repeatable), "
                         "as weightwatch check --rules")
    group.addoption("--weightwatch-baseline", action="append", default=[], dest="weightwatch_baseline",
                    metavar="REF",
                    help="also compare each run with reference runs (repeatable) or a baseline file, "
                         "as weightwatch check --baseline; default: the configuration's baseline")
    group.addoption("--weightwatch-no-baseline", action="store_true", dest="weightwatch_no_baseline",
                    help="ignore the configuration's baseline, as weightwatch check --no-baseline")
    group.addoption("--weightwatch-strict", action="store_true", dest="weightwatch_strict",
                    help="rule warnings fail, as weightwatch check --strict (pytest's --strict "
                         "and -W error do too)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "weightwatch: a rule checked on a recorded training run (weightwatch plugin)")
    requested = _requested_runs(config)
    if requested is not None:
        config.pluginmanager.register(_WeightwatchSession(config, *requested), _SESSION_PLUGIN)


def pytest_unconfigure(config):
    plugin = config.pluginmanager.get_plugin(_SESSION_PLUGIN)
    if plugin is not None:
        config.pluginmanager.unregister(plugin, _SESSION_PLUGIN)


def _requested_runs(config):
    """``(patterns, base folder, where they come from)``, or None: the plugin stays inert."""
    invocation = Path(config.invocation_params.dir)
    cli = config.getoption("weightwatch_runs")
    if cli:
        return cli, invocation, "command line"
    if _given_paths(config):
        return None  # like testpaths: configured runs are for a plain `pytest`
    from .checking.project import project_runs
    from .errors import RuleError

    try:
        found = project_runs(invocation)
    except RuleError as exc:
        raise pytest.UsageError(f"weightwatch: {exc}") from None
    if found is None:
        return None
    return found.patterns, found.base, _display(found.source, invocation)


def _given_paths(config) -> bool:
    """Whether pytest was given file or directory arguments (not testpaths or the current folder)."""
    source = getattr(config, "args_source", None)
    if source is not None:
        return source == config.ArgsSource.ARGS
    return bool(config.args) and config.args != [str(config.invocation_params.dir)]


def _display(path: Path, start: Path) -> str:
    try:
        rel = os.path.relpath(path, start)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


# -- the session: rules, runs, collection, the diagnosis -------------------------------------

class _WeightwatchSession:
    """Registered only when runs were asked for; holds this pytest session's state."""

    def __init__(self, config, patterns, base: Path, origin: str):
        self.config = config
        self.patterns = list(patterns)
        self.base = Path(base)
        self.origin = origin
        self.invocation = Path(config.invocation_params.dir)
        self.ruleset = None
        self.baseline = None
        self.runs: list[RunCollector] = []

    @property
    def strict(self) -> bool:
        if self.config.getoption("weightwatch_strict"):
            return True
        try:  # pytest >= 9: --strict / strict = true turns every strictness option on
            return bool(self.config.getini("strict"))
        except (ValueError, KeyError):
            return bool(getattr(self.config.option, "strict", False))

    def pytest_sessionstart(self, session):
        from .checking.baseline_file import load_baseline
        from .checking.config import load_rules
        from .errors import BaselineError, RuleError, RunFormatError

        try:
            self.ruleset = load_rules(self.config.getoption("weightwatch_rules") or None,
                                      start=self.invocation)
            refs = ([str(self.invocation / r) for r in self.config.getoption("weightwatch_baseline")]
                    or ([] if self.config.getoption("weightwatch_no_baseline") else self.ruleset.baseline))
            self.baseline = load_baseline(refs) if refs else None
        except (RuleError, BaselineError, RunFormatError) as exc:
            raise pytest.UsageError(f"weightwatch: {exc}") from None

    def rules(self) -> list:
        """The rules each run is checked against: baseline rules only with a baseline."""
        return [r for r in self.ruleset if self.baseline is not None or not r.check_def.baseline]

    def pytest_report_header(self, config):
        from .output.terminal import source_label

        rules = ", ".join(source_label(s) for s in self.ruleset.sources) if self.ruleset else "?"
        baseline = f" · baseline: {self.baseline.describe()}" if self.baseline is not None else ""
        return f"weightwatch: runs {', '.join(self.patterns)} ({self.origin}) · rules: {rules}{baseline}"

    def run_paths(self) -> list[Path]:
        """Every pattern expanded (absolute), in order, each run once; a pattern matching nothing
        warns."""
        out, seen = [], set()
        for pattern in self.patterns:
            text = os.path.expanduser(pattern)
            if _is_pattern(text):
                matches = sorted(glob.glob(text, root_dir=self.base, recursive=True))
                paths = [self.base / m for m in matches if (self.base / m).is_dir()]
                if not paths:
                    try:
                        warnings.warn_explicit(WeightwatchWarning(
                            f"weightwatch: {pattern!r} matched no run directory"), WeightwatchWarning,
                            self.origin, 0)
                    except Warning as exc:  # -W error: a misconfiguration stops the session
                        raise pytest.UsageError(f"{exc} ({self.origin})") from None
            else:
                paths = [self.base / text]
            for p in paths:   # base is absolute, so each p is
                key = os.path.normcase(os.path.normpath(p))
                if key not in seen:
                    seen.add(key)
                    out.append(Path(os.path.normpath(p)))
        return out

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session, config, items):
        # tryfirst: before -k, -m, --deselect and --lf filter the items, ours among them.
        for path in self.run_paths():
            nodeid = self._nodeid(path)
            collector = RunCollector.from_parent(session, name=nodeid, path=path, nodeid=nodeid,
                                                 plugin=self, shown=_display(path, self.invocation))
            self.runs.append(collector)
            items.extend(session.genitems(collector))

    def _nodeid(self, path: Path) -> str:
        try:
            rel = path.relative_to(self.config.rootpath)
        except ValueError:
            return path.as_posix()
        return rel.as_posix() if rel.parts else "."

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if isinstance(item, RuleItem) and report.skipped and isinstance(report.longrepr, tuple):
            # Point the skip at the run and rule, not at this plugin's line that raised it.
            reason = report.longrepr[2]
            report.longrepr = (item.nodeid, None, reason)

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config):
        if config.getoption("tbstyle", "auto") == "no":
            return
        reports = [r for r in (run.ran_report() for run in self.runs) if r is not None and r.diagnosis]
        if not reports:
            return
        from .output.terminal import render_diagnosis

        terminalreporter.write_sep("=", "weightwatch diagnosis", purple=True)
        for report in reports:
            console, buffer = _console(getattr(terminalreporter, "_tw", None))
            if len(reports) > 1:
                console.print(f"run: {report.run}", style="bold", highlight=False, markup=False)
            render_diagnosis(report, console)
            terminalreporter.write(buffer.getvalue())


def _console(tw, width: int | None = None):
    """A rich console that writes into a string, coloured when pytest's terminal is."""
    from rich.console import Console

    buffer = io.StringIO()
    markup = bool(getattr(tw, "hasmarkup", False))
    width = width or getattr(tw, "fullwidth", 80)
    console = Console(file=buffer, width=max(40, width), force_terminal=markup, no_color=not markup,
                      color_system="standard" if markup else None, highlight=False,
                      legacy_windows=False, soft_wrap=False)
    return console, buffer


# -- nodes -------------------------------------------------------------------------------------

class RunCollector(pytest.Collector):
    """One run directory; its items are the rules in force."""

    def __init__(self, *, plugin: _WeightwatchSession, shown: str, **kwargs):
        super().__init__(**kwargs)
        self.plugin = plugin
        self.shown = shown    # the run as weightwatch check names it from here (report.run)
        self.run = None
        self._report = None
        self.ran: dict = {}   # rule id -> RuleResult of the items that ran, in order

    def collect(self):
        from .errors import RunFormatError
        from .run.reader import open_run

        try:
            run = open_run(self.shown)
        except RunFormatError as exc:
            raise self.CollectError(str(exc)) from None
        if run.problems:
            # The run is not checked while part of it cannot be read (weightwatch check: exit 4).
            raise self.CollectError("\n".join(str(p) for p in run.problems))
        self.run = run
        return [RuleItem.from_parent(self, name=rule.id, rule=rule) for rule in self.plugin.rules()]

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, self.CollectError):
            return _Lines(str(excinfo.value), self.shown)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, self.nodeid

    def report(self):
        """The run's report over every rule, evaluated once (the rules take milliseconds)."""
        if self._report is None:
            from .checking.engine import evaluate

            self._report = evaluate(self.run, self.plugin.ruleset, baseline=self.plugin.baseline)
        return self._report

    def result(self, rule_id: str):
        return next(r for r in self.report().results if r.id == rule_id)

    def ran_report(self):
        """The report of the rules that ran (after -k, --lf, -x), with their own diagnosis."""
        if not self.ran:
            return None
        from .checking.diagnosis import diagnose
        from .checking.report import Report

        full = self.report()
        report = Report(run=full.run, source=full.source, records=full.records, tensors=full.tensors,
                        rule_sources=full.rule_sources, results=list(self.ran.values()),
                        healthy_record=full.healthy_record)
        report.diagnosis = diagnose(report, self.run)
        return report


class RuleFailed(Exception):
    """Raised by a :class:`RuleItem` whose rule failed; shown as weightwatch's failure section."""

    def __init__(self, result):
        self.result = result
        super().__init__(_first_line(result))


class RuleItem(pytest.Item):
    """One rule checked on one run: ``runs/exp1::exploding-norm``."""

    def __init__(self, *, rule, **kwargs):
        super().__init__(**kwargs)
        self.rule = rule
        self.add_marker("weightwatch")
        # -k matches a rule by its check, severity and the check's keywords too (as weightwatch -k)
        check_def = getattr(rule, "check_def", None)
        self.extra_keyword_matches.update(
            {rule.check, rule.severity, *(getattr(check_def, "keywords", ()) or ())})

    def runtest(self):
        from .checking.report import FAILED, SKIPPED, WARNING

        run = self.parent
        result = run.result(self.rule.id)
        run.ran[result.id] = result
        if result.status == SKIPPED:
            pytest.skip(result.note or "skipped")
        if result.status == FAILED or (result.status == WARNING and run.plugin.strict):
            raise RuleFailed(result)
        if result.status == WARNING:
            try:
                warnings.warn_explicit(RuleWarning(f"{result.id}: {_first_line(result)}"), RuleWarning,
                                       _location(run.report(), result), 0)
            except RuleWarning:  # -W error (or filterwarnings = error): the warning fails the rule
                raise RuleFailed(result) from None

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, RuleFailed):
            return RuleFailureRepr(excinfo.value.result, self.parent.report(),
                                   verbose=self.config.getoption("verbose") > 0)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.parent.path, None, self.nodeid


def _first_line(result) -> str:
    """The first finding's message (``(+2 more)``), or the rule's note: the short summary's text."""
    text = result.findings[0].message if result.findings else (result.note or result.status)
    more = f" (+{len(result.findings) - 1} more)" if len(result.findings) > 1 else ""
    return text + more


def _location(report, result) -> str:
    """The record file of the first finding (the manifest for a rule without findings)."""
    from .run.schema import MANIFEST, record_name

    if result.findings:
        f = result.findings[0]
        return os.path.join(report.run, f.file or record_name(f.record))
    return os.path.join(report.run, MANIFEST)


class _Crash:
    """What pytest's short summary, ``--tb=line`` and JUnit's ``message`` read."""

    def __init__(self, path: str, message: str):
        self.path, self.lineno, self.message = path, 0, message

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class _Lines:
    """weightwatch's one-line messages, as a collection error (with a short-summary message)."""

    def __init__(self, text: str, path: str):
        self.text = text
        self.reprcrash = _Crash(path, text.splitlines()[0] if text else "")

    def toterminal(self, tw) -> None:
        for line in self.text.splitlines():
            tw.line(line, red=True)

    def __str__(self) -> str:
        return self.text


class RuleFailureRepr:
    """A failing rule, drawn by weightwatch's terminal renderer (``_rule_section``)."""

    def __init__(self, result, report, *, verbose: bool = False):
        self.result, self.report, self.verbose = result, report, verbose
        self.reprcrash = _Crash(_location(report, result), _first_line(result))

    def toterminal(self, tw) -> None:
        from .output.terminal import _rule_section

        console, buffer = _console(tw)
        _rule_section(console, self.result, self.report, self.verbose, header=False)
        tw.write(buffer.getvalue())

    def __str__(self) -> str:  # JUnit's failure text, xdist, report.longreprtext: no colour
        from .output.terminal import _rule_section

        console, buffer = _console(None, width=160)
        _rule_section(console, self.result, self.report, self.verbose, header=False)
        return buffer.getvalue().rstrip("\n")


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture
def weightwatch_run(tmp_path):
    """A fresh run directory with a ``.callback`` for ``model.fit`` and ``.assert_healthy()``.

    ::

        def test_training_is_stable(weightwatch_run):
            model.fit(x, y, epochs=3, callbacks=[weightwatch_run.callback])
            weightwatch_run.assert_healthy()
    """
    from .testing import WatchedRun

    return WatchedRun(tmp_path / "weightwatch-run")
