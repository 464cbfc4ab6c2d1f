"""Record the baseline benchmark's runs into a cache: one directory per case id.

::

    nice -n 15 python benchmarks/baseline/record.py --cache /work/basebench-cache --jobs 2
    python benchmarks/baseline/record.py --only 'mlp-c1-*'          # a few runs while developing
    python benchmarks/baseline/record.py --subset fast --cache /tmp/bb    # the test's tiny set

Each case directory ``<cache>/<id>/`` holds ``run/`` (recorded with
``WatchCallback(check=False, verbose=0)``: record only, no live halting, so a regression plays
out fully), ``case.json`` (the :class:`~bench_specs.Case`) and ``info.json`` (training
seconds, any training error, the last logged loss, what the regression changed).

The models and data are the run zoo's (``benchmarks/zoo/models.py``: ``build(spec,
data_seed=...)``); this file adds only the input pipeline and the regressions:

* the pipeline of the families with real-valued inputs: the data generator's features are
  turned into *raw* ones (per feature a scale 2-8 and an offset -4..4, fixed by the data
  seed), which the healthy pipeline standardises (mean 0, std 1 per feature over the
  training set) and the ``no-normalise`` regression feeds to the model as they are; targets
  are never touched;
* ``frozen-layer``: ``layer.trainable = False`` on the first weighted layer, then
  ``compile()`` again (a real freeze: the optimizer never sees the layer);
* ``init-scale-10x``: the initial kernel values scaled by 10 (first layer) or 0.1 (every
  kernel) before training -- what an initialiser with 10x (0.1x) the stddev draws;
* ``relu-to-sigmoid``: every layer whose activation is ReLU gets a sigmoid;
* ``lr-3x-*`` and ``dropout-0.6`` are in the spec itself.

Interrupted recordings resume: finished cases whose ``case.json`` matches are skipped.  The
worker set-up (quiet TensorFlow, one thread each, ``--jobs N`` spawned processes replaced
after 40 runs) is the zoo recorder's (``benchmarks/zoo/record.py``), imported.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ZOO = HERE.parent / "zoo"
# ROOT first (this checkout's weightwatch); this directory and the zoo's appended, never in
# front: under pytest the zoo's own ``record``/``score`` must stay the ones ``import record`` finds.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
for p in (str(HERE), str(ZOO)):
    if p not in sys.path:
        sys.path.append(p)

import bench_specs  # noqa: E402

DEFAULT_CACHE = HERE / ".cache"




zoo_record = bench_specs.load_module("zoo_record", ZOO / "record.py")
_dumps = zoo_record._dumps


def case_done(d: Path, case) -> bool:
    try:
        if not (d / "info.json").exists() or not (d / "run").is_dir():
            return False
        return json.loads((d / "case.json").read_text()) == json.loads(_dumps(case.to_dict()))
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- worker side


def raw_features(x, data_seed: int):
    """The data generator's features as a raw pipeline would deliver them: per feature (last
    axis) a scale 2-8 and an offset -4..4, fixed by the data seed."""
    import numpy as np

    rng = np.random.default_rng([data_seed, 7])
    f = x.shape[-1]
    scale = np.exp(rng.uniform(np.log(2.0), np.log(8.0), f))
    offset = rng.uniform(-4.0, 4.0, f)
    return (x * scale + offset).astype(np.float32)


def standardise(x):
    """The healthy pipeline: mean 0 and std 1 per feature (last axis) over the training set."""
    import numpy as np

    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True)
    return ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def _recompile(model, spec):
    kw = {"loss_weights": {"cls": 1.0, "reg": spec.arch["reg_weight"]}} if spec.family == "multioutput" else {}
    model.compile(optimizer=model.optimizer, loss=model.loss, **kw)


def apply_regression(case, built) -> dict:
    """Inject the case's regression into a built (compiled, untrained) model; what changed."""
    import keras

    import models

    model, spec, what = built.model, case.spec, {}
    r = case.regression
    if r == "frozen-layer":
        target = models.fault_target(spec)
        model.get_layer(target).trainable = False
        _recompile(model, spec)
        what["frozen"] = target
    elif r == "init-scale-10x":
        if case.variant == "first-kernel-x10":
            target = models.fault_target(spec)
            vs = [v for v in model.get_layer(target).weights if v.name in ("kernel", "embeddings")]
            factor = 10.0
        else:
            vs = [v for v in model.weights if v.name == "kernel"]
            factor = 0.1
        for v in vs:
            v.assign(v * factor)
        what["scaled"] = [v.path for v in vs]
        what["factor"] = factor
        assert vs, f"{case.id}: no kernel to scale"
    elif r == "relu-to-sigmoid":
        swapped = []
        for layer in model._flatten_layers(include_self=False, recursive=True):
            if getattr(layer, "activation", None) is keras.activations.relu:
                layer.activation = keras.activations.sigmoid
                swapped.append(layer.name)
        assert swapped, f"{case.id}: no ReLU to swap"
        what["swapped"] = swapped
    elif r in ("lr-3x-high", "lr-3x-low"):
        what["lr"] = spec.lr
    elif r == "dropout-0.6":
        what["dropout"] = spec.dropout
    return what


