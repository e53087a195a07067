"""Where a run computes: device choice, GPU memory growth, CPU replicas, precision and XLA.

TensorFlow fixes its devices when its runtime starts (at the first op), so `configure_devices`
must run before anything else touches TensorFlow in the process; convpipe's commands call it
first. The precision rule:

- `float32`: everywhere.
- `mixed` on a GPU: Keras' `mixed_float16` (float16 math, float32 weights, float32 softmax;
  the optimizer scales the loss so small float16 gradients do not vanish).
- `mixed` on a CPU: `mixed_bfloat16` where the CPU has bfloat16 instructions (`avx512_bf16` or
  `amx_bf16` in /proc/cpuinfo); refused elsewhere, because emulated bfloat16 is slower than
  float32 and float16 on a CPU is slower still.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from preprocess import ConvpipeError
from preprocess.errors import SettingError

DEVICES = ("auto", "cpu", "gpu")
PRECISIONS = ("float32", "mixed")
GPU_INSTALL = 'pip install -e ".[gpu]"'
#: CPU flags (Linux /proc/cpuinfo names) of native bfloat16 arithmetic.
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class DeviceSetup:
    """The devices a run uses, after `configure_devices`.

    Args:
        kind: "gpu" when the run computes on GPUs, else "cpu".
    """

    kind: str

    def logical_devices(self) -> tuple[str, ...]:
        """The devices a replicated strategy puts one replica on each of. Starts TensorFlow's
        runtime: a multi-worker strategy must be created before this is called."""
        import tensorflow as tf

        return tuple(d.name for d in tf.config.list_logical_devices(self.kind.upper()))


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SettingError(name, f"must be one of {' | '.join(choices)}, got {value!r}.")
    return value


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags; empty where /proc/cpuinfo does not exist (macOS, Windows)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def precision_policy(precision: str, kind: str, flags: set[str] | None = None) -> str:
    """The Keras dtype policy for `--precision` on a `kind` ("cpu" or "gpu") run; see the module doc."""
    check_choice("precision", precision, PRECISIONS)
    if precision == "float32":
        return "float32"
    if kind == "gpu":
        return "mixed_float16"
    flags = cpu_flags() if flags is None else flags
    if flags & set(BFLOAT16_CPU_FLAGS):
        return "mixed_bfloat16"
    raise ConvpipeError(
        "--precision mixed needs a GPU, or a CPU with bfloat16 instructions (avx512_bf16 or amx_bf16), "
        "and this CPU has neither; use --precision float32 (the default) on this machine."
    )


def jit_setting(jit: bool | None, kind: str, backend: str = "tensorflow") -> bool | str:
    """XLA for `model.compile(jit_compile=...)`, unless `--jit/--no-jit` says: under TensorFlow,
    off on CPUs (measured slower there) and Keras' "auto" on GPUs (on where every layer supports
    it); under other backends "auto" everywhere, since JAX without jit runs op by op (the text
    demo trained 2.9x slower on 2 CPU cores)."""
    if jit is not None:
        return jit
    return "auto" if kind == "gpu" or backend != "tensorflow" else False


def configure_devices(device: str = "auto", cpu_replicas: int = 1) -> DeviceSetup:
    """Make TensorFlow see the devices `device` asks for; split the CPU into `cpu_replicas`.

    GPUs get memory growth, so one process does not take a whole card. Must run before the
    first TensorFlow op; in a process where TensorFlow already started, a setting it can no
    longer apply is an error rather than silently ignored.
    """
    check_choice("device", device, DEVICES)
    if not isinstance(cpu_replicas, int) or isinstance(cpu_replicas, bool) or cpu_replicas < 1:
        raise ConvpipeError(f"--cpu-replicas must be a positive integer, got {cpu_replicas!r}.")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise ConvpipeError(
            f"--device gpu: TensorFlow sees no GPU here. Install GPU support with {GPU_INSTALL} "
            "(NVIDIA driver needed), or use --device cpu."
        )
    used = [] if device == "cpu" else gpus
    if used and cpu_replicas > 1:
        raise ConvpipeError(
            f"--cpu-replicas {cpu_replicas} splits the CPU, but this run uses {len(used)} GPU(s); "
            "drop --cpu-replicas, or pass --device cpu."
        )
    try:
        if device == "cpu" and gpus:
            tf.config.set_visible_devices([], "GPU")
        for gpu in used:
            tf.config.experimental.set_memory_growth(gpu, True)
        if cpu_replicas > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(cpu_replicas)]
            )
    except RuntimeError:  # TensorFlow already started in this process (a notebook, a test)
        _check_started_runtime(tf, device, cpu_replicas)
    return DeviceSetup(kind="gpu" if used else "cpu")


def _check_started_runtime(tf, device: str, cpu_replicas: int) -> None:
    fresh = "start a new process (each convpipe command is one) before TensorFlow runs any op"
    if device == "cpu" and tf.config.list_logical_devices("GPU"):
        raise ConvpipeError(f"--device cpu cannot hide the GPUs: TensorFlow already started here; {fresh}.")
    found = len(tf.config.list_logical_devices("CPU"))
    if cpu_replicas > 1 and found != cpu_replicas:
        raise ConvpipeError(
            f"--cpu-replicas {cpu_replicas}: TensorFlow already started here with {found} CPU device(s); {fresh}."
        )


def apply_precision(policy: str) -> None:
    """Set Keras' global dtype policy; models built afterwards compute in it."""
    import keras

    keras.mixed_precision.set_global_policy(policy)
