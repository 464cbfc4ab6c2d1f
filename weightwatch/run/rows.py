"""Turning the arrays of one moment of training into a record's rows.

Framework-free: a recording adapter feeds it arrays fetched one tensor at a
time, and the seed-dump importer feeds it arrays parsed from JSON lists, so
both produce the same figures, manifest entries and rows.

Each tensor's array *becomes* its previous copy for the next record, so the
builder holds exactly one copy of the weights between records and, during a
record, one more tensor at most.  The figures go straight into one float
array (a row per tensor): Python lists of them cost ten times the memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .schema import COLUMNS, DELTA_COLUMNS, STAT_COLUMNS, layer_of, output_units, tensor_role
from .stats import UpdateDirection, tensor_row_recycling

_ROW_COLUMNS = STAT_COLUMNS + DELTA_COLUMNS


@dataclass(frozen=True)
class FromUpdate:
    """A gradient figure to derive from the update: ``grad_rms = rms(W_t - W_t-1) / step``.

    For plain gradient descent, whose update since the previous record is
    ``step`` (the learning rate times the number of steps) times the mean
    gradient of those steps; the update's size is a figure the record
    computes anyway.
    """

    step: float


@dataclass
class Rows:
    """One record's figures: manifest entries, tensor paths and ``values[i]`` = row of ``paths[i]``."""

    entries: list[dict]
    paths: list[str]
    values: np.ndarray


class RecordBuilder:
    """Rows of figures, one tensor at a time, against one previous copy of each tensor.

    ::

        builder = RecordBuilder()
        builder.start(len(variables))
        for path, array, trainable, frozen in ...:
            builder.add(path, array, trainable=trainable, frozen=frozen)
        rows = builder.finish()
    """

    def __init__(self, *, track_direction: bool = True):
        self.track_direction = track_direction
        #: The previous copy of each tensor, by path (the arrays last added).
        self.prev: dict[str, np.ndarray] = {}
        self._dirs: dict[str, UpdateDirection | None] = {}
        # A tensor's manifest entry and unit count depend on its path, shape
        # and dtype only: worked out once, not at every record.
        self._static: dict[tuple, tuple[dict, int | None]] = {}
        self._start(0)

    def reset(self) -> None:
        """Forget the previous copies: the next record has no update figures."""
        self.prev.clear()
        self._dirs.clear()

    def start(self, capacity: int) -> None:
        """Begin a record of at most ``capacity`` tensors."""
        self._start(capacity)

    def _start(self, capacity: int) -> None:
        self._values = np.empty((capacity, len(COLUMNS)))
        self._paths: list[str] = []
        self._entries: list[dict] = []

    def add(self, path: str, array: np.ndarray, *, trainable, frozen, dtype: str | None = None,
            layer_path: str | None = None, grad=None, replica_spread=None, penalty=None) -> None:
        """Add one tensor; ``array`` must be a copy the caller will not mutate.

        ``trainable`` / ``frozen`` are booleans, or None where the source does
        not know them (a seed dump).  ``layer_path`` names the owning layers
        from the model down, where the framework knows them.  ``grad`` is the
        tensor's ``grad_rms``: an estimate the caller read from the optimizer
        (a float), a :class:`FromUpdate`, or None (no estimate).
        ``replica_spread`` is how far the tensor's data-parallel replicas
        disagree (see :mod:`weightwatch.recording.replicas`), None with one
        replica.  ``penalty`` is the tensor's regularisation penalty (None
        without a regulariser).
        """
        key = (path, array.shape, array.dtype)
        known = self._static.get(key)
        if known is None:
            shape = tuple(array.shape)
            role = tensor_role(path, len(shape))
            entry = {"path": path, "layer": layer_of(path), "shape": list(shape),
                     "dtype": dtype or str(array.dtype), "kind": role}
            if layer_path:
                entry["layer_path"] = layer_path
            known = self._static[key] = (entry, output_units(role, shape))
        entry, units = known
        n = len(self._paths)
        if n == len(self._values):
            self._values = np.concatenate([self._values, np.empty_like(self._values[: max(n, 1)])])
        self._values[n] = self.row(path, array, trainable=trainable, frozen=frozen, units=units,
                                   grad=grad, replica_spread=replica_spread, penalty=penalty)
        self._paths.append(path)
        self._entries.append(entry)

    def finish(self) -> Rows:
        rows = Rows(self._entries, self._paths, self._values[: len(self._paths)])
        self._start(0)
        return rows

    def row(self, path: str, array: np.ndarray, *, trainable, frozen, units: int | None,
            grad=None, replica_spread=None, penalty=None) -> list:
        """The snapshot row of one tensor, in :data:`~.schema.COLUMNS` order."""
        prev = self.prev.get(path)
        if prev is not None and prev.shape != array.shape:
            prev = None  # reshaped (rebuilt layer): no meaningful delta
            self._dirs.pop(path, None)
        # The previous direction is dropped after this call, so its buffers are reused.
        figures, direction = tensor_row_recycling(array, prev, self._dirs.pop(path, None), units,
                                                   self.track_direction)
        self.prev[path] = array
        self._dirs[path] = direction
        flags = [np.nan if trainable is None else trainable, np.nan if frozen is None else frozen]
        if isinstance(grad, FromUpdate):
            d_l2 = figures["d_l2"]
            grad = (None if d_l2 is None or not grad.step > 0 or not array.size
                    else d_l2 / math.sqrt(array.size) / grad.step)
        return flags + [figures[c] for c in _ROW_COLUMNS] + [grad, replica_spread, penalty]
