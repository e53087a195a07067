"""The command line end to end, on tiny generated data, through `typer.testing.CliRunner`.

Training runs are shared per session (see conftest.py); error cases are chosen to fail before any
training starts, so they are fast.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipelines.config import RunConfig
from pipelines.datasets import load_source
from pipelines.featurize import Skipped, check_skip_share
from pipelines.modality import Modality
from preprocess import ConvpipeError, Preprocessor
from tests.conftest import (
    assert_one_line_error,
    CLASSES,
    TINY_AUDIO,
    TINY_IMAGE,
    TINY_TEXT,
    TINY_TRAIN,
    class_image,
    describe_result,
    invoke,
    tone,
    write_audio_folder,
    write_image_folder,
    write_png,
    write_wav,
)


RUN_FILES = ("model.keras", "preprocessor.json", "labels.json", "config.json", "split.json", "history.csv")


@pytest.fixture(params=["image", "audio", "text"])
def any_run(request):
    return request.getfixturevalue(f"{request.param}_run")


def load_model(run_dir: Path):
    import keras

    import models.layers  # noqa: F401  registers the custom layers

    return keras.models.load_model(run_dir / "model.keras", safe_mode=True)


def held_out_inputs(run) -> tuple[list, list[str]]:
    """The run's test inputs and true labels, found from split.json without the pipeline's help
    for folders (ids are paths below the data folder whose first part is the class)."""
    ids = json.loads((run.run_dir / "split.json").read_text())["test"]
    if run.data.is_dir():
        return [run.data / i for i in ids], [i.split("/")[0] for i in ids]
    dataset = load_source(str(run.data), Modality(run.modality)).everything().select_ids(ids)
    return dataset.inputs, dataset.labels



# ---- train -----------------------------------------------------------------------------------


def test_train_writes_a_complete_self_describing_run(any_run):
    run_dir = any_run.run_dir
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".") or ".tmp" in p.name]
    assert "Run written to" in any_run.output
    assert str(run_dir) in any_run.output.replace("\n", "")
    # the training part of the time is the one config.json records and compare shows
    seconds = re.search(r"; (\d+) s in all, (\d+) s of them training\)", any_run.output)
    assert seconds and int(seconds[2]) <= int(seconds[1])

    assert json.loads((run_dir / "labels.json").read_text()) == list(CLASSES)
    document = json.loads((run_dir / "config.json").read_text())
    config = RunConfig.from_dict(document["config"])
    assert config.modality.value == any_run.modality
    assert config.data == str(any_run.data)
    assert config.model.filters == (4,) and config.model.dense == (8,)
    assert (config.train.epochs, config.train.seed, config.train.test_split) == (2, 0, 0.25)
    assert document["classes"] == list(CLASSES)
    assert {"python", "keras", "tensorflow", "librosa"} <= set(document["versions"])

    preprocessor = Preprocessor.load(run_dir / "preprocessor.json")
    assert preprocessor.get_config() == document["config"]["preprocess"]  # fully resolved
    assert preprocessor.is_fitted
    if any_run.modality == "text":  # new runs use the current tokenizer, not the one old files get
        assert preprocessor.tokenizer_version == 2
    model = load_model(run_dir)
    assert model.output_shape == (None, 3)
    assert document["parameters"] == model.count_params()

    with open(run_dir / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    assert all(np.isfinite(float(row["loss"])) for row in rows)


def test_train_resolves_modality_specific_settings(image_run, audio_run, text_run):
    image = Preprocessor.load(image_run.run_dir / "preprocessor.json")
    assert image.output_shape == (8, 8, 1)  # --image-size 8,8; grayscale probed from the data
    audio = Preprocessor.load(audio_run.run_dir / "preprocessor.json")
    assert audio.output_shape == (26, 16, 1)  # 0.25 s at 16 kHz, hop 160; 16 mel bands
    assert (audio_run.run_dir / "preprocessor.npz").is_file()
    text = Preprocessor.load(text_run.run_dir / "preprocessor.json")
    assert text.level == "word" and text.output_shape == (16,)
    assert {"apple", "banana", "grape"} <= set(text.vocabulary_)
    image_doc = json.loads((image_run.run_dir / "config.json").read_text())
    assert "color_mode" in image_doc["data_choices"]
    assert "bit_depth" not in image_doc["data_choices"]
    assert image_doc["config"]["preprocess"]["bit_depth"] == 16


def test_a_run_on_12_bit_images_suggests_bit_depth_12_and_reads_them_so_when_asked(cli_runner, tmp_path, caplog):
    rng = np.random.default_rng(0)
    for index, label in enumerate(("dim", "bright")):
        for i in range(8):  # 12-bit camera pixels: a class's band at 1500 or 3800 of 4095
            image = rng.integers(0, 400, size=(8, 8)).astype(np.uint16)
            image[index * 4 : index * 4 + 4] = (1500, 3800)[index]
            write_png(tmp_path / "data" / label / f"{i}.png", image)
    with caplog.at_level("WARNING"):
        result = invoke(cli_runner, ["train", "--modality", "image", "--data", tmp_path / "data", "--out", tmp_path / "run", *TINY_IMAGE])
    assert result.exit_code == 0, describe_result(result)
    # said, not chosen: a resumed or retrained run reads its images as it first did
    assert "fit in 12 bits (0-4095): read on the 16-bit scale they use only the bottom 16 of 256 gray levels; pass --bit-depth 12" in caplog.text
    document = json.loads((tmp_path / "run" / "config.json").read_text())
    assert document["config"]["preprocess"]["bit_depth"] == 16 and "bit_depth" not in document["data_choices"]
    caplog.clear()
    with caplog.at_level("WARNING"):
        result = invoke(cli_runner, ["train", "--modality", "image", "--data", tmp_path / "data", "--out", tmp_path / "run12", *TINY_IMAGE, "--bit-depth", "12"])
    assert result.exit_code == 0, describe_result(result)
    assert "--bit-depth" not in caplog.text
    assert Preprocessor.load(tmp_path / "run12" / "preprocessor.json").bit_depth == 12


def test_config_json_records_the_positions_a_text_run_learned(cli_runner, text_folder, tmp_path):
    options = list(TINY_TEXT)
    del options[options.index("--positions") : options.index("--positions") + 2]
    result = invoke(cli_runner, ["train", "--modality", "text", "--data", text_folder, "--out", tmp_path / "run", *options])
    assert result.exit_code == 0, describe_result(result)
    document = json.loads((tmp_path / "run" / "config.json").read_text())
    assert document["config"]["preprocess"]["positions"] is None  # learned when fitted, and why:
    assert document["data_choices"]["positions"] == "16: 90th percentile of training lengths, kept within 16 to 512"
    assert document["input_shape"] == [16]


def test_split_json_is_stratified_disjoint_and_complete(image_run):
    split = json.loads((image_run.run_dir / "split.json").read_text())
    parts = [set(split[name]) for name in ("train", "validation", "test")]
    assert sum(map(len, parts)) == 36 and len(set().union(*parts)) == 36
    all_ids = {f"{c}/{c}_{i:02d}.png" for c in CLASSES for i in range(12)}
    assert set().union(*parts) == all_ids
    for name, per_class in (("train", 8), ("validation", 1), ("test", 3)):
        labels = [i.split("/")[0] for i in split[name]]
        assert all(labels.count(c) == per_class for c in CLASSES), (name, labels)


def test_preprocessor_is_fitted_on_the_training_split_only(audio_run, text_run):
    from preprocess import AudioPreprocessor, TextPreprocessor

    for run, cls in ((audio_run, AudioPreprocessor), (text_run, TextPreprocessor)):
        split = json.loads((run.run_dir / "split.json").read_text())
        source = load_source(str(run.data), Modality(run.modality)).everything()
        saved = Preprocessor.load(run.run_dir / "preprocessor.json")
        on_train = cls.from_config(saved.get_config()).fit(source.select_ids(split["train"]).inputs)
        on_everything = cls.from_config(saved.get_config()).fit(source.inputs)
        if cls is AudioPreprocessor:
            np.testing.assert_allclose(saved.band_mean_, on_train.band_mean_, rtol=1e-6)
            assert not np.allclose(saved.band_mean_, on_everything.band_mean_, rtol=1e-6)
        else:
            assert saved.vocabulary_ == on_train.vocabulary_
            assert saved.vocabulary_ != on_everything.vocabulary_


def test_text_manifest_run_keeps_multi_line_rows(text_run):
    split = json.loads((text_run.run_dir / "split.json").read_text())
    ids = split["train"] + split["validation"] + split["test"]
    assert len(ids) == len(set(ids)) == 36
    assert all(i.startswith("row ") for i in ids)


def train_one_epoch_on_folders(cli_runner, data: Path, run_dir: Path, options: list[str], val_split: str) -> dict:
    """Train an image run for one epoch on `data` (train/ and test/ folders); its split.json."""
    result = invoke(
        cli_runner,
        ["train", "--modality", "image", "--data", data, "--out", run_dir, *options, "--epochs", "1", "--val-split", val_split],
    )
    assert result.exit_code == 0, describe_result(result)
    return json.loads((run_dir / "split.json").read_text())


def test_train_with_predefined_train_and_test_folders(cli_runner, tmp_path):
    write_image_folder(tmp_path / "data" / "train", per_class=5)
    write_image_folder(tmp_path / "data" / "test", per_class=2, seed=1)
    run_dir = tmp_path / "run"
    split = train_one_epoch_on_folders(cli_runner, tmp_path / "data", run_dir, TINY_IMAGE, "0.2")
    assert sorted(split["test"]) == sorted(f"test/{c}/{c}_{i:02d}.png" for c in CLASSES for i in range(2))
    assert all(i.startswith("train/") for i in split["train"] + split["validation"])
    assert len(split["validation"]) == 3 and len(split["train"]) == 12

    result = invoke(cli_runner, ["evaluate", run_dir])
    assert result.exit_code == 0, describe_result(result)
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert report["n_samples"] == 6


def test_image_size_and_colour_are_chosen_from_the_training_split_only(cli_runner, tmp_path):
    # Choices made from the data look at the training inputs alone: test/ (more numerous here,
    # larger and in colour) must not change how the model reads its inputs.
    rng = np.random.default_rng(0)
    for index, label in enumerate(CLASSES[:2]):
        for i in range(4):
            write_png(tmp_path / "data" / "train" / label / f"{i}.png", class_image(index, rng, size=(8, 8)))
        for i in range(6):
            big = np.repeat(class_image(index, rng, size=(32, 32))[..., None], 3, axis=2)
            big[..., 0] = 255 - big[..., 0]  # colour
            write_png(tmp_path / "data" / "test" / label / f"{i}.png", big)
    run_dir = tmp_path / "run"
    split = train_one_epoch_on_folders(cli_runner, tmp_path / "data", run_dir, TINY_TRAIN, "0.25")
    assert len(split["test"]) == 12 and all(i.startswith("train/") for i in split["train"] + split["validation"])
    preprocess = json.loads((run_dir / "config.json").read_text())["config"]["preprocess"]
    assert preprocess["image_size"] == [8, 8]
    assert preprocess["color_mode"] == "grayscale"


@pytest.mark.parametrize("with_test", [True, False])
def test_train_with_train_and_val_folders_uses_val_for_validation(cli_runner, tmp_path, with_test):
    write_image_folder(tmp_path / "data" / "train", per_class=5)
    write_image_folder(tmp_path / "data" / "val", per_class=2, seed=1)
    if with_test:
        write_image_folder(tmp_path / "data" / "test", per_class=2, seed=2)
    run_dir = tmp_path / "run"
    result = invoke(
        cli_runner, ["train", "--modality", "image", "--data", tmp_path / "data", "--out", run_dir, *TINY_IMAGE, "--epochs", "1"]
    )
    assert result.exit_code == 0, describe_result(result)
    assert json.loads((run_dir / "labels.json").read_text()) == sorted(CLASSES)
    split = json.loads((run_dir / "split.json").read_text())
    assert sorted(split["validation"]) == sorted(f"val/{c}/{c}_{i:02d}.png" for c in CLASSES for i in range(2))
    if with_test:
        assert all(i.startswith("test/") for i in split["test"]) and len(split["train"]) == 15
    else:  # the test split is taken from train/, 10% of each class
        assert len(split["test"]) == 3 and all(i.startswith("train/") for i in split["train"] + split["test"])
    result = invoke(cli_runner, ["evaluate", run_dir])
    assert result.exit_code == 0, describe_result(result)


@pytest.mark.parametrize("folder", ["test", "val"])
def test_train_refuses_test_or_val_classes_that_train_lacks(cli_runner, tmp_path, folder):
    write_image_folder(tmp_path / "data" / "train", classes=CLASSES[:2], per_class=3)
    write_image_folder(tmp_path / "data" / folder, per_class=2, seed=1)
    result = invoke(
        cli_runner, ["train", "--modality", "image", "--data", tmp_path / "data", "--out", tmp_path / "run", *TINY_IMAGE]
    )
    assert_one_line_error(result, f"{folder}/ has class(es) that train/ lacks: gamma")
    assert not (tmp_path / "run").exists()


def test_train_names_the_folder_to_rename_for_classes_that_differ_from_train_only_in_case(cli_runner, tmp_path):
    # Train/Alpha and test/alpha are two classes: the refusal names the folder to rename, as evaluate does
    write_image_folder(tmp_path / "data" / "Train", classes=("Alpha", "beta", "07"), per_class=3)
    write_image_folder(tmp_path / "data" / "test", classes=("alpha", "beta", "7", "delta"), per_class=2, seed=1)
    result = invoke(
        cli_runner, ["train", "--modality", "image", "--data", tmp_path / "data", "--out", tmp_path / "run", *TINY_IMAGE]
    )
    assert_one_line_error(
        result, "test/ has class(es) that Train/ lacks: 7, alpha, delta", "Add them to Train/",
        "differ from Train/'s only in case, spacing or leading zeros: rename test/7/ to test/07/, test/alpha/ to test/Alpha/.",
    )
    assert "delta/ to" not in result.output


def test_unreadable_inputs_are_skipped_and_recorded(cli_runner, image_folder, tmp_path):
    (image_folder / "beta" / "broken.png").write_bytes(b"not a png")
    (image_folder / "gamma" / "notes.txt").write_text("ignored")
    run_dir = tmp_path / "run"
    result = invoke(
        cli_runner,
        ["train", "--modality", "image", "--data", image_folder, "--out", run_dir, *TINY_IMAGE, "--epochs", "1",
         "--test-split", "0", "--val-split", "0"],
    )
    assert result.exit_code == 0, describe_result(result)
    assert "training and validation: skipped 1 of 37 inputs: 1 not a readable image" in result.stdout
    assert "ignored 1 entry that is not an input" in result.stdout
    skipped = json.loads((run_dir / "skipped.json").read_text())
    assert [entry["input"] for entry in skipped["skipped"]] == ["beta/broken.png"]
    assert skipped["ignored"] == [{"input": "gamma/notes.txt", "reason": "unsupported file type .txt"}]


def test_strict_fails_on_the_first_unreadable_input(cli_runner, image_folder, tmp_path):
    (image_folder / "beta" / "broken.png").write_bytes(b"not a png")
    result = invoke(
        cli_runner,
        ["train", "--modality", "image", "--data", image_folder, "--out", tmp_path / "run", *TINY_IMAGE, "--strict",
         "--test-split", "0", "--val-split", "0"],
    )
    assert_one_line_error(result, "Cannot use input beta/broken.png", "(--strict)")
    assert not (tmp_path / "run" / "model.keras").exists()


def test_too_many_unreadable_inputs_stop_training(cli_runner, tmp_path):
    data = write_image_folder(tmp_path / "data", per_class=4)
    for label in CLASSES:
        for i in range(2):
            (data / label / f"{label}_bad{i}.png").write_bytes(b"")
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", data, "--out", tmp_path / "run", *TINY_IMAGE])
    assert_one_line_error(result, "Too many unreadable inputs", "empty file", "-v lists every skipped input")
    assert not (tmp_path / "run" / "skipped.json").exists()  # so the message must not point at it


def test_train_refuses_to_overwrite_a_run(cli_runner, image_run):
    result = invoke(
        cli_runner, ["train", "--modality", "image", "--data", image_run.data, "--out", image_run.run_dir, *TINY_IMAGE]
    )
    assert_one_line_error(result, "already holds a run")


def test_train_with_a_runs_config_json_trains_that_run_again(cli_runner, image_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recorded data path is absolute: any folder will do
    result = invoke(cli_runner, ["train", "--config", image_run.run_dir / "config.json", "--out", "again"])
    assert result.exit_code == 0, describe_result(result)
    first, again = image_run.run_dir, tmp_path / "again"
    assert json.loads((again / "config.json").read_text())["config"] == json.loads((first / "config.json").read_text())["config"]
    for name in ("split.json", "history.csv", "labels.json"):  # the same split, and (seeded) the same epochs
        assert (again / name).read_text() == (first / name).read_text(), name


# ---- evaluate --------------------------------------------------------------------------------


def test_evaluate_report_matches_scikit_learn(cli_runner, any_run, tmp_path):
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    out = tmp_path / "report"
    result = invoke(cli_runner, ["evaluate", any_run.run_dir, "--out", out])
    assert result.exit_code == 0, describe_result(result)
    assert "accuracy" in result.stdout and "macro-F1" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert {"accuracy", "macro_f1", "weighted_f1", "n_samples", "labels", "confusion_matrix", "per_class"} <= set(report)

    # Recompute from the run's own files: its model, its fitted preprocessor, its test ids.
    inputs, labels = held_out_inputs(any_run)
    preprocessor = Preprocessor.load(any_run.run_dir / "preprocessor.json")
    probabilities = load_model(any_run.run_dir).predict(preprocessor.transform(inputs), batch_size=256, verbose=0)
    y_pred = probabilities.argmax(axis=1)
    y_true = np.array([CLASSES.index(label) for label in labels])
    assert report["n_samples"] == len(y_true) == 9
    assert report["labels"] == list(CLASSES)
    assert report["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert report["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert report["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted", zero_division=0))
    assert report["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=[0, 1, 2]).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2], zero_division=0)
    for i, label in enumerate(CLASSES):
        scores = report["per_class"][label]
        assert scores["precision"] == pytest.approx(precision[i])
        assert scores["recall"] == pytest.approx(recall[i])
        assert scores["f1"] == pytest.approx(f1[i])
        assert scores["support"] == support[i] == 3


def test_evaluate_writes_into_the_run_by_default(cli_runner, image_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(image_run.run_dir, run_dir)
    result = invoke(cli_runner, ["evaluate", run_dir])
    assert result.exit_code == 0, describe_result(result)
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert report["run"] == str(run_dir) and report["modality"] == "image"
    assert "Report written to" in result.stdout
    assert str(run_dir / "report" / "report.json") in result.stdout.replace("\n", "")


def test_evaluate_refuses_a_manifest_changed_since_training(cli_runner, text_run, tmp_path):
    manifest = tmp_path / "texts.csv"
    shutil.copy(text_run.data, manifest)
    run_dir = tmp_path / "run"
    shutil.copytree(text_run.run_dir, run_dir, ignore=shutil.ignore_patterns("report"))
    document = json.loads((run_dir / "config.json").read_text())
    document["config"]["data"] = str(manifest)
    (run_dir / "config.json").write_text(json.dumps(document))
    assert invoke(cli_runner, ["evaluate", run_dir]).exit_code == 0

    # Swap a test row with a row of another class, as sorting the CSV would: every recorded
    # row number still exists, but holds another input.
    split = json.loads((run_dir / "split.json").read_text())
    lines = manifest.read_text(encoding="utf-8").splitlines(keepends=True)
    single = {n: line for n, line in enumerate(lines, start=1) if line.count(",") == 2 and not line.startswith('"')}
    test_row = next(int(i.split()[1]) for i in split["test"] if int(i.split()[1]) in single)
    label = lines[test_row - 1].rstrip().rsplit(",", 1)[1]
    other = next(n for n, line in single.items() if n > 1 and not line.rstrip().endswith("," + label))
    lines[test_row - 1], lines[other - 1] = lines[other - 1], lines[test_row - 1]
    manifest.write_text("".join(lines), encoding="utf-8")
    assert_one_line_error(
        invoke(cli_runner, ["evaluate", run_dir]), f"{manifest} changed since training", "Pass --data"
    )

    del split["fingerprints"]  # a run written before fingerprints were recorded still evaluates
    (run_dir / "split.json").write_text(json.dumps(split))
    result = invoke(cli_runner, ["evaluate", run_dir])
    assert result.exit_code == 0, describe_result(result)


def test_evaluate_names_the_manifest_when_recorded_rows_are_gone(cli_runner, text_run, tmp_path):
    manifest = tmp_path / "texts.csv"
    manifest.write_text("text,label\napple,alpha\nbanana,beta\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    shutil.copytree(text_run.run_dir, run_dir, ignore=shutil.ignore_patterns("report"))
    document = json.loads((run_dir / "config.json").read_text())
    document["config"]["data"] = str(manifest)
    (run_dir / "config.json").write_text(json.dumps(document))
    assert_one_line_error(invoke(cli_runner, ["evaluate", run_dir]), f"{manifest} changed since training")


def test_evaluate_on_another_folder(cli_runner, image_run, tmp_path, monkeypatch):
    data = write_image_folder(tmp_path / "other", per_class=4, seed=5)
    shutil.rmtree(data / "gamma")  # a subset of the known classes is fine
    monkeypatch.chdir(tmp_path)  # a relative --data is recorded as an absolute path, as train does
    result = invoke(cli_runner, ["evaluate", image_run.run_dir, "--data", "other", "--out", tmp_path / "r"])
    assert result.exit_code == 0, describe_result(result)
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["n_samples"] == 8 and report["data"]["location"] == str(data)
    assert report["per_class"]["gamma"]["support"] == 0
    assert sum(map(sum, report["confusion_matrix"])) == 8


def test_evaluate_with_labels_the_model_never_saw(cli_runner, image_run, tmp_path):
    data = write_image_folder(tmp_path / "other", classes=("alpha", "delta", "epsilon"), per_class=2)
    result = invoke(cli_runner, ["evaluate", image_run.run_dir, "--data", data])
    assert_one_line_error(result, "never saw: delta, epsilon", "It knows: alpha, beta, gamma")


def test_evaluate_names_labels_that_differ_from_the_classes_only_in_case(cli_runner, image_run, tmp_path):
    # refused all the same (training keeps "Alpha" and "alpha" apart), but said why
    data = write_image_folder(tmp_path / "other", classes=("Alpha", "BETA", "delta"), per_class=2)
    result = invoke(cli_runner, ["evaluate", image_run.run_dir, "--data", data])
    assert_one_line_error(result, "never saw: Alpha, BETA, delta", "write 'Alpha' as 'alpha', 'BETA' as 'beta' in the data")
    assert "'delta' as" not in result.output


# ---- predict ---------------------------------------------------------------------------------


def test_an_augmented_audio_run_records_its_masks_and_predicts_inputs_unchanged(cli_runner, tmp_path):
    data = write_audio_folder(tmp_path / "audio", per_class=4)
    out = tmp_path / "run"
    result = invoke(cli_runner, ["train", "--modality", "audio", "--data", data, "--out", out, *TINY_AUDIO, "--augment", "0.3"])
    assert result.exit_code == 0, describe_result(result)
    model = json.loads((out / "config.json").read_text())["config"]["model"]
    assert (model["augment"], model["augment_kind"]) == (0.3, "spectrogram")
    from pipelines.run_dir import Run

    run = Run.open(out)  # safe mode: the masks layer is convpipe's registered own
    assert run.model.get_layer("augment_masks").strength == 0.3
    clip = sorted((data / CLASSES[0]).iterdir())[0]
    x = run.preprocessor.transform([str(clip)] * 3)
    probabilities = np.asarray(run.model(x, training=False))
    np.testing.assert_allclose(probabilities, probabilities[[0, 0, 0]], rtol=1e-6)  # no random masks at inference
    result = invoke(cli_runner, ["predict", out, clip, "--json"])
    assert result.exit_code == 0, describe_result(result)
    predicted = json.loads(result.stdout)[0]["top"][0]["probability"]
    assert predicted == pytest.approx(float(probabilities[0].max()), abs=1e-5)


def test_predict_prints_top_k_per_input(cli_runner, image_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # short relative names keep each result on one printed line
    rng = np.random.default_rng(0)
    write_png(Path("a.png"), class_image(0, rng))
    write_png(Path("b.png"), class_image(2, rng))
    result = invoke(cli_runner, ["predict", image_run.run_dir, "a.png", "b.png", "--top-k", "2"])
    assert result.exit_code == 0, describe_result(result)
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["a.png", "b.png"]
    for line in lines:
        shown = line.split(":", 1)[1].split()
        assert len(shown) == 4 and {shown[0], shown[2]} <= set(CLASSES)  # label p label p
        assert 1.0 >= float(shown[1]) >= float(shown[3]) >= 0.0


def test_predict_prints_one_line_per_input_even_for_long_paths(cli_runner, image_run, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    path = write_png(tmp_path / ("a_rather_long_file_name_" * 4 + ".png"), class_image(0, np.random.default_rng(0)))
    result = invoke(cli_runner, ["predict", image_run.run_dir, path])
    assert result.exit_code == 0, describe_result(result)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: ")


def test_predict_json_matches_the_model(cli_runner, image_run, tmp_path):
    path = write_png(tmp_path / "x.png", class_image(1, np.random.default_rng(1)))
    result = invoke(cli_runner, ["predict", image_run.run_dir, path, "--json"])
    assert result.exit_code == 0, describe_result(result)
    (entry,) = json.loads(result.stdout)
    assert entry["input"] == str(path)
    top = entry["top"]
    assert sorted(p["label"] for p in top) == list(CLASSES)  # default top-k is 3
    probabilities = [p["probability"] for p in top]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    expected = load_model(image_run.run_dir).predict(
        Preprocessor.load(image_run.run_dir / "preprocessor.json").transform([path]), verbose=0
    )[0]
    assert {p["label"]: p["probability"] for p in top} == pytest.approx(dict(zip(CLASSES, expected.tolist())), abs=1e-6)


def test_predict_hands_the_model_batches_of_bounded_size(cli_runner, image_run, tmp_path, monkeypatch):
    """model.predict on every input at once copied them into TensorFlow: 6,000 images of
    0.8 GB took predict to 4.2 GB."""
    import keras

    import pipelines.memory

    rng = np.random.default_rng(3)
    paths = [write_png(tmp_path / f"{i}.png", class_image(i % len(CLASSES), rng)) for i in range(5)]
    whole = invoke(cli_runner, ["predict", image_run.run_dir, *paths, "--json"])
    assert whole.exit_code == 0, describe_result(whole)
    monkeypatch.setattr(pipelines.memory, "PREDICT_BATCH_BYTES", 1)  # one input per batch
    seen = []
    for name in ("predict", "predict_on_batch"):
        def spy(self, x, *args, _original=getattr(keras.Model, name), **kwargs):
            seen.append(len(x))
            return _original(self, x, *args, **kwargs)

        monkeypatch.setattr(keras.Model, name, spy)
    one_by_one = invoke(cli_runner, ["predict", image_run.run_dir, *paths, "--json"])
    assert one_by_one.exit_code == 0, describe_result(one_by_one)
    assert seen and max(seen) == 1
    for batched, single in zip(json.loads(whole.stdout), json.loads(one_by_one.stdout), strict=True):
        assert batched["input"] == single["input"]
        assert {p["label"]: p["probability"] for p in batched["top"]} == pytest.approx(
            {p["label"]: p["probability"] for p in single["top"]}, abs=1e-6
        )


def test_file_names_that_are_not_utf8_are_escaped_in_predictions_and_reports(cli_runner, image_run, tmp_path):
    import os

    from pipelines.report_sections import input_name

    name = os.fsdecode(b"caf\xe9 test.png")  # a Latin-1 name on a UTF-8 system: 'caf\udce9 test.png'
    path = write_png(tmp_path / name, class_image(1, np.random.default_rng(1)))
    result = invoke(cli_runner, ["predict", image_run.run_dir, str(path), "--json"])
    assert result.exit_code == 0, describe_result(result)
    (entry,) = json.loads(result.stdout)
    assert entry["input"] == str(tmp_path / "caf\\xe9 test.png")
    entry["input"].encode("utf-8")  # a surrogate here made report.html unwritable
    assert input_name(path, "ignored") == str(tmp_path / "caf\\xe9 test.png")


def test_a_read_only_or_full_disk_is_a_one_line_error(cli_runner, image_run, tmp_path, monkeypatch):
    import tempfile

    from preprocess import atomic

    out = tmp_path / "report"
    mkstemp = tempfile.mkstemp

    def read_only(*args, **kwargs):  # the report folder only: the cache is elsewhere
        if Path(kwargs["dir"]) == out:
            raise OSError(30, "Read-only file system", str(out))
        return mkstemp(*args, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    line = assert_one_line_error(invoke(cli_runner, ["evaluate", image_run.run_dir, "--out", out]), "Read-only file system")
    assert line.startswith(f"Error: Cannot use {out}")


def test_predict_audio_file(cli_runner, audio_run, tmp_path):
    path = write_wav(tmp_path / "clip.wav", tone(1500))
    result = invoke(cli_runner, ["predict", audio_run.run_dir, path, "--json", "--top-k", "1"])
    assert result.exit_code == 0, describe_result(result)
    (entry,) = json.loads(result.stdout)
    assert len(entry["top"]) == 1 and entry["top"][0]["label"] in CLASSES


def test_predict_text_takes_literal_text_and_files(cli_runner, text_run, tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("banana basil bean", encoding="utf-8")
    result = invoke(cli_runner, ["predict", text_run.run_dir, "banana basil bean", path, "--json"])
    assert result.exit_code == 0, describe_result(result)
    literal, from_file = json.loads(result.stdout)
    assert literal["input"] == "banana basil bean" and from_file["input"] == str(path)
    assert (literal["kind"], from_file["kind"]) == ("text", "file")
    assert literal["top"] == from_file["top"]  # same text, same answer


def test_predict_says_which_texts_hold_no_word_the_run_knows(cli_runner, text_run, caplog):
    # another language, or words training never used: only out-of-vocabulary ids, yet a class
    with caplog.at_level("WARNING"):
        result = invoke(cli_runner, ["predict", text_run.run_dir, "banana basil bean", "Привет мир", "zzz qqq", "--json"])
    assert result.exit_code == 0, describe_result(result)
    assert len(json.loads(result.stdout)) == 3  # all predicted, as asked
    assert "2 of 3 texts hold no word the run's vocabulary knows ('Привет мир', 'zzz qqq')" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        invoke(cli_runner, ["predict", text_run.run_dir, "banana zzz"])  # one known word is enough
    assert "vocabulary" not in caplog.text


def test_predict_says_which_clips_are_silent(cli_runner, audio_run, tmp_path, caplog):
    # Digital silence, and hiss so faint (-66 dBFS) that its spectrogram, measured from its own
    # peak, reads like a loud clip: each gets a class all the same, one that says nothing.
    hiss = np.random.default_rng(0).uniform(-5e-4, 5e-4, 4000).astype(np.float32)
    silent = [write_wav(tmp_path / "silence.wav", np.zeros(4000, dtype=np.float32)), write_wav(tmp_path / "hiss.wav", hiss)]
    soft = write_wav(tmp_path / "soft.wav", tone(1500.0, amplitude=0.01))  # -40 dBFS: quiet, and heard
    loud = next(audio_run.data.rglob("*.wav"))
    with caplog.at_level("WARNING"):
        result = invoke(cli_runner, ["predict", audio_run.run_dir, silent[0], loud, silent[1], soft, "--json"])
    assert result.exit_code == 0, describe_result(result)
    assert len(json.loads(result.stdout)) == 4  # all predicted, as asked
    assert f"2 of 4 clips are silent, their loudest sample below -60 dBFS ({silent[0]}, {silent[1]})" in caplog.text
    # a skipped input before a silent clip: the clip is still the one named, among the clips predicted
    (tmp_path / "bad.wav").write_bytes(b"RIFF junk")
    caplog.clear()
    with caplog.at_level("WARNING"):
        result = invoke(cli_runner, ["predict", audio_run.run_dir, tmp_path / "bad.wav", loud, silent[0], "--skip-bad", "--json"])
    assert result.exit_code == 0, describe_result(result)
    assert f"1 of 2 clips are silent, their loudest sample below -60 dBFS ({silent[0]})" in caplog.text


def test_the_silent_clip_warning_names_three_clips_and_counts_the_rest(caplog):
    from pipelines.prediction import warn_of_silent_clips

    with caplog.at_level("WARNING"):
        warn_of_silent_clips([f"{i}.wav" for i in range(7)], np.array([False, True, True, False, True, True, True]))
    assert "5 of 7 clips are silent, their loudest sample below -60 dBFS (1.wav, 2.wav, 4.wav and 2 more)" in caplog.text


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_evaluate_and_predict_show_logged_warnings_as_train_does(cli_runner, image_run, command, monkeypatch, tmp_path):
    # without a handler, Python printed the library's warnings bare, with no "warning:" before them
    import cli

    calls = []
    monkeypatch.setattr(cli, "setup_logging", calls.append)
    extra = ["--out", tmp_path / "report"] if command == "evaluate" else [next(image_run.data.rglob("*.png"))]
    result = invoke(cli_runner, [command, image_run.run_dir, *extra])
    assert result.exit_code == 0, describe_result(result)
    assert calls == [False]


def test_logged_warnings_read_like_input_warnings_and_verbose_notes_keep_their_logger():
    import logging

    import cli

    formatter = cli.OneLineFormatter("%(levelname)s %(name)s: %(message)s")  # as setup_logging makes it

    def line(level, message):
        return formatter.format(logging.LogRecord("pipelines.training", level, __file__, 1, message, None, None))

    # the same prefix as an InputWarning's ("warning: ..."), one line whatever the message holds
    assert line(logging.WARNING, "test/ is the test set:\nunused") == "warning: test/ is the test set:\\nunused"
    assert line(logging.ERROR, "gone") == "error: gone"
    assert line(logging.INFO, "read 40 inputs") == "INFO pipelines.training: read 40 inputs"


def test_another_librarys_logged_warnings_keep_its_logger_name():
    import logging

    import cli

    formatter = cli.OneLineFormatter("%(levelname)s %(name)s: %(message)s")

    def line(name, message):
        return formatter.format(logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None))

    # TensorFlow's or JAX's warning must not read as convpipe's own
    assert line("tensorflow", "5 calls triggered retracing") == "warning: tensorflow: 5 calls triggered retracing"
    assert line("jax._src.xla_bridge", "Falling back to cpu.") == "warning: jax._src.xla_bridge: Falling back to cpu."
    assert line("preprocess.audio", "clip shorter") == "warning: clip shorter"
    assert line("root", "bare") == "warning: bare"


def test_predict_dash_reads_one_input_per_line_from_standard_input(cli_runner, text_run, image_run, tmp_path):
    import cli

    path = tmp_path / "doc.txt"
    path.write_text("banana basil bean", encoding="utf-8")
    # `-` classified the text "-"; now it stands for the lines of stdin, each used as an argument is
    result = cli_runner.invoke(
        cli.app, ["predict", str(text_run.run_dir), "apple almond", "-", "--json"],
        input=f"\ufeffbanana basil bean\r\n\n{path}\n",  # with the byte-order mark a Windows editor writes
    )
    assert result.exit_code == 0, describe_result(result)
    assert [entry["input"] for entry in json.loads(result.stdout)] == ["apple almond", "banana basil bean", str(path)]
    image = write_png(tmp_path / "x.png", class_image(1, np.random.default_rng(1)))
    from_stdin = cli_runner.invoke(cli.app, ["predict", str(image_run.run_dir), "-"], input=f"{image}\n")
    assert from_stdin.exit_code == 0 and from_stdin.stdout == invoke(cli_runner, ["predict", image_run.run_dir, image]).stdout
    empty = cli_runner.invoke(cli.app, ["predict", str(image_run.run_dir), "-"], input="\n")
    assert_one_line_error(empty, "standard input holds no lines")


def test_predict_text_takes_a_long_literal_paragraph(cli_runner, text_run):
    paragraph = " ".join(["banana basil bean and fresh beet"] * 12)  # ~400 characters
    result = invoke(cli_runner, ["predict", text_run.run_dir, paragraph, "--json"])
    assert result.exit_code == 0, describe_result(result)
    (entry,) = json.loads(result.stdout)
    assert entry["input"] == paragraph and entry["kind"] == "text" and len(entry["top"]) == 3
    table = invoke(cli_runner, ["predict", text_run.run_dir, paragraph])  # echoed all 400 characters
    assert table.stdout.startswith(paragraph[:57] + "...: ") and paragraph[:80] not in table.stdout


@pytest.mark.parametrize(
    "make_input, fragments",
    [
        (lambda d: str(d), ["holds no text files (.txt)"]),
        (lambda d: str(d / "nonexistent.txt"), ["Input not found", "nonexistent.txt"]),
        (lambda d: "data/nonexistent", ["Input not found: data/nonexistent"]),
        (lambda d: str(write_png(d / "picture.png", np.zeros((4, 4), np.uint8))), ["picture.png", "not a text file"]),
        (lambda d: "", ["Cannot use input '': empty text"]),
        (lambda d: "   ", ["Cannot use input '   ': empty text"]),
        (lambda d: "\u200b\u2060", ["empty text (only invisible characters)"]),
        (lambda d: (d / "blank.txt").write_text(" \n\t") and str(d / "blank.txt"), ["blank.txt", "empty file"]),
    ],
    ids=["folder", "missing-txt", "missing-path", "png", "empty", "spaces", "zero-width", "whitespace-file"],
)
def test_predict_text_refuses_what_is_not_text(cli_runner, text_run, tmp_path, make_input, fragments):
    assert_one_line_error(invoke(cli_runner, ["predict", text_run.run_dir, make_input(tmp_path)]), *fragments)


def test_predict_text_with_a_slash_and_spaces_is_text(cli_runner, text_run):
    result = invoke(cli_runner, ["predict", text_run.run_dir, "banana and/or basil", "--json"])
    assert result.exit_code == 0, describe_result(result)
    assert json.loads(result.stdout)[0]["input"] == "banana and/or basil"


def test_predict_text_flag_reads_every_input_as_text(cli_runner, text_run, tmp_path, monkeypatch):
    spaceless = "价格是100元/公斤"  # no spaces between words, and a "/": looks like a path
    assert_one_line_error(invoke(cli_runner, ["predict", text_run.run_dir, spaceless]), "Input not found", "pass --text")
    monkeypatch.chdir(tmp_path)
    Path("banana basil").mkdir()  # a folder with a text's name is not read either
    result = invoke(cli_runner, ["predict", text_run.run_dir, spaceless, "banana basil", "--text", "--json"])
    assert result.exit_code == 0, describe_result(result)
    assert [(e["input"], e["kind"]) for e in json.loads(result.stdout)] == [(spaceless, "text"), ("banana basil", "text")]
    explained = invoke(cli_runner, ["explain", text_run.run_dir, spaceless, "--text", "--out", tmp_path / "explained"])
    assert explained.exit_code == 0, describe_result(explained)
    from pipelines.inspection import output_name

    Path("notes.txt").write_text("banana basil")  # the text "notes.txt" must not take the file's folder
    assert output_name("notes.txt").startswith("notes-") and output_name("notes.txt", literal_text=True).startswith("text-")
    assert_one_line_error(invoke(cli_runner, ["predict", text_run.run_dir, " ", "--text"]), "empty text")


def test_text_flag_is_refused_for_other_runs(cli_runner, image_run, tmp_path):
    image = write_png(tmp_path / "x.png", class_image(1, np.random.default_rng(1)))
    assert_one_line_error(invoke(cli_runner, ["predict", image_run.run_dir, image, "--text"]), "--text is for text runs", "image")
    assert_one_line_error(invoke(cli_runner, ["inspect", image_run.run_dir, image, "--text"]), "--text is for text runs")


def test_predict_shows_an_input_warning_as_one_line(cli_runner, text_run, tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\xe9 banana cr\xe8me".encode("latin-1"))
    result = invoke(cli_runner, ["predict", text_run.run_dir, path])
    assert result.exit_code == 0, describe_result(result)
    assert result.stderr.strip().splitlines() == [f"warning: {path}: not valid UTF-8, decoded as Windows-1252 (Latin-1)"]
    assert "InputWarning" not in result.output
    import cli

    # the same bytes as a line of standard input: read as the file's are, with the same warning
    piped = cli_runner.invoke(cli.app, ["predict", str(text_run.run_dir), "-"], input=path.read_bytes() + b"\n")
    assert piped.exit_code == 0, describe_result(piped)
    assert piped.stderr.strip().splitlines() == ["warning: café banana crème: not valid UTF-8, decoded as Windows-1252 (Latin-1)"]


def test_predict_on_an_undecodable_file(cli_runner, image_run, tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG garbage")
    result = invoke(cli_runner, ["predict", image_run.run_dir, path])
    assert_one_line_error(result, f"Cannot use input {path}", "not a readable image")


def test_predict_names_every_unusable_input_and_can_skip_them(cli_runner, image_run, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, path in enumerate(sorted(Path(image_run.data).rglob("*.png"))[:3]):
        shutil.copy(path, folder / f"{i}.png")
    (folder / "a-broken.png").write_bytes(b"\x89PNG garbage")
    (folder / "b-empty.png").write_bytes(b"")
    result = invoke(cli_runner, ["predict", image_run.run_dir, folder])
    line = assert_one_line_error(result, "2 of 5 inputs cannot be used:", "a-broken.png (", "b-empty.png (empty file)")
    assert line.endswith("pass --skip-bad to predict the others.")
    result = invoke(cli_runner, ["predict", image_run.run_dir, folder, "--skip-bad", "--json"])
    assert result.exit_code == 0, describe_result(result)
    assert [Path(entry["input"]).name for entry in json.loads(result.stdout)] == ["0.png", "1.png", "2.png"]
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"left out: {folder / 'a-broken.png'} (") and lines[1] == f"left out: {folder / 'b-empty.png'} (empty file)"
    assert lines[2] == "warning: 2 of 5 inputs cannot be used; left out."
    gone = invoke(cli_runner, ["predict", image_run.run_dir, folder / "0.png", tmp_path / "gone.png", "--skip-bad"])
    assert gone.exit_code == 0 and f"left out: {tmp_path / 'gone.png'} (no such file)" in gone.stderr
    only_bad = invoke(cli_runner, ["predict", image_run.run_dir, folder / "b-empty.png", folder / "a-broken.png", "--skip-bad"])
    assert_one_line_error(only_bad, "2 of 2 inputs cannot be used")  # nothing left to predict


def test_predict_skip_bad_keeps_each_result_under_its_own_name(cli_runner, image_run, tmp_path):
    # The unusable input sorts first here, so results shifted onto the wrong names (the kept
    # inputs' names not picked out) would show, as they cannot when bad files sort last.
    folder = tmp_path / "mixed"
    rng = np.random.default_rng(3)
    folder.mkdir()
    (folder / "0-broken.png").write_bytes(b"\x89PNG garbage")
    write_png(folder / "a.png", class_image(0, rng, size=(8, 8)))
    write_png(folder / "b.png", class_image(2, rng, size=(8, 8)))
    result = invoke(cli_runner, ["predict", image_run.run_dir, folder, "--skip-bad", "--json"])
    assert result.exit_code == 0, describe_result(result)
    entries = json.loads(result.stdout)
    assert [entry["input"] for entry in entries] == [str(folder / "a.png"), str(folder / "b.png")]
    for entry in entries:
        alone = invoke(cli_runner, ["predict", image_run.run_dir, entry["input"], "--json"])
        assert alone.exit_code == 0, describe_result(alone)
        (expected,) = json.loads(alone.stdout)
        assert [t["label"] for t in entry["top"]] == [t["label"] for t in expected["top"]]
        assert [t["probability"] for t in entry["top"]] == pytest.approx([t["probability"] for t in expected["top"]], abs=1e-5)
    # the two inputs differ in what the model makes of them, so a swap would not go unseen
    assert entries[0]["top"] != entries[1]["top"]


def test_predict_on_a_folder_classifies_the_files_below_it(cli_runner, image_run, tmp_path):
    """A folder was refused ("is a folder, expected a file"); it now stands for its images, in
    path order, as train reads a class folder: other files, hidden ones and linked folders left out."""
    folder = tmp_path / "new"
    first = image_run.data / CLASSES[0]
    for name in ("b.png", "sub/a.png", ".hidden.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(next(first.glob("*.png")).read_bytes())
    (folder / "notes.txt").write_text("not an image")
    (folder / "linked").symlink_to(first)
    result = invoke(cli_runner, ["predict", image_run.run_dir, folder, "--json"])
    assert result.exit_code == 0, describe_result(result)
    assert [entry["input"] for entry in json.loads(result.stdout)] == [str(folder / "b.png"), str(folder / "sub" / "a.png")]
    (folder / "empty").mkdir()
    assert_one_line_error(invoke(cli_runner, ["predict", image_run.run_dir, folder / "empty"]), "holds no image files (.png")


def test_predict_on_a_missing_file_and_bad_top_k(cli_runner, image_run, tmp_path):
    assert_one_line_error(
        invoke(cli_runner, ["predict", image_run.run_dir, tmp_path / "absent.png"]), f"Input not found: {tmp_path / 'absent.png'}"
    )
    # every missing file is looked for, the first three named, before anything is read
    present = str(next((image_run.data / CLASSES[0]).glob("*.png")))
    absent = [str(tmp_path / f"absent{i}.png") for i in range(5)]
    message = assert_one_line_error(invoke(cli_runner, ["predict", image_run.run_dir, present, *absent]))
    assert message.endswith(f"Inputs not found: {', '.join(absent[:3])} and 2 more; pass --skip-bad to predict the others")
    assert_one_line_error(
        invoke(cli_runner, ["predict", image_run.run_dir, tmp_path / "x.png", "--top-k", "0"]),
        "--top-k must be at least 1",
    )


def test_a_model_with_arbitrary_code_is_refused(cli_runner, image_run, tmp_path):
    import keras

    run_dir = tmp_path / "run"
    shutil.copytree(image_run.run_dir, run_dir)
    inputs = keras.Input(shape=(8, 8, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Flatten()(inputs))
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)).save(run_dir / "model.keras")
    path = write_png(tmp_path / "x.png", class_image(0, np.random.default_rng(0)))
    assert_one_line_error(invoke(cli_runner, ["predict", run_dir, path]), "Refused to load", "Lambda")


# ---- preprocess (export) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "modality, shape", [("image", (36, 8, 8, 1)), ("audio", (36, 26, 16, 1)), ("text", (36, 16))]
)
def test_preprocess_exports_arrays_with_the_runs_preprocessor(cli_runner, request, tmp_path, modality, shape):
    run = request.getfixturevalue(f"{modality}_run")
    out = tmp_path / "arrays.npz"
    result = invoke(cli_runner, ["preprocess", "--modality", modality, "--data", run.data, "--run", run.run_dir, "--out", out])
    assert result.exit_code == 0, describe_result(result)
    with np.load(out, allow_pickle=False) as arrays:
        x, y, names, ids = arrays["x"], arrays["y"], arrays["label_names"], arrays["ids"]
    assert x.shape == shape
    assert names.tolist() == list(CLASSES)
    assert y.shape == (36,) and np.bincount(y).tolist() == [12, 12, 12]
    assert len(set(ids.tolist())) == 36
    preprocessor = Preprocessor.load(run.run_dir / "preprocessor.json")
    if run.data.is_dir():
        first = run.data / str(ids[0])
        assert names[y[0]] == str(ids[0]).split("/")[0]
        np.testing.assert_array_equal(x[0], preprocessor.transform_one(first))


def test_preprocess_copies_the_arrays_into_the_file_a_block_at_a_time(cli_runner, text_run, tmp_path, monkeypatch):
    """Loading every row before writing took 30,000 texts' export to 1.2 GB (the whole array)."""
    import pipelines.export
    from pipelines.shards import ShardedArray

    common = ["preprocess", "--data", text_run.data, "--run", text_run.run_dir]
    assert invoke(cli_runner, [*common, "--out", tmp_path / "whole.npz"]).exit_code == 0
    row_bytes = 16 * 4  # 16 positions of int32 ids
    monkeypatch.setattr(pipelines.export, "BLOCK_BYTES", 5 * row_bytes, raising=False)
    taken = []
    take = ShardedArray.take

    def spy(self, indices):
        taken.append(len(indices))
        return take(self, indices)

    monkeypatch.setattr(ShardedArray, "take", spy)
    result = invoke(cli_runner, [*common, "--out", tmp_path / "blocks.npz"])
    assert result.exit_code == 0, describe_result(result)
    assert taken and max(taken) == 5 and sum(taken) == 36
    with np.load(tmp_path / "whole.npz") as whole, np.load(tmp_path / "blocks.npz", allow_pickle=False) as blocks:
        assert sorted(whole.files) == sorted(blocks.files) == ["ids", "label_names", "x", "y"]
        for name in whole.files:
            assert whole[name].dtype == blocks[name].dtype
            np.testing.assert_array_equal(whole[name], blocks[name])