def train_case(case, case_tmp: Path) -> dict:
    zoo_record._init_worker()
    import keras
    import numpy as np

    import models
    from weightwatch.recording.keras_callback import WatchCallback

    spec = case.spec
    keras.backend.clear_session()
    keras.utils.set_random_seed(spec.seed)
    t0 = time.perf_counter()
    c0 = time.process_time()
    built = models.build(spec, data_seed=case.data_seed)
    x = built.task.x
    if case.normalise:
        raw = raw_features(np.asarray(x), case.data_seed)
        x = raw if case.regression == "no-normalise" else standardise(raw)
    what = apply_regression(case, built)
    y_fit = None
    if case.regression == "labels-shuffled":
        y = np.asarray(built.task.y)
        y_fit = y[np.random.default_rng(case.data_seed + 7).permutation(len(y))]  # BUG: x left as is
        what["shuffled"] = float(np.mean(y_fit != y))
    watch = WatchCallback(str(case_tmp / "run"), check=False, verbose=0, overwrite=True)
    error = tb = None
    hist = None
    try:
        (initial, epochs, y, _between), = [p[:4] for p in built.phases]
        y = y_fit if y_fit is not None else built.task.y if y is None else y
        hist = built.model.fit(x, y, batch_size=spec.batch_size,
                               epochs=epochs, initial_epoch=initial, callbacks=list(built.callbacks) + [watch],
                               verbose=0, shuffle=True)
    except Exception as exc:   # a regression may break training itself: counted, never hidden
        error = f"{type(exc).__name__}: {exc}"[:2000]
        tb = traceback.format_exc()[-3000:]
    keras.mixed_precision.set_global_policy("float32")
    losses = [float(v) for v in (hist.history.get("loss", []) if hist else [])]
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "error": error, "traceback": tb, "loss": losses, "regression": what}


def record_one(case_dict: dict, cache: str) -> dict:
    case = bench_specs.Case.from_dict(case_dict)
    cache = Path(cache)
    final = cache / case.id
    tmp = cache / f".tmp-{case.id}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    t = time.perf_counter()
    try:
        info = train_case(case, tmp)
    except Exception as exc:   # building failed: a bug in the benchmark, report it loudly
        shutil.rmtree(tmp, ignore_errors=True)
        return {"id": case.id, "status": "build-error", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-3000:], "seconds": time.perf_counter() - t}
    (tmp / "case.json").write_text(_dumps(case.to_dict()))
    (tmp / "info.json").write_text(_dumps(info))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    last = info["loss"][-1] if info["loss"] else None
    return {"id": case.id, "status": "ok", "seconds": time.perf_counter() - t,
            "train_seconds": info["seconds"], "cpu_seconds": info["cpu_seconds"], "error": info["error"],
            "last_loss": last}


