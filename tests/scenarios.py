"""A labelled suite of small Keras 3 training runs, faulty and healthy.

This is the ground truth the rule engine is calibrated on (GitHub issues 3
and 5).  Every :class:`Scenario` trains a small model on generated, seeded
data with :class:`weightwatch.WatchCallback` and writes a run directory; its
fields say what a correct checker should conclude about that run:

* ``healthy`` -- the expected verdict (``True``: no error may be reported).
* ``fault_class`` -- what is wrong (``""`` for a healthy run).
* ``where`` -- glob patterns over tensor paths where the fault lives.
* ``first_visible`` -- the first record index at which the fault can be seen
  in the recorded weight figures (record 0 = before training, record *k* =
  after epoch *k*); a non-finite loss counts too.  ``None`` for healthy runs.
  The logs can show some faults earlier: ``lr-zero-cosine-steps`` logs
  ``learning_rate`` 0 at record 1, whose weights still changed.
* ``known_gap`` -- set when the recorded columns cannot show the fault
  itself (see ``dead-relu-adam-spike``).
* ``intent`` -- project rules the fault needs declared to be visible at all
  (a layer that is frozen by mistake looks exactly like one frozen on
  purpose), or ``None`` when the recording alone shows it.

Healthy scenarios are the traps a naive checker falls into (BatchNorm
moving statistics that change without being trainable, a frozen base,
embedding rows that never move, weight decay shrinking norms, ...).

Every build clears the Keras session, seeds Keras/NumPy/Python, names every
layer (so tensor paths do not depend on what was built before) and trains in
a few seconds on two CPU cores.  Keras is imported only inside the builders,
so importing this module (e.g. to list scenarios) is cheap.

Command line::

    python tests/scenarios.py OUT_DIR [name ...]     # build runs into OUT_DIR/<name>
    python tests/scenarios.py --list                 # print the catalogue
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as a script from anywhere: import the checkout's weightwatch
    sys.path.insert(0, str(_ROOT))

# Fault classes used in this suite.
FAULT_CLASSES = (
    "exploding", "nan", "norm-growth", "frozen-trap", "frozen-by-mistake", "lr-zero",
    "dead-units", "vanishing", "oscillation", "unfrozen-base",
)


@dataclass
class Scenario:
    """One labelled training run.  ``build(run_dir)`` trains and writes it.

    ``intent`` lists project rules as the configuration would declare them:
    ``{"id": ..., "check": ..., "select": [globs]}``.  ``check: "unchanged"``
    asserts the selected tensors never change; ``check: "stalled"`` flags
    selected tensors that stop changing (they must learn).  The engine's final
    rule syntax may differ; the meaning is what matters here.
    """

    name: str
    healthy: bool
    fault_class: str
    where: list[str]
    first_visible: int | None
    intent: list[dict] | None
    description: str
    build: Callable[[str | os.PathLike], None] = field(repr=False)
    #: Part of the quick test subset (builds in about a second or two).
    fast: bool = False
    #: Why the recorded columns cannot (yet) show this fault, when they cannot.
    #: A calibrated engine is not expected to catch these; they document a gap.
    known_gap: str = ""
    #: Records the run is expected to hold (0 .. epochs), for sanity checks.
    records: int | None = None

    @property
    def verdict(self) -> str:
        """The expected verdict of ``weightwatch check`` on this run: "pass" or "fail"."""
        return "pass" if self.healthy else "fail"

    def __post_init__(self):
        if self.healthy:
            assert self.fault_class == "" and self.first_visible is None, self.name
        else:
            assert self.fault_class in FAULT_CLASSES, (self.name, self.fault_class)
            assert self.where and self.first_visible is not None, self.name


# --------------------------------------------------------------------------- helpers


def _keras():
    """Import Keras (and the callback) quietly, once."""
    import keras

    return keras


def _start(seed: int = 0):
    """Fresh session, float32 policy, deterministic seeds."""
    keras = _keras()
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(seed)
    return keras


def _watch(run_dir):
    from weightwatch.recording.keras_callback import WatchCallback

    return WatchCallback(str(run_dir), check=False, verbose=0, overwrite=True)


def _regression(n=512, d=16, seed=0, noise=0.05, scale=1.0):
    """Smooth nonlinear regression target of standard-normal inputs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    w1 = rng.standard_normal((d, 8))
    w2 = rng.standard_normal((8, 1))
    y = np.tanh(x @ w1 / math.sqrt(d)) @ w2 / math.sqrt(8) + noise * rng.standard_normal((n, 1))
    return x, (scale * y).astype(np.float32)


