"""Turning a dataset's inputs into arrays, skipping (and recording) the ones that cannot be read."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.datasets import Dataset
from preprocess import ConvpipeError, InputError, InputWarning, Preprocessor

logger = logging.getLogger(__name__)


@dataclass
class Skipped:
    """Inputs that were not used, with the reason for each."""

    entries: list[dict[str, str]] = field(default_factory=list)
    total: int = 0  # inputs looked at, used or not
    #: inputs used, but not exactly as given (e.g. decoded as Latin-1), with the reason
    notes: list[dict[str, str]] = field(default_factory=list)

    def add(self, input_id: str, reason: str, split: str = "") -> None:
        self.entries.append({"input": input_id, "reason": reason, **({"split": split} if split else {})})

    def note(self, input_id: str, reason: str, split: str = "") -> None:
        self.notes.append({"input": input_id, "reason": reason, **({"split": split} if split else {})})

    def summary(self) -> str:
        """One line: 'skipped 3 of 1,204 inputs: 2 corrupt or truncated image, 1 empty file'."""
        if not self.entries:
            line = f"used all {self.total:,} inputs"
        else:
            kinds = Counter(_kind(entry["reason"]) for entry in self.entries)
            parts = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
            line = f"skipped {len(self.entries):,} of {self.total:,} inputs: {parts}"
        if self.notes:
            kinds = Counter(note["reason"] for note in self.notes)
            line += "; " + ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
        return line


def _kind(reason: str) -> str:
    """The reason without its details in parentheses, to group similar failures."""
    return reason.split(" (")[0]


def read_inputs(
    preprocessor: Preprocessor, dataset: Dataset, split: str, skipped: Skipped, strict: bool
) -> tuple[list[Any], list[int]]:
    """Read every input; return the read items and the indices of the inputs that worked."""
    items, kept = [], []
    skipped.total += len(dataset)
    for index, (x, input_id) in enumerate(zip(dataset.inputs, dataset.ids)):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", InputWarning)
                items.append(preprocessor.read(x))
            for warning in caught:
                if issubclass(warning.category, InputWarning):
                    skipped.note(input_id, str(warning.message).split(": ", 1)[-1], split)
                else:
                    warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        except InputError as error:
            if strict:
                raise ConvpipeError(f"Cannot use input {input_id}: {error.reason} (--strict)") from None
            logger.info("skipping %s: %s", input_id, error.reason)
            skipped.add(input_id, error.reason, split)
            continue
        kept.append(index)
    return items, kept


def encode_items(preprocessor: Preprocessor, items: list[Any]) -> np.ndarray:
    if not items:
        return np.zeros((0, *preprocessor.output_shape), dtype=preprocessor.output_dtype)
    return np.stack([preprocessor.encode(item) for item in items])


def check_skip_share(skipped: Skipped, max_share: float) -> None:
    if skipped.total and len(skipped.entries) / skipped.total > max_share:
        raise ConvpipeError(
            f"Too many unreadable inputs: {skipped.summary()} (more than {max_share:.0%}). "
            f"Fix the data, or see skipped.json; first: {skipped.entries[0]['input']}: "
            f"{skipped.entries[0]['reason']}."
        )
