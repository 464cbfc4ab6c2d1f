"""Turning weight arrays into snapshot rows, with one previous copy in memory.

Framework-free: the Keras callback feeds it arrays fetched one tensor at a
time, and the seed-format importer feeds it arrays parsed from JSON lists.
Each tensor's fetched array *becomes* its previous copy for the next record,
so the recorder holds exactly one copy of the weights between records and,
during a record, one more tensor at most.
"""

from __future__ import annotations

import numpy as np

from .stats import COLUMNS, UpdateDirection, _tensor_row_recycling

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
        # The previous direction is dropped after this call, so its buffers are reused.
        figures, direction = _tensor_row_recycling(array, prev, self._dirs.pop(path, None), units,
                                                   self.track_direction)
        self.prev[path] = array
        self._dirs[path] = direction
        return [trainable, frozen] + [figures[c] for c in _ROW_COLUMNS]
