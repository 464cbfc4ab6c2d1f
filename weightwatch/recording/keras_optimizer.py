"""What a Keras 3 model's optimizer and loss tell about its gradients: the Keras side of ``grad_rms``.

Adaptive optimizers normalise the size of each update, so weight deltas
alone cannot show a gradient that has vanished; their own state can.  At a
record, for every trainable variable, the optimizer's slot for it (found
through Keras' own index, ``optimizer._get_variable_index(variable)``, never
by parsing slot names) is read once and reduced to one figure - the cost of
fetching a weight, no extra forward or backward pass.  ``t`` below is
``optimizer.iterations`` (the steps applied), ``lr`` the learning rate at
the record:

==================  ===================  ===============================================
optimizer           estimator            ``grad_rms``
==================  ===================  ===============================================
Adam, AdamW         ``adam-velocity``    ``sqrt(mean(v) / (1 - beta_2^t))``
Nadam               ``nadam-velocity``   the same
RMSprop             ``rmsprop-velocity`` ``sqrt(mean(v) / (1 - rho^t))``
Adagrad             ``adagrad-accum...`` ``sqrt((mean(acc) - initial_accumulator_value) / t)``
Adamax              ``adamax-norm``      ``mean(u)``: u is a running max of |g| per
                                         element, so this is a max-abs figure, above the
                                         RMS (1.6-2x it in the tests)
SGD, momentum > 0   ``sgd-momentum``     ``rms(m) / W``, ``W`` the buffer's weight:
                                         ``W_t = momentum^k W_prev + lr (1 -
                                         momentum^k) / (1 - momentum)`` over the k
                                         steps since the previous record, from 0 (at a
                                         constant rate, ``rms(m) (1 - momentum) / lr``)
SGD, no momentum    ``sgd-update``       ``rms(W_t - W_t-1) / (lr * steps since the
                                         previous record)``, from the update the record
                                         computes; a schedule's lr averaged over the
                                         two records
anything else       (``null``)           ``null``
==================  ===================  ===============================================

``lr`` is the rate the last steps were taken at: the record's logged
``learning_rate`` where there is one.  ``ReduceLROnPlateau`` and
``LearningRateScheduler`` log the rate the epoch trained at before they
change it, and may run before this callback at the end of an epoch; the
optimizer's own rate is then already the next epoch's (a cut to 1/100
read there made the momentum buffer's gradient 100x too large).  Keras'
momentum buffer is a decaying sum of ``lr x g``: for records after a cut
it still holds the faster steps before it, hence ``W``, carried from record
to record (exact for a steady gradient, whatever the rates were).

The second-moment estimators (Adam, Nadam, RMSprop, Adagrad) estimate the
RMS of the mini-batch gradient, noise included; the momentum and update
estimators the RMS of the *mean* gradient over the steps they average,
which is smaller when the gradient's direction is noisy.  Either way it is
the gradient the optimizer applied: after clipping (``clipnorm``...), and
unscaled under mixed precision (a ``LossScaleOptimizer`` is unwrapped to the
optimizer inside it).  ``null`` at the first record (no step yet), for a
variable the optimizer does not train (non-trainable, or frozen: its slot
is stale), for plain SGD with ``weight_decay`` (the update mixes the decay
in), with gradient accumulation, and for any other optimizer (Lion,
Adadelta, Ftrl, Lamb...).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from ..run.rows import FromUpdate

#: Losses whose constant-predictor loss is known: the loss function Keras wraps, by name.
_CROSSENTROPY = ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy")


def _geometric(ratio: float, n: int) -> float:
    """1 + ratio + ... + ratio^(n-1)."""
    return float(n) if ratio == 1 else (1.0 - ratio ** n) / (1.0 - ratio)


def unwrap(optimizer):
    """The optimizer that holds the slots: inside a ``LossScaleOptimizer``, the one it wraps."""
    for _ in range(4):
        inner = getattr(optimizer, "inner_optimizer", None)
        if inner is None:
            break
        optimizer = inner
    return optimizer


def estimator(optimizer) -> tuple[str, str | None] | None:
    """(estimator name, slot list attribute) for ``optimizer``, or None when it has none."""
    opt = unwrap(optimizer)
    if opt is None or getattr(opt, "gradient_accumulation_steps", None):
        return None
    o = keras.optimizers
    if isinstance(opt, o.Adam):  # AdamW too
        return "adam-velocity", "_velocities"
    if isinstance(opt, o.Nadam):
        return "nadam-velocity", "_velocities"
    if isinstance(opt, o.RMSprop):
        return "rmsprop-velocity", "_velocities"
    if isinstance(opt, o.Adagrad):
        return "adagrad-accumulator", "_accumulators"
    if isinstance(opt, o.Adamax):
        return "adamax-norm", "_u"
    if isinstance(opt, o.SGD):
        if opt.momentum:
            return "sgd-momentum", "momentums"
        if not opt.weight_decay:
            return "sgd-update", None
    return None


class GradientReader:
    """Per record, the function that gives each variable's ``grad_rms`` (see the module doc).

    ``read(variable)`` is a host view or copy of a variable's value, read
    the way the callback reads weights.  The reader remembers the optimizer's
    step and learning rate at the previous record, for plain SGD.
    """

    def __init__(self, read):
        self.read = read
        # (optimizer id, iterations, lr, momentum buffer's weight or None) at the previous record
        self._last: tuple | None = None

    def reset(self) -> None:
        """A new run: no previous record."""
        self._last = None

    def for_record(self, optimizer, lr=None):
        """``gradient(variable) -> float | FromUpdate | None`` for this record, or None.

        ``lr``: the learning rate the record logs (see the module doc), else the
        optimizer's is read."""
        found = estimator(optimizer) if optimizer is not None else None
        if found is None:
            self._last = None
            return None
        name, attr = found
        opt = unwrap(optimizer)
        try:
            t = int(self.read(opt.iterations))
            if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
                lr = float(self.read(opt.learning_rate))
            momentum = float(opt.momentum) if name == "sgd-momentum" else None
        except Exception:  # a learning rate that is no scalar, an optimizer not set up
            self._last = None
            return None
        lr = float(lr)
        last = self._last
        same = last is not None and last[0] == id(opt) and t >= last[1]
        weight = None
        if momentum is not None:
            # Keras' buffer is m <- momentum * m - lr * g, from 0: for a steady gradient, g times
            # the sum of momentum^j * lr over past steps.  Tracked from record to record, so a rate
            # changed any number of times weighs its steps as long as they stay in the buffer.
            if same and last[3] is not None:
                k = t - last[1]
                weight = last[3] * momentum ** k + lr * _geometric(momentum, k)
            else:  # first record seen: as if the rate had been this one from the first step
                weight = lr * _geometric(momentum, t)
        self._last = (id(opt), t, lr, weight)
        if t <= 0 or not opt.built:
            return None
        index = opt._get_variable_index

        def position(v):
            try:
                return index(v)
            except (KeyError, AttributeError, TypeError):
                return None  # not a variable this optimizer trains

        if attr is None:  # plain SGD: from the update the record computes
            if not same or t == last[1]:
                return None
            # A schedule changes the rate every step: its mean over the steps is about the mean of
            # the two ends.  A rate a callback sets holds for the epoch: the record's is the one.
            scheduled = isinstance(getattr(opt, "_learning_rate", None),
                                   keras.optimizers.schedules.LearningRateSchedule)
            step = FromUpdate((0.5 * (lr + last[2]) if scheduled else lr) * (t - last[1]))
            return lambda v: step if position(v) is not None else None
        slots = getattr(opt, attr, None)
        if not slots:
            return None
        read = self.read
        if name == "sgd-momentum":
            if not weight > 0:
                return None
            scale = 1.0 / weight

            def figure(a):
                a = a.reshape(-1)
                with np.errstate(over="ignore", invalid="ignore"):
                    ss = float(np.dot(a, a))
                if not math.isfinite(ss):
                    # a blown-up buffer overflows float32's sum of squares: scaled, in float64
                    # (non-finite elements stay non-finite, and the figure is then None)
                    big = float(np.max(np.abs(a)))
                    if not math.isfinite(big) or big == 0:
                        return math.nan
                    b = a.astype(np.float64) / big
                    return math.sqrt(float(np.dot(b, b)) / a.size) * big * scale
                return math.sqrt(ss / a.size) * scale
        elif name == "adagrad-accumulator":
            a0 = opt.initial_accumulator_value  # as the slot holds it: float32(0.1) is not 0.1

            def figure(a):
                mean = _mean(a, np.float64)  # a small sum on top of a0: float64
                return math.sqrt(max(mean - float(a.dtype.type(a0)), 0.0) / t)
        elif name == "adamax-norm":
            figure = _mean
        else:  # a bias-corrected second moment
            decay = float(opt.rho if name == "rmsprop-velocity" else opt.beta_2)
            correction = 1.0 / (1.0 - decay ** t) if decay < 1 else math.inf

            def figure(a):
                return math.sqrt(max(_mean(a), 0.0) * correction)

        def gradient(v):
            i = position(v)
            if i is None or i >= len(slots):
                return None
            a = np.asarray(read(slots[i]))
            if not a.size:
                return None
            g = figure(a)
            return g if math.isfinite(g) else None

        return gradient