def _classification(n=512, d=16, classes=4, seed=0, sep=1.5):
    """Gaussian blobs: integer labels, overlapping a little."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, d)) * sep
    labels = rng.integers(0, classes, n)
    x = centers[labels] / math.sqrt(d) * 2 + rng.standard_normal((n, d))
    return x.astype(np.float32), labels.astype(np.int32)


def _sequences(n=384, length=12, vocab=200, used=120, seed=0):
    """Padded token sequences (0 = padding; ids >= ``used`` never occur)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, length), dtype=np.int32)
    lengths = rng.integers(4, length + 1, n)
    for i, k in enumerate(lengths):
        x[i, :k] = rng.integers(1, used, k)
    # label: more "low" tokens than "high" ones among the real tokens
    low = ((x > 0) & (x < used // 2)).sum(1)
    high = (x >= used // 2).sum(1)
    y = (low > high).astype(np.float32)[:, None]
    return x, y


def _images(n=384, size=8, seed=0):
    """8x8 single-channel images; the class is the quadrant of a bright square."""
    rng = np.random.default_rng(seed)
    x = 0.3 * rng.standard_normal((n, size, size, 1)).astype(np.float32)
    y = rng.integers(0, 4, n).astype(np.int32)
    h = size // 2
    for i, c in enumerate(y):
        r0, c0 = (c // 2) * h, (c % 2) * h
        r, s = r0 + rng.integers(0, h - 2), c0 + rng.integers(0, h - 2)
        x[i, r:r + 2, s:s + 2, 0] += 1.5
    return x, y


def _mlp(keras, d_in, hidden=(32, 32), out=1, act="relu", out_act="auto", name="model", **dense_kw):
    """Sequential MLP named ``model``: paths are ``model/hidden<i>/...`` and ``model/out/...``.

    ``out_act="auto"``: linear for one output (regression), softmax for several.
    """
    if out_act == "auto":
        out_act = None if out == 1 else "softmax"
    layers = [keras.Input((d_in,), name="x")]
    for i, h in enumerate(hidden, 1):
        layers.append(keras.layers.Dense(h, activation=act, name=f"hidden{i}", **dense_kw))
    layers.append(keras.layers.Dense(out, activation=out_act, name="out"))
    return keras.Sequential(layers, name=name)


# --------------------------------------------------------------------------- faulty runs


def build_lr_far_too_high(run_dir):
    """SGD with lr=0.5 on a tanh regressor: weights blow up, then turn NaN."""
    keras = _start(1)
    x, y = _regression(scale=3.0)
    model = _mlp(keras, 16, (32, 32), act="tanh")
    model.compile(keras.optimizers.SGD(learning_rate=0.5), loss="mse")
    model.fit(x, y, batch_size=64, epochs=6, verbose=0, callbacks=[_watch(run_dir)])


def build_nan_loss_handwritten_bce(run_dir):
    """Hand-written binary cross-entropy without clipping: log(1 - p) at p == 1.0."""
    keras = _start(2)
    ops = keras.ops
    rng = np.random.default_rng(2)
    x = rng.standard_normal((512, 16)).astype(np.float32)
    y = (x @ rng.standard_normal((16, 1)) > 0).astype(np.float32)  # linearly separable

    def bce(y_true, y_pred):
        return -ops.mean(y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred))

    model = _mlp(keras, 16, (32,), out_act="sigmoid")
    model.compile(keras.optimizers.Adam(learning_rate=0.02), loss=bce)
    model.fit(x, y, batch_size=32, epochs=8, verbose=0, callbacks=[_watch(run_dir)])


def build_nan_loss_rmsle_linear(run_dir):
    """RMSLE loss (log1p of the prediction) on a linear output that goes below -1."""
    keras = _start(3)
    ops = keras.ops
    x, y = _regression(seed=3)
    y = np.exp(y).astype(np.float32)  # positive target: RMSLE looks like the right loss

    def rmsle(y_true, y_pred):
        return ops.sqrt(ops.mean(ops.square(ops.log(1.0 + y_pred) - ops.log(1.0 + y_true))))

    model = _mlp(keras, 16, (32, 32))
    model.compile(keras.optimizers.Adam(learning_rate=1e-3), loss=rmsle)
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[_watch(run_dir)])


def build_norm_growth_wrong_sign_regulariser(run_dir):
    """A custom L2 regulariser whose sign is flipped: it rewards large weights."""
    keras = _start(4)
    ops = keras.ops

    class L2(keras.regularizers.Regularizer):
        def __init__(self, l2=0.02):
            self.l2 = l2

        def __call__(self, w):
            return -self.l2 * ops.sum(ops.square(w))  # BUG: should be +

        def get_config(self):
            return {"l2": self.l2}

    x, y = _regression(seed=4)
    model = keras.Sequential([
        keras.Input((16,), name="x"),
        keras.layers.Dense(32, activation="tanh", name="hidden1", kernel_regularizer=L2()),
        keras.layers.Dense(32, activation="tanh", name="hidden2"),
        keras.layers.Dense(1, name="out"),
    ], name="model")
    model.compile(keras.optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="mse")
    model.fit(x, y, batch_size=32, epochs=8, verbose=0, callbacks=[_watch(run_dir)])


def build_frozen_after_fit(run_dir):
    """``layer.trainable = False`` between two fits without ``compile()``: still trained.

    No intent needed: frozen=1 together with changed=1 is a contradiction on its own.
    """
    keras = _start(5)
    x, y = _classification(seed=5)
    model = _mlp(keras, 16, (32, 32), out=4)
    model.compile(keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    cb = _watch(run_dir)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[cb])
    model.get_layer("hidden1").trainable = False  # BUG: no model.compile() after this
    model.fit(x, y, batch_size=32, epochs=5, initial_epoch=2, verbose=0, callbacks=[cb])


def build_frozen_after_fit_base_bn(run_dir):
    """A nested base (Dense + BatchNorm) frozen after fit without recompiling."""
    keras = _start(6)
    x, y = _classification(seed=6)
    base = keras.Sequential([
        keras.Input((16,)),
        keras.layers.Dense(32, name="base_dense"),
        keras.layers.BatchNormalization(name="base_bn"),
        keras.layers.Activation("relu", name="base_relu"),
    ], name="base")
    inputs = keras.Input((16,), name="x")
    outputs = keras.layers.Dense(4, activation="softmax", name="head")(base(inputs))
    model = keras.Model(inputs, outputs, name="model")
    model.compile(keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    cb = _watch(run_dir)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[cb])
    base.trainable = False  # BUG: "now train only the head" -- but no compile()
    model.fit(x, y, batch_size=32, epochs=5, initial_epoch=2, verbose=0, callbacks=[cb])


def build_frozen_by_mistake(run_dir):
    """A fine-tuning idiom pasted into a from-scratch model freezes its hidden layers.

    Needs intent: the recording (frozen=1, changed=0 from record 1, weights still at their
    random init) is bit-for-bit what a deliberately frozen pre-trained base looks like, and
    a checker cannot know the weights were never trained.  The project declares that the
    hidden layers must learn (a ``stalled`` check on them).
    """
    keras = _start(7)
    x, y = _classification(seed=7)
    model = _mlp(keras, 16, (32, 32), out=4)
    for layer in model.layers[:-1]:  # BUG: copied from a transfer-learning tutorial
        layer.trainable = False
    model.compile(keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=5, verbose=0, callbacks=[_watch(run_dir)])


def build_lr_zero_cosine_steps(run_dir):
    """CosineDecay given ``decay_steps`` in epochs: the LR reaches 0 after 6 steps."""
    keras = _start(8)
    x, y = _regression(seed=8)
    epochs = 6
    schedule = keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=epochs)  # BUG: steps
    model = _mlp(keras, 16, (32, 32))
    model.compile(keras.optimizers.Adam(learning_rate=schedule), loss="mse")
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[_watch(run_dir)])


