"""What a training run computes on: devices, precision policy, XLA and tf.distribute strategy,
resolved once from `TrainSettings` before TensorFlow runs its first op."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pipelines.config import TrainSettings
from pipelines.devices import DeviceSetup, apply_precision, configure_devices, jit_setting, precision_policy
from pipelines.distribution import WorkerRole, global_batch_size, make_strategy, worker_role
from preprocess import ConvpipeError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Compute:
    """The resolved compute settings of one training process.

    Args:
        setup: the devices TensorFlow uses.
        policy: Keras dtype policy ("float32", "mixed_float16" or "mixed_bfloat16").
        jit: `jit_compile` for `model.compile`.
        strategy_name: "none", "mirrored" or "multiworker".
        strategy: the `tf.distribute.Strategy`; build and compile the model in its scope.
        role: this process' place in a multi-worker cluster, else None.
        global_batch_size: inputs per optimizer step over all replicas.
    """

    setup: DeviceSetup
    policy: str
    jit: bool | str
    strategy_name: str
    strategy: Any
    role: WorkerRole | None
    global_batch_size: int

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def workers(self) -> int:
        return self.role.workers if self.role else 1

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the run directory."""
        return self.role is None or self.role.is_chief

    @property
    def uses_fit(self) -> bool:
        """`model.fit` works under every strategy but MultiWorkerMirroredStrategy (keras #20585)."""
        return self.strategy_name != "multiworker"

    def describe(self) -> dict[str, Any]:
        """What config.json records next to the requested settings."""
        return {
            "device": self.setup.kind,
            "devices": list(self.setup.logical_devices()),
            "precision_policy": self.policy,
            "jit": self.jit,
            "strategy": self.strategy_name,
            "replicas": self.replicas,
            "workers": self.workers,
            "global_batch_size": self.global_batch_size,
            "training_loop": "model.fit" if self.uses_fit else "strategy.run",
        }


def prepare_compute(settings: TrainSettings, out_given: bool = True) -> Compute:
    """Configure devices, precision and the strategy as `settings` ask; call before any TF op."""
    import keras

    settings.validate_compute()
    backend = keras.backend.backend()
    if settings.strategy != "none":
        if backend != "tensorflow":  # Keras' other trainers ignore tf.distribute: one device, or a traceback
            raise ConvpipeError(
                f"--strategy {settings.strategy} needs the tensorflow Keras backend, not {backend}: "
                "unset KERAS_BACKEND, or drop --strategy."
            )
    if settings.cpu_replicas > 1 and settings.strategy != "mirrored":
        raise ConvpipeError(
            f"--cpu-replicas {settings.cpu_replicas} only helps --strategy mirrored (got --strategy "
            f"{settings.strategy}); add --strategy mirrored or drop --cpu-replicas."
        )
    role = worker_role() if settings.strategy == "multiworker" else None
    if role is not None and settings.jit:
        raise ConvpipeError(
            "--jit is not available with --strategy multiworker: its step runs through strategy.run "
            "without XLA; drop --jit."
        )
    if role is not None and not out_given:
        raise ConvpipeError("--strategy multiworker needs --out, the same run directory on every worker.")
    setup = configure_devices(settings.device, settings.cpu_replicas)
    policy = precision_policy(settings.precision, setup.kind)
    strategy = make_strategy(settings.strategy, setup)
    apply_precision(policy)  # always: a float32 run after a mixed one in the same process stays float32
    batch = global_batch_size(settings.batch_size, settings.global_batch_size, int(strategy.num_replicas_in_sync))
    compute = Compute(
        setup=setup,
        policy=policy,
        jit=False if role is not None else jit_setting(settings.jit, setup.kind, backend),
        strategy_name=settings.strategy,
        strategy=strategy,
        role=role,
        global_batch_size=batch,
    )
    logger.info("Compute: %s", compute.describe())
    return compute