def test_preprocess_takes_the_modality_from_the_run(cli_runner, image_run, tmp_path):
    out = tmp_path / "arrays.npz"
    result = invoke(cli_runner, ["preprocess", "--data", image_run.data, "--run", image_run.run_dir, "--out", out])
    assert result.exit_code == 0, describe_result(result)
    with np.load(out, allow_pickle=False) as arrays:
        assert arrays["x"].shape == (36, 8, 8, 1)
    result = invoke(cli_runner, ["preprocess", "--data", image_run.data, "--out", out])
    assert_one_line_error(result, "No modality given", "--run RUN")
    # and its data: without --data it read the demo digits ("Label(s) the run never saw: 0, 1, ...")
    result = invoke(cli_runner, ["preprocess", "--run", image_run.run_dir, "--out", tmp_path / "own.npz"])
    assert result.exit_code == 0, describe_result(result)
    with np.load(out) as given, np.load(tmp_path / "own.npz") as own:
        np.testing.assert_array_equal(own["x"], given["x"])
        assert list(own["ids"]) == list(given["ids"])


def test_preprocess_without_a_run_fits_a_new_preprocessor(cli_runner, text_folder, tmp_path):
    out = tmp_path / "text.npz"
    result = invoke(cli_runner, ["preprocess", "--modality", "text", "--data", text_folder, "--out", out])
    assert result.exit_code == 0, describe_result(result)
    with np.load(out, allow_pickle=False) as arrays:
        assert arrays["x"].shape[0] == 36 and arrays["x"].dtype == np.int32
        assert arrays["x"].max() > 1  # real vocabulary ids, not all OOV/padding


