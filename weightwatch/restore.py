"""``weightwatch.restore``: load recorded weights back into a Keras model.

After live checks halt a run, ``healthy.npz`` holds the weights of the last
record that passed; restoring them lets the user lower the learning rate and
resume from there instead of from scratch.  Tensors are matched by Keras
variable path, the identity the recorder uses.
"""

from __future__ import annotations

from pathlib import Path

from .errors import RunFormatError
from .jsonio import loads
from .runformat import HEALTHY, HEALTHY_POINTER, load_npz, record_name, unique_paths


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
    run_dir = Path(run_dir)
    if record is None:
        pointer = run_dir / HEALTHY_POINTER
        if not (run_dir / HEALTHY).exists() or not pointer.exists():
            raise RunFormatError("no healthy weights kept in this run (record with check=True, "
                                 "or pass record=N of a run recorded with save_tensors=True)",
                                 path=run_dir)
        try:
            record = int(loads(pointer.read_bytes())["record"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunFormatError(f"unreadable healthy-weights pointer ({exc})", path=pointer) from None
        arrays = load_npz(run_dir / HEALTHY)
    else:
        path = run_dir / record_name(record, ".npz")
        if not path.exists():
            raise RunFormatError(f"record {record} has no saved tensors (record with save_tensors=True)",
                                 path=run_dir)
        arrays = load_npz(path)
    unique = list({id(v): v for v in model.weights}.values())  # as the callback names them
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
