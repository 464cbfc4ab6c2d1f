"""The real CLI in a subprocess: exit codes, selection, formats, bad input, no TensorFlow."""

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conftest import subprocess_env

keras = pytest.importorskip("keras")
import weightwatch  # noqa: E402


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "weightwatch", *map(str, args)], capture_output=True,
                          text=True, env=subprocess_env(), cwd=cwd)


def fit(run_dir, lr, epochs=4):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1))).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="hidden"),
                              keras.layers.Dense(1, name="out")], name="m")
    model.compile(keras.optimizers.SGD(lr), "mse")
    model.fit(x, y, epochs=epochs, verbose=0, callbacks=[
        weightwatch.WatchCallback(run_dir, check=False, verbose=0)])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    fit(root / "healthy", lr=0.01)
    fit(root / "nan", lr=5.0)
    return root


def test_healthy_run_passes(runs):
    r = cli("check", runs / "healthy", "--no-config")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED" in r.stdout and "failed" not in r.stdout.splitlines()[-1]


def test_failing_run_exits_1_with_evidence(runs):
    r = cli("check", runs / "nan", "--no-config")
    assert r.returncode == 1
    assert "FAILURES" in r.stdout and "nonfinite-weights" in r.stdout and "hint" in r.stdout
    assert "failed" in r.stdout.splitlines()[-1]


def test_several_runs_worst_exit_code(runs):
    assert cli("check", runs / "healthy", runs / "nan", "--no-config").returncode == 1


def test_keyword_selects_rules(runs):
    r = cli("check", runs / "nan", "--no-config", "-k", "frozen or plateau", "--format", "json")
    assert {x["rule"] for x in json.loads(r.stdout)["results"]} == {"frozen-changed", "loss-plateau"}
    assert cli("check", runs / "nan", "--no-config", "-k", "no-such-rule").returncode == 5


def test_exitfirst_and_maxfail(runs):
    full = json.loads(cli("check", runs / "nan", "--no-config", "--format", "json").stdout)
    assert full["summary"]["failed"] >= 2, "need a run with several failing rules"
    for args, n in ((["-x"], 1), (["--maxfail", "2"], 2)):
        out = json.loads(cli("check", runs / "nan", "--no-config", "--format", "json", *args).stdout)
        assert out["summary"]["failed"] == n
        assert out["results"][-1]["status"] == "failed"


def test_strict_makes_warnings_fail(runs, tmp_path):
    cfg = tmp_path / "weightwatch.toml"
    cfg.write_text("extends = []\n[[rule]]\nid = 'w'\ncheck = 'nonfinite'\nseverity = 'warning'\n")
    assert cli("check", runs / "nan", "--config", cfg).returncode == 0
    assert cli("check", runs / "nan", "--config", cfg, "--strict").returncode == 1


def test_json_schema(runs):
    out = json.loads(cli("check", runs / "nan", "--no-config", "--format", "json").stdout)
    assert {"run", "summary", "results"} <= out.keys()
    assert set(out["summary"]) == {"failed", "warning", "passed", "skipped", "deselected"}
    failed = [r for r in out["results"] if r["status"] == "failed"]
    for r in out["results"]:
        assert {"rule", "severity", "status", "findings"} <= r.keys()
    f = next(r for r in failed if r["rule"] == "nonfinite-weights")["findings"][0]
    assert {"tensor", "layer", "epoch", "value", "limit", "message"} <= f.keys()
    assert f["epoch"] >= 1 and f["tensor"].startswith("m/") and f["limit"] == 0.0


def test_junit_xml_is_well_formed(runs, tmp_path):
    path = tmp_path / "out" / "junit.xml"
    path.parent.mkdir()
    cli("check", runs / "healthy", runs / "nan", "--no-config", "--junitxml", path)
    root = ET.parse(path).getroot()
    suites = root.findall("testsuite")
    assert len(suites) == 2
    cases = root.iter("testcase")
    failures = [c for c in cases if c.find("failure") is not None]
    assert failures and all(c.get("classname").startswith("weightwatch.") for c in failures)
    assert int(suites[1].get("failures")) == len([c for c in suites[1].iter("testcase")
                                                  if c.find("failure") is not None])


def test_github_annotations(runs):
    r = cli("check", runs / "nan", "--no-config", "--format", "github")
    assert r.returncode == 1
    assert any(line.startswith("::error ") and "nonfinite-weights" in line for line in r.stdout.splitlines())