def test_preprocess_deflates_token_ids_and_stores_floats(cli_runner, text_folder, image_folder, tmp_path):
    """Text exports are mostly int32 padding: 30,000 texts wrote 1.2 GB uncompressed."""
    import zipfile

    for modality, data in (("text", text_folder), ("image", image_folder)):
        out = tmp_path / f"{modality}.npz"
        result = invoke(cli_runner, ["preprocess", "--modality", modality, "--data", data, "--out", out, "--no-cache"])
        assert result.exit_code == 0, describe_result(result)
        with zipfile.ZipFile(out) as archive:
            member = archive.getinfo("x.npy")
        if modality == "text":
            assert member.compress_type == zipfile.ZIP_DEFLATED and member.compress_size < member.file_size / 3
        else:
            assert member.compress_type == zipfile.ZIP_STORED
        with np.load(out, allow_pickle=False) as arrays:
            assert arrays["x"].shape[0] == 36 and member.file_size > arrays["x"].nbytes


def test_preprocess_lists_skipped_inputs_with_v_and_stops_on_them_with_strict(cli_runner, image_folder, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="pipelines")  # what -v turns on in a fresh process
    (image_folder / CLASSES[0] / "bad.png").write_text("not a png")
    common = ["preprocess", "--modality", "image", "--data", image_folder, "--no-cache"]
    result = invoke(cli_runner, [*common, "--out", tmp_path / "a.npz", "-v"])
    assert result.exit_code == 0, describe_result(result)
    assert f"skipping {CLASSES[0]}/bad.png: not a readable image" in caplog.text
    with np.load(tmp_path / "a.npz") as arrays:
        assert f"{CLASSES[0]}/bad.png" not in arrays["ids"].tolist()
    assert_one_line_error(invoke(cli_runner, [*common, "--out", tmp_path / "b.npz", "--strict"]), "bad.png", "(--strict)")
    assert not (tmp_path / "b.npz").exists()
    (image_folder / CLASSES[0] / "bad.png").unlink()
    (image_folder / CLASSES[0] / "notes.md").write_text("not an input")
    result = invoke(cli_runner, [*common, "--out", tmp_path / "c.npz", "-v"])
    assert "ignored 1 entry that is not an input (listed with -v)" in result.stdout
    assert f"ignoring {CLASSES[0]}/notes.md: unsupported file type .md" in caplog.text