def build_lr_zero_warmup_floordiv(run_dir):
    """A linear warm-up written with ``//``: the learning rate is 0.0 every epoch."""
    keras = _start(9)
    x, y = _classification(seed=9)
    base_lr, warmup = 1e-2, 3

    def schedule(epoch):
        return base_lr * (epoch + 1) // warmup  # BUG: meant base_lr * ((epoch + 1) / warmup)

    model = _mlp(keras, 16, (32, 32), out=4)
    model.compile(keras.optimizers.Adam(base_lr), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=4, verbose=0,
              callbacks=[keras.callbacks.LearningRateScheduler(schedule), _watch(run_dir)])


def build_dead_relu_negative_bias(run_dir):
    """ReLU layer whose bias starts at -2.5: most units are off for every sample, from the start."""
    keras = _start(10)
    x, y = _classification(seed=10)
    model = keras.Sequential([
        keras.Input((16,), name="x"),
        keras.layers.Dense(32, activation="relu", name="hidden1"),
        keras.layers.Dense(32, activation="relu", name="hidden2",
                           bias_initializer=keras.initializers.Constant(-2.5)),
        keras.layers.Dense(4, activation="softmax", name="out"),
    ], name="model")
    model.compile(keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[_watch(run_dir)])


def build_dead_relu_lr_spike(run_dir):
    """One epoch at 50x the learning rate (a schedule typo) kills many ReLU units for good."""
    keras = _start(11)
    x, y = _regression(seed=11)

    def schedule(epoch):
        return 0.5 if epoch == 2 else 1e-2  # BUG: a warm restart meant 5e-2, typed 0.5

    model = _mlp(keras, 16, (64, 64))
    model.compile(keras.optimizers.SGD(1e-2), loss="mse")
    model.fit(x, y, batch_size=32, epochs=6, verbose=0,
              callbacks=[keras.callbacks.LearningRateScheduler(schedule), _watch(run_dir)])


