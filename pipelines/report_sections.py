"""The parts of report.json beyond the scores: mistakes, confusions, data, model, timing."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import Counter
from typing import Any

import numpy as np

from models import ModelSpec
from pipelines import environment
from pipelines.datasets import Dataset, excerpt, printable_name
from pipelines.modality import Modality
from pipelines.run_dir import Run

TOP_CONFUSIONS = 10
#: Characters of a mistaken text kept in report.json's `misclassified` (the HTML report shows more).
MISTAKE_TEXT_CHARS = 200


def input_name(value: Any, input_id: str) -> str:
    """A file input by its path; anything else (a CSV text, a built-in array) by its id."""
    return printable_name(os.fsdecode(value)) if isinstance(value, os.PathLike) else input_id


def mistake_order(y_true: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Positions of the wrong predictions, most confident first (ties keep the data order)."""
    confidence = probabilities.max(axis=1)
    wrong = np.flatnonzero(probabilities.argmax(axis=1) != y_true)
    return wrong[np.argsort(-confidence[wrong], kind="stable")]


def misclassified(
    dataset: Dataset, y_true: np.ndarray, probabilities: np.ndarray, labels: list[str]
) -> list[dict[str, Any]]:
    """Every wrong prediction as {id, input, true, predicted, confidence}, most confident first;
    a text given as such (a CSV row, a built-in text), which has no file to open, also with the
    start of its `text`."""
    return [
        {
            "id": dataset.ids[i],
            "input": input_name(dataset.inputs[i], dataset.ids[i]),
            **({"text": excerpt(dataset.inputs[i], MISTAKE_TEXT_CHARS)} if isinstance(dataset.inputs[i], str) else {}),
            "true": labels[y_true[i]],
            "predicted": labels[int(probabilities[i].argmax())],
            "confidence": float(probabilities[i].max()),
        }
        for i in mistake_order(y_true, probabilities)
    ]


def top_confusions(matrix: list[list[int]], labels: list[str], limit: int = TOP_CONFUSIONS) -> list[dict[str, Any]]:
    """The largest off-diagonal cells of the confusion matrix (rows true, columns predicted)."""
    cells = [
        (count, t, p)
        for t, row in enumerate(matrix)
        for p, count in enumerate(row)
        if t != p and count > 0
    ]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [{"true": labels[t], "predicted": labels[p], "count": int(count)} for count, t, p in cells[:limit]]


def data_fingerprint(location: str, dataset: Dataset) -> str:
    """Same location and the same (id, label) pairs give the same fingerprint; `compare` uses it
    to flag runs evaluated on different data (given the inputs scored, so that runs that skipped
    other inputs, e.g. at another --bit-depth or max_pixels, are flagged too)."""
    digest = hashlib.sha256(location.encode("utf-8", "backslashreplace"))
    for input_id, label in sorted(zip(dataset.ids, dataset.labels)):
        digest.update(f"\n{input_id}\t{label}".encode("utf-8", "backslashreplace"))
    return digest.hexdigest()[:16]


def data_summary(
    run: Run, location: str, dataset: Dataset, used: Dataset, own_test_split: bool, skipped: list[dict[str, str]],
    copies: int | None = None, folder: str | None = None,
) -> dict[str, Any]:
    return {
        "location": location,
        # the folder of `location` scored: a --data folder with train/ and test/ is scored on test/ alone
        "folder": folder,
        "own_test_split": own_test_split,
        "trained_on": run.document.get("data_source", run.config.data),
        "class_counts": run.document.get("class_counts", {}),
        "evaluated_class_counts": dict(sorted(Counter(used.labels).items())),
        "fingerprint": data_fingerprint(location, used),  # what was scored: skips differ between runs
        "skipped_in_training": run.skipped_in_training,
        "skipped_in_evaluation": skipped,
        # Scored inputs that are exact copies of training inputs (None: the training data is gone).
        "test_copies_of_training_inputs": copies,
    }


def model_summary(run: Run, model) -> dict[str, Any]:
    config = run.config
    return {
        "modality": config.modality.value,
        # Fields of the one ModelSpec that the modality's factory never reads are left out.
        "spec": {k: v for k, v in config.model.to_dict().items()
                 if k not in ModelSpec.unused_fields(text=config.modality is Modality.text, text_kernel=config.model.text_kernel)},
        "preprocess": dict(config.preprocess),
        "train": dataclasses.asdict(config.train),
        "parameters": int(model.count_params()),
        "sha256": run.model_digest(),  # `compare` checks a report against the model it scores
        "input_shape": [None if d is None else int(d) for d in model.input_shape[1:]],
        "epochs_run": run.document.get("epochs_run"),
        "best_epoch": run.document.get("best_epoch"),
        "interrupted": run.document.get("interrupted", False),
    }


def timing_summary(run: Run, evaluation_seconds: float, samples: int) -> dict[str, Any]:
    recorded = run.document.get("timing", {})
    return {
        "preprocess_seconds": recorded.get("preprocess_seconds"),
        "train_seconds": recorded.get("train_seconds"),
        "evaluation_seconds": round(evaluation_seconds, 3),
        "samples_per_second": round(samples / evaluation_seconds, 1) if evaluation_seconds > 0 else None,
    }


def environment_summary() -> dict[str, Any]:
    details = environment.devices()
    return {
        **environment.versions(),
        "backend": details["backend"],
        "devices": details.get("devices", []),
    }