def test_preprocess_refuses_a_run_of_another_modality_and_a_bad_suffix(cli_runner, image_run, audio_folder, tmp_path):
    result = invoke(
        cli_runner,
        ["preprocess", "--modality", "audio", "--data", audio_folder, "--run", image_run.run_dir, "--out", tmp_path / "a.npz"],
    )
    assert_one_line_error(result, "was trained on image data, not audio")
    result = invoke(
        cli_runner,
        ["preprocess", "--modality", "image", "--data", image_run.data, "--run", image_run.run_dir, "--out", tmp_path / "a.npy"],
    )
    assert_one_line_error(result, "--out must end in .npz")


# ---- info ------------------------------------------------------------------------------------


def test_info(cli_runner):
    import platform

    result = invoke(cli_runner, ["info"])
    assert result.exit_code == 0, describe_result(result)
    assert platform.python_version() in result.stdout
    assert "backend" in result.stdout and "tensorflow" in result.stdout


def test_help_lists_the_commands(cli_runner):
    result = invoke(cli_runner, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "evaluate", "predict", "preprocess", "info"):
        assert command in result.stdout


def test_help_keeps_bracketed_words(cli_runner):
    # Typer reads help as Rich markup, where an unescaped [train] is a tag and vanishes.
    import cli

    result = cli_runner.invoke(cli.app, ["train", "--help"])
    assert result.exit_code == 0
    words = " ".join(result.stdout.replace("│", " ").split())  # the help box wraps lines
    assert "[preprocess], [model], [train] tables" in words


