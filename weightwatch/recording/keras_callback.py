"""``WatchCallback``: the Keras 3 adapter of a recording session.

What is Keras' here: the hooks, which layer owns a variable (and so whether it
is frozen), reading a variable into numpy, the optimizer's learning rate and
loss scale, and ``model.stop_training``.  Everything else - figures, files,
live checks, halting - is the framework-free
:class:`~weightwatch.recording.session.RecordingSession`.

``weightwatch`` exposes ``WatchCallback`` lazily, so ``import weightwatch``
and everything that reads or checks a run stays free of TensorFlow.  Only
Keras APIs are used in the hot path (``keras.ops.convert_to_numpy``,
``variable.path``), so the JAX and torch backends record too.
"""

from __future__ import annotations

import math
import numbers
import warnings

import keras
import numpy as np

from ..errors import WeightwatchError
from ..output.live import LivePrinter
from ..run.schema import BATCH, BEGIN, EPOCH, GUARD, unique_paths, where_label
from .keras_distributed import find_processes, local_copies
from .keras_optimizer import GradientReader, chance_loss, estimator, loss_floor
from .replicas import checksum, spread
from .session import RecordingSession, Variable, clean_logs, iter_unique

#: What process 0 tells the others after each record (``Processes.broadcast``).
_GO_ON, _HALTED, _FAILED = 0, 1, 2


