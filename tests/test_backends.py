"""models/ is backend-neutral: every factory builds and runs under Keras' JAX backend."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_IMAGE, write_image_folder

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


NO_JAX = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")


@NO_JAX
def test_models_build_run_and_train_on_the_jax_backend():
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


@NO_JAX
def test_the_cli_trains_and_predicts_on_the_jax_backend_with_only_its_own_output(tmp_path):
    """tf.data feeds the model on every backend, so TensorFlow starts under JAX too; its native
    start-up lines must be filtered there as well."""
    data = write_image_folder(tmp_path / "data")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)

    def cli(*args):
        result = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "absl::InitializeLog" not in result.stderr and "oneDNN" not in result.stderr, result.stderr
        return result.stdout

    cli("train", "--modality", "image", "--data", str(data), "--out", "run", *TINY_IMAGE)
    document = json.loads((tmp_path / "run" / "config.json").read_text())
    # jit on: without it JAX runs op by op (2.9x slower on CPU), and the record says what was used
    assert document["keras_backend"] == "jax" and document["compute"]["jit"] is True
    assert "alpha" in cli("predict", "run", str(data / "alpha" / "alpha_00.png"))


@NO_JAX
def test_explain_gives_the_same_grad_cam_on_the_jax_backend(tmp_path):
    """Grad-CAM takes its gradient with the backend's own differentiation: under JAX it gave a
    traceback (TensorFlow's GradientTape on JAX arrays)."""
    data = write_image_folder(tmp_path / "data")
    image = str(data / "alpha" / "alpha_00.png")

    def cli(backend, *args):
        env = {**os.environ, "KERAS_BACKEND": backend}
        result = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]

    cli("tensorflow", "train", "--modality", "image", "--data", str(data), "--out", "run", *TINY_IMAGE)
    saliency = {}
    for backend in ("tensorflow", "jax"):
        cli(backend, "explain", "run", image, "--out", backend)
        saliency[backend] = np.load(tmp_path / backend / "saliency.npz")["saliency"]
    assert saliency["jax"].shape == (8, 8) and saliency["jax"].max() == pytest.approx(1.0)
    np.testing.assert_allclose(saliency["jax"], saliency["tensorflow"], atol=1e-4)