def test_train_help_names_the_modalities_of_each_modality_specific_flag():
    # A flag another modality's model does not have is an error, so its help says whose it is.
    import typer

    import cli
    from models.spec import CONV_ONLY, TEXT_ONLY

    command = typer.main.get_command(cli.app).commands["train"]
    helps = {param.name: param.help for param in command.params}
    owners = {
        **{name: "Image/audio:" for name in CONV_ONLY},
        **{name: "Text" for name in (*TEXT_ONLY, "level", "vocabulary_size", "positions", "ngram_sizes", "hash_buckets")},
        **{name: "Image:" for name in ("image_size", "color_mode")},
        **{name: "Audio:" for name in ("sample_rate", "duration", "num_mels", "n_fft", "hop_length", "fmin", "fmax")},
    }
    for name, owner in owners.items():
        if name not in FILE_ONLY:
            assert helps[name].startswith(owner), (name, helps[name])


#: Settings of the TOML file and config.json that have no flag, on purpose: rarely changed,
#: (tokenizer_version) kept only so that old runs read text as they did, or (augment_kind)
#: following from the modality.
FILE_ONLY = {
    "max_skipped", "resize_mode", "value_range", "background", "max_pixels", "log_floor", "top_db",
    "normalization", "lowercase", "min_count", "tokenizer_version", "augment_kind",
}


def test_each_setting_is_a_train_flag_of_the_same_name_or_file_only():
    # One name in three places: --num-mels, `num_mels` in [preprocess], `num_mels` in config.json.
    import dataclasses

    import typer

    import cli
    from models import ModelSpec
    from pipelines.config import TrainSettings
    from pipelines.modality import MODALITIES

    command = typer.main.get_command(cli.app).commands["train"]
    flags = {"cache" if p.name == "use_cache" else p.name for p in command.params}
    flags -= {"context", "modality", "data", "out", "config", "resume", "verbose"}
    settings = {f.name for cls in (ModelSpec, TrainSettings) for f in dataclasses.fields(cls)}
    settings |= {name for info in MODALITIES.values() for name in info.preprocessor().get_config()}
    assert flags <= settings, flags - settings  # a flag spelt unlike its setting
    assert settings - flags == FILE_ONLY  # a setting with neither a flag nor a reason to have none


def test_the_audio_spectrogram_flags_reach_the_preprocessor(cli_runner, audio_folder, tmp_path):
    base = ["train", "--modality", "audio", "--data", audio_folder, "--out", tmp_path / "run", *TINY_TRAIN]
    result = invoke(cli_runner, [*base, "--sample-rate", "8000", "--fmin", "3000", "--fmax", "2000"])
    assert_one_line_error(result, "fmin=3000.0, fmax=2000.0")
    result = invoke(cli_runner, [*base, "--duration", "0.25", "--n-fft", "4096", "--hop-length", "100"])
    assert_one_line_error(result, "`n_fft`=4096 is longer than a whole clip")
    result = invoke(cli_runner, ["train", "--modality", "image", "--hop-length", "100"])
    assert_one_line_error(result, "--hop-length does not apply to image inputs")


# ---- errors: one line, exit code 1, before any training --------------------------------------


def toml(folder: Path, text: str) -> Path:
    path = folder / "run.toml"
    path.write_text(text + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["train", "--modality", "image", "--filterz", "8"], ["No such option: --filterz", "See 'convpipe train --help'."]),
        (["trian"], ["No such command 'trian'.", "See 'convpipe --help'."]),  # Click 8.2 adds "Did you mean 'train'?"
        (["cache", "empty"], ["No such command 'empty'.", "See 'convpipe cache --help'."]),
        (["evaluate"], ["Missing argument"]),  # 'run' (Click 8.1: 'RUN')
        (["train", "--epochs", "many"], ["Invalid value for '--epochs'"]),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(cli_runner, args, fragments):
    """Typer's own form is a usage line, a hint and a boxed panel: five lines for a typo."""
    result = cli_runner.invoke(__import__("cli").app, args, prog_name="convpipe")
    assert_one_line_error(result, *fragments, exit_code=2)


def test_unknown_modality_lists_the_choices(cli_runner, image_folder):
    result = invoke(cli_runner, ["train", "--modality", "video", "--data", image_folder])
    assert result.exit_code == 1, describe_result(result)
    assert "Traceback" not in result.output
    assert "Unknown modality 'video'" in result.output
    for choice in ("image", "audio", "text"):
        assert choice in result.output


@pytest.mark.parametrize(
    "make_args, fragments",
    [
        (lambda d: ["--modality", "image", "--data", d / "nowhere"], ["Data path not found"]),
        (lambda d: ["--data", d], ["No modality given"]),
        (lambda d: ["--modality", "image", "--data", d, "--filters", "abc"], ["--filters takes comma-separated integers", "'abc'"]),
        (lambda d: ["--modality", "image", "--data", d, "--epochs", "0"], ["--epochs must be a positive integer"]),
        (lambda d: ["--modality", "text", "--data", d, "--filters", "4,8"], ["Text models take one `filters` value"]),
        (lambda d: ["--modality", "image", "--data", d, "--config", d / "absent.toml"], ["Config file not found"]),
        (lambda d: ["--modality", "image", "--data", d, "--seed", "-1"], ["--seed must be an integer from 0 to 2**32 - 1"]),
        (lambda d: ["--modality", "image", "--data", d, "--seed", "99999999999999999999"], ["--seed must be an integer"]),
        (lambda d: ["--modality", "text", "--data", d, "--window-sizes", "3,3"], ["`window_sizes` must be distinct"]),
        (lambda d: ["--modality", "text", "--data", d, "--kernel-size", "99"], ["--kernel-size does not apply to text models"]),
        (lambda d: ["--modality", "text", "--data", d, "--batch-norm"], ["--batch-norm does not apply to text models"]),
        (lambda d: ["--modality", "image", "--data", d, "--pool-stride", "3"],
         ["pool_stride=3 is larger than pool_size=2", "lower --pool-stride to 2 or raise --pool-size to 3"]),
        (lambda d: ["--modality", "image", "--data", d, "--level", "word"], ["--level does not apply to image inputs"]),
        (lambda d: ["--modality", "audio", "--data", d, "--window-sizes", "3"], ["--window-sizes does not apply to audio models"]),
        (lambda d: ["--data", d, "--config", toml(d, "modality = 5")], ["run.toml: modality must be a string, got 5"]),
        (lambda d: ["--data", d, "--config", toml(d, 'modality = "image"\nmodel = 3')], ["run.toml: model must be a table"]),
        (lambda d: ["--data", d, "--config", toml(d, 'modality = "image"\n[train]\nseed = 1.5')],
         ["run.toml: [train] seed must be an integer, got 1.5"]),
    ],
)
def test_bad_options_fail_with_one_line(cli_runner, tmp_path, make_args, fragments):
    result = invoke(cli_runner, ["train", *make_args(tmp_path), "--out", tmp_path / "run"])
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--image-size", "8,8", "--filters", "4,4,4,4,4"],
         "after 3 blocks the 8x8 input is 1x1: a 2x2 pooling window does not fit"),
        (["--image-size", "8,8", "--pool-size", "16"], "the 8x8 input is smaller than a 16x16 pooling window"),
        (["--image-size", "1,1"], "the 1x1 input is smaller than a 2x2 pooling window"),
    ],
)
def test_pooling_windows_larger_than_the_feature_maps_fail_with_one_line(
    cli_runner, image_folder, tmp_path, options, fragment
):
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", image_folder, "--out", tmp_path / "run",
                                 "--epochs", "1", "--no-cache", *options])
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "run" / "model.keras").exists()


