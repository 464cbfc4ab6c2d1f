"""Train a small model on generated data and record the run with weightwatch.

    python examples/train.py runs/ci                       # healthy: every default rule passes
    python examples/train.py runs/ci --learning-rate 1.0   # far too high: NaN at epoch 1, halted

This is the training step of the CI examples (``github-actions.yml``,
``gitlab-ci.yml``): nothing is downloaded, it takes a few seconds on a CPU, and
it exits 0 even when the live checks halt the run - gating is the next step's
job (``weightwatch check`` or ``pytest --weightwatch``).  Replace it with your
own training script: all it needs is ``weightwatch.WatchCallback(run_dir)`` in
``model.fit(callbacks=[...])``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def data(n: int = 512, seed: int = 0):
    """A noiseless linear regression problem in 8 dimensions."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    return x, (x @ rng.normal(size=(8, 1))).astype("float32")


def train(run_dir, *, learning_rate: float = 0.05, epochs: int = 5, seed: int = 0, **callback_options):
    """Fit a two-layer MLP with SGD, recording into ``run_dir``; returns the callback."""
    import keras

    import weightwatch

    keras.utils.set_random_seed(seed)
    x, y = data(seed=seed)
    model = keras.Sequential([keras.Input((8,)),
                              keras.layers.Dense(32, activation="relu", name="hidden"),
                              keras.layers.Dense(1, name="out")], name="tiny")
    model.compile(keras.optimizers.SGD(learning_rate), "mse")
    callback = weightwatch.WatchCallback(run_dir, **{"verbose": 0, "overwrite": True, **callback_options})
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=[callback])
    return callback


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="where to record the run")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    callback = train(args.run_dir, learning_rate=args.learning_rate, epochs=args.epochs)
    if callback.halted:
        print(f"weightwatch halted training: {callback.halted}")
    print(f"recorded {args.run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
