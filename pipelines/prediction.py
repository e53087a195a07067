"""`predict`: top-k class probabilities for individual inputs, with a run's fitted preprocessor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipelines.devices import configure_devices
from pipelines.modality import Modality
from pipelines.run_dir import Run
from preprocess import ConvpipeError, InputError


def _is_file(value: str) -> bool:
    try:
        return Path(value).is_file()
    except (OSError, ValueError):  # e.g. a paragraph of text is too long to be a file name
        return False


def input_source(run: Run, value: str) -> Any:
    """`value` as the preprocessor takes it: a path when it names a file; for a text run,
    anything else is the text itself."""
    if _is_file(value):
        return Path(value)
    if run.config.modality is not Modality.text:
        raise ConvpipeError(f"Input not found: {value}")
    return value


def encode_input(run: Run, value: str) -> np.ndarray:
    """The array the run's model reads for one input; a bad input is one clear error."""
    try:
        return run.preprocessor.transform_one(input_source(run, value))
    except InputError as error:
        raise ConvpipeError(f"Cannot use input {value}: {error.reason}") from None


def predict(run_path: Path, inputs: list[str], top_k: int = 3, device: str = "auto") -> list[dict[str, Any]]:
    """`[{"input": ..., "top": [{"label", "probability"}, ...]}]`, one entry per input, in order.

    For a text run, an input that names an existing file is read from it; anything else is
    taken as the text itself.
    """
    if top_k < 1:
        raise ConvpipeError(f"--top-k must be at least 1, got {top_k}.")
    if not inputs:
        raise ConvpipeError("Nothing to predict: pass one or more inputs.")
    configure_devices(device)  # before TensorFlow's first op, which fixes its devices
    run = Run.open(run_path)
    arrays = [encode_input(run, value) for value in inputs]
    probabilities = run.model.predict(np.stack(arrays), verbose=0)
    k = min(top_k, len(run.labels))
    results = []
    for value, row in zip(inputs, probabilities):
        order = np.argsort(-row)[:k]
        results.append(
            {"input": value, "top": [{"label": run.labels[i], "probability": float(row[i])} for i in order]}
        )
    return results
