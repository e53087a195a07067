"""`check-locality`: the right verdict on local and on exchangeable data; the rule and its parts."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.locality import VERDICTS, Accuracy, decide, permute_columns, variant_name, wilson_interval
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


def write_exchangeable(root, size: int = SIZE, per_class: int = 2 * PER_CLASS, seed: int = 0):
    """Columns exchangeable by construction: independent pixels; 'bright' raises a fixed random
    quarter of them. Any permutation of rows or columns gives data with the same information.
    Twice the usual inputs: "no information" needs 60 test inputs at 100% to be narrow enough."""
    rng = np.random.default_rng(seed)
    raised = rng.random((size, size)) < 0.25
    for label in ("bright", "plain"):
        for i in range(per_class):
            image = rng.normal(100, 40, size=(size, size)) + (SHIFT * raised if label == "bright" else 0)
            write_png(root / label / f"{i:02d}.png", np.clip(image, 0, 255).astype(np.uint8))
    return root


def write_blob_positions(root, size: int = SIZE, seed: int = 0):
    """The class is WHERE a bright 3x3 blob is: left, middle or right third, at a random row."""
    rng = np.random.default_rng(seed)
    for label, first_column in (("left", 2), ("middle", 10), ("right", 18)):
        for i in range(40):
            image = rng.integers(0, 50, size=(size, size)).astype(np.uint8)
            r, c = rng.integers(0, size - 3), first_column + rng.integers(0, 3)
            image[r : r + 3, c : c + 3] = 255
            write_png(root / label / f"{i:02d}.png", image)
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


def test_absolute_position_is_not_called_uninformative(cli_runner, tmp_path):
    # Global pooling cannot see where the blob is; a fixed column permutation turns each place
    # into a different scattered pattern it can see, so permuting scores clearly above as given.
    output = run_check(cli_runner, write_blob_positions(tmp_path / "blobs"))
    assert "order carries no information" not in output
    assert "Verdict: inconclusive: permuting helped" in output
    assert "pixel columns permuted scored clearly above as given" in output


def test_wilson_interval_known_values():
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert wilson_interval(50, 50)[1] == pytest.approx(1.0)
    assert 0.0 < wilson_interval(50, 50)[0] < 1.0  # never collapses to a point, unlike p +- z*se


def scores(given, rows, columns, total=100):
    return {"as given": Accuracy(given, total), "rows permuted": Accuracy(rows, total),
            "columns permuted": Accuracy(columns, total)}


def image_verdict(given, rows, columns, total=100, *, majority=0.5, quick=False):
    return decide(scores(given, rows, columns, total), majority, modality=Modality.image, quick=quick)


def test_helps_when_as_given_is_clearly_above_one_permuted_version():
    verdict, reason = image_verdict(98, 60, 97)  # one axis is enough
    assert verdict == "helps"
    assert reason == "the as-given interval lies above the pixel rows permuted interval"


def test_no_information_needs_about_the_same_accuracies_from_narrow_intervals():
    # 400 test inputs: every interval is under 0.10 wide, and neither permuted version dropped
    # below the as-given interval (one a little above it is fine).
    assert image_verdict(360, 368, 352, total=400)[0] == "no information"
    # The same shares from 100 test inputs: intervals 0.12-0.13 wide are too wide to say "the same".
    verdict, reason = image_verdict(90, 92, 88)
    assert verdict == "inconclusive"
    assert "interval is 0.13 wide" in reason and "at most 0.10" in reason


def test_quick_text_run_on_few_test_inputs_is_inconclusive():
    # The review's `check-locality --modality text --quick`: 100 test inputs, 14% majority class.
    accuracies = scores(26, 25, 34)
    verdict, reason = decide(accuracies, 0.14, modality=Modality.text, quick=True)
    assert verdict == "inconclusive"
    assert reason.endswith("drop --quick")


def test_a_permuted_version_clearly_above_as_given_says_permuting_helped():
    # The review's blobs whose class is their position: 30 test inputs, three classes.
    verdict, reason = image_verdict(20, 20, 30, total=30, majority=1 / 3)
    assert verdict == "permuting helped" and VERDICTS[verdict].startswith("inconclusive")
    assert reason.startswith("pixel columns permuted scored clearly above as given")
    assert "absolute position" in reason and "--head flatten" in reason
    # Text models have no flatten head: the advice must not suggest one.
    text_reason = decide(scores(60, 85, 62), 0.3, modality=Modality.text, quick=False)[1]
    assert text_reason.startswith("token positions permuted scored clearly above as given")
    assert "--head flatten" not in text_reason
    # Local structure still shows on one axis; the reason adds that position may matter too.
    verdict, reason = image_verdict(80, 40, 97)
    assert verdict == "helps" and "pixel columns permuted scored clearly above as given" in reason


def test_more_data_advice_mentions_quick_only_when_it_was_given():
    for quick, advice in ((True, "drop --quick"), (False, "use more data")):
        verdict, reason = image_verdict(90, 82, 88, quick=quick)  # lower, but within the noise
        assert verdict == "inconclusive"
        assert reason == f"pixel rows permuted scored below the as-given interval, but the intervals overlap; {advice}"
    assert "--quick" not in image_verdict(90, 92, 88, quick=False)[1]


@pytest.mark.parametrize("modality, rows, columns", [
    (Modality.image, "pixel rows permuted", "pixel columns permuted"),
    (Modality.audio, "time steps permuted", "frequency bands permuted"),
])
def test_reasons_use_the_tables_names(modality, rows, columns):
    reason = decide(scores(98, 60, 40), 0.5, modality=modality, quick=False)[1]
    assert reason == f"the as-given interval lies above the {rows} and {columns} interval"
    assert variant_name("rows permuted", modality) == rows and variant_name("as given", modality) == "as given"


def test_text_rests_on_positions_and_a_moving_control_is_noise():
    # Positions kept their accuracy; the vocabulary control alone dropping clearly is not "helps".
    verdict, reason = decide(scores(90, 88, 60), 0.5, modality=Modality.text, quick=False)
    assert verdict == "inconclusive"
    assert reason.startswith("the control, vocabulary ids permuted, which keeps all information, scored 0.600")
    verdict, reason = decide(scores(90, 60, 88), 0.5, modality=Modality.text, quick=False)
    assert (verdict, reason) == ("helps", "the as-given interval lies above the token positions permuted interval")


def test_never_beating_the_majority_class_is_inconclusive():
    verdict, reason = image_verdict(55, 50, 50)
    assert verdict == "inconclusive" and "did not beat the majority class (0.500)" in reason


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


@pytest.mark.parametrize("folders, test_split, said", [
    (("train", "test"), 0.4, ["test/ is the test set: --test-split 0.4 is not used."]),
    (("train", "test"), 0.25, []),  # the default, not asked for
    (("train", "val"), 0.25, ["val/ is not read: check-locality trains without a validation set."]),
    (("train", "val", "test"), 0.4, ["val/ is not read", "test/ is the test set: --test-split 0.4 is not used."]),
])
def test_split_folders_say_what_they_leave_unused_as_train_does(tmp_path, monkeypatch, caplog, folders, test_split, said):
    import pipelines.locality
    from tests.conftest import write_image_folder

    for seed, name in enumerate(folders):
        write_image_folder(tmp_path / "data" / name, per_class=3 if name != "train" else 6, seed=seed)
    # the three trainings are not what is tested here
    monkeypatch.setattr(pipelines.locality, "train_and_score", lambda *args, **kwargs: Accuracy(1, 2))
    with caplog.at_level("WARNING", logger="pipelines.locality"):
        result = pipelines.locality.check_locality(Modality.image, str(tmp_path / "data"), epochs=1, test_split=test_split)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == len(said) and all(part in warning for part, warning in zip(said, warnings)), warnings
    if "test" in folders:
        assert result.test_count == 9  # test/ alone, whatever --test-split says


@pytest.mark.parametrize("epochs, advice", [(1, "use more data"), (None, "drop --quick")])
def test_drop_quick_is_advised_only_when_quick_left_something_out(tmp_path, monkeypatch, epochs, advice):
    # 18 inputs are fewer than --quick keeps, so with --epochs given it left nothing out
    import pipelines.locality
    from tests.conftest import write_image_folder

    write_image_folder(tmp_path / "data", per_class=6)
    monkeypatch.setattr(pipelines.locality, "train_and_score", lambda *args, **kwargs: Accuracy(5, 5))
    result = pipelines.locality.check_locality(Modality.image, str(tmp_path / "data"), quick=True, epochs=epochs)
    assert result.verdict == "inconclusive" and result.reason.endswith(advice), result.reason