@pytest.mark.parametrize("make, expected", [
    (lambda d: d / "missing", "no such run directory"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no weightwatch run here"),
])
def test_bad_run_dir_is_one_line_exit_4(tmp_path, make, expected):
    r = cli("check", make(tmp_path))
    assert r.returncode == 4
    assert expected in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr


def test_corrupt_record_is_reported_and_the_rest_checked(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "healthy", run)
    (run / "record-000002.json").write_text('{"format": "weightwatch-snapshot", "vers')
    r = cli("check", run, "--no-config")
    assert r.returncode == 4, r.stdout
    assert "record-000002.json" in r.stdout and "Traceback" not in r.stdout + r.stderr
    assert "PASSED" in r.stdout  # the readable records were still checked


def test_bad_rules_file_exit_4(runs, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]]\nid = 'a'\ncheck = 'norm-growth'\nmax_ratoi = 3\n")
    r = cli("check", runs / "healthy", "--rules", bad)
    assert r.returncode == 4
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{bad}:2:" in lines[0] and 'did you mean "max_ratio"' in lines[0]


def test_usage_error_exit_4():
    assert cli("check").returncode == 4
    assert cli("check", "x", "--format", "yaml").returncode == 4


def test_help_teaches():
    r = cli("check", "--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "exit codes" in r.stdout


def test_rules_command_documents_each_rule():
    listing = cli("rules").stdout
    from weightwatch.checking.config import load_rules

    for rule in load_rules(use_project_config=False):
        assert rule.id in listing
        r = cli("rules", rule.id)
        assert r.returncode == 0 and "Why" in r.stdout and "How to fix" in r.stdout
    assert cli("rules", "no-such").returncode == 4
    assert "norm-growth" in cli("rules", "--checks").stdout


def test_a_misspelt_command_gets_a_did_you_mean():
    r = cli("chek", "runs")
    assert r.returncode == 4 and 'did you mean "check"?' in r.stderr


def test_pyproject_without_a_weightwatch_section_is_an_error(runs, tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    r = cli("check", runs / "healthy", "--config", tmp_path / "pyproject.toml")
    assert r.returncode == 4 and "no [tool.weightwatch] section" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_rules_lists_a_pack_once_and_renders_its_docs(tmp_path):
    head = cli("rules", "--pack", "strict", cwd=tmp_path).stdout.split(" rules from ")[1].split("\n\n")[0]
    assert head.count("default.toml") == 1 and "strict.toml" in head
    for text in (cli("rules", "exploding-norm").stdout, cli("rules", "--checks").stdout):
        assert "``" not in text, "RST literals must be rendered, not printed"
    assert "allowed: absmax, l2, rms" in " ".join(cli("rules", "--checks").stdout.split())
    applies = " ".join(cli("rules", "dead-bias-units").stdout.split())
    assert "of role bias, of dtype float32, float64," in applies and "except ['*/beta', '*/key/bias']" in applies
    assert "of a floating-point dtype" in " ".join(cli("rules", "dead-units").stdout.split())


def test_all_rules_skipped_exits_0_nothing_selected_exits_5(runs):
    r = cli("check", runs / "healthy", "--no-config", "-k", "frozen")
    assert r.returncode == 0 and "1 skipped" in r.stdout and "deselected" in r.stdout
    r = cli("check", runs / "healthy", "--no-config", "-k", "no-rule-is-called-this")
    assert r.returncode == 5 and "deselected" in r.stdout


def test_keyword_nan_selects_the_nan_rules(runs):
    r = cli("check", runs / "healthy", "--no-config", "-k", "nan or frozen", "-v")
    chosen = [ln.split()[0] for ln in r.stdout.splitlines() if ln.endswith(("PASSED", "SKIPPED", "FAILED"))]
    assert chosen == ["nonfinite-weights", "nonfinite-loss", "frozen-changed"], chosen


def test_show(runs):
    r = cli("show", runs / "healthy")
    assert r.returncode == 0 and "model 'm' (m/...)" in r.stdout
    assert any(ln.split()[:1] == ["hidden/kernel"] for ln in r.stdout.splitlines())


def test_check_never_imports_tensorflow(runs):
    code = ("import sys; from weightwatch.cli import main; rc = main(['check', sys.argv[1], '--no-config', '-q']);"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'")
    r = subprocess.run([sys.executable, "-c", code, str(runs / "nan")], capture_output=True, text=True,
                       env=subprocess_env())
    assert r.returncode == 0, r.stderr


def test_project_config_is_discovered(runs, tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "pyproject.toml").write_text("[tool.weightwatch]\ndisable = ['nonfinite-weights']\n")
    out = json.loads(cli("check", runs / "nan", "--format", "json", cwd=tmp_path).stdout)
    assert "nonfinite-weights" not in {r["rule"] for r in out["results"]}
    assert any("pyproject.toml" in s for s in out["rule_sources"])
