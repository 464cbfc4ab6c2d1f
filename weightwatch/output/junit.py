"""JUnit XML, for CI systems that show test results (GitLab, Jenkins, Azure, ...).

One ``<testsuite>`` per run; one ``<testcase>`` per rule, whatever its
outcome, so a test keeps its identity between passing and failing builds
(with several runs in one file, the classname also names the run:
``weightwatch.<run folder>.<rule>``)::

    <testsuites name="weightwatch" tests="13" failures="2" errors="0" skipped="1" time="0.021">
      <testsuite name="weightwatch: runs/exp1" tests="13" failures="2" ...>
        <testcase classname="weightwatch.nonfinite-weights" name="all tensors" time="0">
          <failure message="dense/kernel holds 3 NaN/Inf values (and 1 more tensor)"
                   type="nonfinite">...every finding: tensor, record, value, limit, history, hint</failure>
        </testcase>
        <testcase classname="weightwatch.exploding-norm" name="all tensors" time="0"/>
        <testcase classname="weightwatch.frozen-changed" name="all tensors" time="0">
          <skipped message="no selected tensor is frozen=true"/>
        </testcase>
        <testcase classname="weightwatch.input" name="runs/exp1/record-000003.json" time="0">
          <error message="runs/exp1/record-000003.json: unreadable record, skipped (...)"/>
        </testcase>

A testcase is named after what the rule judges ("all tensors", or the logs
of a log rule); a failure's text lists every finding.  Warnings are passing
testcases whose ``<system-out>`` says what was seen, or failures with
``strict=True``.  An unreadable input file is an ``<error>`` testcase of its own.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

from ..checking.report import FAILED, SKIPPED, WARNING, Finding, Report, RuleResult
from ..errors import WeightwatchError
from ..run.files import not_regular
from ..run.jsonio import atomic_write
from . import Emission, OutputFormat
from .text import fmt_num, limit_text

#: Characters XML 1.0 cannot hold at all (ElementTree would write them and break the file).
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(text) -> str:
    return _ILLEGAL_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def _rule_subject(result: RuleResult) -> str:
    """The testcase name of a rule that is reported as a whole."""
    rule = result.rule
    if getattr(rule, "is_log_check", False):
        return ", ".join(rule.log_keys)
    return "all tensors"


def finding_details(f: Finding, rule, total_records: int) -> str:
    """The body of a failure: where, what, against which limit, and the hint."""
    lines = [f.message, ""]
    lines.append(f"tensor: {f.tensor}" + (f" (layer {f.layer})" if f.layer else "") if f.tensor
                 else f"log: {f.subject}")
    lines.append(f"first at: {f.at} (record {f.record})")
    value = "non-finite" if f.value is None else fmt_num(f.value, 6)
    lines.append(f"{f.metric or 'value'}: {value}" + limit_text(f, 6))
    if f.band is not None:
        lines.append(f"band: {fmt_num(f.band[0], 6)} to {fmt_num(f.band[1], 6)} (the reference runs')")
    lines.append(f"violated in: {f.count} of {total_records} records")
    if f.history:
        lines.append("history: " + " ".join(fmt_num(v) for v in f.history))
    hint = getattr(rule, "hint", "")
    if hint:
        lines.append(f"hint: {hint}")
    return "\n".join(lines)


def _case(suite: ET.Element, classname: str, name: str) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=_clean(classname), name=_clean(name), time="0")


def _suite(report: Report, strict: bool, prefix: str = "weightwatch") -> tuple[ET.Element, dict]:
    suite = ET.Element("testsuite", name=_clean(f"weightwatch: {report.run}"))
    n = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for result in report.results:
        # One testcase per rule, named the same whatever its outcome: CI systems track tests
        # across builds by (classname, name), and a failure must not rename the test.
        case = _case(suite, f"{prefix}.{result.id}", _rule_subject(result))
        n["tests"] += 1
        check = getattr(result.rule, "check", "")
        if result.status == SKIPPED:
            ET.SubElement(case, "skipped", message=_clean(result.note or "skipped"))
            n["skipped"] += 1
            continue
        if result.status not in (FAILED, WARNING):
            continue
        if result.findings:
            first = result.findings[0]
            more = len(result.findings) - 1
            message = first.message + (f" (and {more} more tensor{'s' if more != 1 else ''})" if more else "")
            details = "\n\n".join(finding_details(f, result.rule, report.records) for f in result.findings)
        else:    # a warning with no finding: a note about the rule (a select that matched nothing)
            message = details = result.note or result.status
        if result.status == FAILED or strict:
            el = ET.SubElement(case, "failure", message=_clean(message), type=_clean(check))
            el.text = _clean(details)
            n["failures"] += 1
        else:
            ET.SubElement(case, "system-out").text = _clean(f"warning: {details}")
    for problem in report.problems:
        where, sep, _ = problem.partition(": ")
        case = _case(suite, "weightwatch.input", where if sep else report.run)
        n["tests"] += 1
        ET.SubElement(case, "error", message=_clean(problem), type="RunFormatError").text = _clean(problem)
        n["errors"] += 1
    for k, v in n.items():
        suite.set(k, str(v))
    suite.set("time", f"{report.duration:.3f}")
    return suite, n


def junit_xml(reports: list[Report], *, strict: bool = False) -> bytes:
    """The JUnit XML document for ``reports``, as UTF-8 bytes."""
    root = ET.Element("testsuites", name="weightwatch")
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    names = [PurePosixPath(r.run.replace("\\", "/")).name or r.run for r in reports]
    unique = len(set(names)) == len(names)
    for report, name in zip(reports, names):
        # One run: classname weightwatch.<rule>.  Several: weightwatch.<run>.<rule> (the run's
        # folder name, or its path when two share a name), so that a test id names one run:
        # CI systems key tests by classname and name across suites.
        prefix = "weightwatch" if len(reports) == 1 else f"weightwatch.{name if unique else report.run}"
        suite, n = _suite(report, strict, prefix)
        root.append(suite)
        for k in total:
            total[k] += n[k]
    for k, v in total.items():
        root.set(k, str(v))
    root.set("time", f"{sum(r.duration for r in reports):.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(reports: list[Report], path, *, strict: bool = False) -> None:
    """Write the JUnit XML report to ``path``: whole or not at all, parent folders created.

    Written to a temporary file beside it and renamed over it, and only over a regular file
    (or nothing): a directory, a symbolic link, a device or a FIFO at ``path`` is refused,
    never replaced or written through.  Raises WeightwatchError in one line.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise WeightwatchError(f"--junitxml: cannot reach the report's path ({exc.strerror})", path=path) from None
    if st is not None:
        what = not_regular(st.st_mode)
        if what is not None:
            raise WeightwatchError(f"--junitxml: {what} is at this path; refusing to replace it "
                                   "(give the path of a file)", path=path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, junit_xml(reports, strict=strict))
    except OSError as exc:
        raise WeightwatchError(f"--junitxml: cannot write the report ({exc.strerror or exc})", path=path) from None


def emit(out: Emission) -> None:
    write_junit(out.reports, out.path, strict=out.strict)


FORMAT = OutputFormat(name="junit", flag="--junitxml", help="also write a JUnit XML report to PATH",
                      emit=emit)
