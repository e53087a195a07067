"""Built-in demo data, used when `--data` is omitted. Nothing is downloaded.

- image: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, 10 classes).
- audio: spoken command words synthesized with espeak-ng in many voices, shipped as small 16 kHz
  FLAC files in `speech/` (made by `python -m pipelines.demo_data.make_speech`).
- text: docstrings of eight Python standard-library packages, labelled by package, read from the
  installed standard library's source with `ast` (deterministic for a given Python version).
"""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

import numpy as np

from pipelines.datasets import DataSource, Dataset, read_class_folders
from pipelines.leakage import same_text_key
from pipelines.modality import Modality
from preprocess import ConvpipeError

SPEECH_DIR = Path(__file__).parent / "speech"
STDLIB_PACKAGES = ("asyncio", "email", "http", "importlib", "logging", "multiprocessing", "unittest", "xml")
DOCSTRINGS_PER_PACKAGE = 130


def load_builtin(modality: Modality) -> DataSource:
    if modality is Modality.image:
        return DataSource(location="builtin:digits", full=load_digits())
    if modality is Modality.audio:
        if not SPEECH_DIR.is_dir():
            raise ConvpipeError(f"The built-in speech clips are missing from {SPEECH_DIR}; reinstall convpipe.")
        full, ignored = read_class_folders(SPEECH_DIR, modality, id_prefix="")
        return DataSource(location="builtin:speech", full=full, ignored=ignored)
    return DataSource(location="builtin:stdlib-docstrings", full=load_stdlib_docstrings())


def load_digits() -> Dataset:
    """The 8x8 digits as uint8 images (the originals count ink from 0 to 16)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return Dataset(
        inputs=list(images),
        labels=[str(t) for t in bunch.target],
        ids=[f"digits/{i}" for i in range(len(images))],
    )


def load_stdlib_docstrings(
    packages: tuple[str, ...] = STDLIB_PACKAGES, per_package: int = DOCSTRINGS_PER_PACKAGE
) -> Dataset:
    """Docstrings (>= 5 words) of modules, classes and functions, labelled by package.

    Test folders are skipped, and so is a docstring that repeats an earlier one up to case and
    spacing (10 in the eight packages, e.g. "Send a handle over a local connection." twice in
    multiprocessing): a copy in the test split would be scored as unseen. When a package has
    more than `per_package` docstrings, an evenly spaced selection in source order is kept, so
    the set is balanced and deterministic.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    inputs, labels, ids = [], [], []
    seen: set[str] = set()
    for package in packages:
        found: list[tuple[str, str]] = []
        for file in sorted((root / package).rglob("*.py")):
            if "test" in file.parts or "tests" in file.parts:
                continue
            try:
                tree = ast.parse(file.read_text(encoding="utf-8"))
            except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
                continue
            relative = file.relative_to(root).as_posix()
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if not doc or len(doc.split()) < 5:
                        continue
                    key = same_text_key(doc)
                    if key not in seen:
                        seen.add(key)
                        found.append((f"{relative}:{getattr(node, 'lineno', 0)}", doc))
        if len(found) > per_package:
            keep = np.linspace(0, len(found) - 1, per_package).round().astype(int)
            found = [found[i] for i in keep]
        for id_, doc in found:
            inputs.append(doc)
            labels.append(package)
            ids.append(id_)
    if len(set(labels)) < 2:
        raise ConvpipeError(f"Could not read the standard library's source under {root}.")
    return Dataset(inputs, labels, ids)
