"""A convolution's bias ahead of a BatchNorm has no gradient of its own: not a stalled layer."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import weightwatch  # noqa: E402
from weightwatch.checking.checks import Histories, update_ratio  # noqa: E402


def _fit(run_dir):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8, 8, 1)).astype("float32")
    y = (x[:, :4].mean(axis=(1, 2, 3)) > x[:, 4:].mean(axis=(1, 2, 3))).astype("int32")
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, use_bias=True, name="conv"),      # Keras' default use_bias
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2, activation="softmax", name="out")], name="m")
    # SGD with a decaying schedule: the rounding the bias moves by shrinks below 1e-8 of it
    lr = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=16, decay_rate=0.1)
    model.compile(keras.optimizers.SGD(lr), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=4, verbose=0,
              callbacks=[weightwatch.WatchCallback(run_dir, check=False, verbose=0)])
    return weightwatch.open_run(run_dir)


def test_a_bias_batchnorm_subtracts_is_left_to_its_kernel(tmp_path):
    run = _fit(tmp_path / "r")
    paths = [t.path for t in run.tensors]
    h = Histories(run, np.arange(len(paths)))
    r = update_ratio(h, 1e-3)
    kernel, bias = paths.index("m/conv/kernel"), paths.index("m/conv/bias")
    assert (r[1:, kernel] > 1e-6).all(), r[:, kernel]          # the layer learns ...
    assert (r[1:, bias] < 1e-8).any(), r[:, bias]              # ... its bias moves by rounding only
    assert (run.metric("changed")[1:, bias] == 1).all()
    by_id = {x.id: x for x in weightwatch.check(tmp_path / "r").results}
    assert by_id["not-learning"].status == "passed"
    # Judging every bias, the rule fails this healthy run: the test can fail.
    strict = weightwatch.load_rules([{"override": {"not-learning": {"cancelled": 0}}}])
    result = {x.id: x for x in weightwatch.check(tmp_path / "r", strict).results}["not-learning"]
    assert result.status == "failed" and result.findings[0].tensor == "m/conv/bias"
