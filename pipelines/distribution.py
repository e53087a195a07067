"""tf.distribute strategies: one device, all local devices (mirrored), several machines.

- `none`: TensorFlow's default strategy (one device).
- `mirrored`: `tf.distribute.MirroredStrategy` with one replica per local GPU, or per logical
  CPU device from `--cpu-replicas`. Trained with `model.fit`.
- `multiworker`: `tf.distribute.MultiWorkerMirroredStrategy` configured from the TF_CONFIG
  environment variable. Keras 3's `model.fit` fails under it (keras-team/keras issue 20585),
  so convpipe runs its own step through `strategy.run` (pipelines/strategy_loop.py).

The global batch (what one optimizer step sees) is `--batch-size` per replica times the number
of replicas, unless `--global-batch-size` fixes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.devices import DeviceSetup
from preprocess import ConvpipeError

STRATEGIES = ("none", "mirrored", "multiworker")
WORKER_TASK_TYPES = ("chief", "worker")


@dataclass(frozen=True)
class WorkerRole:
    """This process' place in a TF_CONFIG cluster.

    Args:
        task_type: "chief" or "worker".
        index: the task's index among tasks of its type.
        workers: number of training tasks in the cluster (chief included).
        has_chief: whether the cluster names a "chief" task.
    """

    task_type: str
    index: int
    workers: int
    has_chief: bool = False

    @property
    def is_chief(self) -> bool:
        """The chief writes the run: the "chief" task, or worker 0 in a cluster without one."""
        return self.task_type == "chief" or (self.task_type == "worker" and self.index == 0 and not self.has_chief)


def worker_role(tf_config: str | None = None) -> WorkerRole:
    """Parse TF_CONFIG (the environment variable when `tf_config` is None); one clear line if wrong."""
    text = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
    example = (
        'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    if not text:
        raise ConvpipeError(f"--strategy multiworker needs the TF_CONFIG environment variable on every worker, {example}.")
    try:
        document = json.loads(text)
        cluster, task = document["cluster"], document["task"]
        task_type, index = task["type"], int(task["index"])
        members = {name: list(cluster.get(name, [])) for name in WORKER_TASK_TYPES}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConvpipeError(f"TF_CONFIG is not valid ({type(error).__name__}: {error}); expected {example}.") from None
    if task_type not in WORKER_TASK_TYPES or not 0 <= index < len(members[task_type]):
        raise ConvpipeError(
            f"TF_CONFIG task {task_type!r} index {index} is not in its cluster "
            f"({', '.join(f'{k}: {len(v)}' for k, v in members.items())}); expected {example}."
        )
    return WorkerRole(
        task_type=task_type, index=index, workers=sum(map(len, members.values())), has_chief=bool(members["chief"])
    )


def worker_scratch_dir(run_dir: Path, role: WorkerRole) -> Path:
    """Where a non-chief worker keeps its backups: stable across restarts, never the run directory.

    Keyed by the run directory and the cluster, so a restarted worker finds its last backup.
    """
    key = hashlib.sha256(f"{Path(run_dir).resolve()}|{os.environ.get('TF_CONFIG', '')}".encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "convpipe-workers" / f"{Path(run_dir).name}-{key}" / f"{role.task_type}-{role.index}"


def make_strategy(strategy: str, setup: DeviceSetup):
    """The tf.distribute strategy; `mirrored` puts one replica on each of `setup`'s devices.

    Call before any other TensorFlow op: MultiWorkerMirroredStrategy configures the collective
    ops, which TensorFlow accepts only before its runtime starts.
    """
    import tensorflow as tf

    if strategy == "none":
        return tf.distribute.get_strategy()
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(setup.logical_devices()))
    if strategy == "multiworker":
        worker_role()  # a clear line for a missing or broken TF_CONFIG, before TensorFlow reads it
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConvpipeError(f"--strategy must be one of {' | '.join(STRATEGIES)}, got {strategy!r}.")


def fewest_completed_epochs(strategy, completed: int) -> int:
    """The smallest `completed` over all workers: where a restarted cluster resumes together."""
    import tensorflow as tf

    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant([completed], dtype=tf.int32)
    )
    return int(tf.reduce_min(strategy.gather(values, axis=0)))


def strategy_support(gpus: int) -> dict[str, str]:
    """What each `--strategy` would do on this machine, for `convpipe info`."""
    if os.environ.get("TF_CONFIG"):
        try:
            role = worker_role()
            cluster = f"TF_CONFIG: {role.task_type} {role.index}, {role.workers} workers"
        except ConvpipeError as error:
            cluster = f"TF_CONFIG is set but invalid: {error}"
    else:
        cluster = "needs TF_CONFIG on every machine"
    return {
        "none": "one device",
        "mirrored": f"{gpus} GPU replica(s)" if gpus else "CPU: --cpu-replicas N logical devices",
        "multiworker": cluster,
    }


def global_batch_size(batch_size: int, global_batch: int | None, replicas: int) -> int:
    """Inputs per optimizer step over all replicas: `global_batch`, else `batch_size` per replica."""
    if global_batch is None:
        return batch_size * replicas
    if global_batch % replicas:
        raise ConvpipeError(
            f"--global-batch-size {global_batch} does not split evenly over {replicas} replicas; "
            f"use a multiple of {replicas}."
        )
    return global_batch


def replica_batches(inputs: int, global_batch: int, replicas: int, split: str = "training") -> tuple[int, int]:
    """A batch size, and how many of the split's inputs to use, such that every replica gets
    inputs from every batch and the first batch splits evenly.

    Keras' `model.fit` under a replicated strategy averages the first batch over the replicas
    to build the model (`_maybe_symbolic_build`), which fails when the replicas got different
    shapes. A last batch smaller than the replica count leaves a replica an empty batch, on
    which TensorFlow's CPU kernels fail (Conv1D: "Must provide as many biases as the last
    dimension"; Conv2D: "input depth must be evenly divisible by filter depth"). So the size
    steps down by the replica count until the last batch is empty or large enough; where no
    size does (e.g. 3 inputs on 2 replicas), the last `inputs % replicas` inputs are left out.
    """
    if replicas == 1:
        return global_batch, inputs
    if inputs < replicas:
        raise ConvpipeError(
            f"The {split} split has {inputs} input(s), fewer than the {replicas} replicas; "
            f"use more data, a larger --val-split, or fewer replicas."
        )
    largest = min(global_batch, inputs - inputs % replicas)
    for size in range(largest, 0, -replicas):
        if not 0 < inputs % size < replicas:
            return size, inputs
    return largest, inputs - inputs % largest


def shard_by_data(dataset):
    """Set the auto-shard policy explicitly: each worker keeps every n-th batch of the same
    (same-seed) order. The default (FILE) cannot shard in-memory arrays and would fall back
    with a warning."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
