"""``weightwatch.restore``: load recorded weights back into a Keras model.

After live checks halt a run, ``healthy.npz`` holds the weights of the last
record that passed; restoring them lets the user lower the learning rate and
resume from there instead of from scratch.  Tensors are matched by Keras
variable path, the identity recording uses.
"""

from __future__ import annotations

from ..errors import RestoreError
from ..run.reader import plan_restore, read_weights
from ..run.schema import unique_paths
from .session import iter_unique


def restore(model, run_dir, record: int | None = None, *, allow_nonfinite: bool = False) -> int:
    """Assign the weights of ``record`` (default: the last healthy record) to ``model``.

    Returns the record index that was restored.  All or nothing: every
    variable of the model is matched, by variable path, to a recorded array
    of the same shape and dtype (and every recorded array to a variable), and
    every value must be finite (unless ``allow_nonfinite=True``); otherwise
    :class:`~weightwatch.RestoreError` is raised and no variable has changed.
    :class:`~weightwatch.RunFormatError` when the weights of that record were
    not kept or cannot be read.

    Example::

        model.fit(x, y, epochs=50, callbacks=[weightwatch.WatchCallback("runs/a")])
        # halted at epoch 12: restore epoch 11 and go on more gently
        weightwatch.restore(model, "runs/a")
        model.optimizer.learning_rate.assign(1e-4)
    """
    import keras

    record, arrays = read_weights(run_dir, record)
    unique = iter_unique(model.weights)  # as the callback names them
    variables = dict(zip(unique_paths(v.path for v in unique), unique))
    plan = plan_restore(arrays, {p: (tuple(v.shape), v.dtype) for p, v in variables.items()},
                        allow_nonfinite=allow_nonfinite, where=run_dir)
    before = [(variables[p], keras.ops.convert_to_numpy(variables[p])) for p, _ in plan]
    done = 0
    try:
        for p, a in plan:
            variables[p].assign(a)
            done += 1
    except Exception as exc:
        for v, old in before[:done + 1]:
            try:
                v.assign(old)
            except Exception:  # noqa: BLE001 - the error below says what happened
                pass
        raise RestoreError(f"assigning {plan[done][0]!r} failed ({exc}); every variable was put back",
                           path=run_dir) from exc
    return record
