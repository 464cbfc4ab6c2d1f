"""The processes and replicas of a data-parallel Keras run, as the callback needs them.

Several processes train one model: process 0 writes the run and decides
whether to halt, and every process must learn that decision at the same
step, or the others wait forever in their next all-reduce.  Two collectives
carry it, both from the backend the run already uses:

* ``broadcast(code)``: process 0's integer reaches every process
  (``jax.experimental.multihost_utils.broadcast_one_to_all``,
  ``torch.distributed.broadcast``);
* ``gather(array)``: every process's float64 array, stacked in process order
  (``multihost_utils.process_allgather``, ``torch.distributed.all_gather``),
  for the replicas' checksums (see :mod:`.replicas`).

Which process this is comes from the backend (``jax.process_index()``,
``torch.distributed.get_rank()``), else from the launcher's environment
(``TF_CONFIG``'s task, torchrun's ``RANK`` / ``WORLD_SIZE``), else it is the
only one; ``WatchCallback(process_id=..., num_processes=...)`` overrides it,
as ``keras.distribution.initialize`` takes them.

The copies of a variable that one process holds on several devices
(``tf.distribute.MirroredStrategy``, ``keras.distribution.DataParallel``
over several local devices) are its local replicas: :func:`local_copies`.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import keras
import numpy as np


class Processes:
    """This process's place in the run, and the collectives between the processes (or None)."""

    def __init__(self, index: int, count: int, source: str,
                 gather: Callable[[np.ndarray], np.ndarray] | None = None,
                 broadcast: Callable[[int], int] | None = None):
        self.index = index
        self.count = count
        #: Where ``index`` and ``count`` came from: "jax", "torch", "TF_CONFIG", "RANK", "argument"...
        self.source = source
        self._gather = gather
        self._broadcast = broadcast

    @property
    def collective(self) -> bool:
        """Whether the processes can share a decision (the backend has collectives)."""
        return self.count > 1 and self._broadcast is not None

    def broadcast(self, code: int) -> int:
        """Process 0's ``code`` on every process (every process must call it, at the same point)."""
        return int(self._broadcast(int(code))) if self.collective else int(code)

    def gather(self, local: np.ndarray) -> np.ndarray:
        """``local`` (float64) from every process, stacked: shape ``(count,) + local.shape``."""
        local = np.ascontiguousarray(local, dtype=np.float64)
        if not self.collective or local.size == 0:
            return local[None]
        return self._gather(local)

    def __repr__(self):
        return f"Processes(index={self.index}, count={self.count}, source={self.source!r})"


def find_processes(process_id: int | None = None, num_processes: int | None = None) -> Processes:
    """This process's index and the number of processes, with the backend's collectives."""
    found = _from_backend() or _from_environment() or Processes(0, 1, "single")
    if num_processes is not None and found.collective and num_processes != found.count:
        raise ValueError(f"`num_processes` must match the {found.source} backend's "
                         f"{found.count} processes. Received: num_processes={num_processes}")
    if process_id is not None and found.collective and process_id != found.index:
        raise ValueError(f"`process_id` must match the {found.source} backend's process index "
                         f"{found.index}. Received: process_id={process_id}")
    if process_id is None and num_processes is None:
        return found
    count = found.count if num_processes is None else num_processes
    index = found.index if process_id is None else process_id
    if not 0 <= index < count:
        raise ValueError("`process_id` must be in [0, num_processes). "
                         f"Received: process_id={index}, num_processes={count}")
    if found.collective:
        return found
    return Processes(index, count, "argument")


def _from_backend() -> Processes | None:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        count = jax.process_count()
        if count < 2:
            return None
        from jax.experimental import multihost_utils

        def gather(a: np.ndarray) -> np.ndarray:
            # Sent as int32 words: without jax_enable_x64, JAX would round float64 to float32.
            words = np.asarray(multihost_utils.process_allgather(a.view(np.int32)))
            return np.ascontiguousarray(words).view(np.float64).reshape((count,) + a.shape)

        def broadcast(code: int) -> int:
            return int(multihost_utils.broadcast_one_to_all(np.int32(code)))

        return Processes(jax.process_index(), count, "jax", gather, broadcast)
    if backend == "torch":
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        count = dist.get_world_size()
        device = (torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl"
                  else torch.device("cpu"))

        def gather(a: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(a).to(device)
            out = [torch.empty_like(t) for _ in range(count)]
            dist.all_gather(out, t)
            return np.stack([o.cpu().numpy() for o in out])

        def broadcast(code: int) -> int:
            t = torch.tensor([code], dtype=torch.int64, device=device)
            dist.broadcast(t, src=0)
            return int(t.item())

        return Processes(dist.get_rank(), count, "torch", gather, broadcast)
    return None  # TensorFlow: MultiWorkerMirroredStrategy does not train under Keras 3.15


def _from_environment() -> Processes | None:
    """The launcher's environment: ``TF_CONFIG`` (chief first, then workers), or ``RANK``."""
    config = os.environ.get("TF_CONFIG")
    if config:
        try:
            cfg = json.loads(config)
            cluster, task = cfg.get("cluster") or {}, cfg.get("task") or {}
            chiefs, workers = len(cluster.get("chief") or ()), len(cluster.get("worker") or ())
            kind, i = task.get("type"), int(task.get("index", 0))
        except (ValueError, TypeError, AttributeError):
            return None
        if chiefs + workers > 1 and kind in ("chief", "worker"):
            return Processes(i if kind == "chief" else chiefs + i, chiefs + workers, "TF_CONFIG")
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is not None and world is not None:
        try:
            r, w = int(rank), int(world)
        except ValueError:
            return None
        if w > 1 and 0 <= r < w:
            return Processes(r, w, "RANK")
    return None


def local_copies(variable) -> list[np.ndarray] | None:
    """The copies of ``variable`` on this process's devices, or None when it holds one.

    ``tf.distribute`` keeps one component variable per device (a
    MirroredVariable's ``values``); JAX keeps one shard per device of a fully
    replicated array.  A sharded (model-parallel) array's shards are parts,
    not copies: None.
    """
    value = getattr(variable, "value", None)
    components = getattr(value, "values", None)
    if isinstance(components, (tuple, list)) and len(components) > 1:
        return [np.array(c.numpy()) for c in components]
    sharding = getattr(value, "sharding", None)
    devices = getattr(sharding, "addressable_devices", ())
    if len(devices) > 1 and getattr(sharding, "is_fully_replicated", False):
        return [np.asarray(s.data) for s in value.addressable_shards]
    return None
