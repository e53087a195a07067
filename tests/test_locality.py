"""`check-locality`: the right verdict on local and on exchangeable data; the rule and its parts."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.locality import Accuracy, decide, permute_columns, wilson_interval
from pipelines.modality import Modality
from tests.conftest import assert_one_line_error, describe_result, invoke, write_png

PER_CLASS = 60
SIZE = 24
DISTRACTORS = 10
SHIFT = 120


def write_diagonals(root, size: int = SIZE, length: int = 4, seed: int = 0):
    """Strong local structure: a short falling or rising diagonal at a random place, among
    scattered bright pixels. Both classes put one diagonal pixel in each of `length` rows and
    columns; only which pixels are neighbours tells them apart.
    """
    rng = np.random.default_rng(seed)
    for label in ("falling", "rising"):
        for i in range(PER_CLASS):
            image = rng.integers(0, 50, size=(size, size)).astype(np.uint8)
            image.flat[rng.choice(size * size, DISTRACTORS, replace=False)] = 255
            r, c = rng.integers(0, size - length + 1, size=2)
            for k in range(length):
                image[r + k, c + k if label == "falling" else c + length - 1 - k] = 255
            write_png(root / label / f"{i:02d}.png", image)
    return root


def write_exchangeable(root, size: int = SIZE, seed: int = 0):
    """Columns exchangeable by construction: independent pixels; 'bright' raises a fixed random
    quarter of them. Any permutation of rows or columns gives data with the same information."""
    rng = np.random.default_rng(seed)
    raised = rng.random((size, size)) < 0.25
    for label in ("bright", "plain"):
        for i in range(PER_CLASS):
            image = rng.normal(100, 40, size=(size, size)) + (SHIFT * raised if label == "bright" else 0)
            write_png(root / label / f"{i:02d}.png", np.clip(image, 0, 255).astype(np.uint8))
    return root


def run_check(cli_runner, data) -> str:
    result = invoke(cli_runner, ["check-locality", "--modality", "image", "--data", data, "--quick"])
    assert result.exit_code == 0, describe_result(result)
    assert "Wilson 95% interval" in result.output
    return result.output


def test_local_structure_helps_on_diagonals(cli_runner, tmp_path):
    output = run_check(cli_runner, write_diagonals(tmp_path / "diagonals"))
    assert "Verdict: local structure helps: a CNN fits" in output
    assert "pixel rows permuted" in output and "pixel columns permuted" in output


def test_exchangeable_columns_do_not_help(cli_runner, tmp_path):
    output = run_check(cli_runner, write_exchangeable(tmp_path / "exchangeable"))
    assert "local structure helps" not in output
    assert "Verdict: order carries no information: prefer a model without convolutions" in output


def test_wilson_interval_known_values():
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert wilson_interval(50, 50)[1] == pytest.approx(1.0)
    assert 0.0 < wilson_interval(50, 50)[0] < 1.0  # never collapses to a point, unlike p +- z*se


def test_the_verdict_rule():
    def results(given, rows, columns, total=100):
        return {"as given": Accuracy(given, total), "rows permuted": Accuracy(rows, total),
                "columns permuted": Accuracy(columns, total)}

    assert decide(results(98, 60, 97), 0.5)[0] == "helps"  # one axis is enough
    assert decide(results(90, 92, 88), 0.5)[0] == "no information"
    assert decide(results(90, 82, 88), 0.5)[0] == "inconclusive"  # lower, but within the noise
    # The reason names what happened: here rows permuted scored higher, columns lower.
    verdict, reason = decide(results(75, 82, 65), 0.5)
    assert verdict == "inconclusive"
    assert reason.startswith("columns permuted scored below the as-given interval, but the intervals overlap")
    assert "rows permuted scored within or above it" in reason
    assert decide(results(55, 50, 50), 0.5)[0] == "inconclusive"  # never beat the majority class


def test_text_columns_are_vocabulary_ids_and_padding_stays_padding():
    ids = np.array([[5, 2, 0, 0], [1, 3, 4, 0]])
    table = np.array([0, 4, 5, 1, 2, 3])
    permuted = permute_columns(ids, table, Modality.text)
    assert permuted.tolist() == [[3, 5, 0, 0], [4, 1, 2, 0]]


def test_check_locality_needs_a_modality(cli_runner):
    assert_one_line_error(invoke(cli_runner, ["check-locality"]), "modality")


def test_text_is_read_one_token_per_position_so_permuting_positions_destroys_order():
    from pipelines.datasets import Dataset
    from pipelines.locality import featurize

    texts = [f"short text number {i} about {'cats' if i % 2 else 'dogs'}" for i in range(12)]
    dataset = Dataset(texts, ["a" if i % 2 else "b" for i in range(12)], [f"row {i}" for i in range(12)])
    preprocessor, (x_train, _), (x_test, _), _ = featurize(Modality.text, dataset.subset(list(range(8))),
                                                           dataset.subset(list(range(8, 12))))
    assert preprocessor.level == "char"  # short texts: the default level...
    assert list(preprocessor.ngram_sizes) == [] and x_train.ndim == x_test.ndim == 2  # ...without n-gram ids


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999"])
def test_check_locality_refuses_a_seed_numpy_cannot_take(cli_runner, seed):
    result = invoke(cli_runner, ["check-locality", "--modality", "text", "--quick", "--seed", seed])
    assert_one_line_error(result, "--seed must be an integer from 0 to 2**32 - 1")
