"""Do data-parallel replicas hold the same weights?  Checksums, and their spread.

In data-parallel training every replica (a device in one process, or a
process) holds a copy of every weight, and the copies must stay identical:
the all-reduced gradient is applied to each.  A broken all-reduce, a
BatchNorm whose moving statistics are updated from each replica's own batch,
or a seed that differs between processes makes them drift apart silently.

Comparing whole tensors between processes would move the model over the
network at every record; three float64 figures per tensor are enough to see
a copy that differs: the sum, the sum of absolute values and the sum of
squares.  A replica's ``replica_spread`` figure is the largest relative
difference between its checksums and the first replica's::

    max over replicas r of  |sum_r - sum_0| / L1_0,  |L1_r - L1_0| / L1_0,  |SS_r - SS_0| / SS_0

(the sum is compared relative to the L1 norm: a kernel's sum is near zero).
Copies that agree bit for bit give exactly 0; float32 rounding of one
element in a thousand-element tensor moves it by about 1e-10; the noise of a
diverged replica by 1e-4 and more.  A checksum that is NaN or Inf on some
replicas only is an infinite spread; NaN on all of them is judged by the
``nonfinite`` check, not here (the spread is 0).

Framework-free: the adapters hand in numpy arrays, and the collective that
gathers checksums between processes is theirs.
"""

from __future__ import annotations

import numpy as np

#: Figures of one tensor's checksum: sum, sum of |x|, sum of x^2 (float64).
CHECKSUM_FIGURES = 3
_TINY = 1e-30


def checksum(array: np.ndarray) -> np.ndarray:
    """The checksum of one replica's copy of a tensor: ``[sum, sum |x|, sum x^2]`` in float64."""
    x = np.asarray(array)
    if x.dtype.kind not in "fc" or x.dtype.itemsize < 4:
        x = x.astype(np.float64)
    x = x.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.array([np.add.reduce(x, dtype=np.float64),
                         np.add.reduce(np.abs(x), dtype=np.float64),
                         float(np.dot(x.astype(np.float64, copy=False), x.astype(np.float64, copy=False)))
                         if x.size else 0.0])


def spread(checksums: np.ndarray) -> np.ndarray:
    """``replica_spread`` per tensor from ``checksums[replica, tensor, figure]``.

    NaN for every tensor when fewer than two replicas are given.
    """
    c = np.asarray(checksums, dtype=np.float64)
    if c.ndim != 3 or c.shape[0] < 2:
        return np.full(c.shape[1] if c.ndim == 3 else 0, np.nan)
    ref, others = c[0], c[1:]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        l1 = np.abs(ref[:, 1])
        ss = np.abs(ref[:, 2])
        scale = np.stack([l1, l1, ss], axis=-1) + _TINY
        diff = np.abs(others - ref) / scale
    same = (others == ref) | (np.isnan(others) & np.isnan(ref))
    diff = np.where(same, 0.0, diff)
    diff = np.where(np.isnan(diff), np.inf, diff)  # finite on one replica, not on another
    return diff.max(axis=-1).max(axis=0)
