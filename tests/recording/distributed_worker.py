"""One process of a data-parallel training run, for tests/recording/test_distributed.py.

Run as a script in a fresh interpreter (device and process set-up must happen
before the backend initialises)::

    python distributed_worker.py SETUP RUN_DIR OUT_JSON [--rank R --port P] [--fault F]

SETUP is ``mirrored`` (TensorFlow, MirroredStrategy over 2 logical CPUs),
``jax-devices`` (JAX, DataParallel over 2 host devices), ``jax-processes``
(JAX, 2 processes, ``keras.distribution.initialize`` with gloo CPU
collectives) or ``torch-processes`` (torch, 2 processes, gloo, the gradient
all-reduced in ``train_step``).  FAULT is ``none``, ``lr`` (a learning rate
far too high from epoch 2 on, on every process: live checks must halt) or
``perturb`` (rank 1 alone adds noise to a kernel at the end of epoch 2).

Writes OUT_JSON: the epochs this process trained, whether the callback
halted it, and its final weights (for the statistics to be compared with).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("setup", choices=["mirrored", "jax-devices", "jax-processes", "torch-processes"])
p.add_argument("run_dir")
p.add_argument("out")
p.add_argument("--rank", type=int, default=0)
p.add_argument("--port", type=int, default=0)
p.add_argument("--fault", choices=["none", "lr", "perturb"], default="none")
p.add_argument("--epochs", type=int, default=4)
args = p.parse_args()

EPOCHS = args.epochs
backend = {"mirrored": "tensorflow", "jax-devices": "jax", "jax-processes": "jax",
           "torch-processes": "torch"}[args.setup]
os.environ["KERAS_BACKEND"] = backend
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's weightwatch

strategy = None
if args.setup == "mirrored":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
elif args.setup == "jax-devices":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
elif args.setup == "jax-processes":
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
elif args.setup == "torch-processes":
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=args.rank,
                            world_size=2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import weightwatch  # noqa: E402

if args.setup == "jax-devices":
    import jax

    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
elif args.setup == "jax-processes":
    import jax

    keras.distribution.initialize(f"localhost:{args.port}", num_processes=2, process_id=args.rank)
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False))

keras.utils.set_random_seed(0)  # the same initial weights on every process
rng = np.random.default_rng(100 + args.rank)  # each process its own shard of the data
x = rng.standard_normal((256, 8)).astype("float32")
y = (x @ np.linspace(-1, 1, 8).astype("float32"))[:, None]


def _out():  # with a regulariser: its penalty is recorded from process 0's host copy
    return keras.layers.Dense(1, name="out", kernel_regularizer=keras.regularizers.L2(1e-4))


def build():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="hidden"),
                             _out()], name="dp")


if backend == "torch":
    import torch
    import torch.distributed as dist

    class AllReduced(keras.Sequential):
        """model.fit with the gradient averaged over the processes (what DDP does)."""

        def train_step(self, data):
            x, y = data[0], data[1]
            self.zero_grad()
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred)
            loss.backward()
            weights = self.trainable_weights
            grads = [v.value.grad for v in weights]
            for g in grads:
                dist.all_reduce(g)
                g /= dist.get_world_size()
            with torch.no_grad():
                self.optimizer.apply(grads, weights)
            for m in self.metrics:
                m.update_state(loss) if m.name == "loss" else m.update_state(y, y_pred)
            return {m.name: m.result() for m in self.metrics}

    def build():  # noqa: F811
        return AllReduced([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="hidden"),
                           _out()], name="dp")


class Fault(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = 0

    def on_epoch_begin(self, epoch, logs=None):
        if args.fault == "lr" and epoch == 1:  # epoch 2 as Keras prints it
            self.model.optimizer.learning_rate.assign(50.0)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs = epoch + 1
        if args.fault == "perturb" and epoch == 1:
            perturb(self.model.get_layer("hidden").kernel)


def perturb(v):
    """Noise on one replica's copy of ``v`` only: rank 1's, or device 1's in one process."""
    noise = np.random.default_rng(7).standard_normal(v.shape).astype("float32") * 1e-2
    if args.setup == "mirrored":  # the component on the second device
        v.value.values[1].assign(v.value.values[1] + noise)
    elif args.setup == "jax-devices":  # the shard on the second device
        val = v.value
        shards = [s.data for s in val.addressable_shards]
        bad = jax.device_put(np.asarray(shards[1]) + noise, list(shards[1].devices())[0])
        v._value = jax.make_array_from_single_device_arrays(val.shape, val.sharding, [shards[0], bad])
    elif args.rank == 1:
        if backend == "jax":  # this process's shard; assign() would be a collective
            val = v.value
            local = val.addressable_data(0)
            bad = jax.device_put(np.asarray(local) + noise, list(local.devices())[0])
            v._value = jax.make_array_from_single_device_arrays(val.shape, val.sharding, [bad])
        else:
            v.assign(keras.ops.convert_to_numpy(v) + noise)


if strategy is not None:
    with strategy.scope():
        model = build()
        model.compile(keras.optimizers.SGD(0.05), "mse")
else:
    model = build()
    model.compile(keras.optimizers.SGD(0.05), "mse")

fault = Fault()
watch = weightwatch.WatchCallback(args.run_dir, save_tensors=True, verbose=1 if args.rank == 0 else 0)
model.fit(x, y, epochs=EPOCHS, batch_size=32, verbose=0, callbacks=[fault, watch])
Path(args.out).write_text(json.dumps({
    "rank": args.rank, "epochs": fault.epochs, "halted": watch.halted,
    "processes": watch._processes.count,
    "weights": {v.path: keras.ops.convert_to_numpy(v).tolist() for v in model.weights},
}))
if args.setup == "torch-processes":
    # Tear the process group down together: a gloo group left to the interpreter's exit can abort
    # ("terminate called without an active exception") while its threads still run.
    dist.barrier()
    dist.destroy_process_group()
    # ... and skip the interpreter's own teardown, where a gloo thread can still abort the
    # process after everything above has finished (seen in about 1 run in 10 on 2 cores).
    print("worker done", file=sys.stderr, flush=True)
    os._exit(0)
