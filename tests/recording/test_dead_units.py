"""Dead ReLU units under a regularised kernel: the kernel keeps moving, the bias shows them."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import weightwatch  # noqa: E402
from weightwatch.run.schema import output_units  # noqa: E402


def test_output_units_of_kernels_and_biases():
    assert output_units("kernel", (3, 3, 8, 16)) == 16
    assert output_units("bias", (16,)) == 16
    assert output_units("kernel", (16,)) is None and output_units("scale", (16,)) is None
    assert output_units("bias", (0,)) is None and output_units("bias", None) is None


def _fit(run_dir, hidden_bias):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 20)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(20, 5)), axis=1)
    reg = keras.regularizers.L1L2(l1=2.5e-4, l2=2.5e-4)
    model = keras.Sequential([
        keras.Input((20,)),
        keras.layers.Dense(16, activation="relu", kernel_regularizer=reg, name="hidden1"),
        keras.layers.Dense(16, activation="relu", kernel_regularizer=reg, name="hidden2",
                           bias_initializer=keras.initializers.Constant(hidden_bias)),
        keras.layers.Dense(5, activation="softmax", kernel_regularizer=reg, name="out")], name="m")
    model.compile(keras.optimizers.RMSprop(7e-4), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=3, verbose=0,
              callbacks=[weightwatch.WatchCallback(run_dir, check=False, verbose=0)])
    return weightwatch.open_run(run_dir)


def test_dead_units_seen_in_the_bias_when_the_regulariser_moves_the_kernel(tmp_path):
    run = _fit(tmp_path / "dead", hidden_bias=-2.0)
    paths = [t.path for t in run.tensors]
    dead = run.metric("dead_units")
    kernel, bias = paths.index("m/hidden2/kernel"), paths.index("m/hidden2/bias")
    assert (dead[1:, kernel] == 0).all()               # L1/L2 move every column of the kernel
    assert (dead[1:, bias] >= 8).all(), dead[:, bias]   # most units got no gradient at all
    report = weightwatch.check(tmp_path / "dead")
    by_id = {r.id: r for r in report.results}
    assert by_id["dead-units"].status == "passed"          # the kernel rule cannot see them
    result = by_id["dead-bias-units"]
    assert result.status == "failed"
    assert result.findings[0].tensor == "m/hidden2/bias" and "of output units received no update" in \
        result.findings[0].message
    assert "ReLU units died" in report.diagnosis[0].title

    healthy = _fit(tmp_path / "ok", hidden_bias=0.0)
    assert np.nanmax(healthy.metric("dead_units")[1:, bias]) <= 4
    assert weightwatch.check(tmp_path / "ok").exit_code() == 0


def test_bfloat16_biases_whose_steps_round_away_are_not_dead_units(tmp_path):
    """A bias is one element a unit, so a step that bfloat16 rounds away leaves it unchanged with
    no dead ReLU in sight (GELU and tanh): dead-bias-units judges float32 and float64 only."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 20)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(20, 5)), axis=1)
    init = keras.initializers.RandomNormal(0.0, 0.3, seed=3)
    keras.config.set_dtype_policy("bfloat16")
    try:
        model = keras.Sequential([
            keras.Input((20,)),
            keras.layers.Dense(64, activation="gelu", name="d1", bias_initializer=init),
            keras.layers.Dense(64, activation="tanh", name="d2", bias_initializer=init),
            keras.layers.Dense(5, activation="softmax", name="out", dtype="float32")], name="m")
    finally:
        keras.config.set_dtype_policy("float32")
    model.compile(keras.optimizers.SGD(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=3, verbose=0,
              callbacks=[weightwatch.WatchCallback(tmp_path / "r", check=False, verbose=0)])
    run = weightwatch.open_run(tmp_path / "r")
    bias = [t.path for t in run.tensors].index("m/d1/bias")
    assert run.tensors[bias].dtype == "bfloat16"
    assert np.nanmax(run.metric("dead_units")[1:, bias]) > 0.6 * 64     # the trap is there
    results = {r.id: r for r in weightwatch.check(tmp_path / "r").results}
    assert results["dead-bias-units"].status in ("passed", "skipped")
    assert results["dead-units"].status == "passed"
