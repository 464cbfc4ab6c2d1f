"""Batch records (``freq=N``): a healthy run is never halted for what batch records are."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import weightwatch  # noqa: E402


def _fit(run_dir, freq, *, lr=0.01, epochs=3, n=64, batch=8, seed=0):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1))).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="hidden"),
                              keras.layers.Dense(1, name="out")], name="mlp")
    model.compile(keras.optimizers.SGD(lr), "mse")
    cb = weightwatch.WatchCallback(run_dir, freq=freq, verbose=0)
    history = model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0, callbacks=[cb])
    return cb, history


def test_freq_that_divides_the_epoch_does_not_halt_healthy_training(tmp_path):
    """8 steps an epoch, freq=4: the epoch-end record follows a batch record at the same step."""
    cb, history = _fit(tmp_path / "run", freq=4)
    assert cb.halted is None, cb.halted
    assert len(history.history["loss"]) == 3
    run = weightwatch.open_run(tmp_path / "run")
    steps = [r.step for r in run.records]
    assert [r.trigger for r in run.records[:4]] == ["begin", "batch", "batch", "epoch"]
    assert steps[2] == steps[3], "the test needs an epoch record with zero steps since the last"
    assert not weightwatch.check(run).failed
