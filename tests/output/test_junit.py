"""JUnit XML, on reports the real engine produced from hand-written runs."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

from runbuilder import default_rule_count, MLP, write_healthy_run, write_run
from weightwatch.checking.config import load_rules
from weightwatch.checking.engine import evaluate
from weightwatch.output.junit import junit_xml, write_junit
from weightwatch.run.reader import open_run

#: rules in the default pack: the counts below follow it as rules are added
N = default_rule_count()


def parse(tmp_path, reports, **kw) -> ET.Element:
    path = tmp_path / "out" / "nested" / "junit.xml"
    write_junit(reports, path, **kw)
    assert not [f for f in os.listdir(path.parent) if f.endswith(".tmp")]
    return ET.parse(path).getroot()


def cases(suite):
    return [(c.get("classname"), c.get("name")) for c in suite.iter("testcase")]


# -- JUnit ---------------------------------------------------------------------------------

def test_structure_and_counts(tmp_path, healthy, nan_report):
    root = parse(tmp_path, [healthy, nan_report])
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [f"weightwatch: {healthy.run}", f"weightwatch: {nan_report.run}"]
    h, n = suites
    assert (h.get("tests"), h.get("failures"), h.get("errors"), h.get("skipped")) == (str(N), "0", "0", "1")
    assert (n.get("tests"), n.get("failures"), n.get("errors"), n.get("skipped")) == (str(N), "2", "0", "1")
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == (str(2 * N), "2", "2")
    float(h.get("time"))
    for suite in suites:
        assert len(suite.findall("testcase")) == int(suite.get("tests"))
        assert all(c.get("time") == "0" for c in suite.iter("testcase"))
    # two runs in one file: the classname names the run, so no test id is shared between them
    assert ("weightwatch.nan.nonfinite-weights", "all tensors") in cases(n)
    assert ("weightwatch.nan.nonfinite-loss", "loss") in cases(n)
    assert ("weightwatch.nan.exploding-norm", "all tensors") in cases(n)
    assert ("weightwatch.healthy.loss-diverging", "loss") in cases(h)      # log rules name their key
    assert not set(cases(h)) & set(cases(n))
    one = parse(tmp_path, [nan_report]).find("testsuite")
    assert ("weightwatch.nonfinite-weights", "all tensors") in cases(one)


def test_failure_carries_message_and_details(tmp_path, nan_report):
    suite = parse(tmp_path, [nan_report]).find("testsuite")
    case = next(c for c in suite.iter("testcase") if c.get("classname") == "weightwatch.nonfinite-weights")
    failure = case.find("failure")
    assert failure.get("message") == "dense/kernel holds 3 NaN/Inf values"
    assert failure.get("type") == "nonfinite"
    text = failure.text
    assert "tensor: dense/kernel (layer dense)" in text
    assert "first at: epoch 2 (record 2)" in text
    assert "nan+inf: 3 against limit 0" in text
    assert "violated in: 2 of 4 records" in text
    assert "history: 0 0 3 3" in text
    assert "hint: Lower the learning rate" in text


def test_skipped_and_passed(tmp_path, healthy):
    suite = parse(tmp_path, [healthy]).find("testsuite")
    skipped = [c for c in suite.iter("testcase") if c.find("skipped") is not None]
    assert len(skipped) == 1
    assert skipped[0].get("classname") == "weightwatch.frozen-changed"
    assert skipped[0].get("name") == "all tensors"
    assert skipped[0].find("skipped").get("message") == "no selected tensor is frozen=true"
    passed = [c for c in suite.iter("testcase") if len(c) == 0]
    assert len(passed) == N - 1


def test_warnings_pass_unless_strict(tmp_path, plateau):
    suite = parse(tmp_path, [plateau]).find("testsuite")
    case = next(c for c in suite.iter("testcase") if c.get("classname") == "weightwatch.loss-plateau")
    assert case.get("name") == "loss"
    assert case.find("failure") is None
    assert case.find("system-out").text.startswith("warning: loss improved by")
    assert suite.get("failures") == "0"

    strict = parse(tmp_path, [plateau], strict=True).find("testsuite")
    case = next(c for c in strict.iter("testcase") if c.get("classname") == "weightwatch.loss-plateau")
    assert case.find("failure").get("message").startswith("loss improved by")
    assert strict.get("failures") == "1"


def test_problems_are_errors(tmp_path, rules):
    run = write_healthy_run(tmp_path / "run")
    (run / "record-000004.json").write_text("{not json", encoding="utf-8")
    report = evaluate(open_run(run), rules)
    suite = parse(tmp_path, [report]).find("testsuite")
    assert suite.get("errors") == "1" and suite.get("tests") == str(N + 1)
    case = next(c for c in suite.iter("testcase") if c.get("classname") == "weightwatch.input")
    assert case.get("name") == str(run / "record-000004.json")
    assert "unreadable record" in case.find("error").get("message")


def test_xml_is_well_formed_whatever_the_text(tmp_path):
    rs = load_rules({"rule": [{"id": "odd", "check": "nonfinite", "message": "<&> \"q\" \x1b[31m ü {tensor}",
                               "hint": "a\x00b"}]}, use_project_config=False)
    bad = {"nan": 1, "d_l2": None, "d_absmax": None, "d_cos": None, "dead_units": None}
    tensors = {"a<&>/kernel": {"shape": [2, 2]}}
    records = [{"logs": {}}, {"logs": {"loss": 1.0}, "rows": {"a<&>/kernel": bad}}]
    report = evaluate(open_run(write_run(tmp_path / "run", tensors, records)), rs)
    root = ET.fromstring(junit_xml([report]))
    case = next(c for c in root.iter("testcase") if c.get("classname") == "weightwatch.odd")
    assert case.get("name") == "all tensors"
    assert case.find("failure").get("message") == '<&> "q" \\x1b[31m ü a<&>/kernel'
    assert "tensor: a<&>/kernel" in case.find("failure").text
    assert junit_xml([report]).startswith(b"<?xml version='1.0' encoding='utf-8'?>")


def test_write_replaces_existing_file(tmp_path, healthy, nan_report):
    path = tmp_path / "junit.xml"
    write_junit([nan_report], path)
    write_junit([healthy], path)
    assert ET.parse(path).getroot().get("failures") == "0"


def test_testcase_ids_are_the_same_in_passing_and_failing_builds(tmp_path, healthy, nan_report):
    """CI systems track tests by (classname, name): a failing rule must not turn into other tests."""
    assert cases(parse(tmp_path, [healthy]).find("testsuite")) == cases(parse(tmp_path, [nan_report]).find("testsuite"))


def test_a_rule_failing_on_several_tensors_is_one_testcase_listing_each(tmp_path, rules):
    bad = {"nan": 2, "d_l2": None, "d_absmax": None, "d_cos": None, "dead_units": None}
    records = [{"logs": {}}, {"logs": {"loss": 1.0}, "rows": {"dense/kernel": bad, "out/kernel": bad}}]
    report = evaluate(open_run(write_run(tmp_path / "run", MLP, records)), rules)
    suite = ET.fromstring(junit_xml([report])).find("testsuite")
    found = [c for c in suite.iter("testcase") if c.get("classname") == "weightwatch.nonfinite-weights"]
    assert len(found) == 1
    failure = found[0].find("failure")
    assert failure.get("message") == "dense/kernel holds 2 NaN/Inf values (and 1 more tensor)"
    assert "tensor: dense/kernel" in failure.text and "tensor: out/kernel" in failure.text
