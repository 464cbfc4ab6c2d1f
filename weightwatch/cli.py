"""The ``weightwatch`` command line.

Start-up matters (CI runs ``weightwatch check`` on every training change), so
this module imports only argparse at load time; each subcommand imports what
it needs, and nothing but ``demo`` ever imports TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from ._version import __version__
from .errors import ExitCode, WeightwatchError

EPILOG_CHECK = """\
examples:
  weightwatch check runs/exp1                 check with the project's rules (or the default pack)
  weightwatch check runs/* --strict           several runs; warnings fail too
  weightwatch check runs/exp1 -k "not plateau" -x
  weightwatch check runs/exp1 --rules ci.toml --junitxml reports/weights.xml
  weightwatch check runs/exp1 --format json > report.json
  weightwatch check runs/exp1 --html report.html   also a self-contained HTML report
  weightwatch check runs/pr --baseline runs/main-s0 --baseline runs/main-s1
                                              also gate against reference runs of main
  weightwatch check runs/pr --baseline main.baseline.json   ... or their learnt bands

configuration: weightwatch.toml or [tool.weightwatch] in pyproject.toml, found by
walking up from the current directory (the nearest wins; the walk stops at the
repository root or the home directory; files in world-writable directories are
passed over unless named with --config). Without one, the built-in "default"
pack applies. The report's "config:" line says which applied.

exit codes (as pytest's): 0 passed, 1 a check failed, 2 interrupted,
3 internal error, 4 usage/configuration/input error, 5 nothing was checked.
"""

EPILOG_REPORT = """\
examples:
  weightwatch report runs/exp1 -o report.html    one file, opens offline (CI artifact, e-mail)
  weightwatch report runs/a runs/b -o both.html  several runs in one file
  weightwatch check runs/exp1 --html report.html gate CI and write the report in one go

The verdict in the report is the one `weightwatch check` gives with the same rules;
`report` itself exits 0 once the file is written.
"""

EPILOG_BASELINE = """\
examples:
  weightwatch baseline learn runs/main-s0 runs/main-s1 runs/main-s2 -o main.baseline.json
  weightwatch check runs/pr --baseline main.baseline.json

The bands are learnt from the references' seed-to-seed spread (median +- a robust
spread, in log10 units); with one reference, a fixed tolerance applies. The file is
strict JSON ("format": "weightwatch-baseline"), much smaller than the runs.
"""

EPILOG_DIFF = """\
examples:
  weightwatch diff runs/pr runs/main-s0         what departs most, A against B
  weightwatch diff runs/pr runs/main-s0 --top 40

Tensors are matched by path without the model prefix and Keras' instance counters
(sequential_3/dense_7/kernel is sequential/dense/kernel); records by epoch (by step
for batch records). Exit 0 whatever the departures: `check --baseline` gates.
"""

EPILOG_RULES = """\
examples:
  weightwatch rules                 list the rules in force (project config or default pack)
  weightwatch rules frozen-changed  explain one rule: what, why, options, how to tune it
  weightwatch rules --pack strict   list a built-in pack
  weightwatch rules --checks        document every check and its options
"""


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; pytest (and so weightwatch) uses 4."""

    def error(self, message):
        import re

        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            from .errors import did_you_mean

            choices = re.findall(r"'([^']*)'", m.group(2))
            message += did_you_mean(m.group(1), choices)
        self.print_usage(sys.stderr)
        self.exit(int(ExitCode.USAGE_ERROR), f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="weightwatch",
        description="pytest for neural-network training runs: check recorded weight "
                    "statistics against declarative rules.",
        epilog="Run 'weightwatch demo' to see it catch a failing run in under a minute.",
    )
    p.add_argument("--version", action="version", version=f"weightwatch {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("check", help="check runs against the rules (exit code gates CI)",
                       description="Check recorded runs against the rules and report like pytest.",
                       epilog=EPILOG_CHECK, formatter_class=argparse.RawDescriptionHelpFormatter)
    _rule_options(c)
    c.add_argument("-x", "--exitfirst", action="store_const", const=1, dest="maxfail",
                   help="stop at the first failing rule")
    c.add_argument("--maxfail", type=int, metavar="N", help="stop after N failing rules")
    c.add_argument("--strict", action="store_true", help="warnings fail the check (exit 1)")
    c.add_argument("-q", "--quiet", action="count", default=0, help="less output")
    c.add_argument("-v", "--verbose", action="count", default=0, help="more output (skip reasons, all findings)")
    from .output import file_formats, stream_formats

    streams = stream_formats()
    c.add_argument("--format", choices=[f.name for f in streams], default=None,
                   help="output format: " + "; ".join(f"{f.name}: {f.help}" for f in streams))
    for fmt in file_formats():
        c.add_argument(fmt.flag, metavar=fmt.metavar, dest=f"output_{fmt.name}", help=fmt.help)

    h = sub.add_parser("report", help="write a self-contained HTML report of runs (charts, heatmap)",
                       description="Check runs against the rules and write one self-contained HTML file "
                                   "(no network needed to view it): the verdict, a chart per finding, an "
                                   "update-ratio heatmap, the logs and every tensor's norm.",
                       epilog=EPILOG_REPORT, formatter_class=argparse.RawDescriptionHelpFormatter)
    _rule_options(h)
    h.add_argument("-o", "--output", default="weightwatch-report.html", metavar="PATH",
                   help="where to write the report (default: weightwatch-report.html)")
    h.add_argument("--strict", action="store_true", help="warnings count as failures in the verdict")

    b = sub.add_parser("baseline", help="learn a baseline file from reference runs",
                       description="Baseline files: the bands of reference runs, for check --baseline.",
                       epilog=EPILOG_BASELINE, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.set_defaults(baseline_parser=b)
    bsub = b.add_subparsers(dest="baseline_command", metavar="ACTION", parser_class=_Parser)
    bl = bsub.add_parser("learn", help="learn the bands of reference runs into one file",
                         description="Learn the bands of reference runs (seeds of main) into one baseline "
                                     "file, so CI need not keep the runs.",
                         epilog=EPILOG_BASELINE, formatter_class=argparse.RawDescriptionHelpFormatter)
    bl.add_argument("refs", nargs="+", metavar="REF_RUN", help="reference run directories (two or more "
                    "give a band from their spread)")
    bl.add_argument("-o", "--output", required=True, metavar="FILE",
                    help="where to write the baseline file (e.g. main.baseline.json)")

    df = sub.add_parser("diff", help="the figures of run A that depart most from run B's, side by side",
                        description="Compare two runs tensor by tensor and log by log; print the "
                                    "largest departures with both histories as sparklines.",
                        epilog=EPILOG_DIFF, formatter_class=argparse.RawDescriptionHelpFormatter)
    df.add_argument("a", metavar="RUN_A")
    df.add_argument("b", metavar="RUN_B")
    df.add_argument("--top", type=int, default=15, metavar="N", help="rows to show (default 15)")

    s = sub.add_parser("show", help="table of a run's tensors: shapes, flags, norms, updates",
                       description="Show one row per tensor of a run, with a sparkline of its norm. "
                                   "A model name every path starts with (spirals/...) is said once "
                                   "above the table and left out of its paths; rules select tensors "
                                   "with it or without it.")
    s.add_argument("run", metavar="RUN_DIR")

    r = sub.add_parser("rules", help="list the rules, or explain one (like `ruff rule`)",
                       description="List the rules in force, or explain one rule or check.",
                       epilog=EPILOG_RULES, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("rule", nargs="?", metavar="ID", help="rule id or check to explain")
    r.add_argument("--pack", metavar="NAME", help="list a built-in pack instead of the rules in force")
    r.add_argument("--checks", action="store_true", help="document every check")

    d = sub.add_parser("demo", help="train a healthy and a broken model and check both (~30 s)",
                       description="Train a small model twice on generated data - a healthy run and "
                                   "one with a learning rate ten times too high - with live checks, then "
                                   "report on both. Needs TensorFlow (pip install weightwatch[tensorflow]).")
    d.add_argument("dir", nargs="?", default="weightwatch-demo", metavar="DIR",
                   help="where to write the two runs (default: ./weightwatch-demo)")
    return p


def _rule_options(c) -> None:
    """The runs and the rule selection, as ``check`` and ``report`` take them."""
    c.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run directory written by WatchCallback, or a folder of per-epoch JSON weight dumps")
    c.add_argument("--rules", action="append", default=[], metavar="FILE",
                   help="rule file layered on top of the project configuration (repeatable)")
    c.add_argument("--config", metavar="FILE",
                   help="use this weightwatch.toml / pyproject.toml instead of discovering one")
    c.add_argument("--no-config", action="store_true",
                   help="ignore project configuration: the default pack plus --rules only")
    c.add_argument("-k", dest="keyword", metavar="EXPR",
                   help='only rules matching the expression, e.g. "nan or frozen", "not plateau"')
    c.add_argument("--baseline", action="append", default=[], metavar="REF",
                   help="also compare with reference runs (repeatable: seeds of main) or a baseline "
                        "file; default: the project configuration's baseline, if any")
    c.add_argument("--no-baseline", action="store_true",
                   help="ignore the project configuration's baseline")


def main(argv=None) -> int:
    # A run's name need not be UTF-8: its undecodable bytes print as escapes, never an error.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return int(ExitCode.USAGE_ERROR)
    try:
        return int(_COMMANDS[args.command](args))
    except WeightwatchError as exc:
        from rich.markup import escape

        # soft_wrap: one line, however narrow the terminal; CI logs are grepped.
        _stderr().print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return int(ExitCode.USAGE_ERROR)
    except KeyboardInterrupt:
        _stderr().print("[red]interrupted[/]")
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        _silence_stdout()
        return int(ExitCode.OK)
    except _OutputError as exc:  # stdout on a full device...: the report could not be delivered
        _silence_stdout()
        _stderr().print(f"[bold red]error:[/] cannot write the report to standard output ({exc})",
                        soft_wrap=True, markup=True)
        return int(ExitCode.USAGE_ERROR)
    except Exception:  # a bug in weightwatch: show it, as pytest shows INTERNALERROR
        import traceback

        traceback.print_exc()
        _stderr().print("[bold red]internal error[/] in weightwatch - please report it with the "
                        "traceback above.")
        return int(ExitCode.INTERNAL_ERROR)


class _OutputError(Exception):
    """Standard output cannot be written: its OSError's message."""


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's own flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _emit_to_stdout(fn, *args) -> None:
    """Run an output function that writes to stdout; its OSError (a full device) becomes one line."""
    try:
        fn(*args)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _OutputError(exc.strerror or str(exc)) from None


def _stdout():
    from rich.console import Console

    return Console(highlight=False)


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _evaluate(args, maxfail=None) -> list:
    """A report per run of ``args.runs`` under the rules ``args`` select."""
    from .checking.config import load_rules
    from .checking.engine import evaluate
    from .checking.report import Report
    from .errors import RunFormatError
    from .run.reader import open_run

    from .checking.baseline_file import load_baseline

    ruleset = load_rules(args.rules or None, config=args.config, use_project_config=not args.no_config)
    refs = args.baseline or ([] if args.no_baseline else ruleset.baseline)
    baseline = load_baseline(refs) if refs else None
    reports = []
    for path in args.runs:
        try:
            run = open_run(path)
        except RunFormatError as exc:
            # An unreadable run is reported with the others, never silently dropped.
            report = Report(run=str(path), source="?", records=0, tensors=0,
                            rule_sources=list(ruleset.sources), config=ruleset.config,
                            problems=[str(exc)])
        else:
            report = evaluate(run, ruleset, keyword=args.keyword, maxfail=maxfail, baseline=baseline)
        reports.append(report)
    return reports


def cmd_check(args) -> int:
    from .output import Emission, file_formats, get_format, stream_formats

    started = time.perf_counter()
    reports = _evaluate(args, maxfail=args.maxfail or None)   # --maxfail 0: no limit, as in pytest
    exit_codes = [r.exit_code(strict=args.strict) for r in reports]
    out = Emission(reports, strict=args.strict, verbosity=args.verbose - args.quiet,
                   duration=time.perf_counter() - started)
    _emit_to_stdout(get_format(args.format or "terminal").emit, out.to(stream=sys.stdout))
    if args.format is None:
        for fmt in stream_formats():
            if fmt.alongside is not None and fmt.alongside(os.environ):
                _emit_to_stdout(fmt.emit, out.to(stream=sys.stdout))
    for fmt in file_formats():
        path = getattr(args, f"output_{fmt.name}")
        if path:
            fmt.emit(out.to(path=path))
    return int(_worst(exit_codes))


def _worst(codes) -> ExitCode:
    """One exit code for several runs: a failure beats an input error beats 'nothing ran'."""
    for code in (ExitCode.CHECKS_FAILED, ExitCode.USAGE_ERROR, ExitCode.NO_CHECKS_RAN):
        if code in codes:
            return code
    return ExitCode.OK


def cmd_report(args) -> int:
    """Write the HTML report.  A picture, not a gate: exit 0 once written, whatever the verdict
    (``weightwatch check --html PATH`` gates and draws in one go)."""
    from .output.html import write_html

    reports = _evaluate(args)
    path = write_html(reports, args.output, strict=args.strict)
    verdict = "; ".join(f"{r.run}: {r.summary()}" for r in reports)
    _stdout().print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB) - {verdict}", soft_wrap=True)
    return int(ExitCode.OK)


def cmd_baseline(args) -> int:
    from .checking.baseline import learn_baseline
    from .checking.baseline_file import write_baseline

    if args.baseline_command != "learn":
        args.baseline_parser.print_help()
        return int(ExitCode.USAGE_ERROR)
    base = learn_baseline(args.refs)
    path = write_baseline(base, args.output)
    console = _stdout()
    console.print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB): {base.describe()}, "
                  f"{len(base.records)} records x {len(base.tensors)} tensors, "
                  f"{len(base.logs)} log{'s' * (len(base.logs) != 1)}", soft_wrap=True)
    for note in base.notes:
        console.print(f"note: {note}", soft_wrap=True)
    return int(ExitCode.OK)


def cmd_diff(args) -> int:
    from .output.diff import render_diff
    from .output.text import no_workflow_commands
    from .run.reader import open_run

    a, b = open_run(args.a), open_run(args.b)
    with no_workflow_commands(sys.stdout):
        _emit_to_stdout(lambda: render_diff(a, b, _stdout(), top=max(args.top, 1)))
    return int(ExitCode.USAGE_ERROR if a.problems or b.problems else ExitCode.OK)


def cmd_show(args) -> int:
    from .output.show import render_show
    from .run.reader import open_run

    from .output.text import no_workflow_commands

    run = open_run(args.run)
    with no_workflow_commands(sys.stdout):
        _emit_to_stdout(render_show, run, _stdout())
    return int(ExitCode.USAGE_ERROR if run.problems else ExitCode.OK)


def cmd_rules(args) -> int:
    from .output.ruledocs import explain, list_checks, list_rules

    console = _stdout()
    if args.checks:
        _emit_to_stdout(list_checks, console)
    elif args.rule:
        _emit_to_stdout(lambda: explain(args.rule, console, pack=args.pack))
    else:
        _emit_to_stdout(lambda: list_rules(console, pack=args.pack))
    return int(ExitCode.OK)


def cmd_demo(args) -> int:
    from .demo import run_demo

    return int(run_demo(args.dir, _stdout()))


_COMMANDS = {"check": cmd_check, "report": cmd_report, "baseline": cmd_baseline, "diff": cmd_diff,
             "show": cmd_show, "rules": cmd_rules, "demo": cmd_demo}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
