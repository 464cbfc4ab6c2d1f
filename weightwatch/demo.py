"""``weightwatch demo``: a healthy run and a broken one, checked live and afterwards.

Everything is generated here (nothing is downloaded): a small classification
problem, one model trained with a sensible learning rate and one with a
learning rate ten times too high.  The live checks halt the broken run at the
first record that fails; then both runs get the same report
``weightwatch check`` prints.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .errors import ExitCode

EPOCHS = 12


def _data(np, n=1024, seed=0):
    """Three interleaved noisy spirals: small, and not linearly separable."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 3, n)
    t = rng.uniform(0.2, 1.0, n)
    angle = 4.0 * t + k * (2 * np.pi / 3)
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], 1) + rng.normal(0, 0.05, (n, 2))
    features = np.concatenate([x, x ** 2, x[:, :1] * x[:, 1:]], 1).astype("float32")
    return features, k.astype("int32")


def _model(keras, learning_rate):
    model = keras.Sequential([
        keras.Input((5,)),
        keras.layers.Dense(64, activation="relu", name="hidden1"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dropout(0.1, name="dropout"),
        keras.layers.Dense(64, activation="relu", name="hidden2"),
        keras.layers.Dense(3, name="logits"),
    ], name="spirals")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def run_demo(out_dir, console) -> ExitCode:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    started = time.perf_counter()
    console.print("[bold]weightwatch demo[/]: training two small models on generated data "
                  "(importing TensorFlow...)")
    try:
        import keras
        import numpy as np
    except ImportError:
        console.print("[red]The demo trains Keras models: pip install 'weightwatch[tensorflow]'[/]")
        return ExitCode.USAGE_ERROR

    from .checking.config import load_rules
    from .checking.engine import evaluate
    from .output.terminal import render_report, render_summary
    from .recording.keras_callback import WatchCallback
    from .run.reader import open_run

    out = Path(out_dir)
    x, y = _data(np)
    rules = load_rules(use_project_config=False)
    runs = {}
    for name, lr, story in (
        ("healthy", 0.05, "learning rate 0.05"),
        ("broken", 0.5, "learning rate 0.5 - ten times too high"),
    ):
        keras.utils.set_random_seed(1)
        model = _model(keras, lr)
        console.print(f"\n[bold]{name}[/] run ({story}), up to {EPOCHS} epochs -> {out / name}")
        cb = WatchCallback(out / name, overwrite=True, rules=rules, verbose=1)
        history = model.fit(x, y, epochs=EPOCHS, batch_size=64, verbose=0, callbacks=[cb])
        epochs = len(history.history.get("loss", []))
        if cb.halted:
            console.print(f"[red]halted after epoch {epochs}[/]: {cb.halted}")
        else:
            acc = history.history.get("accuracy", [float("nan")])[-1]
            console.print(f"[green]trained all {epochs} epochs[/], accuracy {acc:.2f}")
        runs[name] = (cb, model)

    console.rule("[bold]weightwatch check[/] on both runs")
    reports = [evaluate(open_run(out / name), rules) for name in runs]
    for report in reports:
        render_report(report, console)
    render_summary(reports, console, duration=time.perf_counter() - started)

    healthy_ok = not reports[0].failed
    broken_caught = bool(reports[1].failed) and runs["broken"][0].halted is not None
    console.print("\n[bold]Try next[/]")
    console.print(f"  weightwatch show {out / 'broken'}        the norms that blew up, tensor by tensor")
    console.print(f"  weightwatch check {out / 'broken'} -v    the same report; exit code 1 gates CI")
    console.print("  weightwatch rules exploding-norm          what a rule checks and why")
    console.print(f"  weightwatch.restore(model, '{out / 'broken'}')  load the last healthy weights, "
                  "lower the learning rate, resume")
    if healthy_ok and broken_caught:
        console.print("\n[green]demo ok[/]: the healthy run passed and the broken one was halted "
                      f"({time.perf_counter() - started:.0f}s)")
        return ExitCode.OK
    console.print("\n[red]demo did not go as expected[/] (healthy passed: "
                  f"{healthy_ok}, broken caught: {broken_caught})")
    return ExitCode.CHECKS_FAILED
