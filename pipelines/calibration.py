"""Calibration: does a model that says "90% sure" turn out right 90% of the time?"""

from __future__ import annotations

from typing import Any

import numpy as np

NUM_BINS = 15


def calibration(confidences: np.ndarray, correct: np.ndarray, num_bins: int = NUM_BINS) -> dict[str, Any]:
    """Expected calibration error (ECE) of the top-label confidences and its bin table.

    Bins split [0, 1] into `num_bins` equal widths; a confidence c falls in bin
    ceil(c * num_bins) - 1 (so each bin is (lower, upper], and 0 joins the first). ECE is the
    share-weighted mean gap |accuracy - mean confidence| over the bins, as in Guo et al. 2017.

    Args:
        confidences: `np.ndarray [shape=(n,)]`, the largest predicted probability per input.
        correct: `np.ndarray [shape=(n,)]`, whether that prediction was right.
        num_bins: number of equal-width bins.

    Returns:
        `{"ece", "num_bins", "bins": [{"lower", "upper", "count", "accuracy", "confidence"}]}`;
        empty bins have `accuracy` and `confidence` None.
    """
    confidences = np.asarray(confidences, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    if confidences.shape != correct.shape:
        raise ValueError(f"confidences and correct differ in length: {confidences.size} vs {correct.size}.")
    if num_bins < 1:
        raise ValueError(f"`num_bins` must be a positive int. Received: num_bins={num_bins}")
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bin_of = np.clip(np.ceil(np.clip(confidences, 0.0, 1.0) * num_bins).astype(int) - 1, 0, num_bins - 1)
    total = confidences.size
    bins, ece = [], 0.0
    for b in range(num_bins):
        members = bin_of == b
        count = int(members.sum())
        accuracy = float(correct[members].mean()) if count else None
        confidence = float(confidences[members].mean()) if count else None
        if count:
            ece += count / total * abs(accuracy - confidence)
        bins.append(
            {"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": count,
             "accuracy": accuracy, "confidence": confidence}
        )
    return {"ece": float(ece), "num_bins": num_bins, "bins": bins}