def _init_worker(nice: bool = False):
    zoo_record._init_worker(nice)


def _record_star(item):
    try:
        return record_one(*item)
    except Exception as exc:   # never let one run take the pool down
        return {"id": item[0].get("id", "?"), "status": "worker-error", "error": repr(exc),
                "traceback": traceback.format_exc()[-3000:], "seconds": 0}


# --------------------------------------------------------------------------- parent side


def select(args) -> list:
    cases = bench_specs.fast_subset() if args.subset == "fast" else bench_specs.all_cases(args.configs)
    if args.only:
        pats = args.only.split(",")
        cases = [c for c in cases if any(fnmatch.fnmatchcase(c.id, p) for p in pats)]
    if args.limit:
        cases = cases[: args.limit]
    return cases


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="cache directory (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--only", help="comma-separated glob patterns over case ids")
    ap.add_argument("--limit", type=int, help="at most this many cases (after --only)")
    ap.add_argument("--subset", choices=["fast"], help="the test's tiny set (7 runs)")
    ap.add_argument("--configs", choices=[*bench_specs.CONFIG_SETS, "all"], default="tune",
                    help="configuration set: 'tune' (calibrated on), 'heldout' or 'proof' (held out; "
                         "see the README), or 'all' (default: %(default)s)")
    ap.add_argument("--force", action="store_true", help="record again even when finished")
    ap.add_argument("--log", help="append one JSON line per finished run to this file")
    args = ap.parse_args(argv)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    cases = select(args)
    todo = [c for c in cases if args.force or not case_done(cache / c.id, c)]
    print(f"{len(cases)} cases selected, {len(cases) - len(todo)} already recorded, "
          f"{len(todo)} to record with {args.jobs} job(s) into {cache}", flush=True)
    if not todo:
        return 0
    # Configuration by configuration (its seeds, then its regressions): a partial cache already
    # holds whole configurations to score.
    order = {cfg: i for i, cfg in enumerate(dict.fromkeys(c.config for c in todo))}
    todo.sort(key=lambda c: (order[c.config], not c.healthy, c.seed_index))
    log = open(args.log, "a") if args.log else None
    started = time.perf_counter()
    failures = done = 0
    cpu = 0.0

    def report(res):
        nonlocal failures, done, cpu
        done += 1
        if res["status"] != "ok":
            failures += 1
            print(f"[{done}/{len(todo)}] {res['id']}: {res['status']}: {res['error']}\n{res.get('traceback', '')}",
                  flush=True)
        else:
            cpu += res["cpu_seconds"]
            extra = f"  (training error: {res['error'][:120]})" if res.get("error") else ""
            ll = res.get("last_loss")
            print(f"[{done}/{len(todo)}] {res['id']:34s} loss {'-' if ll is None else f'{ll:.4g}':>9s} "
                  f"{res['seconds']:5.1f} s  elapsed {time.perf_counter() - started:6.0f} s{extra}", flush=True)
        if log:
            log.write(json.dumps(res) + "\n")
            log.flush()

    if args.jobs <= 1:
        for c in todo:
            report(record_one(c.to_dict(), str(cache)))
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(processes=args.jobs, initializer=_init_worker, initargs=(False,),
                      maxtasksperchild=40) as pool:
            items = [(c.to_dict(), str(cache)) for c in todo]
            for res in pool.imap_unordered(_record_star, items, chunksize=1):
                report(res)
    wall = time.perf_counter() - started
    print(f"recorded {len(todo) - failures} runs in {wall:.0f} s wall, {cpu:.0f} CPU-s in training "
          f"({wall / max(1, len(todo)):.2f} s per run with {args.jobs} job(s)); {failures} failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
