"""Record the run zoo into a cache: one directory per spec id.

::

    nice -n 19 python benchmarks/zoo/record.py --jobs 2            # the whole zoo (resumable)
    python benchmarks/zoo/record.py --subset fast                  # ~20 runs, every family and fault class
    python benchmarks/zoo/record.py --only 'mlp-*' --limit 5       # a few runs while developing
    python benchmarks/zoo/record.py --force --only cnn-h003        # record one again

Each case directory ``<cache>/<id>/`` holds

* ``run/``       the weightwatch run, recorded with ``WatchCallback(check=False, verbose=0)``
                 (record only: no live halting, so faults play out fully);
* ``spec.json``  the :class:`~specs.Spec`;
* ``probe.json`` what the *separate* probe measured at record 0 and at every epoch end, on a
                 fixed batch of the training data, with ``tf.GradientTape``: the gradient norm of
                 the data loss for every trainable variable, and the fraction of dead (ReLU) or
                 saturated (sigmoid/tanh) units of every activation layer.  weightwatch never
                 sees these figures (it must not do extra passes); only ground truth uses them;
* ``truth.json`` the ground truth derived from the run and the probe (:mod:`truth`);
  re-derive every truth without training with ``python benchmarks/zoo/truth.py``.

A case is trained in a hidden temporary directory and renamed into place when
complete, so an interrupted recording resumes where it stopped: finished cases
whose ``spec.json`` matches the current spec are skipped.  ``--jobs N`` worker
processes each train many runs one after the other (the Keras session is
cleared between runs; a worker is replaced after 40 runs to bound memory).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for p in (str(HERE), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

import specs as zoo_specs  # noqa: E402

DEFAULT_CACHE = HERE / ".cache"
PROBE_BATCH = 128


def _dumps(obj) -> str:
    """Strict JSON: non-finite floats become null."""
    def clean(o):
        if isinstance(o, float):
            return o if math.isfinite(o) else None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o
    return json.dumps(clean(obj), allow_nan=False)


def case_done(case: Path, spec) -> bool:
    try:
        if not (case / "truth.json").exists():
            return False
        return json.loads((case / "spec.json").read_text()) == json.loads(_dumps(spec.to_dict()))
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- worker side

_WORKER_READY = False


def _init_worker(nice: bool = False):
    """Quiet TensorFlow, one thread each for intra- and inter-op work; a pool worker also lowers
    its priority (``nice``) so recording never competes with interactive work."""
    global _WORKER_READY
    if _WORKER_READY:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if nice:
        try:
            os.nice(19)
        except OSError:
            pass
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised in this process
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    _WORKER_READY = True


def _slice(data, n):
    if isinstance(data, dict):
        return {k: v[:n] for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [v[:n] for v in data]
    return data[:n]


def make_probe(built):
    """The probe callback: measures at record 0 (train begin of the first fit) and every epoch end."""
    import keras
    import numpy as np
    import tensorflow as tf

    xb = _slice(built.task.x, PROBE_BATCH)
    yb = _slice(built.task.y, PROBE_BATCH)
    model = built.model
    pm = built.probe_model
    names = [n for n, act in built.act_layers if act in ("relu", "sigmoid", "tanh")]
    acts = dict(built.act_layers)

    class Probe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.out = {"epochs": [], "loss": [], "grad_l2": {}, "grad_size": {},
                        "dead_frac": {n: [] for n in names if acts[n] == "relu"},
                        "sat_frac": {n: [] for n in names if acts[n] != "relu"},
                        "seconds": 0.0}
            self.variables = None
            self.act_model = None
            self.started = False

        def _activations(self):
            if not names:
                return {}
            if isinstance(pm, keras.Sequential):
                h = xb
                got = {}
                for layer in pm.layers:
                    h = layer(h, training=False)
                    if layer.name in names:
                        got[layer.name] = h
                return got
            if self.act_model is None:
                self.act_model = keras.Model(pm.inputs, [pm.get_layer(n).output for n in names])
            outs = self.act_model(xb, training=False)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            return dict(zip(names, outs))

        def measure(self, epoch):
            t = time.perf_counter()
            if self.variables is None:
                self.variables = [v for v in model.trainable_variables]
                for v in self.variables:
                    self.out["grad_l2"][v.path] = []
                    self.out["grad_size"][v.path] = int(np.prod(v.shape))
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                for v in self.variables:
                    tape.watch(v.value)
                y_pred = model(xb, training=False)
                loss = model._compile_loss(yb, y_pred)
            grads = tape.gradient(loss, [v.value for v in self.variables],
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            self.out["epochs"].append(int(epoch))
            self.out["loss"].append(float(loss))
            for v, g in zip(self.variables, grads):
                g = tf.convert_to_tensor(g)
                self.out["grad_l2"][v.path].append(float(tf.norm(tf.cast(g, tf.float64))))
            for n, a in self._activations().items():
                a = np.asarray(keras.ops.convert_to_numpy(a), dtype=np.float64)
                if acts[n] == "relu":
                    unit_max = a.reshape(-1, a.shape[-1]).max(axis=0)
                    self.out["dead_frac"][n].append(float(np.mean(unit_max <= 0)))
                else:
                    sat = (np.abs(a) > 0.99) if acts[n] == "tanh" else ((a < 0.01) | (a > 0.99))
                    self.out["sat_frac"][n].append(float(np.mean(sat)))
            self.out["seconds"] += time.perf_counter() - t

        def on_train_begin(self, logs=None):
            if not self.started:
                self.started = True
                self.measure(0)

        def on_epoch_end(self, epoch, logs=None):
            self.measure(epoch + 1)

    return Probe()


def train_case(spec, case_tmp: Path) -> dict:
    """Train one spec into ``case_tmp``; returns the recorder's info (written to probe.json)."""
    _init_worker()
    import keras

    import models
    from weightwatch.recording.keras_callback import WatchCallback

    keras.backend.clear_session()
    keras.utils.set_random_seed(spec.seed)
    t0 = time.perf_counter()
    c0 = time.process_time()
    built = models.build(spec)
    freq = spec.freq if spec.freq != "epoch" else "epoch"
    watch = WatchCallback(str(case_tmp / "run"), freq=freq, check=False, verbose=0, overwrite=True)
    probe = make_probe(built)
    callbacks = list(built.callbacks) + [watch, probe]
    error = tb = None
    try:
        for phase in built.phases:
            initial, epochs, y, between = phase[:4]
            x = phase[4] if len(phase) > 4 else built.task.x
            if between is not None:
                between(built.model)
            built.model.fit(x, built.task.y if y is None else y, batch_size=spec.batch_size,
                            epochs=epochs, initial_epoch=initial, validation_split=spec.validation_split,
                            callbacks=callbacks, verbose=0, shuffle=True)
    except Exception as exc:  # a fault may break training itself; the truth pass drops such runs
        error = f"{type(exc).__name__}: {exc}"[:2000]
        tb = traceback.format_exc()[-3000:]
    seconds = time.perf_counter() - t0
    keras.mixed_precision.set_global_policy("float32")
    info = {
        "task": {"kind": built.task.kind, "classes": built.task.classes, "const_loss": built.task.const_loss,
                 "loss": getattr(built.task.loss, "__name__", str(built.task.loss))[:200]},
        "target": built.target, "fault_tensors": built.fault_tensors, "note": built.note,
        "seconds": seconds, "cpu_seconds": time.process_time() - c0, "probe": probe.out, "error": error,
        "traceback": tb if error else None,
        "steps_per_epoch": spec.steps_per_epoch,
    }
    return info


