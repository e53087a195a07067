"""Refuse a training that cannot fit in the host's memory, before it starts.

On a CPU, TensorFlow allocates a batch's activations from the host's memory, and a model far too
large for it (`--filters 100000` on text: about 150 GB for one batch) is not an error Python ever
sees: the kernel kills the process, and the shell prints "Killed". The estimate here is a lower
bound (every layer's output for one batch, plus the gradients and Adam's two slots of every
weight), so it refuses only what cannot fit; what passes may still run out, as a one-line error
when TensorFlow notices.

The same count sizes the batches `evaluate` predicts in, so that scoring never needs far more
memory than training did.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from preprocess import ConvpipeError

CGROUP = Path("/sys/fs/cgroup")
#: Most inputs per prediction batch; small models reach it.
PREDICT_BATCH_SIZE = 256
#: Bytes of layer outputs one prediction batch may hold. Batches of 256 took `evaluate` to 6.1 GB
#: for a model of 256x256 images that trained in 3.2 GB on batches of 32.
PREDICT_BATCH_BYTES = 256 * 2**20


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def available_memory(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = CGROUP) -> int | None:
    """Bytes this process can still take: the host's MemAvailable, lowered by a container's
    (cgroup v2) limit; None where neither is known (macOS, Windows)."""
    available = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    limit, used = _read_int(cgroup / "memory.max"), _read_int(cgroup / "memory.current")
    if limit is not None and used is not None:
        left = max(limit - used, 0)
        available = left if available is None else min(available, left)
    return available


def activations_per_input(model) -> int:
    """Values in every layer's output for one input."""
    total = 0
    for layer in model.layers:
        try:
            outputs = layer.output
        except (AttributeError, ValueError):  # a layer called more than once has no single output
            continue
        for output in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
            total += int(np.prod([int(d) for d in output.shape[1:]], dtype=np.int64))
    return total


def check_training_memory(model, batch_size: int, policy: str, available: int | None) -> None:
    """Raise when one training step certainly needs more than `available` bytes."""
    if available is None:
        return
    values = activations_per_input(model)
    activation_bytes = 2 if policy.startswith("mixed") else 4
    needed = values * batch_size * activation_bytes + model.count_params() * 4 * 3
    if needed > available:
        raise ConvpipeError(
            f"This model needs at least {needed / 1e9:,.1f} GB of memory to train on batches of {batch_size} "
            f"({values:,} values per input in its layers' outputs), and {available / 1e9:,.1f} GB is free. "
            "Lower --batch-size, or the model's or inputs' size: --filters, --dense, --embedding-dim, "
            "--image-size, --positions, --duration."
        )


def predict_batch_size(model) -> int:
    """Inputs per prediction batch: as many as keep one batch's layer outputs (float32) within
    `PREDICT_BATCH_BYTES`, at most `PREDICT_BATCH_SIZE`, at least 1."""
    per_input = max(activations_per_input(model), 1) * 4
    return int(max(1, min(PREDICT_BATCH_SIZE, PREDICT_BATCH_BYTES // per_input)))
