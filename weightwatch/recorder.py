"""Turning weight arrays into snapshot rows, with one previous copy in memory.

Framework-free: the Keras callback feeds it arrays fetched one tensor at a
time, and the seed-format importer feeds it arrays parsed from JSON lists.
Each tensor's fetched array *becomes* its previous copy for the next record,
so the recorder holds exactly one copy of the weights between records and,
during a record, one more tensor at most.
"""

from __future__ import annotations

import numpy as np

from .stats import COLUMNS, UpdateDirection, tensor_row

_ROW_COLUMNS = COLUMNS[2:]


class Recorder:
    def __init__(self, *, track_direction: bool = True):
        self.track_direction = track_direction
        self.prev: dict[str, np.ndarray] = {}
        self._dirs: dict[str, UpdateDirection | None] = {}

    def reset(self) -> None:
        self.prev.clear()
        self._dirs.clear()

    def row(self, path: str, array: np.ndarray, *, trainable, frozen, units: int | None) -> list:
        """The snapshot row of one tensor; ``array`` must be a copy the caller will not mutate."""
        prev = self.prev.get(path)
        if prev is not None and prev.shape != array.shape:
            prev = None  # reshaped (rebuilt layer): no meaningful delta
            self._dirs.pop(path, None)
        figures, direction = tensor_row(array, prev, self._dirs.get(path), units=units,
                                        track_direction=self.track_direction)
        self.prev[path] = array
        self._dirs[path] = direction
        return [trainable, frozen] + [figures[c] for c in _ROW_COLUMNS]