def record_one(spec_dict: dict, cache: str) -> dict:
    """Worker entry point: train, write the case, derive its truth, rename it into place."""
    import truth as zoo_truth

    spec = zoo_specs.Spec.from_dict(spec_dict)
    cache = Path(cache)
    final = cache / spec.id
    tmp = cache / f".tmp-{spec.id}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    t = time.perf_counter()
    try:
        info = train_case(spec, tmp)
    except Exception as exc:   # building the model failed: a bug in the zoo, report it loudly
        shutil.rmtree(tmp, ignore_errors=True)
        return {"id": spec.id, "status": "build-error", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-3000:], "seconds": time.perf_counter() - t}
    (tmp / "spec.json").write_text(_dumps(spec.to_dict()))
    (tmp / "probe.json").write_text(_dumps(info))
    tr = zoo_truth.derive(tmp)
    (tmp / "truth.json").write_text(_dumps(tr))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return {"id": spec.id, "status": "ok", "label": tr["label"], "seconds": time.perf_counter() - t,
            "train_seconds": info["seconds"], "cpu_seconds": info["cpu_seconds"], "error": info["error"]}


def _record_star(item):
    try:
        return record_one(*item)
    except Exception as exc:   # never let one run take the pool down
        return {"id": item[0].get("id", "?"), "status": "worker-error", "error": repr(exc),
                "traceback": traceback.format_exc()[-3000:], "seconds": 0}