def test_text_positions_shorter_than_a_window_fail_with_one_line(cli_runner, text_folder, tmp_path):
    result = invoke(
        cli_runner,
        ["train", "--modality", "text", "--data", text_folder, "--out", tmp_path / "run", "--positions", "2",
         "--window-sizes", "3,4", "--epochs", "1"],
    )
    assert_one_line_error(result, "positions=2", "--window-sizes")


def test_a_min_count_that_empties_the_vocabulary_fails_with_one_line(cli_runner, text_folder, tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('modality = "text"\n[preprocess]\nlevel = "word"\nmin_count = 100000\n')
    result = invoke(cli_runner, ["train", "--config", toml, "--data", text_folder, "--out", tmp_path / "run", "--epochs", "1", "--no-cache"])
    assert_one_line_error(result, "min_count=100000 leaves an empty vocabulary")
    assert not (tmp_path / "run" / "model.keras").exists()


def test_empty_data_folder(cli_runner, tmp_path):
    (tmp_path / "data").mkdir()
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", tmp_path / "data", "--out", tmp_path / "run"])
    assert_one_line_error(result, "No class subfolders in")


def test_only_one_class(cli_runner, tmp_path):
    data = write_image_folder(tmp_path / "data", classes=("solo",), per_class=4)
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", data, "--out", tmp_path / "run"])
    assert_one_line_error(result, "Need at least 2 classes", "has 1 (solo)")


def test_class_folder_without_files_of_the_modality(cli_runner, image_folder, tmp_path):
    (image_folder / "empty").mkdir()
    (image_folder / "empty" / "readme.txt").write_text("no images here")
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", image_folder, "--out", tmp_path / "run"])
    assert_one_line_error(result, f"Class folder {image_folder / 'empty'} has no image files")


def test_audio_data_given_to_an_image_run(cli_runner, audio_folder, tmp_path):
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", audio_folder, "--out", tmp_path / "run"])
    assert_one_line_error(result, "has no image files", ".png")


def test_error_messages_print_bracketed_names_verbatim(cli_runner, image_folder, tmp_path):
    (image_folder / "[draft]").mkdir()
    (image_folder / "[draft]" / "readme.txt").write_text("no images here")
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", image_folder, "--out", tmp_path / "run"])
    assert_one_line_error(result, "Class folder", "[draft] has no image files")


@pytest.mark.parametrize("missing", ["labels.json", "model.keras", "split.json"])
def test_incomplete_run_directory(cli_runner, image_run, tmp_path, missing):
    run_dir = tmp_path / "run"
    shutil.copytree(image_run.run_dir, run_dir)
    (run_dir / missing).unlink()
    path = write_png(tmp_path / "x.png", class_image(0, np.random.default_rng(0)))
    assert_one_line_error(invoke(cli_runner, ["evaluate", run_dir]), "is not a complete run", f"missing {missing}")
    assert_one_line_error(invoke(cli_runner, ["predict", run_dir, path]), f"missing {missing}")


def test_labels_json_that_does_not_match_the_run_is_refused(cli_runner, image_run, tmp_path):
    path = write_png(tmp_path / "x.png", class_image(0, np.random.default_rng(0)))
    labels = json.loads((image_run.run_dir / "labels.json").read_text())
    for edited, fragment in (
        (labels[::-1], "but config.json trained"),  # swapped: every prediction and score would be another class's
        ([labels[0]] * len(labels), "lists a class twice"),
        ([None] + labels[1:], "class names (strings)"),
    ):
        run_dir = tmp_path / "run"
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(image_run.run_dir, run_dir)
        (run_dir / "labels.json").write_text(json.dumps(edited))
        assert_one_line_error(invoke(cli_runner, ["predict", run_dir, path]), "labels.json", fragment)


def test_wrong_types_in_a_runs_config_are_one_line(cli_runner, image_run, tmp_path):
    path = write_png(tmp_path / "x.png", class_image(0, np.random.default_rng(0)))
    for key, value, fragment in (("modality", 3, "modality must be a string"), ("data", 5, "data must be a string")):
        run_dir = tmp_path / f"run-{key}"
        shutil.copytree(image_run.run_dir, run_dir)
        document = json.loads((run_dir / "config.json").read_text())
        document["config"][key] = value  # AttributeError: 'int' object has no attribute 'strip'
        (run_dir / "config.json").write_text(json.dumps(document))
        assert_one_line_error(invoke(cli_runner, ["predict", run_dir, path]), "config.json", fragment)


def test_evaluate_reads_past_damaged_optional_records(cli_runner, image_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(image_run.run_dir, run_dir, ignore=shutil.ignore_patterns("report"))
    split = json.loads((run_dir / "split.json").read_text())
    (run_dir / "split.json").write_text(json.dumps({**split, "fingerprints": 5}))  # taken as unrecorded
    (run_dir / "skipped.json").write_text(json.dumps({"skipped": [1]}))  # AttributeError in the report before
    result = invoke(cli_runner, ["evaluate", run_dir])
    assert result.exit_code == 0, describe_result(result)


def test_a_damaged_text_preprocessor_is_named_before_any_input(cli_runner, text_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(text_run.run_dir, run_dir)
    text = (run_dir / "preprocessor.json").read_text()
    (run_dir / "preprocessor.json").write_text(text[:100])  # cut off
    assert_one_line_error(invoke(cli_runner, ["predict", run_dir, "banana basil"]), "preprocessor.json")  # not "Input not found"
    document = json.loads(text)
    document["fitted"]["vocabulary_"] = [f"pad{i}" for i in range(50)] + document["fitted"]["vocabulary_"]
    (run_dir / "preprocessor.json").write_text(json.dumps(document))  # ids past the model's table
    assert_one_line_error(invoke(cli_runner, ["predict", run_dir, "banana basil"]), "the model reads token ids below")


def test_a_manifest_path_with_a_nul_byte_is_ignored(cli_runner, image_folder, tmp_path):
    first = sorted((image_folder / "alpha").iterdir())[0]
    manifest = tmp_path / "m.csv"
    rows = [f"{p},{p.parent.name}" for p in sorted(image_folder.glob("*/*.png"))]
    manifest.write_text("path,label\n" + "\n".join(rows) + f"\n{first}\0x.png,alpha\n")
    result = invoke(cli_runner, ["preprocess", "--modality", "image", "--data", manifest, "--out", tmp_path / "x.npz"])
    assert result.exit_code == 0, describe_result(result)  # a ValueError traceback from os.stat before
    assert len(np.load(tmp_path / "x.npz")["y"]) == len(rows)
    from pipelines.datasets import read_manifest
    from pipelines.modality import Modality

    assert read_manifest(manifest, Modality.image)[1][-1][1] == "the path holds a NUL byte"


def test_an_unfinished_run_points_to_resume_and_a_plain_folder_is_no_run(cli_runner, image_run, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "train_state").mkdir(parents=True)  # what a killed train leaves
    (run_dir / "train_state" / "request.json").write_text("{}")
    path = write_png(tmp_path / "x.png", class_image(0, np.random.default_rng(0)))
    assert_one_line_error(invoke(cli_runner, ["predict", run_dir, path]), "has not finished training", f"train --resume {run_dir}")
    assert_one_line_error(invoke(cli_runner, ["evaluate", tmp_path]), f"{tmp_path} is not a run directory", "pass the folder train wrote")


@pytest.mark.parametrize("flag", ["--filters", "--dense"])
def test_a_list_flag_with_spaces_inside_a_number_is_refused_not_joined(cli_runner, image_folder, tmp_path, flag):
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", image_folder, "--out", tmp_path / "run", flag, "8 16"])
    assert_one_line_error(result, f"{flag} takes comma-separated integers", "'8 16'")  # it trained one block of 816
    from cli import int_list

    assert int_list(" 8, 16 ", "filters") == (8, 16) and int_list("", "dense") == ()
    for typo in ("16,,32", ",", "16,"):
        with pytest.raises(ConvpipeError, match="takes comma-separated integers"):
            int_list(typo, "filters")  # read as (16, 32), () and (16,) before


def test_a_cut_off_model_file_is_called_damaged_not_missing(cli_runner, image_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(image_run.run_dir, run_dir)
    model = run_dir / "model.keras"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    result = invoke(cli_runner, ["evaluate", run_dir])
    assert_one_line_error(result, f"Cannot load {model}: not a complete .keras file")
    assert "not found" not in result.output


def test_run_directory_not_found(cli_runner, tmp_path):
    assert_one_line_error(invoke(cli_runner, ["evaluate", tmp_path / "nope"]), "Run directory not found")


def test_ctrl_c_during_training_keeps_the_best_completed_epoch(cli_runner, image_folder, tmp_path, monkeypatch):
    import keras

    import pipelines.training

    class InterruptAfterSecondEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(pipelines.training, "extra_callbacks", lambda: [InterruptAfterSecondEpoch()])
    out = tmp_path / "run"
    args = ["train", "--modality", "image", "--data", image_folder, "--out", out, *TINY_IMAGE]
    result = invoke(cli_runner, [*args, "--epochs", "10", "--patience", "10"])  # the last --epochs wins
    assert result.exit_code == 130, describe_result(result)
    assert "Interrupted" in result.output and "Traceback" not in result.output
    document = json.loads((out / "config.json").read_text())
    assert document["interrupted"] is True and document["epochs_run"] == 2
    assert (out / "model.keras").is_file()
    assert len((out / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs


def poison_weights_at(epoch: int):
    """A callback that makes every weight NaN as epoch `epoch` (from 0) begins: a diverged run."""
    import keras

    class PoisonWeights(keras.callbacks.Callback):
        def on_epoch_begin(self, index, logs=None):
            if index == epoch:
                for variable in self.model.trainable_variables:
                    variable.assign(np.full(variable.shape, np.nan, dtype=variable.dtype))

    return PoisonWeights()


def test_a_run_that_diverges_keeps_the_last_epoch_with_a_loss_and_says_so(cli_runner, image_folder, tmp_path, monkeypatch, caplog):
    import logging

    import pipelines.training

    monkeypatch.setattr(pipelines.training, "extra_callbacks", lambda: [poison_weights_at(2)])
    out = tmp_path / "run"
    args = ["train", "--modality", "image", "--data", image_folder, "--out", out, *TINY_IMAGE]
    with caplog.at_level(logging.WARNING):
        result = invoke(cli_runner, [*args, "--epochs", "8", "--patience", "8"])
    assert result.exit_code == 0, describe_result(result)
    document = json.loads((out / "config.json").read_text())
    # stopped in the first epoch without a number, not `patience` epochs later; the best of
    # the first two kept, and named as such (not the NaN epoch np.argmin would pick)
    assert document["epochs_run"] == 3
    history = np.genfromtxt(out / "history.csv", delimiter=",", names=True)
    assert np.isnan(history["val_loss"][2]) and document["best_epoch"] == int(np.argmin(history["val_loss"][:2])) + 1
    assert document["val_accuracy"] == pytest.approx(history["val_accuracy"][document["best_epoch"] - 1], abs=1e-5)
    assert "The loss was not a finite number in epoch(s) 3: training diverged there, and stopped. The run keeps epoch" in caplog.text
    assert invoke(cli_runner, ["evaluate", out]).exit_code == 0
    assert 0.0 <= json.loads((out / "report" / "report.json").read_text())["accuracy"] <= 1.0


def test_a_run_that_diverges_from_the_start_is_an_error_and_leaves_nothing(cli_runner, image_folder, tmp_path, monkeypatch):
    import pipelines.training

    monkeypatch.setattr(pipelines.training, "extra_callbacks", lambda: [poison_weights_at(0)])
    out = tmp_path / "run"
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", image_folder, "--out", out, *TINY_IMAGE])
    assert_one_line_error(result, "Training diverged: the validation loss was not a finite number in any epoch")
    assert "lower --learning-rate (it was 0.001)" in result.stderr
    assert not out.exists()
    mine = tmp_path / "mine"
    mine.mkdir()  # the user's own folder, given as --out: kept, empty as it was
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", image_folder, "--out", mine, *TINY_IMAGE])
    assert result.exit_code == 1 and mine.is_dir() and not any(mine.iterdir())


def test_an_infinite_loss_is_divergence_too(caplog):
    import logging

    from pipelines.config import TrainSettings
    from pipelines.training import kept_epoch
    from preprocess import ConvpipeError

    history = {"loss": [1.36, float("inf")], "val_loss": [2.29e37, 2.23e37]}  # a learning rate of 1e12
    with caplog.at_level(logging.WARNING):
        assert kept_epoch(history, "val_loss", TrainSettings()) == 2
    assert "The loss was not a finite number in epoch(s) 2: training diverged there, and stopped" in caplog.text
    with pytest.raises(ConvpipeError, match="not a finite number in any epoch"):
        kept_epoch({"loss": [1.0, 2.0], "val_loss": [float("inf"), float("nan")]}, "val_loss", TrainSettings())


def test_the_same_seed_gives_identical_runs(cli_runner, image_folder, tmp_path):
    reports = []
    for name in ("first", "second"):
        out = tmp_path / name
        args = ["train", "--modality", "image", "--data", image_folder, "--out", out, *TINY_IMAGE]  # has --seed 0
        result = invoke(cli_runner, args)
        assert result.exit_code == 0, describe_result(result)
        assert json.loads((out / "config.json").read_text())["config"]["train"]["deterministic"] is True
        assert invoke(cli_runner, ["evaluate", out]).exit_code == 0
        report = json.loads((out / "report" / "report.json").read_text())
        history = (out / "history.csv").read_text()
        reports.append(({k: report[k] for k in ("accuracy", "macro_f1", "confusion_matrix")}, history))
    assert reports[0] == reports[1]


def test_a_model_file_with_arbitrary_code_is_refused(cli_runner, image_run, tmp_path):
    import keras

    run_dir = tmp_path / "run"
    shutil.copytree(image_run.run_dir, run_dir)
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(keras.layers.Lambda(lambda x: x * 2)(inputs)))
    (run_dir / "model.keras").unlink()
    keras.Model(inputs, outputs).save(run_dir / "model.keras")
    result = invoke(cli_runner, ["evaluate", run_dir])
    assert result.exit_code == 1, describe_result(result)
    assert "Refused to load" in result.output and "arbitrary Python code" in result.output
    assert "Traceback" not in result.output


def test_text_that_is_not_utf8_is_used_and_counted(cli_runner, tmp_path):
    from tests.conftest import write_text_folder

    data = write_text_folder(tmp_path / "texts")
    first = sorted((data / "alpha").glob("*.txt"))[0]
    first.write_bytes("caf\xe9 apple cr\xe8me banana".encode("latin-1"))
    out = tmp_path / "run"
    result = invoke(cli_runner, ["train", "--modality", "text", "--data", data, "--out", out, *TINY_TEXT])
    assert result.exit_code == 0, describe_result(result)
    assert "1 not valid UTF-8, decoded as Windows-1252 (Latin-1)" in result.stdout
    notes = json.loads((out / "skipped.json").read_text())["notes"]
    assert [note["input"] for note in notes] == [f"alpha/{first.name}"]


def test_files_mixed_from_two_runs_are_refused(cli_runner, image_run, audio_run, tmp_path):
    run_dir = tmp_path / "mixed"
    shutil.copytree(image_run.run_dir, run_dir)
    shutil.copy(audio_run.run_dir / "model.keras", run_dir / "model.keras")
    result = invoke(cli_runner, ["evaluate", run_dir])
    assert result.exit_code == 1, describe_result(result)
    assert "the files come from different runs" in result.output
    assert "Traceback" not in result.output


def test_a_run_trained_on_a_relative_path_evaluates_from_another_folder(cli_runner, image_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(image_folder.parent)
    out = tmp_path / "run"
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", image_folder.name, "--out", out, *TINY_IMAGE])
    assert result.exit_code == 0, describe_result(result)
    assert json.loads((out / "config.json").read_text())["config"]["data"] == str(image_folder.resolve())
    monkeypatch.chdir(tmp_path)
    assert invoke(cli_runner, ["evaluate", out]).exit_code == 0


@pytest.mark.parametrize("run_format, expected", [(99, "reads run format 1 or older"), (None, "no run_format")])
def test_a_run_from_an_incompatible_version_is_refused(cli_runner, image_run, tmp_path, run_format, expected):
    run_dir = tmp_path / "run"
    shutil.copytree(image_run.run_dir, run_dir)
    document = json.loads((run_dir / "config.json").read_text())
    document["run_format"] = run_format
    (run_dir / "config.json").write_text(json.dumps(document))
    path = write_png(tmp_path / "x.png", class_image(0, np.random.default_rng(0)))
    assert_one_line_error(invoke(cli_runner, ["evaluate", run_dir]), expected)
    assert_one_line_error(invoke(cli_runner, ["predict", run_dir, path]), expected)


def test_a_split_json_that_is_not_an_object_is_one_line(cli_runner, image_run, tmp_path):
    # It ended in "AttributeError: 'list' object has no attribute 'get'" with a traceback.
    run_dir = tmp_path / "run"
    shutil.copytree(image_run.run_dir, run_dir)
    (run_dir / "split.json").write_text("[]")
    assert_one_line_error(invoke(cli_runner, ["evaluate", run_dir]), "split.json must be a JSON object")


class ResourceExhaustedError(Exception):
    """Named like TensorFlow's out-of-memory error, which the CLI matches by name."""


@pytest.mark.parametrize(
    "error, expected",
    [
        (ResourceExhaustedError("{{function_node __wrapped__StatelessRandomUniformV2}} OOM when allocating tensor with shape[100000000,128] and type float on "
                                "/job:localhost/replica:0/task:0/device:CPU:0 by allocator cpu\n[[{{node x}}]]"),
         "Out of memory (OOM when allocating tensor with shape[100000000,128] and type float)"),
        (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 40.00GiB."),
         "Out of memory (RESOURCE_EXHAUSTED: Out of memory while trying to allocate 40.00GiB.)"),
        (MemoryError(), "Out of memory (the process ran out of memory)"),
    ],
)
def test_out_of_memory_is_one_line_naming_the_knobs(capsys, error, expected):
    import typer

    import cli

    def train():
        raise error

    with pytest.raises(typer.Exit) as exit_info:
        cli.one_line_errors(train)()
    assert exit_info.value.exit_code == 1
    message = capsys.readouterr().err.strip()
    assert message.startswith(f"Error: {expected}") and "--batch-size" in message and "\n" not in message


def cli_commands(group, prefix: str = "") -> dict:
    """Every command of the app by its full name ("cache info"), its click command as value."""
    found = {}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (cache, demo)
            found.update(cli_commands(command, f"{prefix}{name} "))
        else:
            found[prefix + name] = command
    return found


GPU_OOM = ResourceExhaustedError("OOM when allocating tensor with shape[100000000,128] and type float on "
                                 "/job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc")
CPU_OOM = ResourceExhaustedError("OOM when allocating tensor with shape[100000000,128] and type float on "
                                 "/job:localhost/replica:0/task:0/device:CPU:0 by allocator cpu")
JAX_OOM = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 40.00GiB.")


@pytest.mark.parametrize(
    "error, backend, to_cpu",
    [(GPU_OOM, "tensorflow", "--device cpu"), (CPU_OOM, "tensorflow", None), (MemoryError(), "tensorflow", None),
     (JAX_OOM, "jax", "JAX_PLATFORMS=cpu"), (MemoryError(), "jax", None)],
)
def test_out_of_memory_advice_names_only_the_commands_own_flags(capsys, monkeypatch, error, backend, to_cpu):
    # It told predict and evaluate to lower --batch-size, which they do not take (a trained
    # run's sizes are fixed), and explain to pass --device, which it does not take either. Each
    # command is named as one_line_errors sees it, by its function (inspect_command). --device cpu
    # is no advice where the host's memory ran out, nor under JAX, which --device does not move.
    import typer

    import cli

    monkeypatch.setattr("pipelines.environment.keras_backend", lambda: backend)  # JAX: its wording
    commands = cli_commands(typer.main.get_command(cli.app))
    assert {"train", "evaluate", "predict", "compare", "preprocess", "inspect", "check-locality"} <= set(commands)
    for name, command in commands.items():

        def failing():
            raise error

        failing.__name__ = command.callback.__name__
        with pytest.raises(typer.Exit):
            cli.one_line_errors(failing)()
        message = capsys.readouterr().err.strip()
        assert message.startswith("Error: Out of memory (") and "\n" not in message, name
        flags = {flag for option in command.params for flag in option.opts}
        assert set(re.findall(r"--[a-z-]+", message)) <= flags, (name, message)
        if name == "train":
            assert "--batch-size" in message and "--device" not in message
        elif name in ("evaluate", "predict", "compare"):  # a trained run: only the device or free memory
            assert "--batch-size" not in message
            assert (to_cpu in message) if to_cpu else ("--device cpu" not in message and "JAX_PLATFORMS" not in message), (name, message)
        else:
            assert "Free memory" in message and "--device" not in message, (name, message)


def test_other_exceptions_are_not_taken_for_out_of_memory():
    import cli

    def command():
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        cli.one_line_errors(command)()


@pytest.mark.parametrize("below", [False, True])
def test_train_out_naming_a_file_fails_before_any_work(cli_runner, image_folder, tmp_path, below):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    out = blocker / "sub" if below else blocker
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", image_folder, "--out", out, "--epochs", "1"])
    assert_one_line_error(result, f"--out {out}", "which is a file" if below else "is a file")
    assert "Reading" not in result.stdout and "Epoch" not in result.stdout


@pytest.mark.parametrize("command", [["evaluate", "{run}"], ["inspect", "{run}", "{input}"], ["compare", "{run}", "{run}2"]])
def test_out_naming_a_file_is_one_line(cli_runner, image_run, tmp_path, command):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    shutil.copytree(image_run.run_dir, f"{image_run.run_dir}2", dirs_exist_ok=True)
    first_input = next(Path(image_run.data).rglob("*.png"))
    args = [part.format(run=image_run.run_dir, input=first_input) for part in command]
    assert_one_line_error(invoke(cli_runner, [*args, "--out", blocker / "x"]), "Cannot write", str(blocker))


@pytest.mark.parametrize("blocked", ["file", "read-only"])
@pytest.mark.parametrize("command", ["evaluate", "inspect", "explain"])
def test_an_unwritable_output_folder_in_the_run_fails_before_any_work_naming_out(
    cli_runner, image_run, tmp_path, monkeypatch, command, blocked
):
    import os

    import pipelines.evaluation
    import pipelines.inspection
    import pipelines.saliency

    run = tmp_path / "run"
    shutil.copytree(image_run.run_dir, run, ignore=shutil.ignore_patterns("report", "inspect", "explain"))
    folder = run / {"evaluate": "report"}.get(command, command)
    if blocked == "file":
        folder.write_text("not a folder")
        problem, out = f"Cannot write to {folder}", folder / "out"
    else:  # a run shared on a read-only mount (root writes through chmod, so the file system says it)
        access, statvfs = os.access, os.statvfs
        monkeypatch.setattr(os, "access", lambda path, mode: access(path, mode) and not (mode & os.W_OK and Path(path) == run))
        monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_flag=os.ST_RDONLY) if Path(path) == run else statvfs(path))
        problem, out = f"{run} is on a read-only file system", run / "out"

    def no_work(*args, **kwargs):
        raise AssertionError("read an input before finding out that its results cannot be written")

    monkeypatch.setattr(pipelines.evaluation, "read_cached", no_work)
    monkeypatch.setattr(pipelines.inspection, "encode_input", no_work)
    monkeypatch.setattr(pipelines.saliency, "encode_input", no_work)
    first_input = next(Path(image_run.data).rglob("*.png"))
    args = [command, run] + ([] if command == "evaluate" else [first_input])
    assert_one_line_error(invoke(cli_runner, args), problem, "pass --out to write elsewhere")
    assert_one_line_error(invoke(cli_runner, [*args, "--out", out]), problem, "choose another --out")


def test_predict_says_why_a_linked_input_is_missing(cli_runner, image_run, tmp_path):
    import os

    os.symlink("loop.png", tmp_path / "loop.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "broken.png")
    assert_one_line_error(
        invoke(cli_runner, ["predict", image_run.run_dir, str(tmp_path / "loop.png")]),
        f"Input not found: {tmp_path / 'loop.png'} (too many levels of symbolic links)",
    )
    assert_one_line_error(
        invoke(cli_runner, ["predict", image_run.run_dir, str(tmp_path / "broken.png")]),
        f"(a link to {tmp_path / 'gone.png'}, which does not exist)",
    )


@pytest.mark.parametrize(
    "backend, message",
    [("bogus", "KERAS_BACKEND=bogus is not a Keras backend"), ("openvino", "but openvino is not installed")],
)
def test_an_unusable_keras_backend_is_one_line(cli_runner, monkeypatch, backend, message):
    monkeypatch.setenv("KERAS_BACKEND", backend)
    assert_one_line_error(invoke(cli_runner, ["info"]), message)


def test_class_weight_balanced_is_recorded_with_the_weights_and_a_bad_choice_is_one_line(cli_runner, tmp_path):
    data = write_image_folder(tmp_path / "images", per_class=16)
    for path in sorted((data / CLASSES[2]).glob("*.png"))[4:]:  # 16, 16 and 4 inputs
        path.unlink()
    out = tmp_path / "run"
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", data, "--out", out, *TINY_IMAGE,
                                 "--val-split", "0", "--test-split", "0", "--class-weight", "balanced"])
    assert result.exit_code == 0, describe_result(result)
    document = json.loads((out / "config.json").read_text())
    assert document["config"]["train"]["class_weight"] == "balanced"
    assert document["class_weights"] == pytest.approx({CLASSES[0]: 36 / 48, CLASSES[1]: 36 / 48, CLASSES[2]: 36 / 12})
    toml_file = toml(tmp_path, '[train]\nclass_weight = "inverse"')
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", data, "--config", toml_file])
    assert_one_line_error(result, "class_weight must be one of none | balanced, got 'inverse'")
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", data, "--class-weight", "yes"])
    assert_one_line_error(result, "--class-weight must be one of none | balanced, got 'yes'")


def test_training_batches_are_shuffled_by_the_seed_and_both_splits_carry_the_class_weights(cli_runner, image_folder, tmp_path, monkeypatch):
    # Seen where the batches are made: the training batches in a seeded order (validation in
    # order), and the recorded balanced weights on the training and the validation loss alike.
    import pipelines.training

    for path in sorted((image_folder / CLASSES[2]).glob("*.png"))[4:]:  # 12, 12 and 4 inputs
        path.unlink()
    calls = []
    to_tf_dataset = pipelines.training.to_tf_dataset

    def spy(x, y, batch_size, shuffle_seed, first_epoch=0, class_weights=None):
        calls.append({"n": len(y), "shuffle_seed": shuffle_seed, "first_epoch": first_epoch, "class_weights": class_weights})
        return to_tf_dataset(x, y, batch_size, shuffle_seed, first_epoch, class_weights)

    monkeypatch.setattr(pipelines.training, "to_tf_dataset", spy)
    out = tmp_path / "run"
    options = [*TINY_IMAGE, "--epochs", "1", "--seed", "7", "--val-split", "0.25", "--class-weight", "balanced"]
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", image_folder, "--out", out, *options])
    assert result.exit_code == 0, describe_result(result)
    document = json.loads((out / "config.json").read_text())
    recorded = [document["class_weights"][label] for label in CLASSES]
    assert recorded[2] > recorded[0] == recorded[1]  # the rare class weighs more
    split = json.loads((out / "split.json").read_text())
    training, validation = calls
    assert (training["n"], validation["n"]) == (len(split["train"]), len(split["validation"])) and validation["n"] > 0
    assert training["shuffle_seed"] == 7 and training["first_epoch"] == 0
    assert validation["shuffle_seed"] is None
    for call in (training, validation):
        assert call["class_weights"] is not None
        np.testing.assert_allclose(call["class_weights"], recorded, rtol=1e-5)


def test_predict_decodes_in_worker_processes_only_when_it_would_take_long_here(audio_run, tmp_path, monkeypatch):
    import pipelines.prediction
    from pipelines.run_dir import Run
    from pipelines.workers import Workers

    run = Run.open(audio_run.run_dir)
    paths = sorted(Path(audio_run.data).rglob("*.wav")) * 3
    (tmp_path / "bad.wav").write_bytes(b"RIFF junk")
    paths.insert(5, tmp_path / "bad.wav")
    paths.append(write_wav(tmp_path / "silence.wav", np.zeros(4000, dtype=np.float32)))  # in a worker's chunk
    names = [str(p) for p in paths]
    started = []
    children = Workers._children
    monkeypatch.setattr(Workers, "_children", lambda self: started.append(self.count) or children(self))
    results = {}
    for after in (1e9, 0.0):  # never worth starting them, and always
        monkeypatch.setattr(pipelines.prediction, "PARALLEL_AFTER_SECONDS", after)
        results[after] = pipelines.prediction.encode_inputs(run, names, paths, workers=2)
    assert started == [2]  # only for the second
    (x_here, kept_here, failed_here, silent_here), (x_there, kept_there, failed_there, silent_there) = results.values()
    assert len(paths) > 2 * pipelines.prediction.chunk_size(len(paths), 2)  # chunks went to the workers
    np.testing.assert_array_equal(x_here, x_there)  # the children's fitted preprocessor is the run's
    assert kept_here == kept_there == [i for i in range(len(paths)) if i != 5]
    assert failed_here == failed_there and failed_here[0][0] == str(tmp_path / "bad.wav")
    assert silent_here.tolist() == silent_there.tolist() == [False] * (len(kept_here) - 1) + [True]


def test_most_confused_reads_true_class_then_predicted_class(cli_runner, tmp_path, monkeypatch):
    import pipelines.evaluation
    from pipelines.evaluation import Evaluation, classification_metrics

    labels = ["alpha", "beta", "gamma"]
    y_true, y_pred = np.array([0, 0, 0, 1, 2]), np.array([2, 2, 0, 1, 2])
    report = {
        **classification_metrics(y_true, y_pred, labels),
        "modality": "image",
        "calibration": {"ece": 0.1},
        "misclassified": [{}, {}],
        "data": {"location": "somewhere", "test_copies_of_training_inputs": 0},
        "top_confusions": [{"true": "alpha", "predicted": "gamma", "count": 2}],
        "skipped": {"summary": "no input skipped"},
    }
    monkeypatch.setattr(pipelines.evaluation, "evaluate",
                        lambda *args, **kwargs: Evaluation(report=report, report_path=tmp_path / "report.json"))
    result = invoke(cli_runner, ["evaluate", tmp_path])
    assert result.exit_code == 0, describe_result(result)
    assert "most confused: alpha -> gamma (2)" in " ".join(result.stdout.split())


def test_standard_input_lines_take_the_place_of_the_dash():
    """`predict RUN a - b`: the stdin lines are predicted between a and b, in the order given."""
    import io

    from pipelines.prediction import with_stdin_lines

    assert with_stdin_lines(["a.png", "-", "b.png"], io.StringIO("x.png\n\ny.png\n")) == ["a.png", "x.png", "y.png", "b.png"]
    assert with_stdin_lines(["-", "b.png", "-"], io.StringIO("x.png\n")) == ["x.png", "b.png"]


def skipped(bad: int, total: int) -> Skipped:
    result = Skipped(total=total)
    for i in range(bad):
        result.add(f"x{i}.png", "empty file")
    return result


def test_max_skipped_allows_exactly_its_share_and_refuses_one_input_more():
    check_skip_share(skipped(10, 100), 0.1)  # 10%: allowed
    with pytest.raises(ConvpipeError, match=r"Too many unreadable inputs: skipped 11 of 100 inputs.*more than 10%"):
        check_skip_share(skipped(11, 100), 0.1)
    with pytest.raises(ConvpipeError, match="Too many unreadable inputs"):
        check_skip_share(skipped(1, 100), 0.0)  # --max-skipped 0: any unreadable input stops training
    check_skip_share(skipped(0, 0), 0.0)  # nothing looked at: nothing to refuse


def predict_class_zero_from(epoch: int):
    """A callback that, as epoch `epoch` (from 0) begins, zeroes every kernel and biases the
    softmax hard towards class 0: that epoch's validation loss is far worse than any before it,
    and its validation accuracy is exactly the share of class 0."""
    import keras

    class PredictClassZero(keras.callbacks.Callback):
        def on_epoch_begin(self, index, logs=None):
            if index == epoch:
                for variable in self.model.trainable_variables:
                    variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
                bias = self.model.get_layer("votes").bias
                bias.assign(np.array([30.0, 0.0, 0.0], dtype=bias.dtype))

    return PredictClassZero()


def test_the_recorded_validation_accuracy_is_the_kept_epochs_not_the_last(cli_runner, image_folder, tmp_path, monkeypatch):
    import pipelines.training

    # seven epochs to learn in (the tiny model is at chance for the first three or so), then ruined
    monkeypatch.setattr(pipelines.training, "extra_callbacks", lambda: [predict_class_zero_from(7)])
    out = tmp_path / "run"
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", image_folder, "--out", out, *TINY_IMAGE,
                                 "--epochs", "8", "--patience", "8", "--learning-rate", "0.01", "--val-split", "0.5", "--test-split", "0"])
    assert result.exit_code == 0, describe_result(result)
    document = json.loads((out / "config.json").read_text())
    history = np.genfromtxt(out / "history.csv", delimiter=",", names=True)
    assert document["epochs_run"] == 8 and document["best_epoch"] <= 7
    assert history["val_accuracy"][7] == pytest.approx(1 / 3)  # the ruined last epoch
    kept = history["val_accuracy"][document["best_epoch"] - 1]
    assert kept != pytest.approx(1 / 3), "the kept epoch must be told apart from the last one"
    assert document["val_accuracy"] == pytest.approx(kept, abs=1e-6)


def test_early_stopping_watches_the_validation_loss_and_keeps_its_best_epoch(cli_runner, tmp_path):
    # val/ holds each class' images under the next class' name: the better the model fits
    # train/, the worse its validation loss, while its training loss falls. Training must stop
    # `patience` epochs after the lowest validation loss and keep that epoch's weights.
    rng = np.random.default_rng(0)
    for index, label in enumerate(CLASSES):
        for i in range(8):
            write_png(tmp_path / "data" / "train" / label / f"{i}.png", class_image(index, rng))
        for i in range(4):
            write_png(tmp_path / "data" / "val" / label / f"{i}.png", class_image((index + 1) % 3, rng))
    out = tmp_path / "run"
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", tmp_path / "data", "--out", out, *TINY_IMAGE,
                                 "--epochs", "6", "--patience", "1", "--learning-rate", "0.01"])
    assert result.exit_code == 0, describe_result(result)
    document = json.loads((out / "config.json").read_text())
    history = np.genfromtxt(out / "history.csv", delimiter=",", names=True)
    best = document["best_epoch"]
    assert best == int(np.argmin(history["val_loss"])) + 1
    assert document["epochs_run"] == len(history) == best + 1 < 6  # stopped: the validation loss rose
    assert np.all(np.diff(history["loss"]) < 0), "the training loss must fall throughout for this test"
    # the saved weights are the kept epoch's: they give its validation loss, not the last one's
    from pipelines.run_dir import Run

    run = Run.open(out)
    val_paths = sorted((tmp_path / "data" / "val").rglob("*.png"))
    y = np.array([run.labels.index(path.parent.name) for path in val_paths])
    probabilities = np.asarray(run.model.predict_on_batch(run.preprocessor.transform(val_paths)))
    loss = float(np.mean(-np.log(probabilities[np.arange(len(y)), y])))
    assert loss == pytest.approx(history["val_loss"][best - 1], abs=1e-4)
    assert loss != pytest.approx(history["val_loss"][-1], abs=1e-4)


