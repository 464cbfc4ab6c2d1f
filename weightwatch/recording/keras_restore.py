"""``weightwatch.restore``: load recorded weights back into a Keras model.

After live checks halt a run, ``healthy.npz`` holds the weights of the last
record that passed; restoring them lets the user lower the learning rate and
resume from there instead of from scratch.  Tensors are matched by Keras
variable path, the identity recording uses.
"""

from __future__ import annotations

from ..errors import RunFormatError
from ..run.reader import read_weights
from ..run.schema import unique_paths
from .session import iter_unique


def restore(model, run_dir, record: int | None = None) -> int:
    """Assign the weights of ``record`` (default: the last healthy record) to ``model``.

    Returns the record index that was restored.  Raises
    :class:`~weightwatch.RunFormatError` when the weights of that record were
    not kept, or when the model lacks a recorded tensor or has a different
    shape for it.

    Example::

        model.fit(x, y, epochs=50, callbacks=[weightwatch.WatchCallback("runs/a")])
        # halted at epoch 12: restore epoch 11 and go on more gently
        weightwatch.restore(model, "runs/a")
        model.optimizer.learning_rate.assign(1e-4)
    """
    record, arrays = read_weights(run_dir, record)
    unique = iter_unique(model.weights)  # as the callback names them
    variables = dict(zip(unique_paths(v.path for v in unique), unique))
    missing = [p for p in arrays if p not in variables]
    if missing:
        raise RunFormatError(f"model has no variable {missing[0]!r} (and {len(missing) - 1} more) "
                             "recorded in this run: is it the same model?", path=run_dir)
    for p, a in arrays.items():
        v = variables[p]
        if tuple(v.shape) != a.shape:
            raise RunFormatError(f"tensor {p!r}: recorded shape {a.shape} != model shape {tuple(v.shape)}",
                                 path=run_dir)
    for p, a in arrays.items():
        variables[p].assign(a)
    return record