#: Keras' sum-of-magnitudes regularisers, exactly these classes (a subclass may change __call__):
#: ``l1 * sum(|w|) + l2 * sum(w**2)`` with the coefficients they hold; on these weight dtypes.
_SUM_PENALTIES = (keras.regularizers.L1, keras.regularizers.L2, keras.regularizers.L1L2)
_SUM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


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
            ``"raise"``: it stops training.  A record, its tensors, its
            journal entry and the healthy weights fail apart: each is
            retried at the next record, and one warning at the end of
            training says exactly what is missing.  Defaults to `"warn"`.
        verbose: 0 is silent; 1 prints findings as they appear and a summary
            at the end of training.  Defaults to `1`.
        process_id: This process's index in a data-parallel run of several
            processes.  Only process 0 writes ``run_dir`` and decides whether
            to halt; every process learns the decision at the same record and
            stops there.  Defaults to `None`: from the backend
            (``jax.process_index()``, ``torch.distributed.get_rank()``), else
            from ``TF_CONFIG`` or ``RANK``, else 0.
        num_processes: The number of processes of the run.  Defaults to
            `None`: found as ``process_id`` is.
        loss_floor: The least value the logged loss can take, for a loss
            weightwatch cannot read it from: ``0.0`` for a squared error, a
            crossentropy or any other non-negative loss written by hand.  It
            bounds the logged ``loss``, the sum of every output's loss times
            its ``loss_weights`` plus the (non-negative) penalties.  Keras'
            built-in losses state their own (the manifest's ``loss_floor``),
            and a declared value replaces it; declaring it for a custom loss
            lets ``loss-below-zero`` judge that loss, so a custom loss negated
            by mistake fails at its first epoch instead of when its fall runs
            away.  Defaults to `None`: from the compiled loss, unknown for a
            custom one.

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[weightwatch.WatchCallback("runs/exp1")])
    ```
    """

    def __init__(self, run_dir, freq="epoch", *, trainable_only=False, include=None,
                 exclude=None, save_tensors=False, overwrite=False, check=True, rules=None,
                 halt_on="error", raise_error=False, batch_guard=False, keep_healthy=None,
                 io_errors="warn", verbose=1, process_id=None, num_processes=None, loss_floor=None):
        super().__init__()
        if not (freq == "epoch" or (isinstance(freq, int) and not isinstance(freq, bool) and freq > 0)):
            raise ValueError(f"`freq` must be 'epoch' or a positive integer. Received: freq={freq!r}")
        for name, value in (("process_id", process_id), ("num_processes", num_processes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"`{name}` must be None or a non-negative integer. "
                                 f"Received: {name}={value!r}")
        if loss_floor is not None:
            try:
                ok = isinstance(loss_floor, numbers.Real) and not isinstance(loss_floor, bool) \
                    and math.isfinite(float(loss_floor))
            except OverflowError:
                ok = False
            if not ok:
                raise ValueError("`loss_floor` must be None or a finite number: the least value the logged "
                                 "loss can take (0.0 for a non-negative loss written by hand). "
                                 f"Received: loss_floor={loss_floor!r}")
        self.loss_floor = None if loss_floor is None else float(loss_floor)
        self.process_id, self.num_processes = process_id, num_processes
        self._can_halt = bool(check and halt_on is not None) or batch_guard
        self.session = RecordingSession(
            run_dir, trainable_only=trainable_only, include=include, exclude=exclude,
            save_tensors=save_tensors, overwrite=overwrite, check=check, rules=rules,
            halt_on=halt_on, raise_error=raise_error, keep_healthy=keep_healthy,
            io_errors=io_errors, verbose=verbose, printer=LivePrinter() if verbose and check else None)
        self.run_dir = self.session.run_dir
        self.freq = freq
        self.batch_guard = batch_guard
        self.verbose = verbose
        self._owner_cache = None   # (key, [(variable, owning layer chain, recorded name)])
        self._step = 0
        self._gradients = GradientReader(self._scalar)
        self._chance_pending = True
        self._penalty_failed: set[int] = set()   # variables whose regulariser failed, warned once
        self._coefficients: dict[int, tuple] = {}  # id(regulariser) -> (it, l1, l2)

    @property
    def halted(self) -> str | None:
        """None, or why live checking stopped training."""
        return self.session.halted

    # -- Keras hooks --------------------------------------------------------------
    def on_train_begin(self, logs=None):
        # Per-fit state; the run and previous weights carry over so that a
        # second fit() with the same callback continues the same run.
        self._pending_begin = True
        self._epoch = 0
        self._batches = 0
        self._copy_fetched = keras.backend.backend() == "torch"
        self._tf_fetch = keras.backend.backend() == "tensorflow"
        self._processes = procs = find_processes(self.process_id, self.num_processes)
        #: Several processes that can share a decision: every record is a collective step.
        self._distributed = procs.collective
        if procs.index != 0:
            self.session.printer = None  # process 0 speaks for the run
        if procs.count > 1 and not procs.collective and self._can_halt:
            raise WeightwatchError(
                f"weightwatch: process {procs.index} of {procs.count} (from {procs.source}) has no "
                "collective to share a halt with the other processes, which would wait for it "
                "forever: initialise jax.distributed (keras.distribution.initialize) or "
                "torch.distributed first, or pass halt_on=None (and batch_guard=False) to record "
                "on process 0 without halting")
        # Loading rules here (on every process) makes a bad rule file stop fit() everywhere
        # before the first step.
        self.session.start_fit()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1
        self._batches = 0
        if self._pending_begin:
            self._pending_begin = False
            first_fit = not getattr(self, "_begun", False)
            self._begun = True
            begin = False
            if self._processes.index == 0:
                try:
                    info = self._run_info()
                    begin = self.session.open(model_name=self.model.name, info=info,
                                              initial_epoch=epoch)
                    if begin:
                        self._gradients.reset()
                        # A continued run's manifest learns them too (no-op for a new run).
                        self.session.annotate({k: info[k] for k in ("gradients", "chance_loss", "loss_floor")})
                except BaseException:
                    if self._distributed:
                        self._processes.broadcast(_FAILED)  # the others stop too, and say why
                    raise
            if self._distributed:
                if self._processes.broadcast(_GO_ON) == _FAILED:
                    raise WeightwatchError(f"weightwatch: process 0 could not open {self.run_dir} "
                                           "(its own error says why); this process stops too")
                # Records are collective steps: every process takes the begin record, or none.
                begin = first_fit
            if begin:
                self._record(epoch=epoch, batch=None, trigger=BEGIN, logs={})

    def on_train_batch_end(self, batch, logs=None):
        self._batches = batch + 1
        self._step += 1
        if self.batch_guard:
            loss = (logs or {}).get("loss")
            bad = loss is not None and not np.isfinite(float(loss)) and self.halted is None
            if self._distributed:  # process 0's loss decides, for every process at this batch
                bad = self._processes.broadcast(int(bad)) == 1
            if bad:
                # A record now, so the live checks (and the verdict) see the bad state.
                self._record(epoch=self._epoch, batch=self._batches, trigger=GUARD, logs=logs)
                if self.halted is None:
                    what = (f"loss became {float(loss)}" if self._processes.index == 0
                            else "process 0's loss became non-finite")
                    self.model.stop_training = True
                    self.session.halt(f"{what} at {where_label(self._epoch, self._batches)} "
                                      "(batch_guard)")
                return
        if self.freq != "epoch" and self._batches % self.freq == 0:
            self._record(epoch=self._epoch, batch=self._batches, trigger=BATCH, logs=logs)

    def on_epoch_end(self, epoch, logs=None):
        self._epoch = epoch + 1
        self._record(epoch=epoch + 1, batch=None, trigger=EPOCH, logs=logs)

    def on_train_end(self, logs=None):
        self.session.end()

    # -- recording ------------------------------------------------------------------
    def _record(self, *, epoch, batch, trigger, logs):
        """Take a record; with several processes, a collective step every process takes.

        Every process sends its replicas' checksums (one gather), process 0
        records and checks, and tells the others whether to stop (one
        broadcast): an error on process 0 stops the others too, never leaving
        them waiting in their next all-reduce.
        """
        procs = self._processes
        if not self._distributed:
            if procs.index == 0:
                self._record_here(epoch=epoch, batch=batch, trigger=trigger, logs=logs)
            return
        code = _FAILED
        try:
            variables = [v for v in self._variables() if self.session.wants(v.path, v.trainable)]
            spreads, fetched = self._replica_spreads(variables)
            if procs.index == 0:
                self._record_here(epoch=epoch, batch=batch, trigger=trigger, logs=logs,
                                  variables=variables, spreads=spreads, fetched=fetched)
            code = _GO_ON if self.halted is None else _HALTED
        finally:
            if code == _FAILED and self.halted is not None:
                code = _HALTED  # raise_error=True: CheckHalted is on its way up
            told = procs.broadcast(code)
        if procs.index != 0 and told != _GO_ON and self.halted is None:
            self.model.stop_training = True
            if told == _FAILED:
                raise WeightwatchError(f"weightwatch: process 0 stopped with an error while "
                                       f"recording {self.run_dir}; this process stops too")
            self.session.halt(f"process 0 halted training at {where_label(epoch, batch)}: see "
                              f"{self.run_dir / 'verdict.json'}")

    def _replica_spreads(self, variables):
        """(``replica_spread`` by recorded name, or None; the arrays fetched on the way, by id).

        The replicas are this process's copies of each variable (several
        devices) and, with several processes, every process's: their
        checksums are gathered in one collective.
        """
        fetched = {}
        local = []
        for v in variables:
            copies = local_copies(v.handle)
            if copies is None:
                fetched[id(v.handle)] = array = self._fetch(v.handle)
                copies = [array]
            local.append([checksum(c) for c in copies])
        if not variables:
            return None, fetched
        width = min(len(c) for c in local)
        if not self._distributed and width < 2:
            return None, fetched
        sums = np.array([c[:width] for c in local], dtype=np.float64).transpose(1, 0, 2)  # (replica, var, 3)
        if self._distributed:
            sums = self._processes.gather(sums).reshape((-1,) + sums.shape[1:])
        return dict(zip((v.path for v in variables), spread(sums).tolist())), fetched

    def _record_here(self, *, epoch, batch, trigger, logs, variables=None, spreads=None, fetched=None):
        """Record on this process (process 0); returns why training stops now, or None."""
        if not self.session.recording:
            return None
        logs = clean_logs(logs, lambda v: keras.ops.convert_to_numpy(v))
        self._add_optimizer_logs(logs)
        if self._chance_pending:  # a lazily built model has its output shape only now
            known, chance = chance_loss(self.model)
            if known:
                self._chance_pending = False
                self.session.annotate({"chance_loss": chance})
        gradient = self._gradients.for_record(getattr(self.model, "optimizer", None),
                                              lr=logs.get("learning_rate"))
        if variables is None:
            variables = list(self._variables())
            if any(local_copies(v.handle) is not None for v in variables[:1]):  # several devices
                spreads, fetched = self._replica_spreads(
                    [v for v in variables if self.session.wants(v.path, v.trainable)])
        fetch = self._fetch
        if fetched:
            def fetch(handle):
                array = fetched.pop(id(handle), None)
                return self._fetch(handle) if array is None else array
        reason = self.session.record(variables, fetch, epoch=epoch, batch=batch, step=self._step,
                                     trigger=trigger, logs=logs, gradient=gradient,
                                     replica_spread=spreads, penalty=self._penalty)
        if reason:
            self.model.stop_training = True
        return reason

    def _run_info(self) -> dict:
        info = {
            "framework": "keras",
            "backend": keras.backend.backend(),
            "optimizer": type(getattr(self.model, "optimizer", None)).__name__,
        }
        # Evidence beyond the weights (see keras_optimizer.py): which estimator fills
        # grad_rms, and the loss of a constant predictor (null when unknown).
        found = estimator(getattr(self.model, "optimizer", None))
        info["gradients"] = found[0] if found else None
        known, info["chance_loss"] = chance_loss(self.model)
        self._chance_pending = not known
        info["loss_floor"] = loss_floor(self.model) if self.loss_floor is None else self.loss_floor
        info["processes"] = self._processes.count
        info_versions = {"keras": keras.__version__}
        if info["backend"] == "tensorflow":
            import tensorflow as tf

            info_versions["tensorflow"] = tf.__version__
        info["framework_versions"] = info_versions
        return info

    def _variables(self):
        """A :class:`~.session.Variable` for every weight, in model order.

        The name is the variable's path, made unique (see
        :func:`~weightwatch.run.schema.unique_paths`); ``layer_path`` is the
        names of its owning layers below the model, which a nested Functional
        model's path can lack.

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
            unique = iter_unique(weights)
            plan = [(v, chains.get(id(v)), name, _layer_path(chains.get(id(v))))
                    for v, name in zip(unique, unique_paths(v.path for v in unique))]
            # The plan holds the variables themselves, so no id in the key
            # can be reused by a new object while the cache lives.
            cache = self._owner_cache = (key, plan)
        for v, chain, name, layer_path in cache[1]:
            frozen = not model.trainable if chain is None else not all(layer.trainable for layer in chain)
            yield Variable(v, name, v.trainable, frozen, layer_path)

    def _penalty(self, v, array: np.ndarray) -> float | None:
        """``v``'s regularisation penalty as training adds it to the loss, or None without one.

        Keras keeps a weight's regulariser on the variable (``add_weight(regularizer=...)``,
        a layer's ``kernel_regularizer``) and adds ``variable.regularizer(value)`` to the loss at
        every step, summed if it is not a scalar.  The same call, on the host copy this record
        holds: the penalty is exactly that of the recorded weights, and nothing runs on a
        variable another process shares (data parallelism over several processes).  A
        regulariser with state of its own (one drawing random numbers) has it advanced by the
        call.  One that cannot be evaluated outside a training step is reported once and
        recorded as null.  Keras' own L1, L2 and L1L2 on float32 or float64 weights are summed
        in numpy instead (a backend op and its host sync cost about 0.3 ms a tensor on
        TensorFlow, 100x a numpy pass), in float64: the same value to float32 rounding.  Narrower
        weights (a ``"float16"`` dtype policy) take the backend's path, whose rounding and
        overflow in that dtype are what training adds.
        """
        regularizer = getattr(v, "regularizer", None)
        if regularizer is None:
            return None
        if type(regularizer) in _SUM_PENALTIES and array.dtype in _SUM_DTYPES:   # no op, no sync
            return self._sum_penalty(regularizer, array)
        try:
            value = regularizer(keras.ops.convert_to_tensor(array))
            value = float(np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64).sum())
        except Exception as exc:   # a user's regulariser: recording must not stop training
            key = id(v)
            if key not in self._penalty_failed:
                self._penalty_failed.add(key)
                warnings.warn(f"weightwatch: the regulariser of {getattr(v, 'path', v)} could not be "
                              f"evaluated between steps ({type(exc).__name__}: {exc}); its penalty "
                              "is recorded as null", RuntimeWarning, stacklevel=2)
            return None
        return value

    def _sum_penalty(self, regularizer, array: np.ndarray) -> float:
        """``l1 * sum(|w|) + l2 * sum(w**2)``, summed in float64 (as Keras' L1, L2, L1L2 compute it).

        The coefficients are read once per regulariser: ``L1`` holds its own as a backend tensor,
        whose every read would be a device sync.
        """
        coef = self._coefficients.get(id(regularizer))
        if coef is None or coef[0] is not regularizer:
            coef = self._coefficients[id(regularizer)] = (
                regularizer, float(getattr(regularizer, "l1", 0.0)), float(getattr(regularizer, "l2", 0.0)))
        _, l1, l2 = coef
        a = array.reshape(-1)
        value = 0.0
        if l1 or type(regularizer) is keras.regularizers.L1:   # L1 and L2 have no 0 shortcut
            value += l1 * float(np.abs(a).sum(dtype=np.float64))
        if l2 or type(regularizer) is keras.regularizers.L2:
            value += l2 * float(np.square(a).sum(dtype=np.float64))
        return value

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


def _tf_read(v):
    """A Keras variable's value on TensorFlow: one ReadVariableOp, no copy.

    ``ResourceVariable.value()`` reads the variable; the tensor's ``__array__``
    is a view of its buffer (on CPU, the variable's own), so a caller that
    keeps the result must copy it.
    """
    return v.value.value().__array__()


def _layer_path(chain) -> str | None:
    """``base/dense_1`` for the chain (model, base, dense_1); None for the model's own variables."""
    return "/".join(layer.name for layer in chain[1:]) or None if chain else None


def _sublayers(layer):
    subs = getattr(layer, "_layers", None)
    if subs is None:
        subs = getattr(layer, "layers", [])
    return list(subs)