def test_the_recorded_validation_counts_are_every_validation_input(image_run):
    """config.json's class_counts["validation"] are the inputs early stopping validated on: every
    input of split.json's validation part (none is unreadable in the tiny data)."""
    from collections import Counter

    document = json.loads((image_run.run_dir / "config.json").read_text())
    split = json.loads((image_run.run_dir / "split.json").read_text())
    assert split["validation"], "the tiny run must have a validation split for this test"
    expected = dict(sorted(Counter(id_.split("/")[0] for id_ in split["validation"]).items()))
    assert document["class_counts"]["validation"] == expected
    assert document["class_counts"]["train"] == dict(sorted(Counter(id_.split("/")[0] for id_ in split["train"]).items()))


def test_a_model_with_more_outputs_than_labels_json_is_refused(cli_runner, image_run, tmp_path):
    """labels.json edited or mixed up with another run's: a 3-class model with 2 label names
    would print a probability under the wrong name (or fail on an index) rather than say so."""
    import shutil

    from tests.conftest import assert_one_line_error

    run = tmp_path / "run"
    shutil.copytree(image_run.run_dir, run, ignore=shutil.ignore_patterns("report"))
    labels = json.loads((run / "labels.json").read_text())
    (run / "labels.json").write_text(json.dumps(labels[:2]))
    image = next(iter(sorted(image_run.data.rglob("*.png"))))
    result = invoke(cli_runner, ["predict", run, str(image)])
    assert_one_line_error(result, "labels.json lists alpha, beta but config.json trained alpha, beta, gamma")
    document = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**document, "classes": labels[:2]}))  # both edited
    assert_one_line_error(invoke(cli_runner, ["predict", run, str(image)]), "predicts 3 classes but labels.json lists 2")