_sum = np.add.reduce


def _mean(a: np.ndarray, dtype=None) -> float:
    """Mean of a slot: one pairwise summation (float64 for types narrower than float32).

    ``np.add.reduce`` over the flat view is the sum ``np.mean`` takes, without its overhead
    (a few microseconds a call: a model of many small tensors has hundreds of slots).
    """
    if dtype is None and a.dtype.itemsize < 4:
        dtype = np.float64
    return float(_sum(a.reshape(-1), dtype=dtype)) / a.size


# -- the loss of a constant predictor ----------------------------------------------------------

def chance_loss(model) -> tuple[bool, float | None]:
    """(known, chance_loss): the loss of a constant, uniform predictor for ``model``'s loss.

    ln C for a sparse or categorical crossentropy over C classes, ln 2 for a
    binary crossentropy (per output unit, so for any number of them),
    ``from_logits`` or not; None for any other loss, a model with several
    outputs (whose ``loss`` is a weighted sum of theirs) or no output shape
    to read C from (a subclassed model).  ``known`` is False while the output
    shape is not available yet (a ``Sequential`` without ``Input``, before its
    first step): ask again later.
    """
    loss = getattr(model, "loss", None)
    if isinstance(loss, (list, tuple)) and len(loss) == 1:
        loss = loss[0]
    elif isinstance(loss, dict) and len(loss) == 1:
        loss = next(iter(loss.values()))
    kind = _crossentropy_kind(loss)
    if kind is None:
        return True, None
    if kind == "binary_crossentropy":
        return True, math.log(2.0)
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):  # subclassed, or a Sequential not built yet
        return bool(getattr(model, "built", False)) and not isinstance(model, keras.Sequential), None
    if outputs is None:
        return False, None
    if len(outputs) != 1:
        return True, None
    classes = outputs[0].shape[-1] if len(outputs[0].shape) else None
    if classes is None or classes < 2:
        return True, None
    return True, math.log(float(classes))


