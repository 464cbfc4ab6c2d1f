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


def test_a_shortcut_convolution_whose_batchnorm_model_order_puts_later(tmp_path):
    """A residual block with a projection shortcut: ``model.weights`` lists the layers depth by
    depth, so the shortcut's BatchNorm is not the layer after its convolution."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8, 8, 2)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > x[..., 1].mean(axis=(1, 2))).astype("int32")
    L = keras.layers
    inp = keras.Input((8, 8, 2))
    main = L.ReLU()(L.BatchNormalization(name="bn_a")(L.Conv2D(8, 3, padding="same", name="conv_a")(inp)))
    main = L.BatchNormalization(name="bn_b")(L.Conv2D(8, 3, padding="same", name="conv_b")(main))
    short = L.BatchNormalization(name="bn_s")(L.Conv2D(8, 1, name="conv_s")(inp))
    out = L.Dense(2, activation="softmax", name="out")(L.GlobalAveragePooling2D()(L.ReLU()(L.Add()([main, short]))))
    model = keras.Model(inp, out, name="m")
    lr = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=16, decay_rate=0.1)
    model.compile(keras.optimizers.SGD(lr), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=4, verbose=0,
              callbacks=[weightwatch.WatchCallback(tmp_path / "r", check=False, verbose=0)])
    run = weightwatch.open_run(tmp_path / "r")
    layers = list(dict.fromkeys(t.layer.rsplit("/", 1)[-1] for t in run.tensors))
    assert layers[layers.index("conv_s") + 1] != "bn_s", layers     # not next to its conv
    r = update_ratio(Histories(run, np.arange(len(run.tensors))), 1e-3)
    slow = [t.path for i, t in enumerate(run.tensors) if t.role == "bias" and "conv" in t.path
            and (r[1:, i] < 1e-8).any()]
    assert any(p.endswith("conv_s/bias") for p in slow), slow
    by_id = {x.id: x for x in weightwatch.check(tmp_path / "r").results}
    assert by_id["not-learning"].status == "passed", by_id["not-learning"].findings
    strict = weightwatch.load_rules([{"override": {"not-learning": {"cancelled": 0}}}])
    result = {x.id: x for x in weightwatch.check(tmp_path / "r", strict).results}["not-learning"]
    assert any(f.tensor.endswith("conv_s/bias") for f in result.findings), result.findings
