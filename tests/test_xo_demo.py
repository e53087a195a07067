"""Known answers of the X-versus-O walkthrough: filtering, truncation, ReLU, pooling; the CLI."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipelines.xo_demo import (
    classic_features,
    classic_o,
    classic_x,
    draw_shape,
    filter_map,
    max_pool,
    relu,
    truncate,
    walkthrough,
)
from tests.conftest import assert_one_line_error, invoke


def test_the_pictures_are_plus_minus_one_with_the_classic_ink():
    x, o = classic_x(), classic_o()
    assert set(np.unique(x)) == set(np.unique(o)) == {-1.0, 1.0}
    assert (x == 1).sum() == 13  # two 7-pixel diagonals sharing the centre
    assert (o == 1).sum() == 16
    assert x[4, 4] == 1 and o[4, 4] == -1


def test_a_full_match_gives_one_and_two_mismatches_give_five_ninths():
    falling = classic_features()["diagonal \\"]
    filtered = filter_map(classic_x(), falling)
    assert filtered.shape == (7, 7)
    # The window at rows 1-3, columns 1-3 is exactly the feature.
    assert filtered[1, 1] == pytest.approx(1.0)
    assert np.allclose(np.diag(filtered)[[1, 2, 4, 5]], 1.0)
    # Rows 0-2, columns 4-6: count the mismatches independently of filter_map.
    window = classic_x()[0:3, 4:7]
    assert int((window != falling).sum()) == 2
    assert filtered[0, 4] == pytest.approx((7 - 2) / 9)
    assert truncate(filtered[0, 4]) == "0.55"
    assert truncate(filtered[1, 1]) == "1.00"
    assert truncate(filtered[0, 0]) == "0.77"  # one mismatch: (8 - 1) / 9
    assert truncate(-1 / 9) == "-0.11"
    assert truncate(0.0) == "0.00"


def test_the_crossing_feature_matches_only_the_centre_of_the_x():
    filtered = filter_map(classic_x(), classic_features()["crossing X"])
    assert np.unravel_index(np.argmax(filtered), filtered.shape) == (3, 3)
    assert filtered[3, 3] == pytest.approx(1.0)
    assert (filtered < 1.0 - 1e-6).sum() == 48


def test_relu_and_pooling_keep_the_edges():
    assert relu(np.array([-0.5, 0.0, 0.3])).tolist() == [0.0, 0.0, pytest.approx(0.3)]
    grid = np.arange(49, dtype=float).reshape(7, 7)
    pooled = max_pool(grid, window=2, stride=2)
    assert pooled.tolist() == [[8, 10, 12, 13], [22, 24, 26, 27], [36, 38, 40, 41], [43, 45, 47, 48]]
    assert max_pool(np.arange(16.0).reshape(4, 4)).tolist() == [[5, 7], [13, 15]]
    steps = walkthrough()
    key = ("X", "diagonal \\")
    assert steps.pooled[key].shape == (4, 4)
    assert [truncate(v) for v in steps.pooled[key][0]] == ["1.00", "0.33", "0.55", "0.33"]
    assert np.allclose(np.diag(steps.pooled[key])[:3], 1.0)


def test_generated_shapes_vary_and_stay_plus_minus_one():
    rng = np.random.default_rng(0)
    shapes = [draw_shape(kind, rng) for kind in "XXOO"]
    assert all(set(np.unique(s)) <= {-1.0, 1.0} for s in shapes)
    assert not np.array_equal(shapes[0], shapes[1])
    assert all((s == 1).sum() >= 6 for s in shapes)


def test_demo_xo_prints_the_numbers_writes_figures_and_classifies_new_pictures(cli_runner, tmp_path):
    out = tmp_path / "xo"
    result = invoke(cli_runner, ["demo", "xo", "--out", out, "--epochs", "4"])  # 1.0 on seeds 0-7 already
    assert result.exit_code == 0, result.output
    assert "(7 - 2)/9 = 0.555" in result.output
    assert "two [conv 3x3 -> ReLU -> max pool 2x2] blocks" in " ".join(result.output.split())  # not eaten as markup
    lines = result.output.splitlines()
    header = lines.index("X filtered with 'diagonal \\' (7x7)")
    assert lines[header + 1].split() == ["0.77", "-0.11", "0.11", "0.33", "0.55", "-0.11", "0.33"]
    assert lines[header + 2].split()[1] == "1.00"
    accuracy = float(re.search(r"accuracy ([0-9.]+) on 200 new pictures", result.output).group(1))
    assert accuracy >= 0.9
    names = {p.name for p in out.iterdir()}
    assert {"pictures_and_features.png", "filtered_maps.png", "relu_maps.png", "pooled_maps.png",
            "new_pictures.png", "learned_filters.png"} <= names
    assert all((out / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)


def test_demo_xo_rejects_zero_epochs(cli_runner, tmp_path):
    assert_one_line_error(invoke(cli_runner, ["demo", "xo", "--out", tmp_path, "--epochs", "0"]), "--epochs")


@pytest.mark.parametrize("seed", ["-1", "99999999999"])
@pytest.mark.parametrize("train", ["--train", "--no-train"])
def test_demo_xo_rejects_seeds_outside_the_range(cli_runner, tmp_path, seed, train):
    result = invoke(cli_runner, ["demo", "xo", "--out", tmp_path / "xo", "--seed", seed, train])
    assert_one_line_error(result, "--seed must be an integer from 0 to 2**32 - 1")
    assert not (tmp_path / "xo").exists()
