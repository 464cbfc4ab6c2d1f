"""The ``penalty`` column: each weight's regularisation penalty, read from the variable's own
regulariser at every record, and negative-penalty on real Keras runs."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import weightwatch  # noqa: E402
from weightwatch.errors import CheckHalted  # noqa: E402

ops = keras.ops


class WrongSignL1(keras.regularizers.Regularizer):
    """An L1 penalty whose sign is flipped: it rewards large weights."""

    def __init__(self, strength):
        self.strength = strength

    def __call__(self, w):
        return -self.strength * ops.sum(ops.abs(w))       # BUG: should be +


def _data(n=256):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype("float32")
    return x, (x[:, 0] + x[:, 1] > 0).astype("int32")


def _model(out_regularizer, frozen_regularised=False):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((8,)),
              keras.layers.Dense(16, activation="relu", name="h", kernel_regularizer=keras.regularizers.L2(1e-3))]
    if frozen_regularised:   # Keras adds no penalty for a frozen layer's weights
        layers.append(keras.layers.Dense(16, activation="relu", name="fixed", trainable=False,
                                         kernel_regularizer=WrongSignL1(1.0)))
    layers.append(keras.layers.Dense(2, name="out", kernel_regularizer=out_regularizer))
    model = keras.Sequential(layers, name="m")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


def test_the_recorded_penalty_is_what_training_adds_to_the_loss(tmp_path):
    x, y = _data()
    model = _model(WrongSignL1(0.01), frozen_regularised=True)
    model.fit(x, y, epochs=3, batch_size=64, verbose=0,
              callbacks=[weightwatch.WatchCallback(tmp_path / "r", check=False, verbose=0, save_tensors=True)])
    run = weightwatch.open_run(tmp_path / "r")
    pen = dict(zip(run.tensor_names, run.metric("penalty").T))
    l2 = dict(zip(run.tensor_names, run.metric("l2").T))
    assert run.has_column("penalty") and len(run.records) == 4
    # L2(1e-3) is 1e-3 * sum(w^2) = 1e-3 * l2^2, at every record from the one before training
    np.testing.assert_allclose(pen["m/h/kernel"], 1e-3 * l2["m/h/kernel"] ** 2, rtol=1e-5)
    # the wrong-sign L1, on the recorded tensors themselves
    for i, r in enumerate(run.records):
        w = np.load(tmp_path / "r" / r.tensors_file)["m/out/kernel"]
        assert pen["m/out/kernel"][i] == pytest.approx(-0.01 * np.abs(w).sum(), rel=1e-5)
    assert (pen["m/out/kernel"] < 0).all()
    assert np.isnan(pen["m/h/bias"]).all() and np.isnan(pen["m/out/bias"]).all()   # no regulariser
    assert np.isnan(pen["m/fixed/kernel"]).all()                                     # frozen: not in the loss
    # what Keras adds to the loss for the final weights, the last record's
    last = np.nansum(run.metric("penalty")[-1])
    assert last == pytest.approx(float(keras.ops.convert_to_numpy(keras.ops.sum(model.losses))), rel=1e-5)


def test_a_wrong_sign_regulariser_fails_the_check_at_the_record_before_training(tmp_path):
    x, y = _data()
    model = _model(WrongSignL1(0.01))
    model.fit(x, y, epochs=2, batch_size=64, verbose=0,
              callbacks=[weightwatch.WatchCallback(tmp_path / "r", check=False, verbose=0)])
    p = subprocess.run([sys.executable, "-m", "weightwatch", "check", str(tmp_path / "r"), "--no-config"],
                       capture_output=True, text=True)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "m/out/kernel's regularisation penalty is -" in p.stdout
    assert "at epoch 0" in p.stdout and "a loss or penalty term has the wrong sign" in p.stdout
    report = weightwatch.check(tmp_path / "r")
    res = next(r for r in report.results if r.id == "negative-penalty")
    assert res.status == "failed" and {f.tensor for f in res.findings} == {"m/out/kernel"}
    assert min(f.record for f in res.findings) == 0


def test_live_checking_halts_before_the_weights_drift(tmp_path):
    """The default callback stops such a run at its record before training, the regulariser named."""
    x, y = _data()
    model = _model(WrongSignL1(0.01))
    with pytest.raises(CheckHalted, match="negative-penalty"):
        model.fit(x, y, epochs=10, batch_size=64, verbose=0,
                  callbacks=[weightwatch.WatchCallback(tmp_path / "r", verbose=0, raise_error=True)])
    run = weightwatch.open_run(tmp_path / "r")
    assert len(run.records) == 1 and run.records[0].trigger == "begin"
    verdict = json.loads((tmp_path / "r" / "verdict.json").read_text())
    assert "m/out/kernel" in json.dumps(verdict) and "negative-penalty" in json.dumps(verdict)


def test_healthy_regularisers_pass(tmp_path):
    x, y = _data()
    model = _model(keras.regularizers.L1L2(l1=1e-4, l2=1e-3))
    model.fit(x, y, epochs=3, batch_size=64, verbose=0,
              callbacks=[weightwatch.WatchCallback(tmp_path / "r", check=False, verbose=0)])
    run = weightwatch.open_run(tmp_path / "r")
    assert (run.metric("penalty")[:, run.tensor_names.index("m/out/kernel")] > 0).all()
    # Keras' L1L2 (summed in numpy by the recorder) is what Keras adds to the loss
    assert np.nansum(run.metric("penalty")[-1]) == pytest.approx(
        float(keras.ops.convert_to_numpy(keras.ops.sum(model.losses))), rel=1e-5)
    res = next(r for r in weightwatch.check(tmp_path / "r").results if r.id == "negative-penalty")
    assert res.status == "passed"


@pytest.mark.parametrize("regularizer", [keras.regularizers.L1(1e-3), keras.regularizers.L2(1e-3),
                                         keras.regularizers.L1L2(l1=0.0, l2=1e-3)], ids=["l1", "l2", "l1l2"])
def test_keras_own_penalties_are_what_keras_adds(tmp_path, regularizer):
    """Summed in numpy (no backend op): the value Keras adds to the loss, to float32 rounding
    (L1 holds its coefficient as a tensor, L2 and L1L2 as floats; L1L2 skips a 0 term)."""
    keras.utils.set_random_seed(0)
    x, y = _data()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(
        32, name="h", kernel_regularizer=regularizer), keras.layers.Dense(2, name="out")], name="m")
    model.compile(keras.optimizers.SGD(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=64, verbose=0,
              callbacks=[weightwatch.WatchCallback(tmp_path / "r", check=False, verbose=0)])
    run = weightwatch.open_run(tmp_path / "r")
    got = run.metric("penalty")[-1, run.tensor_names.index("m/h/kernel")]
    [want] = [float(keras.ops.convert_to_numpy(p)) for p in model.losses]
    assert got > 0 and got == pytest.approx(want, rel=1e-5)


def test_a_regulariser_that_cannot_run_between_steps_is_warned_once_and_recorded_null(tmp_path):
    """Recording never stops training: a regulariser that only works inside a training step
    (here one that refuses to run eagerly) gets a null penalty and one warning."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("uses TensorFlow's eager/graph distinction")
    import tensorflow as tf

    def graph_only(w):
        if tf.executing_eagerly():
            raise RuntimeError("only inside tf.function")
        return 1e-3 * ops.sum(ops.square(w))

    x, y = _data()
    model = _model(graph_only)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=3, batch_size=64, verbose=0,
                  callbacks=[weightwatch.WatchCallback(tmp_path / "r", check=False, verbose=0)])
    mine = [w for w in caught if "could not be evaluated between steps" in str(w.message)]
    assert len(mine) == 1 and "m/out/kernel" in str(mine[0].message)
    run = weightwatch.open_run(tmp_path / "r")
    assert len(run.records) == 4
    assert np.isnan(run.metric("penalty")[:, run.tensor_names.index("m/out/kernel")]).all()
