"""The CI examples run here as written: the YAML is parsed and each step's commands are run with
bash in a fresh workspace, as the CI runner would run them (GITHUB_ACTIONS=true and a temporary
GITHUB_STEP_SUMMARY for GitHub).

What cannot run here is left out and said so: the `uses:` actions (checkout, setup-python,
upload-artifact: the test checks that the paths to upload exist) and installing weightwatch (the
environment has it: this checkout on PYTHONPATH, the plugin given as PYTEST_PLUGINS where the
installed pytest11 entry point would load it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from conftest import subprocess_env
from plugin_runs import ROOT
from runbuilder import default_rule_count
from weightwatch.checking.config import load_rules

yaml = pytest.importorskip("yaml")
pytest.importorskip("keras")

N = default_rule_count()
INSTALL = re.compile(r"^python -m pip install \"weightwatch\[tensorflow\]\"")


def workspace(tmp_path):
    ws = tmp_path / "workspace"
    shutil.copytree(ROOT / "examples", ws / "examples")
    (ws / ".git").mkdir()          # the repository root: configuration lookups stop here
    return ws


def env_for(*layers, **extra) -> dict:
    env = subprocess_env()
    for key in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "CI", "PYTEST_ADDOPTS"):
        env.pop(key, None)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYTEST_PLUGINS"] = "weightwatch.pytest_plugin"     # what the pytest11 entry point does
    for layer in layers:
        env.update({k: str(v) for k, v in (layer or {}).items()})
    env.update(extra)
    return env


def bash(script: str, cwd, env) -> subprocess.CompletedProcess:
    # GitHub's and GitLab's default shell: bash, stopping at the first failing command
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def expand(text: str, env: dict) -> str:
    """``${{ env.NAME }}`` as the Actions runner expands it."""
    return re.sub(r"\$\{\{\s*env\.(\w+)\s*\}\}", lambda m: env[m.group(1)], text)


def test_github_workflow_gates_a_broken_run_annotates_it_and_keeps_the_artifacts(tmp_path):
    workflow = yaml.safe_load((ROOT / "examples" / "github-actions.yml").read_text())
    job = workflow["jobs"]["train-and-check"]
    ws = workspace(tmp_path)
    summary = tmp_path / "step-summary.md"
    summary.touch()
    # the gate must fail: the change under review now trains with a learning rate far too high
    env = env_for(workflow.get("env"), job.get("env"), LEARNING_RATE="1.0", GITHUB_ACTIONS="true",
                  GITHUB_STEP_SUMMARY=str(summary))
    failed, ran, uses = None, {}, []
    for step in job["steps"]:
        if failed and step.get("if") != "always()":
            continue
        if "uses" in step:
            uses.append(step["uses"].split("@")[0])
            if step["uses"].startswith("actions/upload-artifact"):
                paths = expand(step["with"]["path"], env).split()
                assert paths and all((ws / p).exists() for p in paths), paths
            continue
        if INSTALL.match(step["run"]):
            continue
        proc = bash(step["run"], ws, dict(env, **{k: str(v) for k, v in step.get("env", {}).items()}))
        ran[step["name"]] = proc
        if proc.returncode != 0:
            failed = step["name"]
    assert uses == ["actions/checkout", "actions/setup-python", "actions/upload-artifact"]
    assert list(ran) == ["Train a small model on generated data", "Check the run"]
    assert "weightwatch halted training: nonfinite-weights failed" in ran["Train a small model on generated data"].stdout
    check = ran["Check the run"]
    assert failed == "Check the run" and check.returncode == 1, check.stderr
    # the PR annotations: workflow commands on stdout, pointing at the record files
    assert ("::error file=runs/ci/record-000001.json,title=weightwatch nonfinite-weights::"
            "tiny/hidden/kernel at epoch 1: tiny/hidden/kernel holds 256 NaN/Inf values") in check.stdout.splitlines()
    assert re.search(r"^::notice title=weightwatch::2 failed, \d+ passed, \d+ skipped in ", check.stdout, re.M)
    # the step summary, written by weightwatch's GitHub output: verdict, diagnosis, failed rules
    text = summary.read_text()
    assert text.startswith("### weightwatch: `runs/ci` :x: failed\n")
    assert "nonfinite-weights" in text and "training diverged" in text and "::error" not in text
    # the artifacts: the run and the reports
    assert (ws / "runs/ci/verdict.json").is_file() and (ws / "runs/ci/healthy.npz").is_file()
    suite = ET.parse(ws / "reports/weightwatch.xml").getroot()
    assert len(list(suite.iter("testcase"))) == N
    assert (ws / "reports/weightwatch.txt").read_text().count("FAILED nonfinite") >= 1


def test_gitlab_job_passes_a_healthy_run_with_a_junit_report(tmp_path):
    config = yaml.safe_load((ROOT / "examples" / "gitlab-ci.yml").read_text())
    job = config["training-gate"]
    assert all(INSTALL.match(line) for line in job["before_script"])   # installing: not here
    ws = workspace(tmp_path)
    env = env_for(config.get("variables"), job.get("variables"), GITLAB_CI="true", CI="true")
    proc = bash("\n".join(job["script"]), ws, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"\b\d+ passed, \d+ skipped", proc.stdout) and " failed" not in proc.stdout
    assert "SKIPPED [1] runs/ci::frozen-changed: no selected tensor is frozen=true" in proc.stdout
    artifacts = job["artifacts"]
    assert artifacts["when"] == "always" and all((ws / p).exists() for p in artifacts["paths"])
    junit = ET.parse(ws / artifacts["reports"]["junit"]).getroot()
    suite = junit.find("testsuite")
    assert suite.get("name") == "weightwatch" and suite.get("failures") == "0"
    cases = [(c.get("classname"), c.get("name")) for c in suite.iter("testcase")]
    assert cases == [("runs.ci", r.id) for r in load_rules(use_project_config=False) if not r.check_def.baseline]
