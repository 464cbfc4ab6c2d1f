"""What the plugin tests share: real Keras runs recorded once per session, and a pytester set-up.

* :func:`recorded` trains ``examples/train.py``'s tiny model (the CI examples'
  training step) once per session and kind: ``"healthy"`` (learning rate 0.05:
  every default rule passes) and ``"broken"`` (1.0: NaN at epoch 1, halted by
  the live checks, so its diagnosis has a restore line).
* :func:`handmade` writes runs with precise histories through ``runbuilder``.
* The ``pt`` fixture is ``pytester`` in a hermetic project: a ``.git`` (the
  configuration walk stops there), an empty ``pytest.ini`` (the rootdir), one
  unit test, and entry-point plugins off, so ``-p weightwatch.pytest_plugin``
  loads the plugin from this checkout whether or not it is installed.

Import the fixtures into a test module (``from plugin_runs import pt``); the
recordings are cached here, so modules that each import them share one.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ("-p", "weightwatch.pytest_plugin")

_RECORDED: dict[str, Path] = {}
LEARNING_RATES = {"healthy": 0.05, "broken": 1.0}


def example_train():
    """``examples/train.py`` as a module."""
    spec = importlib.util.spec_from_file_location("weightwatch_example_train", ROOT / "examples" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recorded(tmp_path_factory, kind: str) -> Path:
    """A real Keras run of ``kind`` ("healthy" or "broken"), recorded once per session."""
    if kind not in _RECORDED:
        pytest.importorskip("keras")
        run_dir = tmp_path_factory.mktemp(f"keras-{kind}") / kind
        example_train().train(run_dir, learning_rate=LEARNING_RATES[kind])
        _RECORDED[kind] = run_dir
    return _RECORDED[kind]


def handmade(path: Path, kind: str) -> Path:
    """``plateau`` (the loss never improves: loss-plateau warns), ``nan`` or ``healthy``."""
    from runbuilder import MLP, write_healthy_run, write_nan_run, write_run

    if kind == "plateau":
        return write_run(path, MLP, [{"logs": {"loss": 1.0} if i else {}} for i in range(8)])
    if kind == "nan":
        return write_nan_run(path)
    if kind == "healthy":
        return write_healthy_run(path)
    raise ValueError(kind)


def add_run(pytester, name: str, source: Path) -> str:
    """Copy a run into the pytester project as ``runs/<name>``; returns that relative path."""
    shutil.copytree(source, pytester.path / "runs" / name)
    return f"runs/{name}"


def outcomes(result) -> dict[str, str]:
    """nodeid -> outcome of every test report of an inline run (the call phase, or the failing one)."""
    out = {}
    for rep in result.reprec.getreports("pytest_runtest_logreport"):
        if rep.when == "call" or rep.outcome != "passed":
            out[rep.nodeid] = rep.outcome
    return out


def cli_json(capsys, *args) -> tuple[int, dict]:
    """``weightwatch check ... --format json``, in this process: (exit code, report of the one run)."""
    from weightwatch.cli import main

    capsys.readouterr()
    code = main(["check", *args, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def pt(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.setenv("CI", "true")  # pytest trims short-summary lines to the terminal unless on CI
    (pytester.path / ".git").mkdir()
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_unit="def test_unit():\n    assert True\n")
    return pytester


@pytest.fixture(scope="session")
def healthy_keras(tmp_path_factory):
    return recorded(tmp_path_factory, "healthy")


@pytest.fixture(scope="session")
def broken_keras(tmp_path_factory):
    return recorded(tmp_path_factory, "broken")
