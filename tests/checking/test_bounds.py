"""Every input is bounded: a five-line rule file, a -k expression or a manifest costs one line, not
gigabytes, hours or a traceback."""

from __future__ import annotations

import json
import time

import pytest

import weightwatch
from weightwatch.checking.config import MAX_EXTENDS_DEPTH, load_rules
from weightwatch.checking.engine import evaluate
from weightwatch.checking.keyword import KeywordError, compile_keyword
from weightwatch.errors import RuleError, RunFormatError

from runbuilder import MLP, make_run, run_check, write_healthy_run


def rule_file(tmp_path, body: str):
    f = tmp_path / "r.toml"
    f.write_text('[[rule]]\nid = "x"\n' + body + "\n")
    return f


@pytest.mark.parametrize("template,message", [
    ("{value:>999999999}", "format width 999999999"),
    ("{value:,.200000000f}", "format precision 200000000"),
    ("{value:0999999999999999999999d}", "format width"),
    ("{value:>201}", "at most 200"),
    ("{value:.51f}", "at most 50"),
    ("{tensor:abc}", "invalid format spec 'abc'"),
])
def test_format_widths_and_precisions_are_bounded(tmp_path, template, message):
    f = rule_file(tmp_path, f'check = "nonfinite"\nmessage = "{template}"')
    started = time.perf_counter()
    with pytest.raises(RuleError) as err:
        load_rules(f, use_project_config=False)
    assert time.perf_counter() - started < 1
    assert message in str(err.value) and str(f) in str(err.value) and "\n" not in str(err.value)


def test_reasonable_formats_still_render(tmp_path):
    f = rule_file(tmp_path, 'check = "nonfinite"\nmessage = "{tensor:>20} {value:+08.3e} {value:,.2f} {value:.1%}"')
    rule = load_rules(f, use_project_config=False).get("x")
    assert rule.format_message(tensor="a/b", value=1234.5) == f"{'a/b':>20} {1234.5:+08.3e} {1234.5:,.2f} {1234.5:.1%}"


@pytest.mark.parametrize("body,message", [
    ('check = "norm-runaway"\nrecords = 1000000000', 'option "records" must be <= 1000'),
    ('check = "loss-plateau"\nwindow = 1000000000000', 'option "window" must be <= 1e+06'),
    ('check = "nonfinite"\npatience = 9000000000000000000', '"patience" must be an integer >= 1 and <= 1,000,000,000'),
    ('check = "nonfinite"\nafter = 9000000000000000000', '"after" must be an integer >= 0 and <= 1,000,000,000'),
    ('check = "nonfinite-log"\nkeys = ' + json.dumps([f"k{i}" for i in range(1001)]), "at most 1000"),
    ("check = []", "unknown check"),
    ("check = {a = 1}", "unknown check"),
])
def test_option_ranges_are_bounded(tmp_path, body, message):
    with pytest.raises(RuleError) as err:
        load_rules(rule_file(tmp_path, body), use_project_config=False)
    assert message in str(err.value), str(err.value)


def test_norm_runaway_costs_no_more_than_the_run_is_long():
    """The streak loop stops at the run's length: the largest records costs what 10 does."""
    run = make_run({"a/kernel": {"l2": [1.5 ** k for k in range(10)], "size": 100.0}}, 10)
    started = time.perf_counter()
    result = run_check(run, "norm-runaway", records=1000)
    assert time.perf_counter() - started < 1
    assert result.status == "passed"  # 9 growing records are no streak of 1000
    assert run_check(run, "norm-runaway", records=5).status == "failed"


@pytest.mark.parametrize("doc,message", [
    ("disable = [[]]", '"disable" entries are rule ids'),
    ('disable = "nope"', "cannot disable unknown rule"),
    ("disable = 1", '"disable" must be a list'),
    ("extends = [[]]", '"extends" entries are strings'),
    ("extends = [{a = 1}]", '"extends" entries are strings'),
])
def test_values_of_the_wrong_type_in_a_document_are_one_line(tmp_path, doc, message):
    f = tmp_path / "r.toml"
    f.write_text(doc + "\n")
    with pytest.raises(RuleError) as err:
        load_rules(f, use_project_config=False)
    assert message in str(err.value)