def build_dead_relu_adam_spike(run_dir):
    """The same LR typo with Adam: units die, but Adam's momentum keeps moving them."""
    keras = _start(11)
    x, y = _regression(seed=11)

    def schedule(epoch):
        return 1.0 if epoch == 2 else 1e-3  # BUG: a warm restart meant 1e-2, typed 1.0

    model = _mlp(keras, 16, (64, 64))
    model.compile(keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(x, y, batch_size=32, epochs=6, verbose=0,
              callbacks=[keras.callbacks.LearningRateScheduler(schedule), _watch(run_dir)])


def build_vanishing_deep_sigmoid(run_dir):
    """Ten sigmoid layers trained with SGD: the first layers barely move."""
    keras = _start(12)
    x, y = _classification(seed=12)
    model = _mlp(keras, 16, (32,) * 10, out=4, act="sigmoid")
    model.compile(keras.optimizers.SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=5, verbose=0, callbacks=[_watch(run_dir)])


def build_oscillation_fullbatch_sgd(run_dir):
    """Full-batch gradient descent on unscaled features, LR just above 2/curvature.

    No intent needed: d_cos < -0.99 on the kernel at every record from 2 on, while healthy
    runs only dip to -1 on single biases for single records (see the benchmark table).
    """
    keras = _start(13)
    rng = np.random.default_rng(13)
    x = rng.standard_normal((512, 8)).astype(np.float32)
    x[:, 0] *= 10.0  # one feature left unnormalised: curvature 2*100 along it
    w = rng.standard_normal((8, 1)) * 0.3
    w[0] = 0.5  # the target depends mostly on the unnormalised feature
    y = (x @ w + 0.1 * rng.standard_normal((512, 1))).astype(np.float32)
    model = keras.Sequential([keras.Input((8,), name="x"), keras.layers.Dense(1, name="linear")],
                             name="model")
    model.compile(keras.optimizers.SGD(learning_rate=0.0102), loss="mse")
    model.fit(x, y, batch_size=len(x), epochs=12, verbose=0, callbacks=[_watch(run_dir)])


def _pretrained_base(keras, x, y, *, bn=False):
    """A small base trained briefly on the task (stands in for pre-trained weights)."""
    layers = [keras.Input((x.shape[1],)), keras.layers.Dense(32, name="base_dense1")]
    if bn:
        layers.append(keras.layers.BatchNormalization(name="base_bn"))
    layers += [keras.layers.Activation("relu", name="base_relu1"),
               keras.layers.Dense(32, activation="relu", name="base_dense2")]
    base = keras.Sequential(layers, name="base")
    pre = keras.Sequential([base, keras.layers.Dense(int(y.max()) + 1, activation="softmax",
                                                     name="pre_head")], name="pretrain")
    pre.compile(keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    pre.fit(x, y, batch_size=64, epochs=3, verbose=0)
    return base


def build_unfrozen_base(run_dir):
    """Transfer learning where ``base.trainable = False`` was forgotten: the base drifts.

    Needs intent: the base trains like any other layer (frozen=0, sensible update ratios),
    so without being told that it should stay fixed no checker can object.  The project
    declares ``base/*`` must be ``unchanged``.
    """
    keras = _start(14)
    x, y = _classification(seed=14)
    base = _pretrained_base(keras, x, y)
    # BUG: base.trainable = False is missing
    inputs = keras.Input((16,), name="x")
    outputs = keras.layers.Dense(4, activation="softmax", name="head")(base(inputs))
    model = keras.Model(inputs, outputs, name="finetune")
    model.compile(keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[_watch(run_dir)])


# --------------------------------------------------------------------------- healthy runs


def build_batchnorm_mlp(run_dir):
    keras = _start(100)
    x, y = _classification(seed=100)
    model = keras.Sequential([
        keras.Input((16,), name="x"),
        keras.layers.Dense(32, name="dense1"),
        keras.layers.BatchNormalization(name="bn1"),
        keras.layers.Activation("relu", name="relu1"),
        keras.layers.Dense(32, name="dense2"),
        keras.layers.BatchNormalization(name="bn2"),
        keras.layers.Activation("relu", name="relu2"),
        keras.layers.Dense(4, activation="softmax", name="out"),
    ], name="model")
    model.compile(keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[_watch(run_dir)])


def build_frozen_base_with_bn(run_dir):
    keras = _start(101)
    x, y = _classification(seed=101)
    base = _pretrained_base(keras, x, y, bn=True)
    base.trainable = False  # before compile: BatchNorm runs in inference mode, nothing moves
    inputs = keras.Input((16,), name="x")
    outputs = keras.layers.Dense(4, activation="softmax", name="head")(base(inputs, training=False))
    model = keras.Model(inputs, outputs, name="finetune")
    model.compile(keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[_watch(run_dir)])


def build_dropout_mlp(run_dir):
    keras = _start(102)
    x, y = _classification(seed=102)
    model = keras.Sequential([
        keras.Input((16,), name="x"),
        keras.layers.Dense(64, activation="relu", name="dense1"),
        keras.layers.Dropout(0.5, name="drop1"),
        keras.layers.Dense(64, activation="relu", name="dense2"),
        keras.layers.Dropout(0.5, name="drop2"),
        keras.layers.Dense(4, activation="softmax", name="out"),
    ], name="model")
    model.compile(keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[_watch(run_dir)])


def _embedding_rnn(run_dir, cell, seed):
    keras = _start(seed)
    x, y = _sequences(seed=seed)
    model = keras.Sequential([
        keras.Input((x.shape[1],), dtype="int32", name="tokens"),
        keras.layers.Embedding(200, 16, mask_zero=True, name="embed"),
        cell(16, name="rnn"),
        keras.layers.Dense(1, activation="sigmoid", name="out"),
    ], name="model")
    model.compile(keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    model.fit(x, y, batch_size=64, epochs=3, verbose=0, callbacks=[_watch(run_dir)])


def build_embedding_lstm(run_dir):
    _embedding_rnn(run_dir, _keras().layers.LSTM, 103)


def build_embedding_gru(run_dir):
    _embedding_rnn(run_dir, _keras().layers.GRU, 104)


def build_weight_decay_adamw(run_dir):
    keras = _start(105)
    x, y = _classification(seed=105)
    model = _mlp(keras, 16, (64, 64), out=4, kernel_initializer="he_normal")
    model.compile(keras.optimizers.AdamW(learning_rate=3e-3, weight_decay=0.3),
                  loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=6, verbose=0, callbacks=[_watch(run_dir)])


def build_weight_decay_l2_sgd(run_dir):
    keras = _start(106)
    x, y = _regression(seed=106)
    model = _mlp(keras, 16, (32, 32), kernel_regularizer=keras.regularizers.L2(0.02))
    model.compile(keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    model.fit(x, y, batch_size=32, epochs=6, verbose=0, callbacks=[_watch(run_dir)])


def build_converging_decay(run_dir):
    keras = _start(107)
    x, y = _regression(seed=107)
    epochs, steps = 8, 512 // 32
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=steps, decay_rate=0.3)
    model = _mlp(keras, 16, (32, 32))
    model.compile(keras.optimizers.Adam(learning_rate=schedule), loss="mse")
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[_watch(run_dir)])


def build_mixed_precision(run_dir):
    keras = _start(108)
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        x, y = _regression(seed=108, scale=30.0)  # large loss: the first scaled steps overflow
        model = keras.Sequential([
            keras.Input((16,), name="x"),
            keras.layers.Dense(64, activation="relu", name="hidden1"),
            keras.layers.Dense(64, activation="relu", name="hidden2"),
            keras.layers.Dense(1, name="out"),
            keras.layers.Activation("linear", dtype="float32", name="out_f32"),
        ], name="model")
        model.compile(keras.optimizers.Adam(1e-3), loss="mse")  # wrapped in LossScaleOptimizer
        model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[_watch(run_dir)])
    finally:
        keras.mixed_precision.set_global_policy("float32")


def build_nested_model(run_dir):
    keras = _start(109)
    x, y = _classification(seed=109)
    block = keras.Sequential([
        keras.Input((32,)),
        keras.layers.Dense(32, activation="relu", name="fc"),
        keras.layers.LayerNormalization(name="ln"),
    ], name="block")
    inner_in = keras.Input((16,))
    inner = keras.Model(inner_in, block(keras.layers.Dense(32, activation="relu", name="stem")(inner_in)),
                        name="encoder")
    inputs = keras.Input((16,), name="x")
    outputs = keras.layers.Dense(4, activation="softmax", name="head")(inner(inputs))
    model = keras.Model(inputs, outputs, name="model")
    model.compile(keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[_watch(run_dir)])


def build_subclassed_model(run_dir):
    keras = _start(110)
    x, y = _classification(seed=110)

    class Block(keras.layers.Layer):
        def __init__(self, units, **kw):
            super().__init__(**kw)
            self.fc1 = keras.layers.Dense(units, activation="relu", name="fc1")
            self.fc2 = keras.layers.Dense(units, name="fc2")

        def call(self, h):
            return keras.ops.relu(h + self.fc2(self.fc1(h)))

    class Net(keras.Model):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.stem = keras.layers.Dense(32, activation="relu", name="stem")
            self.block1 = Block(32, name="block1")
            self.block2 = Block(32, name="block2")
            self.head = keras.layers.Dense(4, activation="softmax", name="head")

        def call(self, x):
            return self.head(self.block2(self.block1(self.stem(x))))

    model = Net(name="net")
    model.compile(keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[_watch(run_dir)])


def build_sparse_relu(run_dir):
    keras = _start(111)
    x, y = _classification(seed=111)
    model = keras.Sequential([
        keras.Input((16,), name="x"),
        keras.layers.Dense(64, activation="relu", name="sparse",
                           bias_initializer=keras.initializers.Constant(-1.0)),
        keras.layers.Dense(4, activation="softmax", name="out"),
    ], name="model")
    model.compile(keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=5, verbose=0, callbacks=[_watch(run_dir)])


def build_fine_tune_two_phase(run_dir):
    keras = _start(112)
    x, y = _classification(seed=112)
    base = _pretrained_base(keras, x, y, bn=True)
    base.trainable = False
    inputs = keras.Input((16,), name="x")
    outputs = keras.layers.Dense(4, activation="softmax", name="head")(base(inputs, training=False))
    model = keras.Model(inputs, outputs, name="finetune")
    model.compile(keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    cb = _watch(run_dir)
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[cb])
    base.trainable = True  # phase 2: unfreeze and recompile with a small LR (the documented way)
    model.compile(keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=6, initial_epoch=3, verbose=0, callbacks=[cb])


def build_conv_sgd_momentum(run_dir):
    keras = _start(113)
    x, y = _images(seed=113)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(8, 3, padding="same", name="conv1"),
        keras.layers.BatchNormalization(name="bn1"),
        keras.layers.Activation("relu", name="relu1"),
        keras.layers.MaxPooling2D(name="pool1"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(4, activation="softmax", name="out"),
    ], name="model")
    model.compile(keras.optimizers.SGD(5e-2, momentum=0.9), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[_watch(run_dir)])


