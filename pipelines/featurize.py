"""Turning a dataset's inputs into arrays, skipping (and recording) the ones that cannot be read."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.datasets import Dataset
from preprocess import ConvpipeError, InputError, Preprocessor

logger = logging.getLogger(__name__)


@dataclass
class Skipped:
    """Inputs that were not used, with the reason for each."""

    entries: list[dict[str, str]] = field(default_factory=list)
    total: int = 0  # inputs looked at, used or not

    def add(self, input_id: str, reason: str, split: str = "") -> None:
        self.entries.append({"input": input_id, "reason": reason, **({"split": split} if split else {})})

    def extend(self, other: "Skipped") -> None:
        self.entries += other.entries
        self.total += other.total

    def summary(self) -> str:
        """One line: 'skipped 3 of 1,204 inputs: 2 corrupt or truncated image, 1 empty file'."""
        if not self.entries:
            return f"used all {self.total:,} inputs"
        kinds = Counter(_kind(entry["reason"]) for entry in self.entries)
        parts = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
        return f"skipped {len(self.entries):,} of {self.total:,} inputs: {parts}"


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
            items.append(preprocessor.read(x))
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