# --------------------------------------------------------------------------- parent side


def select(args) -> list:
    specs = zoo_specs.all_specs()
    if args.subset == "fast":
        specs = zoo_specs.fast_subset(specs)
    if args.only:
        pats = args.only.split(",")
        specs = [s for s in specs if any(fnmatch.fnmatchcase(s.id, p) for p in pats)]
    if args.limit:
        specs = specs[: args.limit]
    return specs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="cache directory (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--only", help="comma-separated glob patterns over spec ids")
    ap.add_argument("--limit", type=int, help="at most this many specs (after --only)")
    ap.add_argument("--subset", choices=["fast"], help="the fast subset (~20 runs)")
    ap.add_argument("--force", action="store_true", help="record again even when finished")
    ap.add_argument("--log", help="append one JSON line per finished run to this file")
    ap.add_argument("--prune", action="store_true",
                    help="delete cached cases whose id is no longer in the zoo, then record")
    args = ap.parse_args(argv)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if args.prune:
        known = {s.id for s in zoo_specs.all_specs()}
        for d in cache.iterdir():
            if d.is_dir() and not d.name.startswith(".") and d.name not in known:
                shutil.rmtree(d)
                print(f"pruned {d.name}")
    specs = select(args)
    todo = [s for s in specs if args.force or not case_done(cache / s.id, s)]
    print(f"{len(specs)} specs selected, {len(specs) - len(todo)} already recorded, "
          f"{len(todo)} to record with {args.jobs} job(s) into {cache}", flush=True)
    if not todo:
        return 0
    # Long runs first, so the pool does not end waiting for one straggler.
    todo.sort(key=lambda s: -(s.epochs * s.steps_per_epoch * (3 if s.family in zoo_specs.RNN_FAMILIES
                                                               or s.family == "attention" else 1)))
    log = open(args.log, "a") if args.log else None
    started = time.perf_counter()
    failures = 0
    done = 0

    def report(res):
        nonlocal failures, done
        done += 1
        if res["status"] != "ok":
            failures += 1
            print(f"[{done}/{len(todo)}] {res['id']}: {res['status']}: {res['error']}\n{res.get('traceback', '')}",
                  flush=True)
        else:
            extra = f"  (training error: {res['error'][:120]})" if res.get("error") else ""
            print(f"[{done}/{len(todo)}] {res['id']:34s} {res['label']:22s} {res['seconds']:5.1f} s"
                  f"  elapsed {time.perf_counter() - started:6.0f} s{extra}", flush=True)
        if log:
            log.write(json.dumps(res) + "\n")
            log.flush()

    if args.jobs <= 1:
        for s in todo:
            report(record_one(s.to_dict(), str(cache)))
    else:
        import multiprocessing as mp

        # multiprocessing.Pool rather than ProcessPoolExecutor: the executor's max_tasks_per_child
        # hangs when it replaces spawned workers (Python 3.11).
        ctx = mp.get_context("spawn")
        with ctx.Pool(processes=args.jobs, initializer=_init_worker, initargs=(True,),
                      maxtasksperchild=40) as pool:
            items = [(s.to_dict(), str(cache)) for s in todo]
            for res in pool.imap_unordered(_record_star, items, chunksize=1):
                report(res)
    wall = time.perf_counter() - started
    print(f"recorded {len(todo) - failures} runs in {wall:.0f} s wall "
          f"({wall / max(1, len(todo)):.2f} s per run with {args.jobs} job(s)); {failures} failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
