"""What one epoch-end record costs, side by side with the naive way and the floors.

Run from the repository root::

    python benchmarks/recording.py --quick          # 1M MLP, 400 tensors, conv+BN: about a minute
    python benchmarks/recording.py                  # + 10M and 50M MLPs: about five minutes
    python benchmarks/recording.py --sizes 10m,conv --reps 9
    python benchmarks/recording.py --with-check     # + the default WatchCallback (check=True)

Models (``--sizes``): ``1m``, ``10m``, ``50m`` (Dense MLPs of about 1M, 10M
and 55M parameters), ``conv`` (six Conv2D + BatchNorm blocks and a dense
head: 5M parameters in 38 tensors), ``many`` (200 Dense(64) layers: 400
small tensors, 0.8M parameters) and ``many-l2`` (the same with an L2
regulariser on every kernel, whose penalty every record adds).

For every model it measures, in one process and interleaved (every
repetition perturbs the weights once, then runs every variant on the same
weights, in a rotating order), the cost of one epoch-end record:

``ww stats``
    ``WatchCallback(run_dir, check=False).on_epoch_end(epoch)``: weightwatch's
    statistics only (fetch, statistics, deltas, snapshot JSON).
``ww +tensors``
    The same with ``save_tensors=True`` (plus one uncompressed ``.npz``).
``seed json``
    The seed note's ``WeightRecorderCallback``: ``w.tolist()`` and
    ``json.dump`` for every layer.  It is about 500x slower than the rest, so
    it runs in ``--seed-reps`` repetitions only (default 3; ``--quick`` 1)
    and not at all above ``--seed-max-params`` (default 20M, so never at
    50M: that would take about a minute and a gigabyte per record;
    ``--quick``: 2M, so not on the conv net).
``keras ckpt``
    ``keras.callbacks.ModelCheckpoint(filepath=".../ckpt.weights.h5",
    save_weights_only=True, save_freq="epoch").on_epoch_end(epoch)``.
``floor npz`` (the floor for ``save_tensors=True``)
    ``np.savez(file, **{v.path: keras.ops.convert_to_numpy(v) for v in model.weights})``.
``floor stats`` (the floor for statistics), exactly::

        for v in model.weights:
            a = keras.ops.convert_to_numpy(v)
            np.dot(a.ravel(), a.ravel())
            d = a - prev[v.path]
            np.dot(d.ravel(), d.ravel())
            prev[v.path] = a

  that is: fetch every weight, one vectorised pass over it, and the
  difference against the previous copy.  Nothing is written.
``ww check=True`` (with ``--with-check``)
    The default callback: live rule checks after the record, and the
    weights of every healthy record kept in ``healthy.npz``.

The model is compiled with Adam and its optimizer built with its slots filled
and ``iterations > 0``, as after a training step, so that a record also reads
each trainable variable's second-moment slot for ``grad_rms`` (one more fetch
and one sum per tensor) as it does in training.

Before each repetition every variable is assigned ``w + noise`` (precomputed
noise, outside the timed region), so every record sees a real update.  One
untimed warm-up repetition comes first.  Times are medians over ``--reps``
repetitions (default 7; ``--quick`` 5); the spread column is (max - min) /
median, because the machine may be shared.

``os.sync()`` runs between variants, outside the timed region, so that one
variant's dirty pages are not flushed on another's clock.  None of the timed
variants waits for the disk: ``np.savez`` and Keras do not fsync, and
weightwatch renames its files into place at once and fsyncs them on a
background thread (see ``weightwatch/run/fsync.py``), which the ``os.sync()``
lets finish before the next record, as an epoch of training would.

Memory is measured in a separate, untimed pass with :mod:`tracemalloc`
(numpy registers its buffers with it): per variant, one record to bring its
state under tracing, then ``peak - current`` across a second record.  That is
the peak *extra* memory of a record beyond what the variant already holds
(weightwatch: the one previous copy of the weights, its int16 update
direction and its block buffers).  It counts numpy and Python allocations;
memory that TensorFlow or HDF5 allocate themselves is not seen (so
``keras ckpt`` is a lower bound).  The seed callback's memory is traced only
up to ``--seed-mem-max`` parameters (default 2M; ``--quick`` 0: tracing
millions of Python floats is slow).

Disk is the bytes one record leaves: snapshot JSON (+ npz) for weightwatch,
the JSON file, the ``.h5`` file, the ``.npz`` file.

Targets (GitHub issue 6) are checked at the end: statistics record <= 1.5x
the statistics floor (<= 2x on the 400-tensor model); >= 200x faster than the
seed callback at 10M; ``save_tensors=True`` <= 1.3x ``np.savez``; snapshot
JSON size grows with the number of tensors, not parameters; peak extra
memory within about 2x the largest tensor.  The script only reports; it
asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
warnings.filterwarnings("ignore")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from weightwatch.recording.keras_callback import WatchCallback  # noqa: E402
from weightwatch.run import journal  # noqa: E402
from weightwatch.run.schema import COLUMNS  # noqa: E402

MODELS = ("1m", "10m", "50m", "conv", "many", "many-l2")
QUICK = ("1m", "many", "conv")


# -- the models ------------------------------------------------------------------------------
def mlp(name, inputs, widths):
    x = inp = keras.Input((inputs,))
    for i, w in enumerate(widths):
        x = keras.layers.Dense(w, activation="relu" if i < len(widths) - 1 else None,
                               name=f"dense_{i}")(x)
    return keras.Model(inp, x, name=name)


def conv_bn():
    """About 5M parameters in 38 tensors: six conv + BatchNorm blocks and a dense head."""
    x = inp = keras.Input((32, 32, 3))
    for i, ch in enumerate((64, 128, 256, 256, 512, 512)):
        x = keras.layers.Conv2D(ch, 3, padding="same", name=f"conv_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.ReLU()(x)
        if i % 2 == 1:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(1000, name="head")(x)
    return keras.Model(inp, x, name="conv_bn")


def many_small(regularizer=None):
    """400 small tensors: 200 Dense(64) layers (kernel 64x64 + bias), about 0.8M parameters."""
    x = inp = keras.Input((64,))
    for i in range(200):
        x = keras.layers.Dense(64, activation="relu", name=f"d{i}", kernel_regularizer=regularizer)(x)
    return keras.Model(inp, x, name="many_small")


def build(key):
    if key == "1m":
        return "MLP 1M", mlp("mlp_1m", 512, (1024, 512, 10))
    if key == "10m":
        return "MLP 10M", mlp("mlp_10m", 1024, (2048, 2048, 2048, 10))
    if key == "50m":
        return "MLP 50M", mlp("mlp_50m", 1024, (4096, 4096, 4096, 4096, 10))
    if key == "conv":
        return "conv+BN 5M", conv_bn()
    if key == "many":
        return "400 tensors", many_small()
    if key == "many-l2":   # every kernel's penalty recorded too (the penalty column)
        return "400 tensors, L2", many_small(keras.regularizers.L2(1e-4))
    raise SystemExit(f"unknown model {key!r}; choose from {', '.join(MODELS)}")


# -- the seed note's callback: tests/seed_note.py ---------------------------------------------
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from seed_note import WeightRecorderCallback  # noqa: E402


# -- the variants ----------------------------------------------------------------------------
class Variant:
    """One way of taking an epoch-end record; ``run(epoch)`` is what gets timed."""

    name = ""

    def setup(self, model, root: Path): ...

    def run(self, epoch: int): ...

    def disk(self, epoch: int) -> int:
        return 0

    def cleanup(self, epoch: int):
        """Between repetitions, outside the timed region: drop files no longer needed."""


class WW(Variant):
    def __init__(self, save_tensors, check=False):
        self.save_tensors = save_tensors
        self.check = check
        self.name = "ww +tensors" if save_tensors else "ww stats"
        if check:
            self.name = "ww check=True"

    def setup(self, model, root):
        self.dir = root / self.name.replace(" ", "_").replace("+", "").replace("=", "")
        self.cb = WatchCallback(self.dir, check=self.check, save_tensors=self.save_tensors,
                                verbose=0)
        self.cb.set_model(model)
        self.cb.on_train_begin()
        self.cb.on_epoch_begin(0)  # record 0: the weights before training

    def run(self, epoch):
        self.cb.on_epoch_end(epoch)

    def _files(self, epoch):
        # on_epoch_end(epoch) writes record epoch + 1
        return [self.dir / f"record-{epoch + 1:06d}.json", self.dir / f"record-{epoch + 1:06d}.npz"]

    def disk(self, epoch):
        # + the record's entry in the journal (history.bin): the last one
        ends = [0] + [end for _, end in journal._scan((self.dir / journal.JOURNAL).read_bytes())]
        return sum(f.stat().st_size for f in self._files(epoch) if f.exists()) + ends[-1] - ends[-2]

    def json_bytes(self, epoch):
        return self._files(epoch)[0].stat().st_size

    def cleanup(self, epoch):
        npz = self._files(epoch)[1]
        if npz.exists():
            npz.unlink()


class Seed(Variant):
    name = "seed json"

    def setup(self, model, root):
        self.dir = root / "seed"
        self.cb = WeightRecorderCallback(str(self.dir))
        self.cb.set_model(model)

    def run(self, epoch):
        self.cb.on_epoch_end(epoch)

    def _file(self, epoch):
        return self.dir / f"weights_epoch_{epoch + 1}.json"

    def disk(self, epoch):
        return self._file(epoch).stat().st_size

    def cleanup(self, epoch):
        self._file(epoch).unlink(missing_ok=True)


class Checkpoint(Variant):
    name = "keras ckpt"

    def setup(self, model, root):
        self.path = root / "ckpt" / "ckpt.weights.h5"
        self.cb = keras.callbacks.ModelCheckpoint(filepath=str(self.path), save_weights_only=True,
                                                  save_freq="epoch", verbose=0)
        self.cb.set_model(model)

    def run(self, epoch):
        self.cb.on_epoch_end(epoch, {})

    def disk(self, epoch):
        return self.path.stat().st_size


class FloorNpz(Variant):
    name = "floor npz"

    def setup(self, model, root):
        self.model = model
        self.path = root / "floor.npz"

    def run(self, epoch):
        np.savez(self.path, **{v.path: keras.ops.convert_to_numpy(v) for v in self.model.weights})

    def disk(self, epoch):
        return self.path.stat().st_size


class FloorStats(Variant):
    name = "floor stats"

    def setup(self, model, root):
        self.model = model
        self.prev = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}

    def run(self, epoch):
        prev = self.prev
        for v in self.model.weights:
            a = keras.ops.convert_to_numpy(v)
            np.dot(a.ravel(), a.ravel())
            d = a - prev[v.path]
            np.dot(d.ravel(), d.ravel())
            prev[v.path] = a


# -- measuring -------------------------------------------------------------------------------
class Perturber:
    """Adds precomputed noise to every variable; a different multiple each time."""

    def __init__(self, model, seed=0):
        rng = np.random.default_rng(seed)
        self.pairs = []
        for v in model.weights:
            shape = tuple(v.shape)
            noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(1e-3)
            self.pairs.append((v, noise))
        self.k = 0

    def __call__(self):
        self.k += 1
        scale = np.float32(1.0 + 0.1 * (self.k % 7))
        for v, noise in self.pairs:
            v.assign(keras.ops.convert_to_numpy(v) + noise * scale)


def sync():
    if hasattr(os, "sync"):
        os.sync()


def measure_model(key, args, console):
    label, model = build(key)
    n_params = int(sum(np.prod(v.shape) for v in model.weights))
    n_tensors = len(model.weights)
    largest = max(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights)
    model.compile(optimizer="adam", loss="mse")
    # As after a training step: Adam's slots exist and iterations > 0, so a record
    # reads them (the per-tensor gradient estimate, grad_rms) as it does in training.
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(10)
    for slot in model.optimizer.variables:
        if len(slot.shape) and slot.dtype == "float32":
            slot.assign(keras.ops.full(slot.shape, 1e-6, dtype="float32"))
    root = Path(tempfile.mkdtemp(prefix=f"wwbench-{key}-", dir=args.tmp))
    run_seed = n_params <= args.seed_max_params or args.seed_all
    seed_reps = args.seed_reps
    variants = [FloorStats(), WW(False), FloorNpz(), WW(True), Checkpoint()]
    if args.with_check:
        variants.append(WW(False, check=True))
    if run_seed:
        variants.append(Seed())
    perturb = Perturber(model)
    for v in variants:
        v.setup(model, root)
    times = {v.name: [] for v in variants}
    disk = {}
    epoch = 0
    try:
        for rep in range(args.reps + 1):  # rep 0 is the warm-up
            perturb()
            gc.collect()
            sync()
            order = variants[rep % len(variants):] + variants[:rep % len(variants)]
            for v in order:
                if isinstance(v, Seed) and not 1 <= rep <= seed_reps:
                    continue  # 100x slower than the rest: no warm-up, fewer repetitions
                t0 = time.perf_counter()
                v.run(epoch)
                dt = time.perf_counter() - t0
                if rep:
                    times[v.name].append(dt)
                disk[v.name] = v.disk(epoch)
                sync()
            json_bytes = variants[1].json_bytes(epoch)
            for v in variants:
                v.cleanup(epoch)
            epoch += 1

        # memory: a separate, untimed pass
        mem = {}
        if not args.no_memory:
            for v in variants:
                if isinstance(v, Seed) and n_params > args.seed_mem_max:
                    continue
                gc.collect()
                tracemalloc.start()
                try:
                    perturb()
                    v.run(epoch)          # bring this variant's state under tracing
                    v.cleanup(epoch)
                    epoch += 1
                    perturb()
                    gc.collect()
                    base = tracemalloc.get_traced_memory()[0]
                    tracemalloc.reset_peak()
                    v.run(epoch)
                    peak = tracemalloc.get_traced_memory()[1]
                    v.cleanup(epoch)
                    epoch += 1
                finally:
                    tracemalloc.stop()
                mem[v.name] = peak - base
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(t) for k, t in times.items()}
    spread = {k: (max(t) - min(t)) / statistics.median(t) for k, t in times.items()}
    return dict(key=key, label=label, params=n_params, tensors=n_tensors, largest=largest,
                med=med, spread=spread, times=times, disk=disk, mem=mem, json_bytes=json_bytes,
                seed_skipped=not run_seed, seed_reps=min(seed_reps, args.reps) if run_seed else 0)


# -- printing --------------------------------------------------------------------------------
def fmt_s(t):
    return f"{t * 1e3:.1f} ms" if t < 10 else f"{t:.1f} s"


def fmt_b(b):
    if b is None:
        return "-"
    if b < 1e6:
        return f"{b / 1e3:.1f} kB"
    return f"{b / 1e6:.1f} MB"


def print_results(results, console):
    table = Table(title="One epoch-end record (median of repetitions)", show_lines=False)
    for col in ("model", "variant", "time", "spread", "x stats floor", "x npz floor",
                "seed / this", "disk", "peak extra", "peak / largest"):
        table.add_column(col, justify="left" if col in ("model", "variant") else "right")
    for r in results:
        med = r["med"]
        fs, fn, seed = med["floor stats"], med["floor npz"], med.get("seed json")
        first = True
        for name in ("ww stats", "floor stats", "ww +tensors", "floor npz", "keras ckpt",
                     "seed json", "ww check=True"):
            if name not in med:
                if name == "seed json" and r["seed_skipped"]:
                    table.add_row("", name, "skipped", "", "", "", "", "", "", "")
                continue
            t = med[name]
            m = r["mem"].get(name)
            table.add_row(
                f"{r['label']}\n{r['params'] / 1e6:.1f}M params, {r['tensors']} tensors" if first else "",
                name, fmt_s(t), f"{r['spread'][name] * 100:.0f}%",
                f"{t / fs:.2f}x", f"{t / fn:.2f}x",
                f"{seed / t:.0f}x" if seed else "-",
                fmt_b(r["disk"].get(name)), fmt_b(m),
                f"{m / r['largest']:.2f}x" if m is not None else "-",
            )
            first = False
        table.add_section()
    console.print(table)


def check_targets(results, console):
    table = Table(title="Targets (GitHub issue 6)")
    for col in ("target", "model", "measured", "met"):
        table.add_column(col)
    ok_all = True

    def row(target, label, measured, ok):
        nonlocal ok_all
        ok_all &= ok
        table.add_row(target, label, measured, "[green]yes[/]" if ok else "[red]NO[/]")

    for r in results:
        med = r["med"]
        limit = 2.0 if r["key"].startswith("many") else 1.5
        ratio = med["ww stats"] / med["floor stats"]
        row(f"stats <= {limit}x stats floor", r["label"], f"{ratio:.2f}x", ratio <= limit)
    for r in results:
        med = r["med"]
        ratio = med["ww +tensors"] / med["floor npz"]
        row("save_tensors <= 1.3x np.savez", r["label"], f"{ratio:.2f}x", ratio <= 1.3)
    for r in results:
        if r["key"] == "10m" and "seed json" in r["med"]:
            speed = r["med"]["seed json"] / r["med"]["ww stats"]
            row(">= 200x faster than seed", r["label"], f"{speed:.0f}x", speed >= 200)
    for r in results:
        for name, what in (("ww stats", "stats"), ("ww +tensors", "+tensors")):
            m = r["mem"].get(name)
            if m is None:
                continue
            ratio = m / r["largest"]
            detail = f"{ratio:.2f}x ({fmt_b(m)})"
            if ratio > 2.2:  # what is left beyond the tensors is per-tensor bookkeeping
                detail += (f"; beyond 2x largest: {(m - 2 * r['largest']) / r['tensors']:.0f} B per "
                           f"tensor (its {len(COLUMNS)} figures as float64, {8 * len(COLUMNS)} B, for "
                           "the journal and live checks)")
                floor_m = r["mem"].get("floor stats")
                if floor_m:
                    detail += f"; the statistics floor itself: {floor_m / r['largest']:.2f}x"
            row(f"peak extra <= ~2x largest tensor ({what})", r["label"], detail, ratio <= 2.2)
    per_tensor = [(r["label"], r["json_bytes"] / r["tensors"], r["json_bytes"] / r["params"])
                  for r in results]
    if per_tensor:
        spread = max(b for _, b, _ in per_tensor) / min(b for _, b, _ in per_tensor)
        detail = ", ".join(f"{lbl}: {b:.0f} B/tensor" for lbl, b, _ in per_tensor)
        row("snapshot JSON ~ tensors, not params", "all", detail, spread < 3)
    console.print(table)
    return ok_all


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=None,
                    help=f"comma-separated models from {', '.join(MODELS)} (default: all)")
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}, 5 repetitions")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per model (default 7, quick 5)")
    ap.add_argument("--seed-all", action="store_true", help="also run the seed callback at 50M")
    ap.add_argument("--seed-max-params", type=float, default=None,
                    help="largest model the seed callback runs on (default 20M, quick 2M)")
    ap.add_argument("--seed-reps", type=int, default=None,
                    help="timed repetitions of the seed callback (default 3, quick 1)")
    ap.add_argument("--seed-mem-max", type=float, default=None,
                    help="largest model whose seed-callback memory is traced (default 2M, quick 0)")
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass")
    ap.add_argument("--with-check", action="store_true",
                    help="also measure WatchCallback's default check=True (live rules, healthy.npz)")
    ap.add_argument("--tmp", default=None, help="where the run directories go (default: system temp)")
    ap.add_argument("--json", default=None, help="also write the raw results to this file")
    args = ap.parse_args(argv)
    keys = QUICK if args.quick else MODELS
    if args.sizes:
        keys = tuple(k.strip().lower() for k in args.sizes.split(",") if k.strip())
    if args.reps is None:
        args.reps = 5 if args.quick else 7
    if args.seed_max_params is None:
        args.seed_max_params = 2e6 if args.quick else 20e6
    if args.seed_mem_max is None:
        args.seed_mem_max = 0 if args.quick else 2e6
    if args.seed_reps is None:
        args.seed_reps = 1 if args.quick else 3
    args.seed_reps = max(1, min(args.seed_reps, args.reps))
    console = Console(width=None if sys.stdout.isatty() else 150)
    console.print(f"keras {keras.__version__} ({keras.backend.backend()}), numpy {np.__version__}, "
                  f"{os.cpu_count()} CPUs, {args.reps} timed repetitions per model")
    results = []
    for key in keys:
        t0 = time.perf_counter()
        r = measure_model(key, args, console)
        results.append(r)
        note = (" (seed callback skipped at this size: too slow; --seed-max-params / --seed-all)"
                if r["seed_skipped"] else f" (seed callback: {r['seed_reps']} repetition(s))")
        console.print(f"  {r['label']}: done in {time.perf_counter() - t0:.0f} s{note}")
        keras.backend.clear_session()
        gc.collect()
    print_results(results, console)
    check_targets(results, console)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
