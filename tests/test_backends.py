"""models/ is backend-neutral: every factory builds and runs under Keras' JAX backend."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import numpy as np, keras
assert keras.backend.backend() == "jax", keras.backend.backend()
from models import ModelSpec, build_conv_model, build_text_model
conv = build_conv_model((16, 12, 1), 3, ModelSpec(filters=(4, 8), head="global_max_average", dense=(8,)))
assert conv(np.zeros((2, 16, 12, 1), "float32")).shape == (2, 3)
ids = np.random.default_rng(0).integers(0, 50, (2, 10, 3)).astype("int32")
for kernel in ("factorized", "full"):
    text = build_text_model(10, 50, 3, ModelSpec(filters=(4,), text_kernel=kernel, head="global_max"), ids_per_position=3)
    probabilities = np.asarray(text(ids))
    assert probabilities.shape == (2, 3) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    text.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    text.fit(ids, np.array([0, 1]), epochs=1, verbose=0)
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_models_build_run_and_train_on_the_jax_backend():
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
