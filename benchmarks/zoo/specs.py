"""The run zoo: a deterministic enumeration of run specifications.

Every run of the zoo is one :class:`Spec`: a model family, its architecture
parameters, an optimizer and learning rate, batch size, initialiser,
regularisation, precision, schedule and callbacks, record frequency, seed
and epochs -- and, for a faulty run, the fault class, its variant and the
epoch it is injected at.  Faulty specs are made by injecting a fault into a
healthy configuration drawn the same way as the healthy runs (``base`` names
the draw), changing only what the fault needs (a deep sigmoid stack for
vanishing gradients, a constant learning rate for a spike...).

The enumeration is pure Python (no TensorFlow, no numpy): the same ids and
the same specs on every machine and in every process.  Each spec is drawn
from its own ``random.Random(<string>)``, so adding runs to one family or
class never changes the others.

``python benchmarks/zoo/specs.py`` prints the zoo's size by family,
optimizer and fault class; ``--list`` prints every spec.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
from collections import Counter
from dataclasses import dataclass, field

FAMILIES = ("mlp", "cnn", "resnet", "lstm", "gru", "simplernn", "attention", "embedding",
            "autoencoder", "regression", "multioutput")
RNN_FAMILIES = ("lstm", "gru", "simplernn")
OPTIMIZERS = ("sgd", "sgdm", "adam", "adamw", "rmsprop", "adagrad", "nadam")
ADAPTIVE = ("adam", "adamw", "rmsprop", "adagrad", "nadam")
SCHEDULES = ("constant", "warmup_cosine", "exp_decay", "step", "plateau")

#: Healthy runs per family (11 families -> 440).
HEALTHY_PER_FAMILY = 40
#: Healthy regression runs whose loss legitimately goes below 0 (a Gaussian negative
#: log-likelihood, Keras' cosine similarity): what a check for an unbounded loss must pass.
NEGATIVE_LOSS_HEALTHY = 20

#: Fault classes: (class, families it is injected into, number of runs).
#: Families are visited round-robin, so every listed family gets runs.
FAULTS: dict[str, tuple[tuple[str, ...], int]] = {
    # learning rate far too high: weights grow, then NaN
    # (regression: half of them a linear model stepped just above its stability limit, so the
    # weights grow geometrically for several records before they overflow)
    "lr-high-nan": (("regression", "autoencoder", "regression", "multioutput"), 24),
    # learning rate far too high, saturating activations/softmax: diverges but stays finite
    "lr-high": (("mlp", "cnn", "attention", "embedding", "gru", "lstm", "resnet"), 16),
    # one epoch at 30-100x the learning rate, mid-run
    "lr-spike": (FAMILIES, 16),
    # a schedule that reaches exactly 0
    "lr-zero": (FAMILIES, 16),
    # a custom regulariser with the wrong sign (rewards large weights)
    "wrong-sign-reg": (FAMILIES, 16),
    # the loss negated (gradient ascent)
    "wrong-sign-loss": (("regression", "autoencoder", "mlp", "multioutput", "cnn", "embedding"), 14),
    # log(0) in a hand-written loss
    "log-zero": (("mlp", "regression", "embedding", "cnn"), 14),
    # layer.trainable = False after fit() without compile()
    "frozen-trap": (FAMILIES, 16),
    # dead ReLU units: a negative bias from the start, or an lr spike mid-run
    "dead-relu": (("mlp", "regression", "autoencoder", "multioutput", "cnn"), 16),
    # deep sigmoid/tanh stack, plain SGD
    "vanishing-sgd": (("mlp", "regression", "multioutput", "autoencoder"), 14),
    # the same under Adam / RMSprop / Adagrad / Nadam
    "vanishing-adaptive": (("mlp", "regression", "multioutput", "autoencoder"), 16),
    # recurrent weights with spectral radius > 1, no clipping
    "exploding-rnn": (RNN_FAMILIES, 14),
    # labels shuffled by a data-pipeline bug: the loss sits at chance
    "labels-shuffled": (("mlp", "cnn", "resnet", "lstm", "gru", "simplernn", "attention", "embedding"), 16),
    # stop_gradient, or a custom train_step that leaves a layer out
    "disconnected": (FAMILIES, 16),
    # full-batch steps above the stability limit: each update undoes the last
    "oscillation": (("regression",), 14),
}
FAULT_CLASSES = tuple(FAULTS)
#: Faults whose weights grow before the first non-finite value (lead time is measured on these).
GROWTH_FAULTS = ("lr-high-nan", "lr-high", "exploding-rnn", "wrong-sign-reg", "wrong-sign-loss",
                 "lr-spike")

#: Bump when models.py or record.py change what a spec trains: cached runs of another version are
#: recorded again (the version is part of spec.json).
ZOO_VERSION = 1

#: The fast subset (``record.py --subset fast``): every family and every fault class, ~20 runs.
FAST_SUBSET_SIZE = 20


@dataclass
class Spec:
    """One run of the zoo.  ``onset_epoch`` is the first epoch trained under the fault
    (1 = from the start; 0 for healthy runs); epochs are numbered as Keras prints them."""

    id: str
    family: str
    optimizer: str
    lr: float
    batch_size: int
    init: str
    regularizer: str            # "", "l1:1e-5", "l2:1e-4", "l1l2:1e-5"
    dropout: float
    mixed_precision: bool
    schedule: str               # one of SCHEDULES
    callbacks: tuple            # subset of ("early_stopping",); "plateau" schedule adds ReduceLROnPlateau
    freq: object                # "epoch" or an int N (also record every N batches)
    seed: int
    epochs: int
    fault: str = ""
    variant: str = ""
    onset_epoch: int = 0
    n: int = 512                # samples
    validation_split: float = 0.0
    arch: dict = field(default_factory=dict)   # family-specific architecture parameters
    base: str = ""              # the healthy draw a faulty spec was derived from
    weight_decay: float = 0.0   # AdamW

    @property
    def healthy(self) -> bool:
        return not self.fault

    @property
    def steps_per_epoch(self) -> int:
        n_train = self.n - int(self.n * self.validation_split)
        return math.ceil(n_train / self.batch_size)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["callbacks"] = list(self.callbacks)
        d["zoo_version"] = ZOO_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Spec":
        d = dict(d)
        d["callbacks"] = tuple(d.get("callbacks", ()))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# --------------------------------------------------------------------------- drawing


def _loguniform(r: random.Random, lo: float, hi: float) -> float:
    return float(f"{math.exp(r.uniform(math.log(lo), math.log(hi))):.3g}")


#: Sane learning-rate ranges per optimizer (log-uniform), scaled per family below.
LR_RANGE = {
    "sgd": (0.02, 0.2), "sgdm": (0.003, 0.03), "adam": (3e-4, 3e-3), "adamw": (3e-4, 3e-3),
    "rmsprop": (2e-4, 2e-3), "adagrad": (0.01, 0.15), "nadam": (3e-4, 3e-3),
}
#: Family factors on those ranges (attention and recurrent nets like smaller adaptive steps,
#: recurrent nets larger SGD steps).
LR_FAMILY = {
    "attention": {"sgd": 1.0, "sgdm": 1.0, "default": 0.7},
    "lstm": {"sgd": 2.0, "sgdm": 2.0, "default": 1.5},
    "gru": {"sgd": 2.0, "sgdm": 2.0, "default": 1.5},
    "simplernn": {"sgd": 1.0, "sgdm": 1.0, "default": 1.0},
    "embedding": {"sgd": 15.0, "sgdm": 15.0, "adagrad": 5.0, "default": 3.0},
    "cnn": {"sgd": 2.0, "sgdm": 2.0, "default": 2.0},
    "regression": {"sgd": 0.5, "sgdm": 0.5, "default": 1.0},
    "autoencoder": {"sgd": 1.0, "sgdm": 1.0, "default": 1.0},
}
N_SAMPLES = {"mlp": 1024, "regression": 1024, "autoencoder": 1024, "multioutput": 1024, "embedding": 2048,
             "cnn": 1024, "resnet": 512, "lstm": 512, "gru": 512, "simplernn": 512, "attention": 512}
INITS = ("glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "lecun_normal", "orthogonal",
         "truncated_normal")


def _arch(family: str, r: random.Random) -> dict:
    """Architecture parameters of one draw of a family."""
    if family == "mlp":
        return {"depth": r.choice([1, 2, 2, 3, 4]), "width": r.choice([16, 32, 64]),
                "act": r.choice(["relu", "relu", "gelu", "tanh", "elu", "selu"]),
                "bn": r.random() < 0.25, "classes": r.choice([2, 3, 4, 5]), "d": r.choice([12, 16, 20]),
                "logits": r.random() < 0.3}
    if family == "cnn":
        return {"convs": r.choice([1, 2, 2, 3]), "filters": r.choice([4, 8, 12]),
                "act": r.choice(["relu", "relu", "elu", "swish"]), "pool": r.choice(["max", "avg"]),
                "bn": r.random() < 0.3, "size": r.choice([8, 10]), "channels": r.choice([1, 2]),
                "classes": 4, "head": r.choice(["gap", "flatten", "flatten"])}
    if family == "resnet":
        return {"blocks": r.choice([1, 2, 2, 3]), "filters": r.choice([6, 8, 12]),
                "size": r.choice([8, 10]), "classes": 4, "act": r.choice(["relu", "relu", "swish"])}
    if family in RNN_FAMILIES:
        return {"units": r.choice([8, 16, 24]), "stacked": r.random() < 0.25,
                "length": r.choice([8, 12, 16]), "features": 3, "classes": 3,
                "bidirectional": family != "simplernn" and r.random() < 0.15}
    if family == "attention":
        return {"dim": r.choice([8, 16]), "heads": r.choice([1, 2, 4]), "ffn": r.choice([16, 32]),
                "length": r.choice([8, 10, 12]), "vocab": 24, "classes": r.choice([2, 3]),
                "blocks": r.choice([1, 1, 2]), "pre_norm": r.random() < 0.4}
    if family == "embedding":
        kind = r.choice(["bag", "bag", "twotower"])
        return {"kind": kind, "vocab": r.choice([80, 120, 200]), "dim": r.choice([4, 8, 16]),
                "length": r.choice([8, 12]), "mask_zero": r.random() < 0.5,
                "classes": r.choice([2, 3])}
    if family == "autoencoder":
        return {"d": r.choice([16, 24, 32]), "hidden": r.choice([16, 24, 32]),
                "bottleneck": r.choice([3, 4, 6]), "act": r.choice(["relu", "elu", "tanh", "gelu"]),
                "loss": r.choice(["mse", "mse", "mae"]), "out": r.choice(["linear", "linear", "sigmoid"])}
    if family == "regression":
        return {"depth": r.choice([1, 2, 2, 3]), "width": r.choice([16, 32, 64]),
                "act": r.choice(["relu", "tanh", "elu", "gelu"]), "d": r.choice([8, 12, 16]),
                "loss": r.choice(["mse", "mse", "huber", "mae"]), "outputs": r.choice([1, 1, 2]),
                "scale": r.choice([1.0, 1.0, 3.0])}
    if family == "multioutput":
        return {"depth": r.choice([1, 2, 2]), "width": r.choice([16, 32]),
                "act": r.choice(["relu", "elu", "tanh"]), "classes": r.choice([3, 4]),
                "reg_weight": r.choice([0.5, 1.0, 2.0]), "d": 16}
    raise ValueError(family)


def draw_healthy(family: str, i: int, key: str | None = None) -> Spec:
    """The i-th healthy configuration of a family."""
    key = key or f"healthy/{family}/{i}"
    r = random.Random(key)
    arch = _arch(family, r)
    # Every optimizer gets a fair share of every family: cycle, then draw the rest.
    opt = OPTIMIZERS[i % len(OPTIMIZERS)] if i < 35 else r.choice(OPTIMIZERS)
    lo, hi = LR_RANGE[opt]
    fac = LR_FAMILY.get(family, {})
    f = fac.get(opt, fac.get("default", 1.0))
    lr = _loguniform(r, lo * f, hi * f)
    n = N_SAMPLES[family]
    # at least 8 steps per epoch
    batch = r.choice([b for b in (16, 32, 32, 64, 64, 128) if n // b >= 8])
    sched = r.choices(SCHEDULES, weights=[4, 2, 2, 1, 2])[0]
    callbacks = ("early_stopping",) if r.random() < 0.15 else ()
    val = 0.2 if callbacks or r.random() < 0.1 else 0.0
    reg = r.choices(["", "l1", "l2", "l1l2"], weights=[6, 1, 2, 1])[0]
    if reg:
        reg = f"{reg}:{_loguniform(r, 1e-5, 1e-3) if reg != 'l1' else _loguniform(r, 1e-6, 1e-4):g}"
    dropout = r.choice([0.0] * 6 + [0.1, 0.2, 0.3])
    if family in ("autoencoder", "regression"):
        dropout = 0.0 if r.random() < 0.7 else dropout
    mixed = r.random() < 0.12
    epochs = r.choice([5, 6, 8, 8, 10])
    steps = math.ceil((n - int(n * val)) / batch)
    freq: object = "epoch"
    if r.random() < 0.12 and steps >= 4:
        # N dividing the steps per epoch, or not
        divisors = [d for d in range(2, steps) if steps % d == 0 and steps // d <= 8]
        non = [d for d in range(3, steps) if steps % d and steps // d <= 6]
        pool = (divisors if r.random() < 0.5 else non) or divisors or non
        if pool:
            freq = r.choice(pool)
    wd = _loguniform(r, 1e-3, 5e-2) if opt == "adamw" else 0.0
    return Spec(id=f"{family}-h{i:03d}", family=family, optimizer=opt, lr=lr, batch_size=batch,
                init=r.choice(INITS), regularizer=reg, dropout=dropout, mixed_precision=mixed,
                schedule=sched, callbacks=callbacks, freq=freq, seed=1000 + _stable(key) % 100000,
                epochs=epochs, n=n, validation_split=val, arch=arch, weight_decay=wd)


def _stable(key: str) -> int:
    return random.Random(key + "/seed").randrange(1 << 30)


# --------------------------------------------------------------------------- faults


def inject(fault: str, family: str, j: int) -> Spec:
    """The j-th faulty run of a class in a family: a healthy draw with the fault injected."""
    base = draw_healthy(family, 1000 + j, key=f"fault-base/{fault}/{family}/{j}")
    r = random.Random(f"fault/{fault}/{family}/{j}")
    s = dataclasses.replace(base, id=f"{family}-{fault}-{j:02d}", fault=fault, base=base.id,
                            arch=dict(base.arch), callbacks=())
    # Faults play out fully: no early stopping, no plateau schedule that could hide them.
    if s.schedule == "plateau":
        s.schedule = "constant"
    s.epochs = r.choice([6, 8, 8, 10])
    s.validation_split = 0.0
    s.onset_epoch = 1
    a = s.arch
    onset_mid = lambda: r.choice([2, 3, 3, 4, 5])  # noqa: E731

    if fault == "lr-high-nan" and family == "regression" and j % 4 != 3:
        # a linear model at `over` x the stability limit 2 / lambda_max of the data's squared error:
        # each step multiplies the error along the top direction by 2 over - 1
        s.variant = "edge"
        s.optimizer, s.schedule, s.regularizer, s.dropout, s.mixed_precision = "sgd", "constant", "", 0.0, False
        s.freq = "epoch"
        a["depth"], a["loss"], a["outputs"] = 0, "mse", 1
        a["over"] = r.choice([1.08, 1.1, 1.15, 1.2, 1.3])
        s.batch_size = r.choice([32, 64])
        s.epochs = 10
        if r.random() < 0.4:
            s.onset_epoch = onset_mid()
            s.variant += "-mid"
    elif fault == "lr-high-nan":
        s.variant = "sgd" if r.random() < 0.6 else "sgdm"
        s.optimizer = s.variant
        s.schedule, s.regularizer, s.dropout, s.mixed_precision = "constant", "", 0.0, False
        a["act"] = r.choice(["relu", "elu"])
        if family == "autoencoder":
            a["out"] = "linear"
        # Targets scaled up so that the loss (and the gradient) keeps growing with the weights.
        a["target_scale"] = r.choice([3.0, 5.0, 10.0])
        s.lr = _loguniform(r, 0.5, 3.0) if s.optimizer == "sgd" else _loguniform(r, 0.1, 0.5)
        if r.random() < 0.4:
            s.onset_epoch = onset_mid()
            s.variant += "-mid"
    elif fault == "lr-high":
        s.variant = r.choice(["adam", "sgd", "rmsprop"])
        s.optimizer = s.variant
        s.schedule, s.mixed_precision = "constant", False
        s.lr = {"adam": _loguniform(r, 0.3, 2.0), "rmsprop": _loguniform(r, 0.3, 2.0),
                "sgd": _loguniform(r, 3.0, 20.0)}[s.variant]
        if r.random() < 0.4:
            s.onset_epoch = onset_mid()
            s.variant += "-mid"
    elif fault == "lr-spike":
        s.variant = r.choice(["x30", "x100"])
        s.schedule = "constant"
        s.onset_epoch = onset_mid()
        s.epochs = max(s.epochs, s.onset_epoch + 3)
    elif fault == "lr-zero":
        s.variant = r.choice(["cosine-steps", "polynomial", "floordiv", "piecewise"])
        s.schedule = "constant"
        s.onset_epoch = 1 if s.variant == "floordiv" and r.random() < 0.4 else onset_mid()
        s.epochs = max(s.epochs, s.onset_epoch + 3)
        if s.optimizer == "adamw":
            s.optimizer = "adam"
    elif fault == "wrong-sign-reg":
        s.variant = r.choice(["l2", "l2", "l1"])
        if s.optimizer in ("sgd", "sgdm") and s.variant == "l2":
            # strength for 10-40% growth per epoch: w grows by 2 * lr_eff * strength per step
            lr_eff = s.lr / (0.1 if s.optimizer == "sgdm" else 1.0)
            a["wrong_reg"] = float(f"{r.uniform(0.1, 0.4) / (2 * lr_eff * s.steps_per_epoch):.3g}")
        else:
            a["wrong_reg"] = _loguniform(r, 0.005, 0.05) if s.variant == "l2" else _loguniform(r, 0.002, 0.02)
        s.regularizer = ""
        s.schedule = "constant"
        if r.random() < 0.5:
            s.onset_epoch = onset_mid()
            s.variant += "-mid"
        s.epochs = max(s.epochs, s.onset_epoch + 4)
    elif fault == "wrong-sign-loss":
        s.variant = "negated"
        s.schedule = "constant"
        if r.random() < 0.5:
            s.onset_epoch = onset_mid()
            s.variant += "-mid"
        s.epochs = max(s.epochs, s.onset_epoch + 3)
    elif fault == "log-zero":
        s.variant = {"mlp": "bce", "embedding": "bce", "cnn": "ce", "regression": "log-relu"}[family]
        if family == "mlp":
            a["classes"], a["logits"] = 2, False
        if family == "embedding":
            a["kind"], a["classes"] = "bag", 2
        a["separable"] = True
        s.optimizer = r.choice(["adam", "rmsprop", "nadam"])
        s.lr = _loguniform(r, 0.01, 0.05)
        s.schedule, s.regularizer, s.mixed_precision = "constant", "", False
    elif fault == "frozen-trap":
        s.variant = "recompile-missing"
        s.onset_epoch = onset_mid()
        s.epochs = max(s.epochs, s.onset_epoch + 3)
        if s.schedule != "constant":
            s.schedule = "constant"
    elif fault == "dead-relu":
        # an lr spike kills units where the gradient is unbounded (squared error); a negative bias anywhere
        s.variant = r.choice(["bias", "spike"]) if family in ("regression", "autoencoder", "multioutput") else "bias"
        a["act"] = "relu"
        if family == "cnn":
            a["bn"] = False
        if family == "mlp":
            a["depth"] = max(a["depth"], 2)
            a["bn"] = False
        if family == "regression":
            a["depth"] = max(a["depth"], 2)
        if family == "multioutput":
            a["depth"] = max(a["depth"], 2)
        s.dropout = 0.0
        s.schedule, s.mixed_precision = "constant", False
        if s.variant == "bias":
            a["dead_bias"] = r.choice([-3.0, -4.0, -6.0])
        else:
            s.optimizer = "sgd"
            s.lr = _loguniform(r, 0.01, 0.03)
            a["spike"] = r.choice([50.0, 100.0])
            s.onset_epoch = onset_mid()
            s.epochs = max(s.epochs, s.onset_epoch + 3)
    elif fault in ("vanishing-sgd", "vanishing-adaptive"):
        a["deep"] = r.choice([8, 10, 12]) if family != "cnn" else r.choice([6, 8])
        a["act"] = r.choice(["sigmoid", "sigmoid", "tanh"])
        a["width"] = r.choice([16, 32])
        a["bn"] = False
        if family == "mlp":
            a["classes"] = r.choice([3, 4])
        s.init = "glorot_uniform" if a["act"] == "sigmoid" else "small_normal"
        s.dropout, s.regularizer, s.mixed_precision = 0.0, "", False
        s.schedule = "constant"
        if fault == "vanishing-sgd":
            s.optimizer = r.choice(["sgd", "sgdm"])
            s.lr = _loguniform(r, 0.05, 0.2) if s.optimizer == "sgd" else _loguniform(r, 0.01, 0.05)
        else:
            s.optimizer = r.choice(["adam", "rmsprop", "adagrad", "nadam"])
            s.lr = {"adam": _loguniform(r, 1e-4, 1e-3), "rmsprop": _loguniform(r, 1e-4, 1e-3),
                    "adagrad": _loguniform(r, 0.005, 0.03), "nadam": _loguniform(r, 1e-4, 1e-3)}[s.optimizer]
        s.variant = f"{a['act']}-{s.optimizer}"
    elif fault == "exploding-rnn":
        # gated cells (LSTM, GRU) stay stable up to large gains: they need a linear activation
        if family == "simplernn":
            act = r.choice(["relu", "linear"])
            a["gain"] = r.choice([1.5, 2.0, 2.5]) if act == "relu" else r.choice([1.3, 1.6])
        else:
            act = "linear"
            a["gain"] = r.choice([4.0, 5.0, 6.0])
        a["length"] = 16
        a["stacked"], a["bidirectional"] = False, False
        s.mixed_precision, s.regularizer, s.dropout = False, "", 0.0
        s.schedule = "constant"
        s.optimizer = r.choice(["sgd", "sgdm", "adam", "rmsprop"])
        s.lr = {"sgd": _loguniform(r, 0.01, 0.05), "sgdm": _loguniform(r, 0.003, 0.01),
                "adam": _loguniform(r, 1e-3, 5e-3), "rmsprop": _loguniform(r, 1e-3, 5e-3)}[s.optimizer]
        s.variant = f"{act}-gain{a['gain']}-{s.optimizer}"
        a["rnn_act"] = act
    elif fault == "labels-shuffled":
        s.variant = "from-start" if r.random() < 0.5 else "mid"
        if s.variant == "mid":
            s.onset_epoch = onset_mid()
            s.epochs = max(s.epochs, s.onset_epoch + 3)
        if s.schedule != "constant":
            s.schedule = "constant"
        if family == "embedding":
            a["kind"] = "bag"
    elif fault == "disconnected":
        s.variant = r.choice(["stop-gradient", "train-step"])
        s.regularizer = ""
        if s.optimizer == "adamw":
            s.optimizer = "adam"
        if family == "embedding":
            a["kind"] = "bag"
    elif fault == "oscillation":
        # from the start, or a pipeline that stops normalising one feature at the onset epoch
        s.variant = "full-batch" if r.random() < 0.5 else "unnormalised-mid"
        s.optimizer = "sgd"
        s.batch_size = s.n
        s.schedule, s.regularizer, s.dropout, s.mixed_precision = "constant", "", 0.0, False
        s.freq = "epoch"
        a["unscaled"] = r.choice([8.0, 10.0, 15.0])
        a["over"] = r.choice([1.02, 1.05, 1.1])   # lr = over * the stability limit
        a["depth"] = 0           # linear model: the stability limit is known exactly
        s.epochs = r.choice([10, 12])
        if s.variant == "unnormalised-mid":
            s.onset_epoch = onset_mid()
    else:
        raise ValueError(fault)
    if s.optimizer != "adamw":
        s.weight_decay = 0.0
    elif not s.weight_decay:
        s.weight_decay = 0.004
    # batch records only where the fault class does not need single-step records
    if fault in ("oscillation",):
        s.freq = "epoch"
    return s


# --------------------------------------------------------------------------- the zoo


def negative_loss_healthy(i: int) -> Spec:
    """The i-th healthy regression run whose loss goes below 0: a Gaussian NLL (2 in 3) or the
    cosine similarity over 3 outputs (1 in 3), drawn like any healthy regression run."""
    s = draw_healthy("regression", 500 + i, key=f"healthy/regression-negative-loss/{i}")
    loss = "cosine_similarity" if i % 3 == 2 else "gaussian_nll"
    s.arch["loss"] = loss
    s.arch["outputs"] = 3 if loss == "cosine_similarity" else 1
    s.id = f"regression-{'cos' if loss == 'cosine_similarity' else 'nll'}-h{i:03d}"
    return s


def healthy_specs() -> list[Spec]:
    return ([draw_healthy(f, i) for f in FAMILIES for i in range(HEALTHY_PER_FAMILY)]
            + [negative_loss_healthy(i) for i in range(NEGATIVE_LOSS_HEALTHY)])


def faulty_specs() -> list[Spec]:
    out = []
    for fault, (families, count) in FAULTS.items():
        seen: Counter = Counter()
        for j in range(count):
            fam = families[j % len(families)]
            out.append(inject(fault, fam, seen[fam]))
            seen[fam] += 1
    return out


def all_specs() -> list[Spec]:
    specs = healthy_specs() + faulty_specs()
    ids = [s.id for s in specs]
    assert len(set(ids)) == len(ids), "duplicate spec ids"
    return specs


def fast_subset(specs: list[Spec] | None = None) -> list[Spec]:
    """About 20 runs: one faulty run of every class (each from a different family where it can be),
    then healthy runs for the families not yet covered, favouring short ones."""
    specs = specs if specs is not None else all_specs()
    by_id = {s.id: s for s in specs}
    chosen: list[Spec] = []
    families_seen: set[str] = set()
    for fault in FAULT_CLASSES:
        cands = [s for s in specs if s.fault == fault]
        cands.sort(key=lambda s: (s.family in families_seen, s.epochs, s.id))
        chosen.append(cands[0])
        families_seen.add(cands[0].family)
    for fam in FAMILIES:
        healthy = sorted((s for s in specs if s.healthy and s.family == fam and "-h" == s.id[len(fam):len(fam) + 2]),
                         key=lambda s: (s.epochs, s.id))
        if fam not in families_seen or len(chosen) < FAST_SUBSET_SIZE:
            chosen.append(healthy[0])
            families_seen.add(fam)
        if len(chosen) >= FAST_SUBSET_SIZE and families_seen >= set(FAMILIES):
            break
    return [by_id[s.id] for s in chosen]


def summary(specs: list[Spec]) -> str:
    lines = []
    healthy = [s for s in specs if s.healthy]
    faulty = [s for s in specs if not s.healthy]
    lines.append(f"{len(specs)} runs: {len(healthy)} healthy, {len(faulty)} faulty "
                 f"({len({s.fault for s in faulty})} fault classes)")
    fam_h, fam_f = Counter(s.family for s in healthy), Counter(s.family for s in faulty)
    lines.append("family        healthy  faulty")
    for f in FAMILIES:
        lines.append(f"  {f:12s} {fam_h[f]:7d} {fam_f[f]:7d}")
    opt_h, opt_f = Counter(s.optimizer for s in healthy), Counter(s.optimizer for s in faulty)
    lines.append("optimizer     healthy  faulty")
    for o in OPTIMIZERS:
        lines.append(f"  {o:12s} {opt_h[o]:7d} {opt_f[o]:7d}")
    lines.append("fault class           runs  mid-run  families")
    for c in FAULT_CLASSES:
        cs = [s for s in faulty if s.fault == c]
        lines.append(f"  {c:20s} {len(cs):4d} {sum(s.onset_epoch > 1 for s in cs):8d}  "
                     f"{len({s.family for s in cs})}")
    sched = Counter(s.schedule for s in healthy)
    lines.append("healthy: schedules " + ", ".join(f"{k} {v}" for k, v in sorted(sched.items()))
                 + f"; early stopping {sum('early_stopping' in s.callbacks for s in healthy)}"
                 + f"; mixed_float16 {sum(s.mixed_precision for s in healthy)}"
                 + f"; batch records (freq=N) {sum(s.freq != 'epoch' for s in healthy)}"
                 + f" ({sum(s.freq != 'epoch' and s.steps_per_epoch % s.freq == 0 for s in healthy)} dividing)"
                 + f"; regularised {sum(bool(s.regularizer) for s in healthy)}"
                 + f"; dropout {sum(s.dropout > 0 for s in healthy)}")
    lines.append("healthy: batch sizes " + ", ".join(
        f"{k}: {v}" for k, v in sorted(Counter(s.batch_size for s in healthy).items()))
                 + "; initialisers " + ", ".join(
        f"{k} {v}" for k, v in sorted(Counter(s.init for s in healthy).items())))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="print every spec as JSON, one a line")
    ap.add_argument("--subset", choices=["fast"], help="only the fast subset")
    args = ap.parse_args(argv)
    specs = all_specs()
    if args.subset == "fast":
        specs = fast_subset(specs)
    if args.list:
        for s in specs:
            print(json.dumps(s.to_dict()))
    else:
        print(summary(specs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
