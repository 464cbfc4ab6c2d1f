"""The run format's names: files, versions, columns, tensor roles and record triggers.

Everything a reader and a writer of a run directory must agree on lives here,
so a new statistic column or a new file is stated once.  The layout itself
is documented in the README ("Run format")::

    run/
      manifest.json          format, versions, model, the table of tensors
      record-000000.json     one snapshot per record, in order (0 = before training)
      record-000000.npz      the tensors themselves, with save_tensors=True
      history.bin            the records' figures again, in binary (see journal.py)
      verdict.json           why live checking halted the run, if it did
      healthy.npz            weights of the last record that passed live checks

Two words of the on-disk format predate the names used in the code: a
manifest tensor's ``"kind"`` is its *role* (kernel, bias...) and a
snapshot's ``"kind"`` is its *trigger* (begin, epoch, batch, guard).  The
files keep those keys, so every run written so far still opens.
"""

from __future__ import annotations

import fnmatch
import re

FORMAT = "weightwatch-run"
SNAPSHOT_FORMAT = "weightwatch-snapshot"
VERSION = 1

MANIFEST = "manifest.json"
VERDICT = "verdict.json"
HEALTHY = "healthy.npz"
HEALTHY_POINTER = "healthy.json"
RECORD_RE = re.compile(r"^record-(\d{6,})\.json$")


def record_name(index: int, suffix: str = ".json") -> str:
    return f"record-{index:06d}{suffix}"


# -- columns: one row of figures per tensor and record ------------------------------------
#: Statistics of the tensor at the record (over its finite values).
STAT_COLUMNS = ("size", "nan", "inf", "l2", "mean", "std", "min", "max", "absmax", "zero_frac")
#: Figures of the update since the previous record.
DELTA_COLUMNS = ("d_l2", "d_absmax", "changed", "dead_units", "d_cos")
#: Evidence from the optimizer's own state: ``grad_rms`` is the estimated RMS gradient per
#: element of the tensor at the record (null where the optimizer gives no estimate).
GRAD_COLUMNS = ("grad_rms",)
#: Agreement of data-parallel replicas: ``replica_spread`` is, per tensor, the largest relative
#: difference between a replica's checksum of the tensor and the first replica's (0 when every
#: replica holds the same values; null with one replica: one process on one device).
REPLICA_COLUMNS = ("replica_spread",)
#: The tensor's weight-regularisation penalty at the record, as training adds it to the loss
#: (``variable.regularizer(variable)`` in Keras; null for a tensor without a regulariser).
PENALTY_COLUMNS = ("penalty",)
#: Every column, in snapshot order; readers index by name (``manifest["columns"]``).
#: New columns are only ever appended, so a row written with fewer figures than a run's
#: ``columns`` holds the first ones (see :data:`FIRST_COLUMNS`).
COLUMNS = ("trainable", "frozen") + STAT_COLUMNS + DELTA_COLUMNS + GRAD_COLUMNS + REPLICA_COLUMNS \
    + PENALTY_COLUMNS
#: The columns of the first runs ever written (before ``grad_rms``): every row has at least
#: these, and a shorter row than its run's ``columns`` is read with the rest null.
FIRST_COLUMNS = COLUMNS[:17]

#: Columns that are flags (0/1) and counts (whole numbers); the rest are floats.
FLAG_COLUMNS = ("trainable", "frozen", "changed")
COUNT_COLUMNS = ("size", "nan", "inf", "dead_units")
#: How a figure of each column is written in JSON (NaN is written null).
JSON_TYPES = tuple(bool if c in FLAG_COLUMNS else int if c in COUNT_COLUMNS else float for c in COLUMNS)


# -- record triggers: why a record was taken ------------------------------------------------
BEGIN, EPOCH, BATCH, GUARD = "begin", "epoch", "batch", "guard"
TRIGGERS = (BEGIN, EPOCH, BATCH, GUARD)


def where_label(epoch: int, batch: int | None = None) -> str:
    """How every report names a moment of training: ``epoch 3`` or ``epoch 3 batch 200``."""
    return f"epoch {epoch}" if batch is None else f"epoch {epoch} batch {batch}"


# -- tensors: identity and role -----------------------------------------------------------

_DUPLICATE = re.compile(r"#\d+$")


def copy_suffix(path: str) -> str:
    """``#1`` for the tensors of a second layer of the same name (:func:`unique_paths`), else ``""``."""
    m = _DUPLICATE.search(path)
    return m.group(0) if m else ""


def layer_of(path: str) -> str:
    """The layer path of a tensor path: ``enc/dense/kernel`` -> ``enc/dense``; ``""`` for a bare name."""
    return path.rpartition("/")[0]


#: What a tensor is for; rules filter on it (``role = ["kernel"]``).
ROLES = ("kernel", "bias", "scale", "embedding", "moving_stat", "other")
#: Tensor roles from the variable's own name.
_ROLE_BY_NAME = {
    "kernel": "kernel", "recurrent_kernel": "kernel", "depthwise_kernel": "kernel",
    "pointwise_kernel": "kernel", "embeddings": "embedding", "bias": "bias",
    "gamma": "scale", "beta": "bias", "scale": "scale",
    "moving_mean": "moving_stat", "moving_variance": "moving_stat",
}


def tensor_role(name: str, ndim: int | None) -> str:
    """Classify a tensor as kernel / bias / scale / embedding / moving_stat / other.

    A second layer of the same name records ``dense/bias#1`` (:func:`unique_paths`): the
    ``#1`` says which layer, not what the tensor is.
    """
    leaf = _DUPLICATE.sub("", name.rsplit("/", 1)[-1])
    role = _ROLE_BY_NAME.get(leaf)
    if role is None:
        if leaf.endswith("kernel"):
            role = "kernel"
        elif leaf.endswith("bias"):
            role = "bias"
        elif ndim is not None and ndim >= 2:
            role = "kernel"
        else:
            role = "other"
    return role


def output_units(role: str, shape) -> int | None:
    """The output units a tensor holds weights of, for the dead-unit figure: a kernel's last axis,
    a bias's every element; None for other tensors.

    Why the bias too: a dead unit gets no gradient, but a kernel regularised (L1, L2) keeps moving
    its column towards 0, so the kernel shows it alive; its bias, rarely regularised, stays
    bit-identical.
    """
    if shape is None:
        return None
    if role == "kernel" and len(shape) >= 2:
        return int(shape[-1])
    if role == "bias" and len(shape) == 1 and shape[0] > 0:
        return int(shape[0])
    return None


def unique_paths(paths) -> list[str]:
    """The names variables are recorded under, given their paths in model order.

    Keras lets two layers share a name, and then their variables share a
    path; the second is recorded as ``path#1`` (the third ``path#2``...), so
    that neither hides the other and each is compared with its own previous
    values.  :func:`weightwatch.restore` names them the same way.
    """
    used: dict[str, int] = {}
    out = []
    for p in paths:
        n = used.get(p, 0)
        used[p] = n + 1
        out.append(p if n == 0 else f"{p}#{n}")
    return out


def select_tensors(paths, include=None, exclude=None):
    """Glob selection over tensor paths, as recording's include/exclude use it."""
    out = []
    for p in paths:
        if include and not any(fnmatch.fnmatchcase(p, g) for g in include):
            continue
        if exclude and any(fnmatch.fnmatchcase(p, g) for g in exclude):
            continue
        out.append(p)
    return out

