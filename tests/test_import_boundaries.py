"""The layering rules: preprocess never pulls in a deep-learning framework, models use keras only,
and the CLI starts without TensorFlow."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def loaded_modules(code: str) -> dict:
    """Run `code` in a fresh interpreter at the repository root; return which frameworks it loaded."""
    probe = (
        f"{code}\nimport json, sys\n"
        "print(json.dumps({name: name in sys.modules for name in ('tensorflow', 'keras', 'torch', 'jax')}))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_preprocess_imports_no_framework():
    loaded = loaded_modules(
        "import preprocess\nfrom preprocess import AudioPreprocessor, ImagePreprocessor, TextPreprocessor"
    )
    assert loaded == {"tensorflow": False, "keras": False, "torch": False, "jax": False}


def test_using_the_audio_preprocessor_imports_no_framework():
    # librosa is imported lazily when audio is read; it must not bring a framework along.
    loaded = loaded_modules(
        "import numpy as np\nfrom preprocess import AudioPreprocessor\n"
        "x = (np.zeros(1600, dtype=np.float32), 16000)\n"
        "AudioPreprocessor(duration=0.1, num_mels=8).fit([x]).transform_one(x)"
    )
    assert not loaded["tensorflow"] and not loaded["keras"]


def test_cli_module_and_model_spec_import_no_tensorflow():
    loaded = loaded_modules("import cli\nfrom models import ModelSpec\nModelSpec().validate()")
    assert not loaded["tensorflow"] and not loaded["keras"]


def test_cli_help_runs_without_importing_tensorflow():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "cli.py", "--help"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "evaluate" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "typer" in imported  # the import log was captured
    assert "tensorflow" not in imported and "keras" not in imported
    # nor the array stack: preprocessors are imported when a command needs them
    assert not {"numpy", "PIL", "soundfile", "librosa"} & imported


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "models").glob("*.py")), ids=lambda p: p.name)
def test_models_use_keras_only_never_tensorflow(path):
    imports = _imports(path)
    assert "tensorflow" not in imports
    assert not imports & {"pipelines", "preprocess", "cli"}  # models import neither neighbour


@pytest.mark.parametrize("path", sorted((ROOT / "preprocess").glob("*.py")), ids=lambda p: p.name)
def test_preprocess_never_imports_frameworks_or_upper_layers(path):
    imports = _imports(path)
    assert not imports & {"tensorflow", "keras", "torch", "jax", "models", "pipelines", "cli"}


def test_the_source_scan_sees_the_model_files():
    # Guards the two scans above against passing vacuously.
    assert "keras" in _imports(ROOT / "models" / "layers.py")
    assert len(list((ROOT / "preprocess").glob("*.py"))) >= 5
