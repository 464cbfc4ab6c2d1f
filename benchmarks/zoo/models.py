"""Data, models and fault injection for the run zoo (imports Keras: worker processes only).

``build(spec)`` turns a :class:`~specs.Spec` into everything one training run
needs: generated data (numpy RNG seeded by the spec, nothing downloaded), a
compiled model whose every layer is named (tensor paths do not depend on
what the process built before), the fit arguments and callbacks, the
"phases" of training (two ``fit`` calls for faults injected between them),
which tensors the fault lives in, and what the probe should look at.

The fault is injected here and nowhere else; the healthy configuration
around it is the spec's.  Every family builder takes a :class:`Ctx` that
hands out per-layer initialisers, regularisers and activations, so a fault
that changes one layer (a bias of -4, a regulariser with the wrong sign)
changes that layer only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

import keras
from keras import layers, ops

from specs import Spec


# --------------------------------------------------------------------------- data


def tabular(rng, n, d, classes, separable=False):
    """Gaussian blobs through a random nonlinearity: integer labels, a little overlap."""
    if separable:
        x = rng.standard_normal((n, d))
        w = rng.standard_normal((d, classes))
        y = np.argmax(x @ w, axis=1)
        return x.astype(np.float32), y.astype(np.int32)
    centers = rng.standard_normal((classes, d)) * 1.5
    y = rng.integers(0, classes, n)
    x = centers[y] / math.sqrt(d) * 2 + rng.standard_normal((n, d))
    x = x + 0.3 * np.tanh(x @ rng.standard_normal((d, d)) / math.sqrt(d))
    return x.astype(np.float32), y.astype(np.int32)


def regression(rng, n, d, outputs=1, scale=1.0, noise=0.05):
    x = rng.standard_normal((n, d))
    w1 = rng.standard_normal((d, 8))
    w2 = rng.standard_normal((8, outputs))
    y = np.tanh(x @ w1 / math.sqrt(d)) @ w2 / math.sqrt(8) + noise * rng.standard_normal((n, outputs))
    return x.astype(np.float32), (scale * y).astype(np.float32)


def images(rng, n, size, channels, classes=4):
    """Oriented gratings in noise: the class is the orientation (0, 45, 90, 135 degrees), with a
    random frequency and phase, in one random channel.  Translation-invariant, so conv nets with
    global pooling learn it as readily as ones with a dense head."""
    y = rng.integers(0, classes, n).astype(np.int32)
    theta = y * np.pi / classes
    f = rng.uniform(0.15, 0.3, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    g = np.sin(2 * np.pi * f[:, None, None] * (np.cos(theta)[:, None, None] * i + np.sin(theta)[:, None, None] * j)
               + phase[:, None, None])
    x = 0.5 * rng.standard_normal((n, size, size, channels))
    ch = rng.integers(0, channels, n)
    x[np.arange(n), :, :, ch] += g
    return x.astype(np.float32), y


def real_sequences(rng, n, length, features, classes):
    """Noise with a drift on the class's feature during a random window."""
    x = rng.standard_normal((n, length, features)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    w = max(2, length // 3)
    for i, c in enumerate(y):
        t0 = rng.integers(0, length - w + 1)
        x[i, t0:t0 + w, c % features] += 1.0
    return x, y


def token_groups(rng, n, length, vocab, classes):
    """Tokens 1..vocab-1 in `classes` groups; the class is the most frequent group."""
    x = rng.integers(1, vocab, (n, length))
    groups = (x - 1) * classes // (vocab - 1)
    counts = np.stack([(groups == g).sum(1) for g in range(classes)], 1)
    counts = counts + 0.1 * rng.standard_normal(counts.shape)
    y = counts.argmax(1)
    return x.astype(np.int32), y.astype(np.int32)


def token_bag(rng, n, length, vocab, classes, separable=False):
    """Padded token sequences (0 = padding; the top quarter of ids never occurs); each token has
    a score, the class is the quantile of the mean score."""
    used = max(8, vocab * 3 // 4)
    score = rng.standard_normal(vocab)
    x = np.zeros((n, length), dtype=np.int32)
    lengths = rng.integers(3, length + 1, n)
    for i, k in enumerate(lengths):
        x[i, :k] = rng.integers(1, used, k)
    mean = np.array([score[row[row > 0]].mean() for row in x])
    if separable:
        y = (mean > np.median(mean)).astype(np.int32)
    else:
        edges = np.quantile(mean, np.linspace(0, 1, classes + 1)[1:-1])
        y = np.searchsorted(edges, mean).astype(np.int32)
    return x, y


def ratings(rng, n, users, items, dim=3):
    u = rng.integers(0, users, n)
    i = rng.integers(0, items, n)
    pu, qi = rng.standard_normal((users, dim)), rng.standard_normal((items, dim))
    y = (pu[u] * qi[i]).sum(1) / math.sqrt(dim) + 0.1 * rng.standard_normal(n)
    return [u.astype(np.int32), i.astype(np.int32)], y.astype(np.float32)[:, None]


def manifold(rng, n, d, rank=3, sigmoid=False):
    z = rng.standard_normal((n, rank))
    a = rng.standard_normal((rank, d))
    x = np.tanh(z @ a / math.sqrt(rank)) + 0.05 * rng.standard_normal((n, d))
    if sigmoid:
        x = 1 / (1 + np.exp(-2 * x))
    return x.astype(np.float32)


# --------------------------------------------------------------------------- building blocks


class WrongSignRegularizer(keras.regularizers.Regularizer):
    """A hand-written L2 (or L1) penalty whose sign is flipped: it rewards large weights.

    The strength is a variable (0 before the fault's onset epoch), so a fault
    can start mid-run: "the regulariser is switched on at epoch k".
    """

    def __init__(self, strength, kind="l2"):
        self.strength = strength
        self.kind = kind

    def __call__(self, w):
        penalty = ops.sum(ops.square(w)) if self.kind == "l2" else ops.sum(ops.abs(w))
        return -self.strength * penalty          # BUG: should be +

    def get_config(self):
        return {"kind": self.kind}


def _healthy_regularizer(spec: Spec):
    if not spec.regularizer:
        return None
    kind, value = spec.regularizer.split(":")
    v = float(value)
    return {"l1": keras.regularizers.L1(v), "l2": keras.regularizers.L2(v),
            "l1l2": keras.regularizers.L1L2(l1=v / 10, l2=v)}[kind]


def _initializer(name: str, seed: int):
    if name == "small_normal":
        return keras.initializers.RandomNormal(stddev=0.05, seed=seed)
    if name == "truncated_normal":   # fan-average scaled (Keras' TruncatedNormal is a fixed 0.05)
        return keras.initializers.VarianceScaling(1.0, "fan_avg", "truncated_normal", seed=seed)
    return keras.initializers.get({"class_name": _INIT_CLASS[name], "config": {"seed": seed}})


_INIT_CLASS = {"glorot_uniform": "GlorotUniform", "glorot_normal": "GlorotNormal",
               "he_normal": "HeNormal", "he_uniform": "HeUniform", "lecun_normal": "LecunNormal",
               "orthogonal": "Orthogonal"}


@dataclass
class Ctx:
    """Per-layer settings for one build: the healthy configuration plus the fault's target."""

    spec: Spec
    target: str = ""                 # the layer the fault lives in
    fault_vars: dict = field(default_factory=dict)
    act_layers: list = field(default_factory=list)   # (layer name, activation) to probe
    _seed: int = 0

    def kinit(self, name):
        self._seed += 1
        init = self.spec.init
        if init == "orthogonal" and name.startswith(("conv", "res")):
            init = "glorot_uniform"   # orthogonal wants 2-D kernels: conv layers fall back
        return _initializer(init, self.spec.seed * 100 + self._seed)

    def kreg(self, name):
        if self.spec.fault == "wrong-sign-reg" and name == self.target:
            v = self.fault_vars.setdefault(
                "reg_strength", keras.Variable(0.0, trainable=False, name="zoo_reg_strength"))
            return WrongSignRegularizer(v, "l1" if self.spec.variant.startswith("l1") else "l2")
        return _healthy_regularizer(self.spec)

    def binit(self, name):
        if self.spec.fault == "dead-relu" and self.spec.variant == "bias" and name == self.target:
            return keras.initializers.Constant(self.spec.arch["dead_bias"])
        return "zeros"

    def dense(self, units, name, act=None, **kw):
        if act:
            self.act_layers.append((name, act))
        return layers.Dense(units, activation=act, name=name, kernel_initializer=self.kinit(name),
                            kernel_regularizer=self.kreg(name), bias_initializer=self.binit(name), **kw)

    def conv(self, filters, name, act=None, **kw):
        if act:
            self.act_layers.append((name, act))
        return layers.Conv2D(filters, 3, padding="same", activation=act, name=name,
                             kernel_initializer=self.kinit(name), kernel_regularizer=self.kreg(name),
                             bias_initializer=self.binit(name), **kw)

    def drop(self, name):
        d = self.spec.dropout
        return layers.Dropout(d, name=name, seed=self.spec.seed) if d > 0 else None


def _out_dense(ctx, units, name, act=None):
    return layers.Dense(units, activation=act, name=name, dtype="float32",
                        kernel_initializer=ctx.kinit(name), kernel_regularizer=ctx.kreg(name))


@dataclass
class Task:
    """What the model is trained on and how its loss is judged."""

    x: object
    y: object
    loss: object                     # compile loss (str, callable or dict)
    kind: str                        # sparse_ce, binary_ce, regression, multi
    classes: int | None = None
    const_loss: float | None = None  # loss of the best constant predictor (ln C for balanced CE)


@dataclass
class Built:
    model: object
    task: Task
    target: str                      # the fault's layer ("" when it has none)
    fault_tensors: list              # glob patterns over recorded tensor paths
    act_layers: list                 # (layer name, activation) to probe
    probe_model: object              # model whose layers act_layers names
    callbacks: list
    phases: list                     # [(initial_epoch, epochs, y, between)]: one fit() each
    fault_vars: dict
    note: str = ""


# --------------------------------------------------------------------------- family builders


def _seq(name, inputs, stack):
    return keras.Sequential([inputs] + [l for l in stack if l is not None], name=name)


def _ce_task(x, y, classes, *, logits=False, binary=False):
    if binary:
        pos = float(np.mean(y))
        const = -(pos * math.log(pos) + (1 - pos) * math.log(1 - pos)) if 0 < pos < 1 else 0.0
        return Task(x, y.astype(np.float32)[:, None],
                    keras.losses.BinaryCrossentropy(from_logits=logits), "binary_ce", 2, const)
    freq = np.bincount(y, minlength=classes) / len(y)
    const = float(-(freq[freq > 0] * np.log(freq[freq > 0])).sum())
    return Task(x, y, keras.losses.SparseCategoricalCrossentropy(from_logits=logits), "sparse_ce",
                classes, const)


def _reg_task(x, y, loss):
    if loss == "mae":
        const = float(np.mean(np.abs(y - np.median(y, axis=0))))
    elif loss == "huber":
        r = y - np.median(y, axis=0)
        const = float(np.mean(np.where(np.abs(r) <= 1, 0.5 * r * r, np.abs(r) - 0.5)))
    else:
        const = float(np.mean(np.var(y, axis=0)))
    return Task(x, y, loss, "regression", None, const)


def _deep(a):
    return a.get("deep", 0)


def build_mlp(spec, ctx, rng):
    a = spec.arch
    C, d = a["classes"], a["d"]
    binary = C == 2
    x, y = tabular(rng, spec.n, d, C, separable=a.get("separable", False))
    if a.get("depth") == 0:          # linear model (oscillation)
        stack = []
    else:
        depth = _deep(a) or a["depth"]
        width = a["width"]
        stack = []
        for i in range(1, depth + 1):
            stack.append(ctx.dense(width, f"hidden{i}", a["act"]))
            if a.get("bn"):
                stack.append(layers.BatchNormalization(name=f"bn{i}"))
            stack.append(ctx.drop(f"drop{i}"))
    logits = a.get("logits", False)
    out_act = None if logits else ("sigmoid" if binary else "softmax")
    stack.append(_out_dense(ctx, 1 if binary else C, "out", out_act))
    model = _seq("model", keras.Input((d,), name="x"), stack)
    return model, _ce_task(x, y, C, logits=logits, binary=binary)


def build_regression(spec, ctx, rng):
    a = spec.arch
    k = a.get("outputs", 1)
    x, y = regression(rng, spec.n, a["d"], k, scale=a.get("scale", 1.0) * a.get("target_scale", 1.0))
    stack = []
    if a.get("unscaled"):
        x[:, 0] *= a["unscaled"]
    if a.get("depth", 1) > 0:
        depth = _deep(a) or a["depth"]
        for i in range(1, depth + 1):
            stack.append(ctx.dense(a["width"], f"hidden{i}", a["act"]))
            stack.append(ctx.drop(f"drop{i}"))
    loss = a.get("loss", "mse")
    stack.append(_out_dense(ctx, 2 if loss == "gaussian_nll" else k, "out"))
    model = _seq("model", keras.Input((a["d"],), name="x"), stack)
    if loss == "gaussian_nll":
        return model, Task(x, y, gaussian_nll, "regression", None, None)
    if loss == "cosine_similarity":
        return model, Task(x, y, keras.losses.CosineSimilarity(), "regression", None, None)
    return model, _reg_task(x, y, loss)


def build_cnn(spec, ctx, rng):
    a = spec.arch
    size, ch = a["size"], a["channels"]
    x, y = images(rng, spec.n, size, ch, a["classes"])
    stack = []
    convs = _deep(a) or a["convs"]
    for i in range(1, convs + 1):
        if a.get("bn"):
            stack.append(ctx.conv(a["filters"] * (1 + (i > 1)), f"conv{i}"))
            stack.append(layers.BatchNormalization(name=f"bn{i}"))
            stack.append(layers.Activation(a["act"], name=f"act{i}"))
            ctx.act_layers.append((f"act{i}", a["act"]))
        else:
            stack.append(ctx.conv(a["filters"] * (1 + (i > 1)), f"conv{i}", a["act"]))
        if i == 1 and not _deep(a):
            stack.append(layers.MaxPooling2D(name="pool1") if a["pool"] == "max"
                         else layers.AveragePooling2D(2, name="pool1"))
    stack.append(layers.GlobalAveragePooling2D(name="gap") if a.get("head", "gap") == "gap"
                 else layers.Flatten(name="flatten"))
    stack.append(ctx.drop("drop"))
    if a.get("dense_head"):
        stack.append(ctx.dense(16, "fc", "relu"))
    stack.append(_out_dense(ctx, a["classes"], "out", "softmax"))
    model = _seq("model", keras.Input((size, size, ch), name="image"), stack)
    return model, _ce_task(x, y, a["classes"])


def build_resnet(spec, ctx, rng):
    a = spec.arch
    x, y = images(rng, spec.n, a["size"], 1, a["classes"])
    f, act = a["filters"], a["act"]
    inp = keras.Input((a["size"], a["size"], 1), name="image")
    h = ctx.conv(f, "stem")(inp)
    h = layers.BatchNormalization(name="stem_bn")(h)
    h = layers.Activation(act, name="stem_act")(h)
    ctx.act_layers.append(("stem_act", act))
    for b in range(1, a["blocks"] + 1):
        r = ctx.conv(f, f"res{b}_conv1")(h)
        r = layers.BatchNormalization(name=f"res{b}_bn1")(r)
        r = layers.Activation(act, name=f"res{b}_act1")(r)
        ctx.act_layers.append((f"res{b}_act1", act))
        r = ctx.conv(f, f"res{b}_conv2")(r)
        r = layers.BatchNormalization(name=f"res{b}_bn2")(r)
        h = layers.Add(name=f"res{b}_add")([h, r])
        h = layers.Activation(act, name=f"res{b}_out")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    d = ctx.drop("drop")
    if d is not None:
        h = d(h)
    out = _out_dense(ctx, a["classes"], "out", "softmax")(h)
    return keras.Model(inp, out, name="model"), _ce_task(x, y, a["classes"])


def build_rnn(spec, ctx, rng):
    a = spec.arch
    x, y = real_sequences(rng, spec.n, a["length"], a["features"], a["classes"])
    cell = {"lstm": layers.LSTM, "gru": layers.GRU, "simplernn": layers.SimpleRNN}[spec.family]
    kw = {}
    if spec.fault == "exploding-rnn":
        kw["recurrent_initializer"] = keras.initializers.Orthogonal(gain=a["gain"], seed=spec.seed)
        kw["activation"] = a["rnn_act"]
    elif a.get("act") == "relu":
        kw["activation"] = "relu"
    stack = []
    n_layers = 2 if a.get("stacked") else 1
    for i in range(1, n_layers + 1):
        name = f"rnn{i}"
        rnn = cell(a["units"], name=name, return_sequences=i < n_layers,
                   kernel_initializer=ctx.kinit(name), kernel_regularizer=ctx.kreg(name),
                   dropout=spec.dropout, seed=spec.seed, **kw)
        if a.get("bidirectional"):
            rnn = layers.Bidirectional(rnn, name=f"bi{i}")
        stack.append(rnn)
    stack.append(_out_dense(ctx, a["classes"], "out", "softmax"))
    model = _seq("model", keras.Input((a["length"], a["features"]), name="seq"), stack)
    return model, _ce_task(x, y, a["classes"])


class PositionEmbedding(layers.Layer):
    def __init__(self, length, dim, **kw):
        super().__init__(**kw)
        self.length, self.dim = length, dim

    def build(self, input_shape):
        self.pos = self.add_weight(shape=(self.length, self.dim), name="embeddings",
                                   initializer=keras.initializers.RandomNormal(stddev=0.05))

    def call(self, x):
        return x + ops.cast(self.pos, x.dtype)


def build_attention(spec, ctx, rng):
    a = spec.arch
    x, y = token_groups(rng, spec.n, a["length"], a["vocab"], a["classes"])
    dim = a["dim"]
    inp = keras.Input((a["length"],), dtype="int32", name="tokens")
    h = layers.Embedding(a["vocab"], dim, name="embed")(inp)
    h = PositionEmbedding(a["length"], dim, name="pos")(h)
    for b in range(1, a["blocks"] + 1):
        pre = a.get("pre_norm")
        z = layers.LayerNormalization(name=f"ln{b}a")(h) if pre else h
        att = layers.MultiHeadAttention(a["heads"], max(2, dim // a["heads"]), name=f"mha{b}",
                                        kernel_initializer=ctx.kinit(f"mha{b}"))(z, z)
        h = layers.Add(name=f"add{b}a")([h, att])
        if not pre:
            h = layers.LayerNormalization(name=f"ln{b}a")(h)
        z = layers.LayerNormalization(name=f"ln{b}b")(h) if pre else h
        z = ctx.dense(a["ffn"], f"ffn{b}_1", "relu")(z)
        z = ctx.dense(dim, f"ffn{b}_2")(z)
        d = ctx.drop(f"drop{b}")
        if d is not None:
            z = d(z)
        h = layers.Add(name=f"add{b}b")([h, z])
        if not pre:
            h = layers.LayerNormalization(name=f"ln{b}b")(h)
    h = layers.GlobalAveragePooling1D(name="pool")(h)
    out = _out_dense(ctx, a["classes"], "out", "softmax")(h)
    return keras.Model(inp, out, name="model"), _ce_task(x, y, a["classes"])


def build_embedding(spec, ctx, rng):
    a = spec.arch
    if a["kind"] == "twotower":
        users, items = a["vocab"] // 2, a["vocab"]
        (u, i), y = ratings(rng, spec.n, users, items)
        uin = keras.Input((), dtype="int32", name="user")
        iin = keras.Input((), dtype="int32", name="item")
        ue = layers.Embedding(users, a["dim"], name="user_embed",
                              embeddings_regularizer=ctx.kreg("user_embed"))(uin)
        ie = layers.Embedding(items, a["dim"], name="item_embed",
                              embeddings_regularizer=ctx.kreg("item_embed"))(iin)
        h = layers.Concatenate(name="concat")([ue, ie, layers.Multiply(name="mul")([ue, ie])])
        h = ctx.dense(16, "fc1", "relu")(h)
        out = _out_dense(ctx, 1, "out")(h)
        return keras.Model([uin, iin], out, name="model"), _reg_task([u, i], y, "mse")
    C = a["classes"]
    binary = C == 2
    x, y = token_bag(rng, spec.n, a["length"], a["vocab"], C, separable=a.get("separable", False))
    stack = [layers.Embedding(a["vocab"], a["dim"], name="embed", mask_zero=a["mask_zero"],
                              embeddings_regularizer=ctx.kreg("embed")),
             layers.GlobalAveragePooling1D(name="pool"),
             ctx.dense(16, "fc1", "relu"), ctx.drop("drop"),
             _out_dense(ctx, 1 if binary else C, "out", "sigmoid" if binary else "softmax")]
    model = _seq("model", keras.Input((a["length"],), dtype="int32", name="tokens"), stack)
    return model, _ce_task(x, y, C, binary=binary)


def build_autoencoder(spec, ctx, rng):
    a = spec.arch
    sig = a.get("out") == "sigmoid"
    x = manifold(rng, spec.n, a["d"], sigmoid=sig) * a.get("target_scale", 1.0)
    if a.get("unscaled"):
        x[:, 0] *= a["unscaled"]
    act, hdim = a["act"], a["hidden"]
    stack = [ctx.dense(hdim, "enc1", act), ctx.dense(a["bottleneck"], "code", act if act != "relu" else None),
             ctx.dense(hdim, "dec1", act), _out_dense(ctx, a["d"], "recon", "sigmoid" if sig else None)]
    if _deep(a):
        stack = ([ctx.dense(hdim, f"enc{i}", act) for i in range(1, _deep(a) // 2 + 1)]
                 + [ctx.dense(a["bottleneck"], "code", act)]
                 + [ctx.dense(hdim, f"dec{i}", act) for i in range(1, _deep(a) // 2 + 1)]
                 + [_out_dense(ctx, a["d"], "recon")])
    model = _seq("model", keras.Input((a["d"],), name="x"), stack)
    return model, _reg_task(x, x.copy(), a.get("loss", "mse"))


def build_multioutput(spec, ctx, rng):
    a = spec.arch
    C, d = a["classes"], a["d"]
    x, yc = tabular(rng, spec.n, d, C)
    yr = (np.tanh(x @ rng.standard_normal((d, 1)) / math.sqrt(d)) * a.get("target_scale", 1.0)
          ).astype(np.float32)
    inp = keras.Input((d,), name="x")
    h = inp
    depth = _deep(a) or a["depth"]
    for i in range(1, depth + 1):
        h = ctx.dense(a["width"], f"trunk{i}", a["act"])(h)
        dr = ctx.drop(f"drop{i}")
        if dr is not None:
            h = dr(h)
    cls = _out_dense(ctx, C, "cls", "softmax")(h)
    reg_h = ctx.dense(8, "reg_hidden", a["act"])(h)
    reg = _out_dense(ctx, 1, "reg")(reg_h)
    model = keras.Model(inp, {"cls": cls, "reg": reg}, name="model")
    loss = {"cls": keras.losses.SparseCategoricalCrossentropy(), "reg": keras.losses.MeanSquaredError()}
    return model, Task(x, {"cls": yc, "reg": yr}, loss, "multi", C, None)


BUILDERS = {"mlp": build_mlp, "regression": build_regression, "cnn": build_cnn, "resnet": build_resnet,
            "lstm": build_rnn, "gru": build_rnn, "simplernn": build_rnn, "attention": build_attention,
            "embedding": build_embedding, "autoencoder": build_autoencoder,
            "multioutput": build_multioutput}


def fault_target(spec: Spec) -> str:
    """The layer a layer-level fault lives in, per family."""
    f, a = spec.family, spec.arch
    first = {"mlp": "hidden1", "regression": "hidden1", "cnn": "conv1", "resnet": "res1_conv1",
             "lstm": "rnn1", "gru": "rnn1", "simplernn": "rnn1", "attention": "ffn1_1",
             "embedding": "embed" if a.get("kind") != "twotower" else "user_embed",
             "autoencoder": "enc1", "multioutput": "trunk1"}[f]
    if spec.fault == "dead-relu":
        return {"mlp": "hidden2", "regression": "hidden2", "cnn": "conv1", "autoencoder": "dec1",
                "multioutput": "trunk2"}[f]
    if f in ("lstm", "gru", "simplernn") and a.get("bidirectional"):
        return "bi1"
    if spec.fault == "disconnected" and f == "embedding":
        return "embed"
    if spec.fault == "frozen-trap" and f == "attention":
        return "mha1"
    if f in ("mlp", "regression") and a.get("depth", 1) == 0:
        return "out"
    return first


# --------------------------------------------------------------------------- optimizers, schedules


def optimizer(spec: Spec, lr):
    o = spec.optimizer
    if o == "sgd":
        opt = keras.optimizers.SGD(lr)
    elif o == "sgdm":
        opt = keras.optimizers.SGD(lr, momentum=0.9, nesterov=spec.seed % 2 == 0)
    elif o == "adam":
        opt = keras.optimizers.Adam(lr)
    elif o == "adamw":
        opt = keras.optimizers.AdamW(lr, weight_decay=spec.weight_decay)
    elif o == "rmsprop":
        opt = keras.optimizers.RMSprop(lr)
    elif o == "adagrad":
        opt = keras.optimizers.Adagrad(lr)
    elif o == "nadam":
        opt = keras.optimizers.Nadam(lr)
    else:
        raise ValueError(o)
    return opt


def healthy_lr(spec: Spec, steps: int):
    """The learning rate (or schedule object) of the healthy configuration."""
    lr, s, E = spec.lr, spec.schedule, spec.epochs
    if s in ("constant", "plateau"):
        return lr
    if s == "warmup_cosine":
        w = 1 if E <= 6 else 2
        return keras.optimizers.schedules.CosineDecay(
            lr * 0.05, decay_steps=max(1, (E - w) * steps), alpha=0.05, warmup_target=lr,
            warmup_steps=w * steps)
    if s == "exp_decay":
        rate = 0.5 + 0.4 * ((spec.seed % 5) / 4)
        return keras.optimizers.schedules.ExponentialDecay(lr, decay_steps=steps, decay_rate=rate)
    if s == "step":
        b = [int(E * steps * 0.5), int(E * steps * 0.75)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(b, [lr, lr / 10, lr / 100])
    raise ValueError(s)


class EpochLR(keras.callbacks.Callback):
    """Sets the learning rate at the start of every epoch from ``fn(epoch)`` (epoch from 0)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = float(self.fn(epoch))


class SetAt(keras.callbacks.Callback):
    """Assigns ``value`` to a variable at the start of epoch ``epoch0`` (from 0): a fault switched on."""

    def __init__(self, var, epoch0, value, before=None):
        super().__init__()
        self.var, self.epoch0, self.value, self.before = var, epoch0, value, before

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= self.epoch0:
            self.var.assign(self.value)
        elif self.before is not None:
            self.var.assign(self.before)


# --------------------------------------------------------------------------- losses for faults


def handwritten_bce(y_true, y_pred):
    """Binary cross-entropy without clipping: 0 * log(0) is NaN once p rounds to 1."""
    y_true = ops.cast(y_true, y_pred.dtype)
    return -ops.mean(y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred))


def handwritten_ce(y_true, y_pred):
    """Categorical cross-entropy over softmax probabilities without clipping: once a
    probability underflows to exactly 0, onehot * log(0) = 0 * -inf = NaN."""
    onehot = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), ops.shape(y_pred)[-1])
    return -ops.mean(ops.sum(onehot * ops.log(y_pred), axis=-1))


def gaussian_nll_relu(y_true, y_pred):
    """Gaussian negative log-likelihood whose variance is a ReLU output: log(0) and x/0
    as soon as the variance head outputs a non-positive value."""
    mu, var = y_pred[:, :1], ops.relu(y_pred[:, 1:2])
    return ops.mean(ops.log(var) + ops.square(y_true[:, :1] - mu) / var)


def gaussian_nll(y_true, y_pred):
    """Gaussian negative log-likelihood with a softplus variance head: a healthy custom loss that
    goes below 0 (once the learnt variance is under 1/(2 pi e)) and converges there."""
    mu, var = y_pred[:, :1], ops.softplus(y_pred[:, 1:2]) + 1e-4
    return ops.mean(0.5 * ops.log(var) + 0.5 * ops.square(y_true[:, :1] - mu) / var)


class SignedLoss(keras.losses.Loss):
    """``sign * base(y, p)``; the sign variable flips to -1 at the fault's onset: gradient ascent."""

    def __init__(self, base, sign, name="signed"):
        super().__init__(name=name)
        self.base, self.sign = base, sign

    def call(self, y_true, y_pred):
        return ops.cast(self.sign, y_pred.dtype) * self.base(y_true, y_pred)


# --------------------------------------------------------------------------- custom train_step


class PartialTrainModel(keras.Model):
    """A functional model whose ``train_step`` leaves some variables out (the bug: a filter
    on the variable list meant to skip only the frozen ones)."""

    skip_ids: frozenset = frozenset()

    def train_step(self, data):
        import tensorflow as tf

        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
            scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
        variables = [v for v in self.trainable_variables if id(v) not in self.skip_ids]   # BUG
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        for m in self.metrics:
            if m.name == "loss":
                m.update_state(loss)
            elif m.name == "compile_metrics":
                m.update_state(y, y_pred)
            # per-output loss trackers (multi-output models) are updated inside compute_loss
        return {m.name: m.result() for m in self.metrics}


# --------------------------------------------------------------------------- build


def _stop_gradient_model(spec, model, target):
    """Rebuild a Sequential model with a stop_gradient after ``target``: every layer up to and
    including it is cut off from the loss."""
    inner = list(model.layers)
    k = next(i for i, l in enumerate(inner) if l.name == target)
    stack = inner[:k + 1] + [layers.Lambda(lambda t: ops.stop_gradient(t), name="stopgrad")] + inner[k + 1:]
    return keras.Sequential([keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype,
                                         name=model.inputs[0].name)] + stack, name="model"), inner[:k + 1]


def build(spec: Spec, data_seed: int | None = None) -> Built:
    """Everything one run needs.  Call after ``keras.backend.clear_session()`` and seeding.

    ``data_seed`` seeds the generated data apart from the model (default: ``spec.seed`` for
    both): the baseline benchmark trains several seeds of one configuration on the same data."""
    rng = np.random.default_rng(spec.seed if data_seed is None else data_seed)
    ctx = Ctx(spec)
    ctx.target = fault_target(spec) if spec.fault else ""
    if spec.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        keras.mixed_precision.set_global_policy("float32")
    a = spec.arch
    if spec.fault == "oscillation":
        return _build_oscillation(spec, ctx, rng)
    if spec.fault == "lr-high-nan" and spec.variant.startswith("edge"):
        return _build_edge(spec, ctx, rng)
    model, task = BUILDERS[spec.family](spec, ctx, rng)
    probe_model = model
    fault_tensors: list[str] = []
    note = ""
    E, k = spec.epochs, spec.onset_epoch
    steps = spec.steps_per_epoch
    lr = healthy_lr(spec, steps)
    callbacks: list = []
    between = None
    y_phase2 = None
    loss = task.loss
    f = spec.fault

    def layer_glob(name):
        return [f"*{name}/*"]

    if f == "lr-high-nan" or f == "lr-high":
        high = spec.lr
        if k > 1:
            base = draw_lr_for(spec)
            lr = base
            callbacks.append(EpochLR(lambda e, base=base, high=high: high if e >= k - 1 else base))
        fault_tensors = ["*"]
    elif f == "lr-spike" or (f == "dead-relu" and spec.variant == "spike"):
        factor = a.get("spike") or (30.0 if spec.variant == "x30" else 100.0)
        base = spec.lr
        lr = base
        callbacks.append(EpochLR(lambda e: base * factor if e == k - 1 else base))
        fault_tensors = ["*"] if f == "lr-spike" else layer_glob(ctx.target)
    elif f == "lr-zero":
        v = spec.variant
        D = (k - 1) * steps
        if v == "cosine-steps":
            lr = keras.optimizers.schedules.CosineDecay(spec.lr, decay_steps=D)   # steps given in epochs' place
        elif v == "polynomial":
            lr = keras.optimizers.schedules.PolynomialDecay(spec.lr, decay_steps=D, end_learning_rate=0.0)
        elif v == "piecewise":
            lr = keras.optimizers.schedules.PiecewiseConstantDecay([D - 1], [spec.lr, 0.0])
        elif v == "floordiv":
            base, warmup = spec.lr, 3
            if k == 1:
                callbacks.append(keras.callbacks.LearningRateScheduler(
                    lambda e: base * (e + 1) // warmup))          # BUG: meant base * ((e + 1) / warmup)
            else:
                drop, every = 1 // 2, k - 1                        # BUG: meant 1 / 2
                callbacks.append(keras.callbacks.LearningRateScheduler(
                    lambda e: float(base * drop ** (e // every))))
        fault_tensors = ["*"]
    elif f == "wrong-sign-reg":
        var = ctx.fault_vars["reg_strength"]
        callbacks.append(SetAt(var, k - 1, a["wrong_reg"], before=0.0))
        var.assign(a["wrong_reg"] if k == 1 else 0.0)
        fault_tensors = [f"*{ctx.target}/kernel", f"*{ctx.target}/*_cell/kernel", f"*{ctx.target}/embeddings"]
    elif f == "wrong-sign-loss":
        sign = keras.Variable(1.0 if k > 1 else -1.0, trainable=False, name="zoo_loss_sign")
        ctx.fault_vars["sign"] = sign
        callbacks.append(SetAt(sign, k - 1, -1.0, before=1.0))
        if isinstance(loss, dict):
            loss = {key: SignedLoss(keras.losses.get(l) if isinstance(l, str) else l, sign, name=f"signed_{key}")
                    for key, l in loss.items()}
        else:
            loss = SignedLoss(keras.losses.get(loss) if isinstance(loss, str) else loss, sign)
        fault_tensors = ["*"]
    elif f == "log-zero":
        if spec.variant == "bce":
            loss = handwritten_bce
        elif spec.variant == "ce":
            loss = handwritten_ce
        elif spec.variant == "log-relu":
            # the regression head gets a second output: the variance, through a ReLU in the loss
            model, task = _nll_regression(spec, ctx, rng)
            probe_model = model
            loss = gaussian_nll_relu
        fault_tensors = ["*"]
    elif f == "frozen-trap":
        target = ctx.target
        fault_tensors = layer_glob(target)

        def between(model, target=target):
            model.get_layer(target).trainable = False   # BUG: no model.compile() after this
        note = f"{target}.trainable = False after epoch {k - 1}, no compile()"
    elif f == "dead-relu":   # bias variant (the spike variant is handled with lr-spike above)
        fault_tensors = layer_glob(ctx.target)
    elif f in ("vanishing-sgd", "vanishing-adaptive"):
        fault_tensors = ["*hidden1/kernel", "*conv1/kernel", "*trunk1/kernel", "*hidden2/kernel",
                         "*conv2/kernel", "*trunk2/kernel"]
    elif f == "exploding-rnn":
        fault_tensors = ["*rnn1/*"]
    elif f == "labels-shuffled":
        perm = np.random.default_rng(spec.seed + 7).permutation(len(task.y))
        shuffled = task.y[perm]                           # BUG: x and y shuffled separately
        if k == 1:
            task.y = shuffled
        else:
            y_phase2 = shuffled
        fault_tensors = ["*"]
    elif f == "disconnected":
        target = ctx.target
        if spec.variant == "stop-gradient" and isinstance(model, keras.Sequential):
            model, cut = _stop_gradient_model(spec, model, target)
            probe_model = model
            fault_tensors = [g for l in cut for g in layer_glob(l.name) if l.weights]
        else:
            inner = model
            if isinstance(model, keras.Sequential):
                inp = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name="in")
                wrapped = PartialTrainModel(inp, inner(inp), name="wrapper")
            else:
                wrapped = PartialTrainModel(model.inputs, model.outputs, name="model")
            wrapped.skip_ids = frozenset(id(v) for v in inner.get_layer(target).trainable_variables)
            model = wrapped
            probe_model = inner
            fault_tensors = layer_glob(target)
            note = "custom train_step skips " + target
    elif f:
        raise ValueError(f)

    opt = optimizer(spec, lr)
    model.compile(opt, loss=loss, **({"loss_weights": {"cls": 1.0, "reg": spec.arch["reg_weight"]}}
                                     if spec.family == "multioutput" else {}))
    if spec.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss" if spec.validation_split else "loss", factor=0.5, patience=1,
            min_lr=1e-6, verbose=0))
    if "early_stopping" in spec.callbacks:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss" if spec.validation_split else "loss", patience=2, min_delta=1e-4))
    if f in ("frozen-trap",) or (f == "labels-shuffled" and k > 1):
        phases = [(0, k - 1, None, None), (k - 1, E, y_phase2, between)]
    else:
        phases = [(0, E, None, None)]
    return Built(model, task, ctx.target, fault_tensors, ctx.act_layers, probe_model, callbacks, phases,
                 ctx.fault_vars, note)


def draw_lr_for(spec: Spec) -> float:
    """A sane learning rate for the spec's optimizer (the healthy phase of a mid-run fault)."""
    from specs import LR_RANGE

    lo, hi = LR_RANGE[spec.optimizer]
    return math.sqrt(lo * hi)


def _nll_regression(spec, ctx, rng):
    a = spec.arch
    x, y = regression(rng, spec.n, a["d"], 1, scale=a.get("scale", 1.0))
    stack = []
    for i in range(1, max(1, a.get("depth", 1)) + 1):
        stack.append(ctx.dense(a["width"], f"hidden{i}", a["act"]))
    stack.append(_out_dense(ctx, 2, "out"))      # mean and "variance"
    model = _seq("model", keras.Input((a["d"],), name="x"), stack)
    return model, Task(x, y, gaussian_nll_relu, "regression", None, None)


def _build_oscillation(spec, ctx, rng):
    """A linear regressor on features with one left unnormalised, full-batch SGD at ``over`` times
    the stability limit 2 / lambda_max of the loss's Hessian (computed from the data)."""
    a = spec.arch
    k_out = a.get("outputs", 1)
    d = a.get("d", 8)
    x, y = regression(rng, spec.n, d, k_out, scale=a.get("scale", 1.0))
    x[:, 0] *= a["unscaled"]     # one feature left unnormalised: it sets the curvature
    xa = np.concatenate([x, np.ones((len(x), 1), np.float32)], 1).astype(np.float64)
    # mse = mean over samples and outputs of (x w - y)^2: Hessian 2/(n k) X^T X per output
    lam = 2.0 / (len(x) * k_out) * np.linalg.eigvalsh(xa.T @ xa).max()
    limit = 2.0 / lam
    over = a["over"]
    model = _seq("model", keras.Input((d,), name="x"), [_out_dense(ctx, k_out, "linear")])
    k = spec.onset_epoch
    model.compile(keras.optimizers.SGD(over * limit), loss="mse")
    task = _reg_task(x, y, "mse")
    if k > 1:
        # Until the onset the feature is normalised (the step is stable, 1/unscaled^2 of the limit
        # along it); from epoch k the pipeline stops normalising it.
        normalised = x.copy()
        normalised[:, 0] /= a["unscaled"]
        task.x = normalised
        phases = [(0, k - 1, None, None), (k - 1, spec.epochs, None, None, x)]
        note = f"lr = {over} x the stability limit {limit:.4g} of the unnormalised data, from epoch {k}"
    else:
        phases = [(0, spec.epochs, None, None)]
        note = f"lr = {over} x stability limit {limit:.4g}"
    return Built(model, task, "linear", ["*linear/kernel"], [], model, [], phases, {}, note=note)


def _build_edge(spec, ctx, rng):
    """Mini-batch SGD on a linear regressor at ``over`` times its stability limit: the error along
    the top direction grows by about 2 over - 1 per step, so the weights grow geometrically for a
    few records before the loss overflows (mid-run: a sane step until the onset epoch)."""
    a = spec.arch
    d = a.get("d", 8)
    x, y = regression(rng, spec.n, d, 1, scale=a.get("scale", 1.0) * a.get("target_scale", 1.0))
    xa = np.concatenate([x, np.ones((len(x), 1), np.float32)], 1).astype(np.float64)
    lam = 2.0 / len(x) * np.linalg.eigvalsh(xa.T @ xa).max()
    limit = 2.0 / lam
    over = a["over"]
    model = _seq("model", keras.Input((d,), name="x"), [_out_dense(ctx, 1, "linear")])
    k = spec.onset_epoch
    callbacks = []
    if k > 1:
        callbacks.append(EpochLR(lambda e: over * limit if e >= k - 1 else 0.3 * limit))
    model.compile(keras.optimizers.SGD(over * limit if k <= 1 else 0.3 * limit), loss="mse")
    return Built(model, _reg_task(x, y, "mse"), "linear", ["*"], [], model, callbacks,
                 [(0, spec.epochs, None, None)], {}, note=f"lr = {over} x stability limit {limit:.4g}")
