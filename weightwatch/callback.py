"""``WatchCallback``: the Keras 3 callback that records a run (and checks it live).

This is the only module that imports Keras.  ``weightwatch`` exposes
``WatchCallback`` lazily, so ``import weightwatch`` and everything that reads
or checks a run stays free of TensorFlow.

Only Keras APIs are used in the hot path (``keras.ops.convert_to_numpy``,
``variable.path``), so the JAX and torch backends are not ruled out.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import keras
import numpy as np

from .errors import CheckHalted, WeightwatchError
from .reader import Record, Run, TensorInfo
from .recorder import Recorder
from .runformat import (
    RunWriter, record_name, select_tensors, tensor_kind, unique_paths, wait_for_sync,
)
from .stats import COLUMNS


class WatchCallback(keras.callbacks.Callback):
    """Record weight statistics every epoch and check them against rules.

    Writes a run directory (see the README's "Run format"): record 0 holds the
    weights before training, record *k* the weights after epoch *k*, numbered
    as Keras prints them.  Every weight of the model is recorded under its
    Keras variable path (``base/base_bn/moving_mean``), nested models and
    subclassed blocks included; random-number state (Dropout's
    ``seed_generator_state``) is not a weight and is left out.

    Args:
        run_dir: Directory for the run.  Created if needed.
        freq: ``"epoch"`` to record at the end of every epoch, or an integer
            N to also record every N batches.  Defaults to `"epoch"`.
        trainable_only: Record only variables that are trainable at the time
            of the record.  Defaults to `False`.
        include: Glob patterns over variable paths; record only matching
            tensors.  Defaults to `None` (all).
        exclude: Glob patterns over variable paths to leave out.  Defaults
            to `None`.
        save_tensors: Also store the tensors themselves, one ``.npz`` per
            record (load with ``np.load(..., allow_pickle=False)``).
            Defaults to `False`.
        overwrite: Replace a run already in ``run_dir``.  Without it, a
            non-empty ``run_dir`` is refused unless ``fit(initial_epoch=k)``
            with ``k > 0`` continues the run it holds.  Defaults to `False`.
        check: Run the checks live after every record.  Defaults to `True`.
        rules: Extra rule file(s) or rule tables on top of the project's
            configuration (as ``weightwatch check --rules``).  Defaults to
            `None`.
        halt_on: ``"error"``: stop training when a check fails;
            ``"warning"``: also on warnings; ``None``: never stop.
            Defaults to `"error"`.
        raise_error: Raise :class:`weightwatch.CheckHalted` instead of
            setting ``model.stop_training``, like Keras' ``TerminateOnNaN``.
            Stopping gracefully runs every callback's ``on_train_end``;
            raising does not.  Defaults to `False`.
        batch_guard: Check the loss for NaN/Inf after every batch and halt at
            once, for runs whose epochs are long.  Defaults to `False`.
        keep_healthy: Keep the weights of the last record that passed the
            checks in ``healthy.npz``, for :func:`weightwatch.restore`.
            Defaults to `True` when ``check`` is on.
        io_errors: ``"warn"``: a failure to write the run (full disk,
            unwritable directory) is a warning and training goes on;
            ``"raise"``: it stops training.  Defaults to `"warn"`.
        verbose: 0 is silent; 1 prints findings as they appear and a summary
            at the end of training.  Defaults to `1`.

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[weightwatch.WatchCallback("runs/exp1")])
    ```
    """

    def __init__(self, run_dir, freq="epoch", *, trainable_only=False, include=None,
                 exclude=None, save_tensors=False, overwrite=False, check=True, rules=None,
                 halt_on="error", raise_error=False, batch_guard=False, keep_healthy=None,
                 io_errors="warn", verbose=1):
        super().__init__()
        if not (freq == "epoch" or (isinstance(freq, int) and not isinstance(freq, bool) and freq > 0)):
            raise ValueError(f"`freq` must be 'epoch' or a positive integer. Received: freq={freq!r}")
        if halt_on not in ("error", "warning", None):
            raise ValueError(f"`halt_on` must be 'error', 'warning' or None. Received: halt_on={halt_on!r}")
        if io_errors not in ("warn", "raise"):
            raise ValueError(f"`io_errors` must be 'warn' or 'raise'. Received: io_errors={io_errors!r}")
        if isinstance(include, str) or isinstance(exclude, str):
            raise ValueError("`include` and `exclude` take a list of glob patterns. "
                             f"Received: include={include!r}, exclude={exclude!r}")
        self.run_dir = Path(run_dir)
        self.freq = freq
        self.trainable_only = trainable_only
        self.include = list(include) if include else None
        self.exclude = list(exclude) if exclude else None
        self.save_tensors = save_tensors
        self.overwrite = overwrite
        self.check = check
        self.rules = rules
        self.halt_on = halt_on
        self.raise_error = raise_error
        self.batch_guard = batch_guard
        self.keep_healthy = check if keep_healthy is None else keep_healthy
        self.io_errors = io_errors
        self.verbose = verbose

        self._writer: RunWriter | None = None
        self._recorder = Recorder()
        self._run: Run | None = None
        self._live = None
        self._write_failed = False
        self._owner_cache = None   # (key, [(variable, owning layer chain)])
        self._static = {}          # (path, shape, dtype) -> (manifest entry, units)
        self.halted = None

    # -- Keras hooks --------------------------------------------------------------
    def on_train_begin(self, logs=None):
        # Per-fit state; the writer and previous weights carry over so that a
        # second fit() with the same callback continues the same run.
        self._pending_begin = True
        self._epoch = 0
        self._batches = 0
        self._step = getattr(self, "_step", 0)
        self.halted = None
        self._copy_fetched = keras.backend.backend() == "torch"
        self._tf_fetch = keras.backend.backend() == "tensorflow"
        if self.check and self._live is None:
            from .live import LiveChecker

            # Loading rules here makes a bad rule file stop fit() before the first step.
            self._live = LiveChecker(self.rules, verbose=self.verbose, halt_on=self.halt_on)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1
        self._batches = 0
        if self._pending_begin:
            self._pending_begin = False
            if self._open_writer(initial_epoch=epoch):
                self._record(epoch=epoch, batch=None, kind="begin", logs={})

    def on_train_batch_end(self, batch, logs=None):
        self._batches = batch + 1
        self._step += 1
        if self.batch_guard and logs:
            loss = logs.get("loss")
            if loss is not None and not np.isfinite(float(loss)) and self.halted is None:
                # A record now, so the live checks (and the verdict) see the bad state.
                self._record(epoch=self._epoch, batch=self._batches, kind="guard", logs=logs)
                if self.halted is None:
                    self._halt_now(f"loss became {float(loss)} at epoch {self._epoch} "
                                   f"batch {self._batches} (batch_guard)")
                return
        if self.freq != "epoch" and self._batches % self.freq == 0:
            self._record(epoch=self._epoch, batch=self._batches, kind="batch", logs=logs or {})

    def on_epoch_end(self, epoch, logs=None):
        self._epoch = epoch + 1
        self._record(epoch=epoch + 1, batch=None, kind="epoch", logs=logs or {})

    def on_train_end(self, logs=None):
        if self._writer is not None and not self._write_failed:
            try:
                if self._live is not None:
                    self._live.wait_healthy()
                wait_for_sync(self._writer.dir)  # the last record's background fsync
            except OSError as exc:
                self._write_error(exc)
        if self._live is not None and self._run is not None and self.verbose:
            self._live.print_summary(self._run)

    # -- recording ------------------------------------------------------------------
    def _open_writer(self, initial_epoch: int) -> bool:
        """Open (or keep) the run; True when a "begin" record should be taken.

        A second fit() with the same callback continues the run without a
        begin record: the previous weights are in memory, so the next record's
        update covers whatever happened between the two fits.
        """
        if self._writer is not None and self._writer.dir == self.run_dir and not self._write_failed:
            return False
        self._recorder.reset()
        resume = initial_epoch > 0 and not self.overwrite
        try:
            self._writer = RunWriter(self.run_dir, overwrite=self.overwrite, resume=resume,
                                     model_name=self.model.name, info=self._run_info())
        except OSError as exc:
            self._write_error(exc)
            return False
        self._run = None
        if self._live is None:
            return True  # the histories in memory are for live checks only
        if resume and self._writer.next_record > 0:
            from .reader import open_run

            try:
                self._run = open_run(self.run_dir)
            except WeightwatchError:
                self._run = None
        if self._run is None:
            self._run = Run(self.run_dir, source="weightwatch", manifest=self._writer.manifest)
        self._live.start(self._run)
        return True

    def _run_info(self) -> dict:
        info = {
            "framework": "keras",
            "backend": keras.backend.backend(),
            "optimizer": type(getattr(self.model, "optimizer", None)).__name__,
        }
        info_versions = {"keras": keras.__version__}
        if info["backend"] == "tensorflow":
            import tensorflow as tf

            info_versions["tensorflow"] = tf.__version__
        info["framework_versions"] = info_versions
        return info

    def _variables(self):
        """(variable, recorded name, frozen) for every weight, in model order.

        The name is the variable's path, made unique (see
        :func:`~weightwatch.runformat.unique_paths`).

        A variable belongs to the deepest layer that lists it; it is frozen
        when that layer or any ancestor has ``trainable=False``.  Which layers
        own a variable is worked out again only when the model's list of
        variables changes (the walk costs more than the statistics of a model
        of small tensors); ``frozen`` is read from those layers' ``trainable``
        flags at every record, so flipping one between epochs shows at once.
        """
        model = self.model
        weights = model.weights
        key = (id(model), tuple(map(id, weights)))
        cache = self._owner_cache
        if cache is None or cache[0] != key:
            chains: dict[int, tuple] = {}

            def walk(layer, chain):
                chain = chain + (layer,)
                for v in layer.weights:
                    chains[id(v)] = chain
                for sub in _sublayers(layer):
                    walk(sub, chain)

            walk(model, ())
            unique, seen = [], set()
            for v in weights:
                if id(v) not in seen:  # a variable shared by two layers is recorded once
                    seen.add(id(v))
                    unique.append(v)
            plan = [(v, chains.get(id(v)), name)
                    for v, name in zip(unique, unique_paths(v.path for v in unique))]
            # The plan holds the variables themselves, so no id in the key
            # can be reused by a new object while the cache lives.
            cache = self._owner_cache = (key, plan)
        for v, chain, name in cache[1]:
            if chain is None:
                yield v, name, not model.trainable
            else:
                yield v, name, not all(layer.trainable for layer in chain)

    def _record(self, *, epoch, batch, kind, logs):
        if self._writer is None or self.halted is not None or self._write_failed:
            return
        if self._live is not None:
            try:
                # The previous healthy-weights write must be done before the
                # recorder replaces the arrays it is writing.
                self._live.wait_healthy()
            except OSError as exc:
                self._write_error(exc)
                return
        globs = self.include or self.exclude
        entries, paths = [], []
        # The figures go straight into one float array (a row per tensor):
        # Python lists of them cost ten times the memory, per tensor.
        values = np.empty((len(self.model.weights), len(COLUMNS)))
        # A tensor's manifest entry and unit count depend on its path, shape
        # and dtype only: worked out once, not at every record.
        static = self._static
        for v, path, frozen in self._variables():
            if self.trainable_only and not v.trainable:
                continue
            if globs and not select_tensors((path,), self.include, self.exclude):
                continue
            array = self._fetch(v)
            known = static.get((path, array.shape, array.dtype))
            if known is None:
                shape = tuple(array.shape)
                kind_ = tensor_kind(path, len(shape))
                units = shape[-1] if kind_ == "kernel" and len(shape) >= 2 else None
                entry = {"path": path, "layer": path.rsplit("/", 1)[0] if "/" in path else "",
                         "shape": list(shape), "dtype": str(array.dtype), "kind": kind_}
                known = static[(path, array.shape, array.dtype)] = (entry, units)
            entry, units = known
            values[len(paths)] = self._recorder.row(path, array, trainable=bool(v.trainable),
                                                    frozen=bool(frozen), units=units)
            paths.append(path)
            entries.append(entry)
        values = values[: len(paths)]
        clean_logs = _clean_logs(logs)
        self._add_optimizer_logs(clean_logs)
        arrays = {p: self._recorder.prev[p] for p in paths} if self.save_tensors else None
        try:
            self._writer.add_tensors(entries)
            index = self._writer.write_record(
                epoch=epoch, batch=batch, step=self._step, kind=kind, paths=paths, values=values,
                logs=clean_logs, wall=time.time(), arrays=arrays)
        except OSError as exc:
            self._write_error(exc)
            return
        record = Record(index=index, epoch=epoch, batch=batch, step=self._step, kind=kind,
                        time=time.time(), logs=clean_logs, file=record_name(index),
                        tensors_file=record_name(index, ".npz") if arrays is not None else None)
        if self._live is None:
            return  # nothing reads the histories in memory: they are not kept
        in_run = set(self._run.tensor_names)
        for e in entries:
            if e["path"] not in in_run:
                self._run.add_tensor(TensorInfo(e["path"], e["layer"], tuple(e["shape"]), e["dtype"],
                                                e["kind"], first_record=index))
        self._run.append(record, paths, values)
        self._after_record(index)

    def _fetch(self, v) -> np.ndarray:
        """A host copy of ``v`` that later training steps cannot mutate.

        TensorFlow and JAX hand back fresh (or immutable) buffers; torch's
        CPU tensors share memory with the parameter, so those are copied.

        On TensorFlow the variable is read with one op and copied once:
        ``convert_to_numpy`` reads it with two ops and copies it twice, which
        is most of a record's cost for small tensors and twice the memory
        traffic for large ones.
        """
        if getattr(self, "_tf_fetch", False):
            try:
                return np.array(_tf_read(v))  # the one private copy
            except Exception:  # not a plain TF variable (autocast, distributed...)
                pass
        array = np.asarray(keras.ops.convert_to_numpy(v))
        if self._copy_fetched:
            array = array.copy()
        return array

    def _scalar(self, x):
        """A scalar variable's value, read as cheaply as :meth:`_fetch` reads weights."""
        if getattr(self, "_tf_fetch", False):
            try:
                return _tf_read(x)
            except Exception:  # a schedule's tensor, not a variable
                pass
        return keras.ops.convert_to_numpy(x)

    def _add_optimizer_logs(self, logs: dict) -> None:
        opt = getattr(self.model, "optimizer", None)
        if opt is None:
            return
        if "learning_rate" not in logs:
            try:
                lr = float(self._scalar(opt.learning_rate))
                logs["learning_rate"] = lr if np.isfinite(lr) else None
            except Exception:  # optimizers without a scalar learning rate
                pass
        scale = getattr(opt, "dynamic_scale", None)
        if scale is not None:
            try:
                logs["loss_scale"] = float(self._scalar(scale))
            except Exception:
                pass

    def _write_error(self, exc: OSError) -> None:
        msg = f"weightwatch: cannot write to {self.run_dir}: {exc.strerror or exc}"
        if self.io_errors == "raise":
            raise WeightwatchError(msg) from exc
        if not self._write_failed:
            warnings.warn(msg + "; recording stops, training goes on", RuntimeWarning, stacklevel=2)
        self._write_failed = True

    # -- live checks ----------------------------------------------------------------
    def _after_record(self, index: int) -> None:
        outcome = self._live.update(self._run)
        if outcome.healthy and self.keep_healthy:
            try:
                self._live.keep_healthy(self._run, index, self._recorder.prev, self._writer)
            except OSError as exc:
                self._write_error(exc)
        if outcome.halt and self.halted is None:
            try:
                self._live.write_verdict(self._run, outcome, self._writer)
            except OSError as exc:
                self._write_error(exc)
            self._halt_now(outcome.reason, outcome.report)

    def _halt_now(self, reason: str, report=None) -> None:
        self.halted = reason
        if self.raise_error:
            raise CheckHalted(f"weightwatch halted training: {reason}", report=report)
        self.model.stop_training = True


def _tf_read(v):
    """A Keras variable's value on TensorFlow: one ReadVariableOp, no copy.

    ``ResourceVariable.value()`` reads the variable; the tensor's ``__array__``
    is a view of its buffer (on CPU, the variable's own), so a caller that
    keeps the result must copy it.
    """
    return v.value.value().__array__()


def _sublayers(layer):
    subs = getattr(layer, "_layers", None)
    if subs is None:
        subs = getattr(layer, "layers", [])
    return list(subs)


def _clean_logs(logs) -> dict:
    """Logs as JSON-safe floats; a non-finite value becomes null."""
    out = {}
    for k, v in (logs or {}).items():
        try:
            f = float(keras.ops.convert_to_numpy(v)) if not isinstance(v, (int, float)) else float(v)
        except Exception:
            continue
        out[k] = f if np.isfinite(f) else None
    return out
