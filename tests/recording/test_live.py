"""Live checks in WatchCallback: halting, verdict, healthy weights, restore, bad rules."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import weightwatch  # noqa: E402
from weightwatch.checking.config import load_rules  # noqa: E402
from weightwatch.checking.engine import evaluate  # noqa: E402
from weightwatch.errors import CheckHalted, RuleError  # noqa: E402
from weightwatch.run.npz import load_npz  # noqa: E402

from conftest import subprocess_env  # noqa: E402

EPOCHS = 8


def data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    return x, (x @ rng.normal(size=(8, 1))).astype("float32")


def mlp(lr, bn=False, dropout=False):
    layers = [keras.Input((8,)), keras.layers.Dense(32, activation="relu", name="hidden")]
    if bn:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    if dropout:
        layers.append(keras.layers.Dropout(0.2, name="drop"))
    layers.append(keras.layers.Dense(1, name="out"))
    model = keras.Sequential(layers, name="mlp")
    model.compile(keras.optimizers.SGD(lr), "mse")
    return model


def exploding_fit(run_dir, **cb_kwargs):
    keras.utils.set_random_seed(0)
    x, y = data()
    model = mlp(lr=0.5)
    cb = weightwatch.WatchCallback(run_dir, **{"verbose": 0, **cb_kwargs})
    history = model.fit(x, y, epochs=EPOCHS, batch_size=32, verbose=0, callbacks=[cb])
    return model, cb, history


@pytest.fixture(scope="module")
def halted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("live") / "exploding"
    model, cb, history = exploding_fit(run_dir, save_tensors=True)
    return run_dir, model, cb, history


def test_exploding_run_halts_at_first_failing_record(halted):
    run_dir, model, cb, history = halted
    assert cb.halted, "the exploding run was not halted"
    run = weightwatch.open_run(run_dir)
    epochs_run = len(history.history["loss"])
    assert epochs_run < EPOCHS
    assert run.records[-1].epoch == epochs_run  # no record after the halting one
    rules = load_rules(use_project_config=False)
    assert evaluate(run, rules).failed
    # one record earlier, everything still passed: the halt came at the first failing record
    run.records = run.records[:-1]
    assert not evaluate(run, rules).failed


def test_verdict_matches_later_check(halted):
    run_dir, *_ = halted
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert verdict["halted"] is True and verdict["reason"]
    cli = subprocess.run([sys.executable, "-m", "weightwatch", "check", str(run_dir), "--no-config",
                          "--format", "json"], capture_output=True, text=True, env=subprocess_env())
    assert cli.returncode == 1, cli.stderr
    report = json.loads(cli.stdout)
    from_check = {(r["rule"], f["tensor"], f["record"]) for r in report["results"]
                  if r["status"] in ("failed", "warning") for f in r["findings"]}
    from_verdict = {(f["rule"], f["tensor"], f["record"]) for f in verdict["findings"]}
    assert from_verdict == from_check
    assert verdict["record"] == report["records"] - 1


def test_restore_loads_last_healthy_record(halted):
    run_dir, model, cb, _ = halted
    pointer = json.loads((run_dir / "healthy.json").read_text())
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert pointer["record"] == verdict["healthy_record"] < verdict["record"]
    kept = load_npz(run_dir / "healthy.npz")
    saved = load_npz(run_dir / f"record-{pointer['record']:06d}.npz")
    assert kept.keys() == saved.keys()
    restored = weightwatch.restore(model, run_dir)
    assert restored == pointer["record"]
    for v in model.weights:
        w = keras.ops.convert_to_numpy(v)
        assert np.isfinite(w).all()
        np.testing.assert_array_equal(w, saved[v.path])


def test_raise_error_raises(tmp_path):
    with pytest.raises(CheckHalted) as info:
        exploding_fit(tmp_path / "r", raise_error=True)
    assert "halted" in str(info.value) and info.value.report is not None


def test_halt_on_none_runs_every_epoch_but_records_failure(tmp_path):
    _, cb, history = exploding_fit(tmp_path / "r", halt_on=None)
    assert cb.halted is None and len(history.history["loss"]) == EPOCHS
    assert evaluate(weightwatch.open_run(tmp_path / "r"), load_rules(use_project_config=False)).failed


def test_batch_guard_stops_mid_epoch(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = data()
    model = mlp(lr=5.0)
    cb = weightwatch.WatchCallback(tmp_path / "g", batch_guard=True, check=False, verbose=0)
    model.fit(x, y, epochs=EPOCHS, batch_size=8, verbose=0, callbacks=[cb])
    run = weightwatch.open_run(tmp_path / "g")
    assert cb.halted and "batch_guard" in cb.halted
    assert run.records[-1].trigger == "guard" and run.records[-1].batch is not None


@pytest.mark.parametrize("model_kind", ["bn_dropout", "frozen_base"])
def test_healthy_runs_train_every_epoch(tmp_path, model_kind):
    keras.utils.set_random_seed(0)
    x, y = data()
    if model_kind == "bn_dropout":
        model = mlp(lr=0.01, bn=True, dropout=True)
    else:
        base = keras.Sequential([keras.layers.Dense(16, activation="relu"),
                                 keras.layers.BatchNormalization()], name="base")
        inp = keras.Input((8,))
        model = keras.Model(inp, keras.layers.Dense(1, name="head")(base(inp)))
        base.trainable = False
        model.compile(keras.optimizers.SGD(0.01), "mse")
    cb = weightwatch.WatchCallback(tmp_path / model_kind, verbose=0)
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[cb])
    assert cb.halted is None and len(history.history["loss"]) == 4
    assert json.loads((tmp_path / model_kind / "healthy.json").read_text())["record"] == 4


def test_invalid_rules_stop_fit_before_training(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]]\nid = 'x'\ncheck = 'nonfinit'\n")
    keras.utils.set_random_seed(0)
    x, y = data()
    model = mlp(lr=0.01)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(RuleError, match=r"bad.toml:2: rule \"x\": unknown check \"nonfinit\""):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[weightwatch.WatchCallback(tmp_path / "r", rules=[bad])])
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not (tmp_path / "r").exists()


def test_unwritable_run_dir_warns_and_training_goes_on(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    keras.utils.set_random_seed(0)
    x, y = data()
    model = mlp(lr=0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, epochs=2, verbose=0,
                            callbacks=[weightwatch.WatchCallback(blocker / "run", verbose=0)])
    assert len(history.history["loss"]) == 2
    assert any("cannot write" in str(w.message) for w in caught)


def test_a_halt_is_announced_like_keras_callbacks_announce_theirs(tmp_path, capsys):
    _, cb, history = exploding_fit(tmp_path / "run", verbose=1)
    out = capsys.readouterr().out
    epochs = len(history.history["loss"])
    assert cb.halted
    line = next(ln for ln in out.splitlines() if "weightwatch stopped training" in ln)
    assert line.startswith(f"Epoch {epochs}: weightwatch stopped training: ")
    assert "training diverged" in out and "first: " in out            # the diagnosis
    assert str(tmp_path / "run" / "verdict.json") in out
    assert str(tmp_path / "run" / "healthy.npz") in out
    assert f'weightwatch.restore(model, "{tmp_path / "run"}")' in out


def test_rules_select_layers_as_users_name_them(tmp_path):
    """Sequential prefixes its own name; a nested Functional model's name is not in its paths."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    base = keras.Model(inp, keras.layers.Dense(8, name="inner")(inp), name="base")
    base.trainable = False
    outer_in = keras.Input((8,))
    model = keras.Model(outer_in, keras.layers.Dense(1, name="head")(base(outer_in)), name="outer")
    model.compile(keras.optimizers.SGD(0.01), "mse")
    seq = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="dense_1"),
                            keras.layers.Dense(1, name="dense_2")], name="sequential_9")
    seq.compile(keras.optimizers.SGD(0.01), "mse")
    x, y = data(64)
    rules = {"extends": [], "rule": [{"id": "base-frozen", "check": "unchanged", "select": ["base/*"]},
                                     {"id": "d1-learns", "check": "stalled", "select": ["dense_1/*"]}]}
    for m, name in ((model, "nested"), (seq, "seq")):
        m.fit(x, y, epochs=2, batch_size=32, verbose=0,
              callbacks=[weightwatch.WatchCallback(tmp_path / name, check=False, verbose=0)])
    nested = {r.id: r for r in weightwatch.check(tmp_path / "nested", rules=[rules]).results}
    assert nested["base-frozen"].status == "passed" and nested["base-frozen"].tensors == 2
    assert all("base" not in t.path for t in weightwatch.open_run(tmp_path / "nested").tensors[:2])
    seq_results = {r.id: r for r in weightwatch.check(tmp_path / "seq", rules=[rules]).results}
    assert seq_results["d1-learns"].status == "passed" and seq_results["d1-learns"].tensors == 2


def test_resuming_a_halted_run_does_not_halt_again_on_what_is_already_on_disk(tmp_path):
    """Halt, restore, lower the learning rate, go on with a new callback: the old failure is not news."""
    model, cb, history = exploding_fit(tmp_path / "run")
    assert cb.halted
    healthy = weightwatch.restore(model, tmp_path / "run")
    model.optimizer.learning_rate.assign(1e-3)
    x, y = data()
    again = weightwatch.WatchCallback(tmp_path / "run", verbose=0)
    done = len(history.history["loss"])
    more = model.fit(x, y, initial_epoch=done, epochs=done + 2, batch_size=32, verbose=0, callbacks=[again])
    assert again.halted is None, again.halted
    assert len(more.history["loss"]) == 2 and healthy < done
