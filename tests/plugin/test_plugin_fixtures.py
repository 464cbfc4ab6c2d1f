"""The weightwatch_run fixture in a user's test that trains, and weightwatch.testing.assert_healthy."""

from __future__ import annotations

import pytest

from plugin_runs import PLUGIN, ROOT, broken_keras, handmade, healthy_keras, outcomes, pt  # noqa: F401
from weightwatch.errors import ChecksFailed
from weightwatch.run.reader import open_run
from weightwatch.testing import WatchedRun, assert_healthy

pytest_plugins = ["pytester"]

USER_TESTS = f"""
import sys
sys.path.insert(0, {str(ROOT / "examples")!r})
import keras
import train                                    # examples/train.py: data() and the tiny model

import weightwatch


def fit(callback, learning_rate):
    keras.utils.set_random_seed(0)
    x, y = train.data()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu", name="hidden"),
                              keras.layers.Dense(1, name="out")], name="tiny")
    model.compile(keras.optimizers.SGD(learning_rate), "mse")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[callback])


def test_training_is_stable(weightwatch_run):
    fit(weightwatch_run.callback, 0.05)
    report = weightwatch_run.assert_healthy()
    assert report.records == 4 and weightwatch.open_run(weightwatch_run).epochs[-1] == 3


def test_training_diverges(weightwatch_run):
    fit(weightwatch_run.callback, 1.0)
    weightwatch_run.assert_healthy()


def test_options_for_the_callback(weightwatch_run):
    cb = weightwatch_run.make_callback(check=False, save_tensors=True, verbose=0)
    assert weightwatch_run.callback is cb
    fit(cb, 1.0)                                 # not halted: live checks are off
    assert weightwatch_run.open().records[-1].epoch == 3
    assert [r.id for r in weightwatch_run.check(keyword="nonfinite-loss").failed] == ["nonfinite-loss"]
"""


def test_weightwatch_run_fixture_in_a_test_that_trains(pt, healthy_keras):
    # healthy_keras: Keras is imported out here first, so the inline run does not import (and
    # then unload) TensorFlow itself
    pt.makepyfile(test_user=USER_TESTS)
    result = pt.runpytest(*PLUGIN, "test_user.py")
    assert outcomes(result) == {"test_user.py::test_training_is_stable": "passed",
                                "test_user.py::test_training_diverges": "failed",
                                "test_user.py::test_options_for_the_callback": "passed"}
    text = result.stdout.str()
    # the assertion message is the short summary: diagnosis, then each failing rule; no object reprs
    result.stdout.fnmatch_lines([
        ">       weightwatch_run.assert_healthy()",
        "E       weightwatch.errors.ChecksFailed: weightwatch: */weightwatch-run: 2 failed, * passed, * skipped",
        "E         training diverged: weights or loss grew without bound at epoch 1: first tiny/hidden/kernel "
        "(nonfinite-weights)",
        "E         FAILED nonfinite-weights - tiny/hidden/kernel holds 256 NaN/Inf values (+3 more)",
        "E         FAILED nonfinite-loss - loss became non-finite (NaN or Inf) at epoch 1",
        "",
        "test_user.py:*: ChecksFailed"])
    assert "RuleResult(" not in text and "Finding(" not in text
    assert "testing.py" not in text          # __tracebackhide__: the user's line, not the helper's


def test_the_fixture_needs_no_option_and_no_training_to_exist(pt):
    pt.makepyfile(test_user="""
        def test_fresh(weightwatch_run, tmp_path):
            assert not weightwatch_run.path.exists() and weightwatch_run.path.parent == tmp_path
    """)
    assert pt.runpytest(*PLUGIN, "test_user.py").ret == 0


def test_assert_healthy_on_a_report_a_run_and_a_path(healthy_keras, broken_keras, tmp_path):
    report = assert_healthy(healthy_keras)
    assert report.exit_code() == 0
    assert assert_healthy(report) is report
    assert_healthy(open_run(healthy_keras))
    with pytest.raises(ChecksFailed) as err:
        assert_healthy(str(broken_keras))
    assert isinstance(err.value, AssertionError)
    message = str(err.value)
    assert message.splitlines()[0].startswith(f"weightwatch: {broken_keras}: 2 failed, ")
    assert "  FAILED nonfinite-weights - tiny/hidden/kernel holds 256 NaN/Inf values (+3 more)" in message
    # rules= layers on the project configuration, as weightwatch.check does
    assert_healthy(broken_keras, rules={"disable": ["nonfinite-weights", "nonfinite-loss"]})


def test_assert_healthy_strict_keyword_and_misuse(tmp_path):
    plateau = handmade(tmp_path / "plateau", "plateau")
    assert_healthy(plateau)                                   # a warning passes...
    with pytest.raises(ChecksFailed, match=r"WARNING loss-plateau - loss improved by"):
        assert_healthy(plateau, strict=True)                  # ... unless strict
    with pytest.raises(ChecksFailed, match="no rule selected .* nothing was checked"):
        assert_healthy(plateau, keyword="no-such-rule")
    with pytest.raises(TypeError, match="already checked"):
        assert_healthy(assert_healthy(plateau), rules=["ci.toml"])


def test_watched_run_is_path_like(tmp_path):
    run = WatchedRun(tmp_path / "r")
    handmade(run.path, "healthy")
    assert open_run(run).path == run.path and run.run_dir == run.path
    assert repr(run) == f"<WatchedRun {run.path}>"
    assert assert_healthy(run).records == 4