def test_an_extends_chain_400_deep_is_one_line(tmp_path):
    for i in range(400):
        (tmp_path / f"p{i}.toml").write_text(f'extends = ["p{i + 1}.toml"]\n' if i < 399 else "extends = []\n")
    with pytest.raises(RuleError) as err:
        load_rules(tmp_path / "p0.toml", use_project_config=False)
    assert f"nested more than {MAX_EXTENDS_DEPTH} deep" in str(err.value)


def test_an_extends_diamond_is_bounded(tmp_path):
    """Each file extends the next one twice: 2^30 loads, unless counted."""
    for i in range(30):
        (tmp_path / f"d{i}.toml").write_text(f'extends = ["d{i + 1}.toml", "d{i + 1}.toml"]\n')
    (tmp_path / "d30.toml").write_text("extends = []\n")
    started = time.perf_counter()
    with pytest.raises(RuleError, match="rule files loaded in all"):
        load_rules(tmp_path / "d0.toml", use_project_config=False)
    assert time.perf_counter() - started < 10


def test_toml_nested_thousands_deep_is_one_line(tmp_path):
    f = tmp_path / "deep.toml"
    f.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(RuleError, match="nested too deeply|invalid TOML"):
        load_rules(f, use_project_config=False)


@pytest.mark.parametrize("expr", ["(" * 1000 + "nan" + ")" * 1000, "not " * 1000 + "nan", "(" * 100000])
def test_deeply_nested_keyword_expressions_are_one_line(expr):
    with pytest.raises(KeywordError, match="nested more than|longer than"):
        compile_keyword(expr)


def test_a_long_flat_keyword_expression_matches_without_recursing(rules):
    match = compile_keyword(" or ".join(["nope"] * 1200 + ["nan"]))
    assert [r.id for r in rules if match(r)] == [r.id for r in rules if compile_keyword("nan")(r)]
    assert compile_keyword("(" * 60 + "nan" + ")" * 60)(rules.get("nonfinite-weights"))


def test_a_manifest_of_absurdly_many_tensors_is_refused_in_one_line(tmp_path):
    """A 96 MB run whose manifest names 10^6 tensors would need 38 GiB of arrays (here 2 x 10^5, 1 GiB)."""
    d = write_healthy_run(tmp_path / "run", 40)
    m = json.loads((d / "manifest.json").read_text())
    m["tensors"] += [dict(m["tensors"][0], path=f"pad/{i}/kernel", first_record=39) for i in range(200_000)]
    (d / "manifest.json").write_text(json.dumps(m))
    started = time.perf_counter()
    with pytest.raises(RunFormatError) as err:
        weightwatch.open_run(d)
    assert time.perf_counter() - started < 30
    assert "refusing to read" in str(err.value) and "GiB" in str(err.value)


def test_a_huge_run_file_is_refused_without_reading_it(tmp_path, monkeypatch):
    from weightwatch.run import files

    from runbuilder import MLP, write_run

    many = {f"metric_{i}": 1.0 for i in range(60)}          # makes record 2 the largest file
    d = write_run(tmp_path / "run", MLP, [{"logs": {}}, {"logs": {"loss": 1.0}}, {"logs": {"loss": 0.5, **many}}])
    big = (d / "record-000002.json").stat().st_size - 1
    assert max((d / n).stat().st_size for n in ("manifest.json", "record-000000.json", "record-000001.json")) < big
    monkeypatch.setattr(files.read_bytes, "__kwdefaults__", {"limit": big})
    run = weightwatch.open_run(d)  # the manifest and records 0 and 1 are smaller
    assert [r.index for r in run.records] != [0, 1, 2]
    assert "larger than" in str(run.problems[-1]) and "record-000002.json" in str(run.problems[-1])
    monkeypatch.setattr(files.read_bytes, "__kwdefaults__", {"limit": 10})
    with pytest.raises(RunFormatError, match="larger than") as err:
        weightwatch.open_run(d)
    assert "manifest.json" in str(err.value)
