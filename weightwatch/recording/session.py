"""A run being recorded, without any framework: the part every adapter shares.

An adapter (the Keras callback today; a PyTorch hook tomorrow) knows how to
list a model's variables, read one into numpy and stop training.  Everything
else is here: which tensors to record, their figures against one previous
copy, writing the run whole, checking it live, the verdict and the healthy
weights, and what a write error does.  So an adapter is a thin file, and the
behaviour it promises is tested once.

::

    session = RecordingSession("runs/exp1")
    session.start_fit()                       # loads the rules: a bad rule file fails here
    session.open(model_name="mlp", info={"framework": "..."}, initial_epoch=0)
    session.record(variables, fetch, epoch=0, batch=None, step=0, trigger="begin", logs={})
    ...
    session.end()
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import numpy as np

from ..errors import CheckHalted, WeightwatchError
from ..run.model import Record, Run
from ..run.rows import RecordBuilder
from ..run.schema import record_name, select_tensors
from ..run.writer import RunWriter
from ..run.fsync import wait_for_sync

class Variable(NamedTuple):
    """One variable as an adapter lists it."""

    handle: object               # what the adapter's ``fetch`` reads
    path: str                    # the recorded name (the framework's path, made unique)
    trainable: bool
    frozen: bool                 # its layer or an ancestor has trainable=False
    layer_path: str | None = None  # the owning layers' names from the model down


class RecordingSession:
    """Records one run: options as :class:`weightwatch.WatchCallback` documents them.

    ``halted`` is None, or why live checking stopped training.  ``printer``
    receives what live checking has to say (``new_findings``, ``halted``,
    ``summary``: :class:`weightwatch.output.live.LivePrinter` in the adapters);
    None, or ``verbose=0``, prints nothing.
    """

    def __init__(self, run_dir, *, trainable_only=False, include=None, exclude=None,
                 save_tensors=False, overwrite=False, check=True, rules=None, halt_on="error",
                 raise_error=False, keep_healthy=None, io_errors="warn", verbose=1, printer=None):
        if halt_on not in ("error", "warning", None):
            raise ValueError(f"`halt_on` must be 'error', 'warning' or None. Received: halt_on={halt_on!r}")
        if io_errors not in ("warn", "raise"):
            raise ValueError(f"`io_errors` must be 'warn' or 'raise'. Received: io_errors={io_errors!r}")
        if isinstance(include, str) or isinstance(exclude, str):
            raise ValueError("`include` and `exclude` take a list of glob patterns. "
                             f"Received: include={include!r}, exclude={exclude!r}")
        self.run_dir = Path(run_dir)
        self.trainable_only = trainable_only
        self.include = list(include) if include else None
        self.exclude = list(exclude) if exclude else None
        self.save_tensors = save_tensors
        self.overwrite = overwrite
        self.check = check
        self.rules = rules
        self.halt_on = halt_on
        self.raise_error = raise_error
        self.keep_healthy = check if keep_healthy is None else keep_healthy
        self.io_errors = io_errors
        self.verbose = verbose

        self.writer: RunWriter | None = None
        self.builder = RecordBuilder()
        #: The histories in memory, kept only when checks run live.
        self.run: Run | None = None
        self.live = None
        self.printer = printer if verbose else None
        #: The run directory could not be opened: nothing is recorded.
        self.write_failed = False
        self.halted: str | None = None
        self._started = time.perf_counter()

    # -- the life of a run ---------------------------------------------------------------------
    def start_fit(self) -> None:
        """A new fit begins: nothing halted yet; the rules load (once) so a bad file fails now."""
        self.halted = None
        if self.check and self.live is None:
            from ..checking.live import LiveChecker

            self.live = LiveChecker(self.rules, halt_on=self.halt_on)

    def open(self, *, model_name: str | None, info: dict, initial_epoch: int) -> bool:
        """Open (or keep) the run; True when a "begin" record should be taken.

        A second fit with the same session continues the run without a begin
        record: the previous weights are in memory, so the next record's
        update covers whatever happened between the two fits.  A fit with
        ``initial_epoch > 0`` continues the run already on disk.
        """
        if self.writer is not None and self.writer.dir == self.run_dir and not self.write_failed:
            self.writer.reopen()  # the lock the previous fit's end released (RunDirLockedError)
            return False
        self.builder.reset()
        resume = initial_epoch > 0 and not self.overwrite
        try:
            self.writer = RunWriter(self.run_dir, overwrite=self.overwrite, resume=resume,
                                    model_name=model_name, info=info)
        except OSError as exc:
            self._open_error(exc)
            return False
        self.writer.missing.listener = self._write_error
        if self.trainable_only and self.writer.manifest.get("trainable_only") is not True:
            # A tensor leaves the records when it stops being trainable: the reader must know.
            self.writer.manifest["trainable_only"] = True
            try:
                self.writer.write_manifest()
            except OSError:
                self.writer.mark_manifest_dirty()
        self.run = None
        if self.live is None:
            return True
        if resume and self.writer.next_record > 0:
            from ..run.reader import open_run

            try:
                self.run = open_run(self.run_dir)
            except WeightwatchError:
                self.run = None
        if self.run is None:
            self.run = Run(self.run_dir, source="weightwatch", manifest=self.writer.manifest)
        self.live.start()
        if self.run.records:
            # A continued run: what its records on disk already show (the halt being resumed
            # from, say) is not news, and must not halt the new fit at its first record.
            self.live.update(self.run)
        self._started = time.perf_counter()
        return True

    def annotate(self, info: dict) -> None:
        """Facts about the run that the adapter learns after opening it; the manifest gains them.

        (The loss of a constant predictor needs the model's output shape,
        which a lazily built model has only after its first step.)
        """
        if self.writer is None or self.write_failed:
            return
        manifest = self.writer.manifest
        if all(k in manifest and manifest[k] == v for k, v in info.items()):
            return
        manifest.update(info)
        if self.run is not None and self.run.manifest is not manifest:
            self.run.manifest.update(info)
        try:
            self.writer.write_manifest()
        except OSError as exc:
            self._write_error(exc)

    def wants(self, path: str, trainable: bool) -> bool:
        """Whether a variable is recorded (``trainable_only``, ``include``, ``exclude``)."""
        if self.trainable_only and not trainable:
            return False
        return not (self.include or self.exclude) or bool(select_tensors((path,), self.include, self.exclude))

    @property
    def recording(self) -> bool:
        return self.writer is not None and self.halted is None and not self.write_failed

    def record(self, variables: list[Variable], fetch: Callable[[object], np.ndarray], *, epoch: int,
               batch: int | None, step: int, trigger: str, logs: dict,
               gradient: Callable[[object], object] | None = None,
               replica_spread: dict[str, float] | None = None,
               penalty: Callable[[object, np.ndarray], float | None] | None = None) -> str | None:
        """Take one record; returns why training must stop now, or None.

        ``fetch(handle)`` returns a host copy of the variable that later
        training steps cannot mutate; it is called only for variables that
        are recorded.  ``logs`` must already be JSON-safe floats (or None).
        ``gradient(handle)``, when given, is the variable's ``grad_rms``
        figure: a float read from the optimizer's state, a
        :class:`~weightwatch.run.rows.FromUpdate`, or None; it is asked only
        for recorded variables that are trainable and not frozen (the
        optimizer's state of any other variable is stale, if it has any).
        ``replica_spread``, when given, maps a recorded name to how far the
        variable's data-parallel replicas disagree (see :mod:`.replicas`);
        a variable it does not name has no such figure.  ``penalty(handle,
        array)``, when given, is the variable's regularisation penalty on its
        fetched ``array`` (None without a regulariser); it is asked only for
        recorded variables that are trainable and not frozen, the ones whose
        penalties training adds to the loss.
        """
        if not self.recording:
            return None
        # The previous healthy-weights write must be done before the builder replaces the
        # arrays it is writing (a failure of it is the writer's to report, and to retry).
        self.writer.wait_healthy()
        builder = self.builder
        builder.start(len(variables))
        for v in variables:
            if self.wants(v.path, v.trainable):
                trained = v.trainable and not v.frozen
                grad = gradient(v.handle) if gradient is not None and trained else None
                array = fetch(v.handle)
                builder.add(v.path, array, trainable=bool(v.trainable), frozen=bool(v.frozen),
                            layer_path=v.layer_path, grad=grad,
                            replica_spread=None if replica_spread is None else replica_spread.get(v.path),
                            penalty=penalty(v.handle, array) if penalty is not None and trained else None)
        rows = builder.finish()
        arrays = {p: builder.prev[p] for p in rows.paths} if self.save_tensors else None
        try:
            self.writer.add_tensors(rows.entries)
            index = self.writer.write_record(
                epoch=epoch, batch=batch, step=step, trigger=trigger, paths=rows.paths,
                values=rows.values, logs=logs, wall=time.time(), arrays=arrays)
        except OSError:
            # Not written (the writer keeps what is missing, for the warning at the end); the
            # next record tries again.  Its update figures then span two records' training.
            return None
        if self.live is None:
            return None  # nothing reads the histories in memory: they are not kept
        record = Record(index=index, epoch=epoch, batch=batch, step=step, trigger=trigger,
                        time=time.time(), logs=logs, file=record_name(index),
                        tensors_file=record_name(index, ".npz") if arrays is not None else None)
        self.run.append(record, rows.paths, rows.values, rows.entries)
        return self._check(index)

    def _check(self, index: int) -> str | None:
        outcome = self.live.update(self.run)
        if self.printer is not None:
            self.printer.new_findings(outcome.new)
        if outcome.healthy and self.keep_healthy:
            try:
                self.writer.keep_healthy(index, self.builder.prev)
            except OSError as exc:  # the hard link's pointer: the writer's thread reports its own
                self.writer.missing.add("healthy", index, exc)
        if outcome.halt and self.halted is None:
            try:
                self.writer.write_verdict(self.live.verdict(self.run, outcome, self.writer.healthy_record))
            except OSError:
                pass  # in the writer's missing, for the warning
            return self.halt(outcome.reason, outcome.report)
        return None

    def halt(self, reason: str, report=None) -> str:
        """Stop recording: ``raise_error`` raises :class:`CheckHalted`, else the reason is returned
        for the adapter to stop training its own way.  Either way the halt is announced."""
        self.halted = reason
        if self.printer is not None and self.run is not None and self.run.records:
            self.printer.halted(self.run, reason, report,
                                None if self.writer is None else self.writer.healthy_record)
        if self.raise_error:
            if self.writer is not None:
                self.writer.close()  # fit() ends with this exception: no on_train_end to close it
            raise CheckHalted(f"weightwatch halted training: {reason}", report=report)
        return reason

    def end(self) -> None:
        """Training ended: the last files reach the disk, and the summary is printed."""
        if self.writer is not None and not self.write_failed:
            writer = self.writer
            writer.wait_healthy()
            try:
                wait_for_sync(writer.dir)  # the last record's background fsync
            except OSError as exc:
                writer.missing.add("sync", record_name(writer.next_record - 1), exc)
            if writer.missing and self.io_errors == "warn":
                healthy = ((writer.healthy_record, writer.healthy_wanted)
                           if writer.healthy_wanted is not None else None)
                summary = writer.missing.summary(healthy)
                writer.missing.clear()  # told once; a second fit tells its own
                if summary:
                    warnings.warn(f"weightwatch: {self.run_dir} is incomplete: {summary}. Each was "
                                  "retried at the next record; training went on", RuntimeWarning,
                                  stacklevel=3)
            writer.close()  # another writer may continue the run now
        if self.live is not None and self.run is not None and self.printer is not None:
            self.printer.summary(self.live.final_report(self.run), time.perf_counter() - self._started,
                                 self.run.path)

    def _open_error(self, exc: OSError) -> None:
        """The run directory cannot be opened at all: nothing can be recorded."""
        msg = f"weightwatch: cannot write to {self.run_dir}: {exc.strerror or exc}"
        if self.io_errors == "raise":
            raise WeightwatchError(msg) from exc
        if not self.write_failed:
            warnings.warn(msg + "; recording stops, training goes on", RuntimeWarning, stacklevel=4)
        self.write_failed = True

    def _write_error(self, kind: str, what, exc: BaseException) -> None:
        """One file of the run could not be written (the writer's listener): with
        ``io_errors="raise"`` that stops training; else it is told at the end (a lost journal
        entry only ever costs reading speed, and never stops anything)."""
        if self.io_errors == "raise" and kind != "journal":
            what = {"healthy": f"healthy.npz (the weights of record {what})",
                    "tensors": f"the tensors of record {what}", "record": f"the record of {what}"}.get(kind, what)
            raise WeightwatchError(f"weightwatch: cannot write {what} in {self.run_dir}: "
                                   f"{getattr(exc, 'strerror', None) or exc}") from exc


def clean_logs(logs: dict | None, to_float: Callable[[object], float] = float) -> dict:
    """Logs as JSON-safe floats; a non-finite value becomes null, a value that is no number is dropped."""
    out = {}
    for k, v in (logs or {}).items():
        try:
            f = float(v) if isinstance(v, (int, float)) else float(to_float(v))
        except Exception:
            continue
        out[k] = f if np.isfinite(f) else None
    return out


def iter_unique(variables: Iterable) -> list:
    """Variables in order, each once (a variable shared by two layers is recorded once)."""
    return list({id(v): v for v in variables}.values())