def build_separable_logistic(run_dir):
    keras = _start(114)
    rng = np.random.default_rng(114)
    x = rng.standard_normal((512, 16)).astype(np.float32)
    y = (x @ rng.standard_normal((16, 1)) > 0).astype(np.float32)
    model = keras.Sequential([keras.Input((16,), name="x"),
                              keras.layers.Dense(1, activation="sigmoid", name="logit")], name="model")
    model.compile(keras.optimizers.Adam(3e-2), loss="binary_crossentropy")
    model.fit(x, y, batch_size=32, epochs=8, verbose=0, callbacks=[_watch(run_dir)])


def build_deep_relu_he(run_dir):
    keras = _start(115)
    x, y = _classification(seed=115)
    model = _mlp(keras, 16, (32,) * 8, out=4, kernel_initializer="he_normal")
    model.compile(keras.optimizers.SGD(learning_rate=0.02), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=5, verbose=0, callbacks=[_watch(run_dir)])


# --------------------------------------------------------------------------- catalogue

_HIDDEN = ["model/hidden1/*", "model/hidden2/*"]

SCENARIOS: list[Scenario] = [
    # ---- faulty
    Scenario(
        "lr-far-too-high", False, "exploding", ["*"], 1, None,
        "SGD lr=0.5 (about 20x too high) on a tanh regressor: every tensor grows by orders of "
        "magnitude per epoch from record 1, the loss reaches ~1e32, then the weights become NaN.",
        build_lr_far_too_high),
    Scenario(
        "nan-loss-handwritten-bce", False, "nan", ["*"], 3, None,
        "Hand-written binary cross-entropy `-(y log p + (1-y) log(1-p))` without clipping on "
        "separable data: once a sigmoid output rounds to exactly 1.0, 0*log(0) is NaN, the "
        "gradient is NaN and every weight becomes NaN.",
        build_nan_loss_handwritten_bce),
    Scenario(
        "nan-loss-rmsle-linear", False, "nan", ["*"], 1, None,
        "RMSLE loss `sqrt(mean((log(1+p) - log(1+y))^2))` on a linear output: predictions below -1 "
        "take the log of a negative number on the first batch; loss and weights are NaN from "
        "record 1.",
        build_nan_loss_rmsle_linear, fast=True),
    Scenario(
        "norm-growth-wrong-sign-regulariser", False, "norm-growth", ["model/hidden1/kernel"], 2, None,
        "Custom L2 regulariser returning `-l2 * sum(w^2)` (sign flipped): hidden1/kernel grows "
        "geometrically every epoch; loss stays finite, no NaN.",
        build_norm_growth_wrong_sign_regulariser),
    Scenario(
        "frozen-after-fit", False, "frozen-trap", ["model/hidden1/*"], 3, None,
        "`hidden1.trainable = False` set after a first fit() without compile(): the layer reports "
        "trainable=False (recorded frozen=1) but its weights keep changing from record 3 on.",
        build_frozen_after_fit, fast=True),
    Scenario(
        "frozen-after-fit-base-bn", False, "frozen-trap", ["base/*"], 3, None,
        "A nested base (Dense + BatchNorm) frozen with `base.trainable = False` after fit() without "
        "compile(): kernels, gamma/beta and the moving statistics keep changing while frozen=1.",
        build_frozen_after_fit_base_bn),
    Scenario(
        "frozen-by-mistake", False, "frozen-by-mistake", _HIDDEN, 1,
        [{"id": "hidden-layers-learn", "check": "stalled", "select": _HIDDEN}],
        "`for layer in model.layers[:-1]: layer.trainable = False` pasted into a from-scratch model: "
        "the hidden layers never train. The recording is identical to an intentionally frozen "
        "base (frozen=1, changed=0), so only a declared intent (these layers must learn) shows it.",
        build_frozen_by_mistake),
    Scenario(
        "lr-zero-cosine-steps", False, "lr-zero", ["*"], 2, None,
        "CosineDecay(1e-2, decay_steps=6) where 6 was meant in epochs: the LR reaches 0 after 6 of "
        "the 16 steps of epoch 1. The logged learning_rate is already 0 at record 1 (whose weights "
        "did change); from record 2 on no tensor changes.",
        build_lr_zero_cosine_steps),
    Scenario(
        "lr-zero-warmup-floordiv", False, "lr-zero", ["*"], 1, None,
        "Warm-up schedule `base_lr * (epoch + 1) // warmup` (floor division): the LR is 0.0 from the "
        "first step; no weight changes at any record, learning_rate logged as 0.",
        build_lr_zero_warmup_floordiv, fast=True),
    Scenario(
        "dead-relu-negative-bias", False, "dead-units", ["model/hidden2/*"], 1, None,
        "hidden2 (ReLU, bias initialised to -2.5, e.g. copied from a 'sparsity' trick) has 28 of "
        "its 32 units off for every sample from the start: their kernel columns and biases never "
        "change (dead_units 28/32 at record 1, 27/32 later) and the loss barely moves.",
        build_dead_relu_negative_bias),
    Scenario(
        "dead-relu-lr-spike", False, "dead-units", ["model/hidden2/*"], 3, None,
        "Plain SGD; LearningRateScheduler returns 0.5 instead of 5e-2 for epoch 3 (index 2): the "
        "spike is visible at record 3 (loss 0.16 -> 1.35, update ratios up to ~160) and pushes 40 "
        "of hidden2's 64 ReLU units into the dead zone: from record 4 their kernel columns never "
        "change again (dead_units 40/64).",
        build_dead_relu_lr_spike),
    Scenario(
        "dead-relu-adam-spike", False, "dead-units", ["model/hidden2/*"], 3, None,
        "The LR-spike typo (1.0 for one epoch) with Adam: record 3 shows the spike (loss 0.06 -> "
        "1.9e4, update ratios 30-4500); from then on 55 of hidden2's 64 units output 0 for every "
        "sample (checked on the activations) and the loss stays at ~250.",
        build_dead_relu_adam_spike,
        known_gap="Adam's first moment keeps moving a dead unit's weights after its gradient "
        "stops (|update| shrinks ~5x per epoch but is not 0 for hundreds of steps), so "
        "dead_units, which counts units with exactly unchanged weights, stays 0 at every "
        "record. The run is still flaggable through the spike at record 3; the dead units "
        "themselves would need a per-unit relative-update figure."),
    Scenario(
        "vanishing-deep-sigmoid", False, "vanishing",
        ["model/hidden1/kernel", "model/hidden2/kernel", "model/hidden3/kernel"], 1, None,
        "Ten Dense(32, sigmoid) layers with Glorot init and plain SGD(0.1): the gradient shrinks "
        "~4x per layer, so hidden1-3's relative updates (~2e-7) are 5-6 orders of magnitude below "
        "the last layers' (~0.2); the loss stays at ln 4.",
        build_vanishing_deep_sigmoid),
    Scenario(
        "oscillation-fullbatch-sgd", False, "oscillation", ["model/linear/*"], 2, None,
        "Full-batch SGD on a linear regressor with one unnormalised feature (scale 10): lr=0.0102 is "
        "just above the stability limit 2/200, so each update reverses the previous one "
        "(d_cos < -0.99 from record 2) and the loss creeps up (17 -> 94 over 12 records). One "
        "step per epoch: with an even number of steps per record the flips cancel inside the "
        "record and per-epoch records do not show the oscillation at all.",
        build_oscillation_fullbatch_sgd, fast=True),
    Scenario(
        "unfrozen-base", False, "unfrozen-base", ["base/*"], 1,
        [{"id": "base-frozen", "check": "unchanged", "select": ["base/*"]}],
        "Transfer learning where `base.trainable = False` is missing: the pre-trained base is "
        "fine-tuned at lr=1e-2 along with the new head. The recording looks like any healthy run; "
        "only a declared intent (the base must not change) shows it.",
        build_unfrozen_base),
    # ---- healthy
    Scenario(
        "batchnorm-mlp", True, "", [], None, None,
        "Dense+BatchNorm MLP: moving_mean/moving_variance are non-trainable yet change every "
        "record (frozen=0).",
        build_batchnorm_mlp, fast=True),
    Scenario(
        "frozen-base-with-bn", True, "", [], None, None,
        "Pre-trained base (Dense, BatchNorm, Dense) frozen before compile: every base tensor, the "
        "moving statistics included, is bit-identical at every record; only the head trains.",
        build_frozen_base_with_bn),
    Scenario(
        "dropout-mlp", True, "", [], None, None,
        "Two Dropout(0.5) layers: noisy updates; the seed_generator_state variables are not "
        "recorded as weights.",
        build_dropout_mlp),
    Scenario(
        "embedding-lstm", True, "", [], None, None,
        "Embedding(200, mask_zero=True) + LSTM: ids >= 120 never occur and id 0 is padding, so "
        "those embedding rows never change (the tensor as a whole does).",
        build_embedding_lstm),
    Scenario(
        "embedding-gru", True, "", [], None, None,
        "Embedding(200, mask_zero=True) + GRU: same unused and padding rows as the LSTM run.",
        build_embedding_gru),
    Scenario(
        "weight-decay-adamw", True, "", [], None, None,
        "AdamW(3e-3, weight_decay=0.3) on He-initialised kernels: the hidden kernels' norms "
        "shrink a little (about 1%) at every record.",
        build_weight_decay_adamw),
    Scenario(
        "weight-decay-l2-sgd", True, "", [], None, None,
        "SGD(0.1) with L2(0.02) kernel regularisers: kernel norms shrink steadily every record "
        "towards the regularised optimum.",
        build_weight_decay_l2_sgd),
    Scenario(
        "converging-decay", True, "", [], None, None,
        "Adam with ExponentialDecay(1e-2, rate 0.3 per epoch): the LR falls ~2000x over 8 epochs "
        "and the updates shrink by orders of magnitude without reaching zero.",
        build_converging_decay),
    Scenario(
        "mixed-precision", True, "", [], None, None,
        "mixed_float16 policy (float32 variables, LossScaleOptimizer). Targets scaled by 30 so "
        "the first scaled gradients overflow float16: steps are skipped and the logged loss_scale "
        "drops.",
        build_mixed_precision),
    Scenario(
        "nested-model", True, "", [], None, None,
        "Functional model containing a functional encoder that contains a Sequential block "
        "(Dense + LayerNorm).",
        build_nested_model),
    Scenario(
        "subclassed-model", True, "", [], None, None,
        "Subclassed keras.Model with two residual sub-layer blocks; variables are created lazily.",
        build_subclassed_model),
    Scenario(
        "sparse-relu", True, "", [], None, None,
        "Dense(64, relu) with bias -2: each unit fires on a small fraction of samples, yet every "
        "unit gets some gradient every epoch (sparse, not dead).",
        build_sparse_relu),
    Scenario(
        "fine-tune-two-phase", True, "", [], None, None,
        "The documented transfer-learning recipe: base frozen before compile for 3 epochs (no "
        "change), then unfrozen + recompiled with lr=1e-4 (small changes, frozen=0).",
        build_fine_tune_two_phase),
    Scenario(
        "conv-sgd-momentum", True, "", [], None, None,
        "Small Conv2D + BatchNorm network, SGD with momentum 0.9 (4-D kernels, channel units).",
        build_conv_sgd_momentum),
    Scenario(
        "separable-logistic", True, "", [], None, None,
        "Logistic regression on linearly separable data: the loss goes to 0 and the kernel norm "
        "keeps growing slowly (logarithmically) -- the expected implicit-bias behaviour.",
        build_separable_logistic),
    Scenario(
        "deep-relu-he", True, "", [], None, None,
        "Eight Dense(32, relu) layers with He init and SGD: the healthy counterpart of the deep "
        "sigmoid net (relative updates similar across depth).",
        build_deep_relu_he),
]

BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIOS}
assert len(BY_NAME) == len(SCENARIOS), "duplicate scenario names"


def get(name: str) -> Scenario:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no scenario {name!r}; known: {', '.join(BY_NAME)}") from None


def build(scenario: Scenario | str, out_dir) -> tuple[Path, float]:
    """Build one scenario into ``out_dir/<name>``; returns (run_dir, seconds)."""
    s = get(scenario) if isinstance(scenario, str) else scenario
    run_dir = Path(out_dir) / s.name
    t0 = time.perf_counter()
    s.build(run_dir)
    return run_dir, time.perf_counter() - t0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    if argv[0] == "--list":
        for s in SCENARIOS:
            print(f"{s.name:36s} {s.verdict:4s} {s.fault_class or '-':18s} "
                  f"first_visible={s.first_visible} where={s.where} intent={s.intent}")
        return 0
    out, names = Path(argv[0]), argv[1:]
    chosen = [get(n) for n in names] if names else SCENARIOS
    out.mkdir(parents=True, exist_ok=True)
    _keras()  # import TensorFlow before timing the first build
    for s in chosen:
        run_dir, secs = build(s, out)
        print(f"{s.name:36s} {secs:6.1f} s  -> {run_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