#: Keras' built-in losses that are never negative (poisson, cosine_similarity can be).
_NON_NEGATIVE = (
    "mean_squared_error", "mean_absolute_error", "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error", "huber", "log_cosh", "binary_crossentropy",
    "categorical_crossentropy", "sparse_categorical_crossentropy", "binary_focal_crossentropy",
    "categorical_focal_crossentropy", "hinge", "squared_hinge", "categorical_hinge", "kl_divergence",
)


def loss_floor(model) -> float | None:
    """The least value the logged loss can take: 0.0 when every loss ``model`` was compiled with is
    a Keras built-in that is never negative, -1.0 for a single cosine similarity, else None (a
    custom loss, Poisson, a mix with cosine similarity: unknown).

    Regularisation penalties are never negative, so the logged loss of such a model can go below
    its floor only through a penalty or a loss of the wrong sign.
    """
    loss = getattr(model, "loss", None)
    losses = list(loss.values()) if isinstance(loss, dict) else list(loss) if isinstance(loss, (list, tuple)) \
        else [loss]
    if losses and all(_builtin_name(x) in _NON_NEGATIVE for x in losses):
        return 0.0
    if len(losses) == 1 and _builtin_name(losses[0]) == "cosine_similarity":
        return -1.0      # -cos(y, p) is at least -1
    return None


def _builtin_name(loss) -> str | None:
    """The name of the Keras built-in loss function ``loss`` is, or wraps; None for anything else."""
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except (ValueError, TypeError):
            return None
    fn = getattr(loss, "fn", loss)  # a Loss class wraps its function (LossFunctionWrapper)
    name = getattr(fn, "__name__", None)
    return name if name is not None and getattr(keras.losses, name, None) is fn else None


def _crossentropy_kind(loss) -> str | None:
    name = _builtin_name(loss)
    return name if name in _CROSSENTROPY else None
