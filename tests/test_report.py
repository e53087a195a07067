"""Evaluation reports (report.json sections, report.html, figures) and `compare`.

The expensive part, evaluating a trained model, happens once per modality (module-scoped
`evaluated`, on the session's tiny runs); the other tests read its files or call the report
functions on fixed arrays.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import warnings
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipelines.calibration import calibration
from pipelines.datasets import Dataset
from pipelines.evaluation import classification_metrics
from pipelines.modality import Modality
from pipelines.report_sections import misclassified, top_confusions
from preprocess import ImagePreprocessor
from tests.conftest import CLASSES, assert_one_line_error, describe_result, invoke, write_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ("confusion_matrix.png", "training_curves.png", "reliability.png")


# ---- fixed predictions: numbers equal scikit-learn's and a hand-computed ECE ----------------

Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2])
PROBABILITIES = np.array(
    [
        [0.90, 0.05, 0.05],  # right, 0.90
        [0.20, 0.70, 0.10],  # 0 -> 1 at 0.70
        [0.10, 0.10, 0.80],  # 0 -> 2 at 0.80
        [0.30, 0.60, 0.10],  # right, 0.60
        [0.10, 0.30, 0.60],  # 1 -> 2 at 0.60
        [0.05, 0.05, 0.90],  # right, 0.90
        [0.50, 0.40, 0.10],  # 2 -> 0 at 0.50
        [0.10, 0.10, 0.80],  # right, 0.80
    ]
)


def test_calibration_matches_a_hand_computed_ece():
    confidences = np.array([0.95, 0.95, 0.5, 0.5, 0.3])
    correct = np.array([True, False, True, True, False])
    result = calibration(confidences, correct)
    # bins of width 1/15, upper edge included: 0.95 -> bin 14, 0.5 -> bin 7, 0.3 -> bin 4
    # ECE = 2/5 * |0.5 - 0.95| + 2/5 * |1 - 0.5| + 1/5 * |0 - 0.3| = 0.18 + 0.20 + 0.06
    assert result["ece"] == pytest.approx(0.44)
    assert result["num_bins"] == 15 and len(result["bins"]) == 15
    filled = {i: b for i, b in enumerate(result["bins"]) if b["count"]}
    assert sorted(filled) == [4, 7, 14]
    assert filled[14]["accuracy"] == 0.5 and filled[14]["confidence"] == pytest.approx(0.95)
    assert filled[7]["lower"] == pytest.approx(7 / 15) and filled[7]["upper"] == pytest.approx(8 / 15)
    assert result["bins"][0]["accuracy"] is None  # empty bins say so rather than claim 0


def test_calibration_bin_edges_and_perfect_calibration():
    edges = calibration(np.array([0.0, 1 / 15, 1.0]), np.array([True, True, True]))
    assert [b["count"] for b in edges["bins"]][:2] == [2, 0] and edges["bins"][-1]["count"] == 1
    # 3 of 4 right at confidence 0.75 each: perfectly calibrated
    assert calibration(np.full(4, 0.75), np.array([1, 1, 1, 0], dtype=bool))["ece"] == pytest.approx(0.0)


def test_calibration_refuses_mismatched_lengths_and_no_bins():
    with pytest.raises(ValueError, match="differ in length: 3 vs 2"):
        calibration(np.array([0.5, 0.6, 0.7]), np.array([True, False]))
    with pytest.raises(ValueError, match="num_bins"):  # gave an ECE of 0 over no bins
        calibration(np.array([0.5]), np.array([True]), num_bins=0)


def test_report_numbers_equal_scikit_learn_on_fixed_predictions():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    y_pred = PROBABILITIES.argmax(axis=1)
    labels = list(CLASSES)
    metrics = classification_metrics(Y_TRUE, y_pred, labels)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(Y_TRUE, y_pred)) == pytest.approx(0.5)
    assert metrics["macro_f1"] == pytest.approx(f1_score(Y_TRUE, y_pred, average="macro"))
    assert metrics["weighted_f1"] == pytest.approx(f1_score(Y_TRUE, y_pred, average="weighted"))
    matrix = confusion_matrix(Y_TRUE, y_pred).tolist()
    assert metrics["confusion_matrix"] == matrix == [[1, 1, 1], [0, 1, 1], [1, 0, 2]]
    precision, recall, f1, support = precision_recall_fscore_support(Y_TRUE, y_pred)
    for i, label in enumerate(labels):
        assert metrics["per_class"][label] == pytest.approx(
            {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i], "in_averages": True}
        )
    # off-diagonal cells, largest first (ties in matrix order)
    assert top_confusions(matrix, labels) == [
        {"true": "alpha", "predicted": "beta", "count": 1},
        {"true": "alpha", "predicted": "gamma", "count": 1},
        {"true": "beta", "predicted": "gamma", "count": 1},
        {"true": "gamma", "predicted": "alpha", "count": 1},
    ]
    dataset = Dataset(inputs=[Path(f"/data/x{i}.png") for i in range(8)], labels=[labels[t] for t in Y_TRUE],
                      ids=[f"x{i}" for i in range(8)])
    mistakes = misclassified(dataset, Y_TRUE, PROBABILITIES, labels)
    assert [(m["id"], m["true"], m["predicted"]) for m in mistakes] == [
        ("x2", "alpha", "gamma"), ("x1", "alpha", "beta"), ("x4", "beta", "gamma"), ("x6", "gamma", "alpha")
    ]
    assert [m["confidence"] for m in mistakes] == pytest.approx([0.8, 0.7, 0.6, 0.5])
    assert mistakes[0]["input"] == str(Path("/data/x2.png")) and "text" not in mistakes[0]
    # a text given as such has no file to open: report.json shows its start (the id alone was all)
    long_text = "line one\n\n  " + "word " * 100
    texts = Dataset(inputs=[long_text if i == 2 else f"text {i}" for i in range(8)], labels=dataset.labels, ids=[f"row {i + 2}" for i in range(8)])
    mistakes = misclassified(texts, Y_TRUE, PROBABILITIES, labels)
    assert mistakes[0]["input"] == "row 4" and mistakes[0]["text"] == ("line one " + "word " * 100)[:200] + "..."
    assert mistakes[1]["text"] == "text 1"
    # each confidence level has its own bin: 0.9 (2 of 2 right), 0.8 (1 of 2), 0.7 (0 of 1),
    # 0.6 (1 of 2), 0.5 (0 of 1)
    hand_ece = (2 * 0.1 + 2 * 0.3 + 1 * 0.7 + 2 * 0.1 + 1 * 0.5) / 8
    assert calibration(PROBABILITIES.max(axis=1), y_pred == Y_TRUE)["ece"] == pytest.approx(hand_ece) == pytest.approx(0.275)


def test_a_class_without_test_inputs_or_predictions_is_shown_as_not_averaged(capsys):
    from sklearn.metrics import f1_score

    import cli
    from pipelines.report_html import _per_class

    y_pred = PROBABILITIES.argmax(axis=1)
    metrics = classification_metrics(Y_TRUE, y_pred, [*CLASSES, "lonely"])  # "lonely": index 3, never seen
    assert metrics["macro_f1"] == pytest.approx(f1_score(Y_TRUE, y_pred, average="macro"))
    assert [s["in_averages"] for s in metrics["per_class"].values()] == [True, True, True, False]
    cli.print_per_class(metrics, title="t")
    printed = capsys.readouterr().out
    [row] = [[cell for cell in line.split() if cell.isascii()] for line in printed.splitlines() if "lonely" in line]
    assert row == ["lonely", "-", "-", "-", "0"]  # cells without the table's box-drawing rules
    assert "not in macro-F1" in printed
    html = _per_class(metrics)
    assert "<td>lonely</td><td>-</td><td>-</td><td>-</td><td>0</td>" in html and "not in macro-F1" in html


# ---- evaluate end to end, once per modality -------------------------------------------------


@pytest.fixture(scope="module", params=["image", "audio", "text"])
def evaluated(request, cli_runner, tmp_path_factory):
    trained = request.getfixturevalue(f"{request.param}_run")
    out = tmp_path_factory.mktemp(f"report-{request.param}")
    result = invoke(cli_runner, ["evaluate", trained.run_dir, "--out", out, "--baseline"])
    assert result.exit_code == 0, describe_result(result)
    return trained, out, json.loads((out / "report.json").read_text()), result


def test_the_linear_baseline_is_fitted_on_the_runs_training_inputs_and_scored_beside_the_cnn(evaluated):
    trained, out, report, result = evaluated
    baseline = report["linear_baseline"]
    split = json.loads((trained.run_dir / "split.json").read_text())
    assert baseline["fitted_on"] == len(split["train"]) + len(split["validation"])
    # the same inputs as the CNN (the tiny data has no unreadable input), so the same CNN score
    assert baseline["n_samples"] == report["n_samples"]
    assert baseline["cnn_accuracy"] == pytest.approx(report["accuracy"])
    assert baseline["cnn_macro_f1"] == pytest.approx(report["macro_f1"])
    assert 0.0 <= baseline["accuracy"] <= 1.0 and 0.0 <= baseline["macro_f1"] <= 1.0
    gap = baseline["cnn_accuracy"] - baseline["accuracy"]
    line = " ".join(result.stdout.split())
    assert f"linear baseline (logistic regression on" in line
    assert f"accuracy {baseline['accuracy']:.3f}" in line and f"{gap:+.3f} on the same {baseline['n_samples']} inputs" in line
    page = (out / "report.html").read_text()
    assert "<h2>Linear baseline</h2>" in page and f"<td>{baseline['accuracy']:.3f}</td>" in page


def test_the_linear_baseline_separates_what_a_linear_model_can_and_not_what_it_cannot():
    from pipelines.baseline import fit_predict
    from pipelines.modality import Modality

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    linear = (x[:, 3] - x[:, 7] > 0).astype(int)
    predicted = fit_predict(Modality.image, x[:300], linear[:300], x[300:])
    assert np.mean(predicted == linear[300:]) > 0.9
    xor = ((x[:, 3] > 0) ^ (x[:, 7] > 0)).astype(int)  # no line separates it
    predicted = fit_predict(Modality.image, x[:300], xor[:300], x[300:])
    assert np.mean(predicted == xor[300:]) < 0.7


def test_the_text_baseline_reads_words_and_character_n_grams_of_a_few_texts():
    from pipelines.baseline import fit_predict
    from pipelines.modality import Modality

    texts = ["the cat sat", "a cat ran", "cats purr", "the dog sat", "a dog ran", "dogs bark"]
    labels = [0, 0, 0, 1, 1, 1]
    # "catlike" and "doggy" are words never seen: only their character n-grams tell
    assert list(fit_predict(Modality.text, texts, labels, ["catlike purring", "doggy barking"])) == [0, 1]
    # no word of two letters anywhere (scikit-learn's default words): one-letter words are read
    letters = ["a", "a b", "b a", "x", "x y", "y x"]
    assert list(fit_predict(Modality.text, letters, labels, ["b", "y"])) == [0, 1]


def test_a_baseline_that_cannot_be_fitted_is_a_one_line_error():
    from pipelines.baseline import fit_predict
    from pipelines.modality import Modality
    from preprocess import ConvpipeError

    with pytest.raises(ConvpipeError, match="^The linear baseline could not be fitted: .*class"):
        fit_predict(Modality.image, np.zeros((4, 3)), [1, 1, 1, 1], np.zeros((1, 3)))


def test_baseline_features_read_by_worker_processes_equal_those_read_here(tmp_path):
    from pipelines.baseline import PARALLEL_MIN_INPUTS, linear_features
    from pipelines.modality import Modality
    from pipelines.workers import Workers
    from preprocess import AudioPreprocessor
    from tests.conftest import write_audio_folder

    data = write_audio_folder(tmp_path / "audio", per_class=PARALLEL_MIN_INPUTS // len(CLASSES) + 1)
    files = sorted(str(f) for f in data.rglob("*.wav"))
    files.insert(5, str(tmp_path / "missing.wav"))  # unreadable: left out, in both
    preprocessor = AudioPreprocessor(duration=0.25)
    here, kept_here = linear_features(Modality.audio, preprocessor, files)
    with Workers(2, AudioPreprocessor) as pool:
        there, kept_there = linear_features(Modality.audio, preprocessor, files, pool=pool)
        assert pool._pool is not None  # the children did read
    assert kept_here == kept_there == [i for i in range(len(files)) if i != 5]
    np.testing.assert_allclose(there, here, rtol=1e-4, atol=1e-4)


def test_mfcc_statistics_of_a_clip_too_short_for_librosas_delta_window():
    from pipelines.baseline import mfcc_statistics

    t = np.arange(400) / 16000  # 25 ms: 4 frames, fewer than the 9 librosa's deltas interpolate
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor a window longer than the clip
        features = mfcc_statistics(np.sin(2 * np.pi * 440 * t).astype(np.float32), 16000)
    assert features.shape == (80,) and np.all(np.isfinite(features))


def test_baseline_needs_the_runs_training_data(cli_runner, image_run, tmp_path):
    run = copied_run(image_run.run_dir, tmp_path / "moved")
    document = json.loads((run / "config.json").read_text())
    test_data = document["config"]["data"]
    document["config"]["data"] = str(tmp_path / "gone")
    (run / "config.json").write_text(json.dumps(document))
    result = invoke(cli_runner, ["evaluate", run, "--data", test_data, "--baseline", "--out", tmp_path / "report"])
    assert_one_line_error(result, "--baseline fits on the run's training data, which cannot be used now")
    assert "Restore it as it was, or leave out --baseline." in result.stderr and "Pass --data" not in result.stderr


def test_evaluating_a_run_whose_data_is_gone_says_how_to_get_it_back_or_pass_data(cli_runner, image_run, tmp_path):
    run = copied_run(image_run.run_dir, tmp_path / "moved")
    document = json.loads((run / "config.json").read_text())
    document["config"]["data"] = str(tmp_path / "gone")
    (run / "config.json").write_text(json.dumps(document))
    # "Pass --data" alone led a user whose data moved to score all of it, training inputs too
    moved = f"its data is no longer at {tmp_path / 'gone'} (moved, renamed or deleted): put it back there, or make that path a link"
    result = invoke(cli_runner, ["evaluate", run, "--out", tmp_path / "report"])
    assert_one_line_error(result, "Cannot score the own test split", moved, "Or pass --data to score other data.")
    result = invoke(cli_runner, ["preprocess", "--run", run, "--out", tmp_path / "arrays.npz"])
    assert_one_line_error(result, moved, "Or pass --data.")


def test_evaluating_a_run_whose_csv_moved_without_its_files_names_a_missing_file(cli_runner, image_folder, tmp_path):
    manifest = tmp_path / "data" / "m.csv"
    manifest.parent.mkdir()
    rows = [f"../{image_folder.name}/{path.parent.name}/{path.name},{path.parent.name}" for path in sorted(image_folder.rglob("*.png"))]
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"
    options = ["--epochs", "1", "--filters", "4", "--dense", "8", "--image-size", "8,8", "--test-split", "0.25"]
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", manifest, "--out", run, *options])
    assert result.exit_code == 0, describe_result(result)
    elsewhere = tmp_path / "one" / "deeper" / "m.csv"  # its paths, relative to its folder, now name nothing
    elsewhere.parent.mkdir(parents=True)
    manifest.rename(elsewhere)
    document = json.loads((run / "config.json").read_text())
    document["config"]["data"] = str(elsewhere)
    (run / "config.json").write_text(json.dumps(document))
    line = assert_one_line_error(invoke(cli_runner, ["evaluate", run]), f"{elsewhere} names ", "of the run's test inputs where there is now no file")
    assert f"(first: {elsewhere.parent}/../{image_folder.name}/" in line and "its paths are relative to its own folder" in line


def test_baseline_refuses_training_data_changed_since_training(cli_runner, text_run, tmp_path):
    import csv

    run = copied_run(text_run.run_dir, tmp_path / "run")
    document = json.loads((run / "config.json").read_text())
    original = Path(document["config"]["data"])
    with original.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    edited = tmp_path / "edited.csv"  # the same texts, the rows sorted: row ids name other texts
    with edited.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([rows[0], *sorted(rows[1:])])
    document["config"]["data"] = str(edited)
    (run / "config.json").write_text(json.dumps(document))
    result = invoke(cli_runner, ["evaluate", run, "--data", original, "--baseline", "--out", tmp_path / "report"])
    assert_one_line_error(result, "changed since training: the run's recorded train inputs are no longer the same")
    assert not (tmp_path / "report").exists()  # refused before scoring anything


def test_a_baseline_that_fails_to_fit_leaves_the_cnns_report_whole(cli_runner, image_run, tmp_path, monkeypatch):
    import pipelines.baseline
    from preprocess import ConvpipeError

    def refuse(*args):
        raise ConvpipeError("The linear baseline could not be fitted: no luck")

    monkeypatch.setattr(pipelines.baseline, "fit_predict", refuse)
    result = invoke(cli_runner, ["evaluate", image_run.run_dir, "--baseline", "--out", tmp_path / "report"])
    assert result.exit_code == 0, describe_result(result)
    assert "warning: no linear baseline: The linear baseline could not be fitted: no luck" in " ".join(result.stderr.split())
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["linear_baseline"] == {"error": "The linear baseline could not be fitted: no luck"}
    assert "accuracy" in report and "None: The linear baseline could not be fitted" in (tmp_path / "report" / "report.html").read_text()


def test_the_baseline_counts_scored_inputs_it_was_fitted_on(cli_runner, image_run, tmp_path, monkeypatch):
    import pipelines.evaluation

    listed = []
    load_source = pipelines.evaluation.load_source
    monkeypatch.setattr(pipelines.evaluation, "load_source", lambda *args: listed.append(args) or load_source(*args))
    import pipelines.leakage

    hashed, digest = [], pipelines.leakage._file_digest
    monkeypatch.setattr(pipelines.leakage, "_file_digest", lambda path: hashed.append(str(path)) or digest(path))
    data = json.loads((image_run.run_dir / "config.json").read_text())["config"]["data"]
    result = invoke(cli_runner, ["evaluate", image_run.run_dir, "--data", data, "--baseline", "--out", tmp_path / "report"])
    assert result.exit_code == 0, describe_result(result)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    baseline, split = report["linear_baseline"], json.loads((image_run.run_dir / "split.json").read_text())
    # the whole training folder: every input fitted on is scored again, and trained on
    assert baseline["scored_copies_of_fitted_inputs"] == baseline["fitted_on"] > 0
    assert report["data"]["test_copies_of_training_inputs"] == len(split["train"])
    # --data once, and the training data once for the baseline and the copy count together;
    # each file hashed once (a training file under both counts once counted twice in the budget)
    assert len(listed) == 2, listed
    assert hashed and len(hashed) == len(set(hashed)) == report["n_samples"]  # the scored folder is the training one
    assert f"{baseline['fitted_on']} of the scored inputs are exact copies of inputs the baseline was fitted on" in " ".join(result.stderr.split())


def test_terminal_summary(evaluated):
    _, out, report, result = evaluated
    text = result.stdout.replace("\n", "")
    assert f"accuracy {report['accuracy']:.3f}" in text and f"macro-F1 {report['macro_f1']:.3f}" in text
    assert all(label in result.stdout for label in CLASSES)
    assert str(out / "report.html") in text and str(out / "report.json") in text


def test_report_json_sections_agree_with_the_run(evaluated):
    from sklearn.metrics import confusion_matrix

    trained, _, report, _ = evaluated
    document = json.loads((trained.run_dir / "config.json").read_text())
    labels = report["labels"]
    mistakes = report["misclassified"]
    assert len(mistakes) == report["n_samples"] - round(report["accuracy"] * report["n_samples"])
    confidences = [m["confidence"] for m in mistakes]
    assert confidences == sorted(confidences, reverse=True)
    assert all(m["true"] != m["predicted"] for m in mistakes)
    # the mistakes rebuild the off-diagonal of the confusion matrix exactly
    y_true = [labels.index(m["true"]) for m in mistakes]
    y_pred = [labels.index(m["predicted"]) for m in mistakes]
    off_diagonal = np.array(report["confusion_matrix"]) * (1 - np.eye(len(labels), dtype=int))
    assert (confusion_matrix(y_true, y_pred, labels=range(len(labels))) == off_diagonal).all() if mistakes else True
    assert sum(c["count"] for c in report["top_confusions"]) == min(len(mistakes), off_diagonal.sum())
    if trained.modality == "text":
        assert all(m["input"].startswith("row ") for m in mistakes)  # CSV rows by row id
    else:
        assert all(Path(m["input"]).is_file() for m in mistakes)  # files by path

    bins = report["calibration"]["bins"]
    assert sum(b["count"] for b in bins) == report["n_samples"]
    right = sum(b["accuracy"] * b["count"] for b in bins if b["count"])
    assert right == pytest.approx(report["accuracy"] * report["n_samples"])

    dataset = report["data"]
    assert dataset["class_counts"] == document["class_counts"]
    assert dataset["evaluated_class_counts"] == {label: 3 for label in CLASSES}
    assert dataset["own_test_split"] is True and dataset["skipped_in_evaluation"] == []
    model = report["model"]
    assert model["modality"] == trained.modality and model["parameters"] == document["parameters"]
    spec = document["config"]["model"]
    unused = ("kernel_size", "pool_size") if trained.modality == "text" else ("window_sizes", "embedding_dim")
    assert model["spec"] == {k: v for k, v in spec.items() if k in model["spec"]} and not set(unused) & set(model["spec"])
    assert {"filters", "dense", "dropout"} <= set(model["spec"]) and model["input_shape"] == document["input_shape"]
    timing = report["timing"]
    assert timing["train_seconds"] == document["timing"]["train_seconds"] > 0
    assert timing["preprocess_seconds"] == document["timing"]["preprocess_seconds"] >= 0
    assert timing["samples_per_second"] == pytest.approx(report["n_samples"] / timing["evaluation_seconds"], rel=0.01)
    assert report["environment"]["backend"] == "tensorflow" and report["environment"]["keras"]


class PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []
        self.rows: list[list[str]] = []  # cell texts of every table row
        self.class_rows: list[list[str]] = []
        self._row: list[str] | None = None
        self._row_class = ""
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(tag, name, value or "") for name, value in attrs]
        if tag == "tr":
            self._row, self._row_class = [], dict(attrs).get("class", "")
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            if self._row_class == "class-row":
                self.class_rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def assert_self_contained(page: str) -> None:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(parser.tags)
    for tag, name, value in parser.attributes:
        assert not name.startswith("on"), (tag, name)  # no event handlers (scripts)
        if name in ("src", "href", "srcset", "action", "data"):
            assert value.startswith("data:image/png;base64,"), (tag, name, value[:60])
    outside_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    for marker in ("http:", "https:", "//", "url(", "@import"):
        assert marker not in outside_images, marker


def test_report_html_parses_and_is_self_contained(evaluated):
    trained, out, report, _ = evaluated
    page = (out / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    parser = PageParser()
    parser.feed(page)
    assert [row[0] for row in parser.class_rows] == list(CLASSES)  # a row per class, in order
    for row, label in zip(parser.class_rows, CLASSES):
        assert row[1:] == [f"{report['per_class'][label][k]:.3f}" for k in ("precision", "recall", "f1")] + [
            str(report["per_class"][label]["support"])
        ]
    # the raw confusion counts, row by row, in the counts table
    matrix_rows = [[int(c) for c in row[1:]] for row in parser.rows if row and row[0] in CLASSES and len(row) == 4
                   and all(c.isdigit() for c in row[1:]) and row not in parser.class_rows]
    assert matrix_rows[:3] == report["confusion_matrix"]
    images = [value for tag, name, value in parser.attributes if tag == "img" and name == "src"]
    shown = min(16, len(report["misclassified"]))
    if trained.modality == "text":
        assert len(images) == 3 and page.count("<blockquote>") == shown
    else:  # thumbnails or spectrogram pictures of the mistakes, after the three figures
        assert len(images) == 3 + shown
    for uri in images:
        assert base64.b64decode(uri.split(",", 1)[1]).startswith(PNG_SIGNATURE)


def test_figures_are_valid_pngs_beside_the_report(evaluated):
    from PIL import Image

    _, out, _, _ = evaluated
    page = (out / "report.html").read_text(encoding="utf-8")
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            assert image.width >= 300 and image.height >= 200
            assert len(set(image.convert("L").getdata())) > 10  # something was drawn
        assert base64.b64encode(data).decode() in page  # the same picture is inlined


def test_a_one_epoch_run_still_renders_curves(cli_runner, image_run, tmp_path):
    from pipelines.report_figures import training_curves_png

    run_dir = tmp_path / "run"
    shutil.copytree(image_run.run_dir, run_dir)
    lines = (run_dir / "history.csv").read_text().splitlines()
    (run_dir / "history.csv").write_text("\n".join(lines[:2]) + "\n")  # header + epoch 1
    result = invoke(cli_runner, ["evaluate", run_dir])
    assert result.exit_code == 0, describe_result(result)
    curves = (run_dir / "report" / "training_curves.png").read_bytes()
    assert curves.startswith(PNG_SIGNATURE)
    # points were plotted: the picture differs from the one drawn without any history
    assert curves != training_curves_png({}, None)


def test_confusion_matrix_figure_grows_with_the_classes():
    from PIL import Image

    from pipelines.report_figures import confusion_matrix_png

    sizes = {}
    for n in (2, 40):
        matrix = (np.eye(n, dtype=int) * 5 + 1).tolist()
        with Image.open(io.BytesIO(confusion_matrix_png(matrix, [f"class number {i}" for i in range(n)]))) as image:
            sizes[n] = image.size
    assert sizes[40][0] > 2 * sizes[2][0] and sizes[40][1] > 2 * sizes[2][1]


def drawn_figures(monkeypatch) -> list:
    """The matplotlib figures the report's figure functions render, instead of their PNGs."""
    import pipelines.report_figures

    figures = []
    monkeypatch.setattr(pipelines.report_figures, "render_png", lambda figure, **options: figures.append(figure) or b"")
    return figures


def test_long_class_names_that_differ_at_the_end_stay_apart_on_the_axes(monkeypatch):
    from pipelines.report_figures import confusion_matrix_png

    figures = drawn_figures(monkeypatch)
    labels = [f"very_long_class_name_number_{i:02d}" for i in range(12)] + ["short"]
    confusion_matrix_png(np.eye(len(labels), dtype=int).tolist(), labels)
    for axes in figures[0].axes[::2]:  # the two matrices; every other axes is a colour bar
        for ticks in (axes.get_xticklabels(), axes.get_yticklabels()):
            names = [tick.get_text() for tick in ticks]
            # All were "very_long_class_n…": twelve classes with one name.
            assert len(set(names)) == len(labels) and "short" in names
            assert all(len(name) <= 18 for name in names) and names[7].endswith("07")


def test_the_reliability_diagram_writes_how_many_inputs_each_bin_holds(monkeypatch):
    from pipelines.report_figures import reliability_png

    figures = drawn_figures(monkeypatch)
    confidence = np.array([0.55] + [0.97] * 160)
    reliability_png(calibration(confidence, np.ones(161, dtype=bool)))
    bottom = figures[0].axes[1]
    # A bin of 1 input beside one of 160 was no visible bar, its accuracy bar full height above.
    assert sorted(text.get_text() for text in bottom.texts if text.get_text()) == ["1", "160"]


def test_user_strings_are_escaped_in_the_html():
    from pipelines.report_html import render_report

    hostile = "<script>alert('x')</script>"
    labels = [hostile, "b&b"]
    report = {
        "run": "runs/<r>", "data": {"location": "data/<d>"}, "modality": "text", "accuracy": 0.5, "macro_f1": 0.5,
        "weighted_f1": 0.5, "n_samples": 2, "labels": labels, "confusion_matrix": [[1, 0], [1, 0]],
        "per_class": {label: {"precision": 0.5, "recall": 1.0, "f1": 0.6, "support": 1} for label in labels},
        "misclassified": [{"id": "row 3", "input": "row 3", "true": "b&b", "predicted": hostile, "confidence": 0.9}],
        "top_confusions": [{"true": "b&b", "predicted": hostile, "count": 1}],
    }
    previews = [{**report["misclassified"][0], "snippet": "<img src=https://example.com/x.png> & more"}]
    page = render_report(report, {}, previews)
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "&lt;img src=https:" in page and "b&amp;b" in page
    parser = PageParser()
    parser.feed(page)
    assert [row[0] for row in parser.class_rows] == labels


# ---- compare --------------------------------------------------------------------------------


def fake_report(run_dir: Path, accuracy: float, macro_f1: float, fingerprint: str = "same", **more) -> None:
    report = {"accuracy": accuracy, "macro_f1": macro_f1, "n_samples": 9,
              "data": {"location": "somewhere", "fingerprint": fingerprint}}
    report.update(more)
    (run_dir / "report").mkdir(parents=True, exist_ok=True)
    (run_dir / "report" / "report.json").write_text(json.dumps(report))


def copied_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("report"))
    return target


def test_compare_orders_by_accuracy_and_flags_other_data(cli_runner, image_run, tmp_path):
    # given worst first: a sort on accuracy alone would keep it ahead of its tie
    runs = {name: copied_run(image_run.run_dir, tmp_path / name) for name in ("worst", "middle", "best", "other")}
    fake_report(runs["middle"], 0.70, 0.60)
    fake_report(runs["best"], 0.90, 0.80)
    fake_report(runs["worst"], 0.70, 0.50)  # ties on accuracy are broken by macro-F1
    fake_report(runs["other"], 0.95, 0.95, fingerprint="elsewhere")
    result = invoke(cli_runner, ["compare", *runs.values(), "--out", tmp_path / "cmp"])
    assert result.exit_code == 0, describe_result(result)
    document = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    order = [Path(row["run"]).name for row in document["runs"]]
    assert order == ["other", "best", "middle", "worst"]
    assert document["same_data"] is False
    assert [row["data_group"] for row in document["runs"]] == ["A", "B", "B", "B"]
    assert [row["different_data"] for row in document["runs"]] == [False, True, True, True]
    first = document["runs"][1]
    assert first["parameters"] > 0 and first["hyperparameters"]["filters"] == [4]
    assert "different data" in result.stdout.replace("\n", " ") or "≠A" in result.stdout
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert_self_contained(page)
    parser = PageParser()
    parser.feed(page)
    run_rows = [row for row in parser.rows if row and row[0].isdigit()]
    assert [Path(row[1]).name for row in run_rows] == order
    assert sum("different data" in row[-1] for row in run_rows) == 3


def test_compare_shows_the_linear_baseline_where_a_report_has_one(cli_runner, image_run, tmp_path):
    runs = {name: copied_run(image_run.run_dir, tmp_path / name) for name in ("with", "without")}
    fake_report(runs["with"], 0.90, 0.80, linear_baseline={"accuracy": 0.625, "macro_f1": 0.5})
    fake_report(runs["without"], 0.70, 0.60)
    result = invoke(cli_runner, ["compare", *runs.values(), "--out", tmp_path / "cmp"])
    assert result.exit_code == 0, describe_result(result)
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["#", "run"])
    assert header.split() == ["#", "run", "modality", "params", "train", "s", "accuracy", "macro-F1", "linear", "data"]
    rows = {line.split()[1]: line.split() for line in lines if line.split()[:1] in (["1"], ["2"])}
    assert rows["with"][-2] == "0.625" and rows["without"][-2] == "n/a"
    parameters = json.loads((runs["with"] / "config.json").read_text())["parameters"]
    assert rows["with"][3] == f"{parameters:,}"  # whole, on one line
    document = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [row["baseline_accuracy"] for row in document["runs"]] == [0.625, None]
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "<th>linear baseline accuracy</th>" in page and "<td>0.625</td>" in page
    # without any baseline, no such column
    fake_report(runs["with"], 0.90, 0.80)
    result = invoke(cli_runner, ["compare", *runs.values()])
    header = next(line for line in result.stdout.splitlines() if line.split()[:2] == ["#", "run"])
    assert "linear" not in header and "evaluate --baseline" not in result.stdout


def test_compare_names_the_settings_that_differ_and_shows_each_runs_value(cli_runner, image_run, tmp_path):
    runs = [copied_run(image_run.run_dir, tmp_path / name) for name in ("a", "b", "c")]
    for run, accuracy in zip(runs, (0.9, 0.8, 0.7)):
        fake_report(run, accuracy, accuracy)
    for run, seed, color_mode, workers in ((runs[1], 5, "grayscale", 1), (runs[2], 0, "rgb", 2)):
        document = json.loads((run / "config.json").read_text())
        document["config"]["train"].update(seed=seed, workers=workers)  # workers: the same results
        document["config"]["preprocess"]["color_mode"] = color_mode
        (run / "config.json").write_text(json.dumps(document))
    result = invoke(cli_runner, ["compare", *runs, "--out", tmp_path / "cmp"])
    assert result.exit_code == 0, describe_result(result)
    assert "settings that differ: color_mode, seed" in result.stdout
    assert re.search(r"1\. \S+a: .*color_mode=grayscale seed=0", result.stdout)
    assert re.search(r"2\. \S+b: .*color_mode=grayscale seed=5", result.stdout)
    document = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert document["settings_that_differ"] == ["color_mode", "seed"]
    assert [row["hyperparameters"]["color_mode"] for row in document["runs"]] == ["grayscale", "grayscale", "rgb"]
    assert "Settings that differ between these runs: color_mode, seed." in (tmp_path / "cmp" / "compare.html").read_text()
    result = invoke(cli_runner, ["compare", runs[0], copied_run(runs[0], tmp_path / "same")])
    assert "settings that differ: none (the same settings)" in result.stdout
    assert "seed=" not in result.stdout


def test_compare_of_an_image_and_an_audio_run_lists_no_setting_the_modality_decides(cli_runner, image_run, audio_run, tmp_path):
    image, audio = copied_run(image_run.run_dir, tmp_path / "image"), copied_run(audio_run.run_dir, tmp_path / "audio")
    for run in (image, audio):
        fake_report(run, 0.9, 0.9)
    result = invoke(cli_runner, ["compare", image, audio, "--out", tmp_path / "cmp"])
    assert result.exit_code == 0, describe_result(result)
    differ = json.loads((tmp_path / "cmp" / "compare.json").read_text())["settings_that_differ"]
    assert "augment_kind" not in differ  # image vs spectrogram: the modality column says so
    assert "head" in differ  # a knob both have: flatten for images, global pooling for audio


def test_compare_shows_no_embedding_size_for_a_full_kernel_text_run(text_run, tmp_path):
    from pipelines.compare import key_hyperparameters
    from pipelines.run_dir import Run

    run = copied_run(text_run.run_dir, tmp_path / "full")
    document = json.loads((run / "config.json").read_text())
    document["config"]["model"]["text_kernel"] = "full"  # which has no embedding
    (run / "config.json").write_text(json.dumps(document))
    shown = key_hyperparameters(Run.open(run))
    assert shown["text_kernel"] == "full" and "embedding_dim" not in shown
    assert "embedding_dim" in key_hyperparameters(Run.open(text_run.run_dir))


def test_compare_evaluates_a_run_without_a_report(cli_runner, image_run, text_run, tmp_path):
    image = copied_run(image_run.run_dir, tmp_path / "image")
    text = copied_run(text_run.run_dir, tmp_path / "text")
    fake_report(image, 1.0, 1.0)
    result = invoke(cli_runner, ["compare", text, image, "--device", "cpu"])
    assert result.exit_code == 0, describe_result(result)
    report = json.loads((text / "report" / "report.json").read_text())  # made on its own test split
    assert report["data"]["own_test_split"] is True and report["n_samples"] == 9
    assert "Evaluated now" in result.stdout and "≠A" in result.stdout and "different data" in result.stdout
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith(("1 ", "2 "))]
    assert "image" in lines[0] and "text" in lines[1]


def test_compare_evaluating_many_runs_shows_no_tensorflow_retracing_warning(cli_runner, image_run, tmp_path, caplog):
    """Each run's model traces its own predict function, which TensorFlow counted as retracing
    one function: two 'WARNING:tensorflow:... triggered tf.function retracing' paragraphs."""
    runs = [copied_run(image_run.run_dir, tmp_path / f"run{i}") for i in range(6)]
    result = invoke(cli_runner, ["compare", *runs, "--device", "cpu"])
    assert result.exit_code == 0, describe_result(result)
    assert "Evaluated now" in result.stdout
    assert not [record.getMessage() for record in caplog.records if "retracing" in record.getMessage()]


def test_compare_errors_are_one_line(cli_runner, image_run, tmp_path):
    good = copied_run(image_run.run_dir, tmp_path / "good")
    fake_report(good, 0.5, 0.5)
    assert_one_line_error(invoke(cli_runner, ["compare", good]), "at least two runs")
    assert_one_line_error(invoke(cli_runner, ["compare", good, tmp_path / "nope"]), "Run directory not found")
    (tmp_path / "afile").write_text("x")
    assert_one_line_error(invoke(cli_runner, ["compare", good, tmp_path / "afile"]), "afile is a file, not a run directory")
    line = assert_one_line_error(invoke(cli_runner, ["compare", good, good.parent / "." / "good"]), "given twice")
    assert "(also as" not in line  # the same spelling once normalized
    assert_one_line_error(invoke(cli_runner, ["compare", good, good, "--device", "tpu"]), "--device")
    incomplete = copied_run(image_run.run_dir, tmp_path / "incomplete")
    (incomplete / "model.keras").unlink()
    assert_one_line_error(invoke(cli_runner, ["compare", good, incomplete]), "is not a complete run", "model.keras")
    broken = copied_run(image_run.run_dir, tmp_path / "broken")
    (broken / "report").mkdir()
    (broken / "report" / "report.json").write_text('{"accuracy": 0.5}')
    assert_one_line_error(invoke(cli_runner, ["compare", good, broken]), "not a complete report", "macro_f1")
    for value in (float("nan"), 1.5, "0.9"):  # json.dumps writes NaN, and json.loads reads it back
        fake_report(broken, value, 0.5)
        assert_one_line_error(invoke(cli_runner, ["compare", good, broken]), "has accuracy", "not a number from 0 to 1")
    for count in ("x", -1, 2.5):  # int("x") was a traceback
        fake_report(broken, 0.5, 0.5, n_samples=count)
        assert_one_line_error(invoke(cli_runner, ["compare", good, broken]), "has n_samples", "not a count of inputs")
    no_test = copied_run(image_run.run_dir, tmp_path / "no-test")
    split = json.loads((no_test / "split.json").read_text())
    (no_test / "split.json").write_text(json.dumps({**split, "test": []}))
    assert_one_line_error(invoke(cli_runner, ["compare", good, no_test]), "has no report", "--data")


def test_compare_names_evaluates_options_only_where_evaluating_a_run_could_use_them(cli_runner, image_run, tmp_path):
    good = copied_run(image_run.run_dir, tmp_path / "good")
    fake_report(good, 0.5, 0.5)
    damaged = copied_run(image_run.run_dir, tmp_path / "damaged")
    (damaged / "model.keras").write_bytes((damaged / "model.keras").read_bytes()[:100])
    line = assert_one_line_error(invoke(cli_runner, ["compare", good, damaged]), "has no report", "not a complete .keras file")
    assert "--data" not in line  # no data makes a cut-off model loadable
    no_test = copied_run(image_run.run_dir, tmp_path / "no-test")
    split = json.loads((no_test / "split.json").read_text())
    (no_test / "split.json").write_text(json.dumps({**split, "test": []}))
    line = assert_one_line_error(invoke(cli_runner, ["compare", good, no_test]), "pass --data")
    assert f"Those options are for `convpipe evaluate {no_test}`: run it first, then compare." in line


def test_compare_of_a_folder_compares_the_runs_directly_inside_it(cli_runner, image_run, tmp_path):
    runs = tmp_path / "runs"
    for name, accuracy in (("b", 0.8), ("a", 0.6), (".old", 1.0)):  # a hidden run is passed over
        fake_report(copied_run(image_run.run_dir, runs / name), accuracy, accuracy)
    (runs / "cmp").mkdir()  # a folder that holds no run (an earlier --out) is no run either
    (runs / "notes.txt").write_text("x")
    result = invoke(cli_runner, ["compare", runs, "--out", tmp_path / "cmp"])
    assert result.exit_code == 0, describe_result(result)
    document = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [Path(row["run"]).name for row in document["runs"]] == ["b", "a"]
    assert document["found_in"] == {str(runs): [str(runs / "a"), str(runs / "b")]}  # in name order
    assert f"Runs in {runs} (its folders that hold a run, by name): a, b" in result.stdout
    # beside a run named itself, and from two folders
    other = copied_run(image_run.run_dir, tmp_path / "other")
    fake_report(other, 0.7, 0.7)
    result = invoke(cli_runner, ["compare", other, runs])
    assert result.exit_code == 0, describe_result(result)
    assert re.search(r"1\. \S+b: .*\n2\. \S+other: .*\n3\. \S+a: ", result.stdout)
    line = assert_one_line_error(invoke(cli_runner, ["compare", runs / "a", runs]), "a is given twice")
    assert f"(named itself and found in {runs})" in line
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    shutil.copytree(runs / ".old", tmp_path / "empty" / ".hidden" / "run")
    line = assert_one_line_error(invoke(cli_runner, ["compare", other, tmp_path / "empty"]), "empty is not a run and holds none")
    assert "model.keras" in line and "train_state/" in line
    one = tmp_path / "one"
    shutil.copytree(runs / "a", one / "a")
    assert_one_line_error(invoke(cli_runner, ["compare", one]), "at least two runs; got 1 (", "a).")


def test_compare_leaves_out_unfinished_runs_but_not_damaged_ones(cli_runner, image_run, tmp_path):
    runs = tmp_path / "runs"
    for name, accuracy in (("a", 0.6), ("b", 0.8)):
        fake_report(copied_run(image_run.run_dir, runs / name), accuracy, accuracy)
    (runs / "training" / "train_state").mkdir(parents=True)  # all a run has while it trains
    (runs / "training" / "train_state" / "request.json").write_text("{}")
    interrupted = copied_run(image_run.run_dir, runs / "interrupted")  # killed while writing its files
    (interrupted / "model.keras").unlink()
    shutil.copytree(runs / "training" / "train_state", interrupted / "train_state")
    result = invoke(cli_runner, ["compare", runs, "--out", tmp_path / "cmp"])
    assert result.exit_code == 0, describe_result(result)
    note = (
        f"2 runs are unfinished (still training, or interrupted) and left out: {interrupted}, {runs / 'training'}; "
        "continue an interrupted one with `train --resume RUN`."
    )
    assert f"Warning: {note}" in result.stdout
    document = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [Path(row["run"]).name for row in document["runs"]] == ["b", "a"]
    assert document["left_out"] == [str(interrupted), str(runs / "training")]
    assert note in (tmp_path / "cmp" / "compare.html").read_text()  # the saved page says it too
    # fewer than two finished runs: the error, naming the unfinished one
    assert_one_line_error(
        invoke(cli_runner, ["compare", runs / "a", runs / "training"]), "at least two finished runs; got 1.",
        "1 run is unfinished", f"continue it with `train --resume {runs / 'training'}`",
    )
    # a damaged run (files missing, no train_state/) needs attention: still an error
    (runs / "b" / "model.keras").unlink()
    assert_one_line_error(invoke(cli_runner, ["compare", runs]), "b is not a complete run", "model.keras")


def test_compare_out_naming_a_file_fails_before_any_run_is_evaluated(cli_runner, image_run, tmp_path):
    runs = [copied_run(image_run.run_dir, tmp_path / name) for name in ("a", "b")]
    (tmp_path / "afile").write_text("x")
    assert_one_line_error(invoke(cli_runner, ["compare", *runs, "--out", tmp_path / "afile"]), "it is a file; choose another --out")
    assert not any((run / "report").exists() for run in runs)


def test_compare_refuses_a_report_copied_from_another_run(cli_runner, image_run, text_run, tmp_path):
    image = copied_run(image_run.run_dir, tmp_path / "image")
    twin = copied_run(image_run.run_dir, tmp_path / "twin")  # the same model, copied: its report counts
    result = invoke(cli_runner, ["evaluate", image])
    assert result.exit_code == 0, describe_result(result)
    report = json.loads((image / "report" / "report.json").read_text())
    assert len(report["model"]["sha256"]) == 64
    shutil.copytree(image / "report", twin / "report")
    result = invoke(cli_runner, ["compare", image, twin])
    assert result.exit_code == 0, describe_result(result)

    text = copied_run(text_run.run_dir, tmp_path / "text")  # another modality
    shutil.copytree(image / "report", text / "report")
    assert_one_line_error(invoke(cli_runner, ["compare", image, text]), "scores another model than", "text")
    other = copied_run(image_run.run_dir, tmp_path / "other")  # same modality and labels, other weights
    shutil.copytree(image / "report", other / "report")
    (other / "model.keras").write_bytes((other / "model.keras").read_bytes() + b"\0")
    assert_one_line_error(invoke(cli_runner, ["compare", image, other]), "scores another model than")


def test_a_run_without_mistakes_gets_a_whole_report(cli_runner, image_run, tmp_path):
    # Evaluate on the inputs the model gets right: no mistake to preview must not break the report.
    first = invoke(cli_runner, ["evaluate", image_run.run_dir, "--data", image_run.data, "--out", tmp_path / "all"])
    assert first.exit_code == 0, describe_result(first)
    wrong = {m["input"] for m in json.loads((tmp_path / "all" / "report.json").read_text())["misclassified"]}
    right = tmp_path / "right"
    for path in sorted(image_run.data.rglob("*.png")):
        if str(path) not in wrong:
            (right / path.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, right / path.parent.name / path.name)
    result = invoke(cli_runner, ["evaluate", image_run.run_dir, "--data", right, "--out", tmp_path / "report"])
    assert result.exit_code == 0, describe_result(result)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["accuracy"] == 1.0 and report["misclassified"] == [] and report["n_samples"] >= 3
    assert (tmp_path / "report" / "report.html").stat().st_size > 0


def test_labels_with_dollar_signs_are_drawn_literally_not_as_maths(tmp_path):
    from pipelines import figures
    from pipelines.report_figures import confusion_matrix_png

    labels = ["$a^$", "cost $5-$9"]  # "$a^$" is a mathtext syntax error: evaluate crashed on it
    assert confusion_matrix_png([[1, 2], [3, 4]], labels)[:4] == b"\x89PNG"
    figures.heatmap(tmp_path / "map.png", np.ones((2, 3)), "title $y^$", row_labels=labels, column_labels=["$x^$", "b", "c"])
    figures.bar_chart(tmp_path / "bar.png", labels, [0.5, 1.0], "$a^$", "$")
    assert (tmp_path / "map.png").stat().st_size > 0 and (tmp_path / "bar.png").stat().st_size > 0


def test_an_unreadable_training_input_leaves_every_other_label_with_its_input(tmp_path, monkeypatch):
    """The baseline drops inputs it cannot read; the labels it fits on must be those of the
    inputs it kept, not the first len(kept) labels (which would shift every label after the
    unreadable one onto the next input)."""
    import pipelines.baseline as baseline

    paths = [write_png(tmp_path / f"{label}{i}.png", np.full((8, 8), level, np.uint8))
             for label, level in (("alpha", 20), ("beta", 230)) for i in range(3)]
    fit_part = Dataset([tmp_path / "missing.png", *paths], ["beta"] + ["alpha"] * 3 + ["beta"] * 3,
                       [f"id{i}" for i in range(7)])
    scored = Dataset(paths[:1] + [tmp_path / "gone.png"] + paths[3:4], ["alpha", "alpha", "beta"], ["t0", "t1", "t2"])
    run = SimpleNamespace(config=SimpleNamespace(modality=Modality.image), labels=["alpha", "beta"],
                          preprocessor=ImagePreprocessor(image_size=(8, 8)))
    fitted = {}

    def fit_predict(modality, x_fit, y_fit, x_test):
        fitted.update(x_fit=np.asarray(x_fit), y_fit=list(y_fit), n_test=len(x_test))
        return np.array([0, 1])  # the two readable scored inputs, right

    monkeypatch.setattr(baseline, "fit_predict", fit_predict)
    result = baseline.linear_baseline(run, fit_part, scored, np.array([0, 0, 1]), np.array([0, 1, 1]), None)
    assert fitted["y_fit"] == [0, 0, 0, 1, 1, 1]
    # each row's pixels go with its label: dark rows alpha (0), bright rows beta (1)
    assert list((fitted["x_fit"].mean(axis=1) > 0.5).astype(int)) == fitted["y_fit"]
    assert result["fitted_on"] == 6 and result["n_samples"] == 2 == fitted["n_test"]
    assert result["accuracy"] == 1.0
    # the CNN is scored on the same two inputs: index 1 (unreadable for the baseline) left out
    assert result["cnn_accuracy"] == 1.0


def test_the_text_baseline_is_the_documented_tf_idf_of_word_1_2_grams_and_character_2_5_grams():
    """The module docstring and the README's baseline numbers: word 1-2-grams and character
    2-5-grams, character n-grams in fewer than 2 texts dropped only from 50 training texts on."""
    from pipelines.baseline import CHAR_MIN_DF_FROM, linear_model

    def vectorizers(n_fit):  # (words, characters): the union that is the pipeline's first step
        return [vectorizer for _, vectorizer in linear_model(Modality.text, n_fit).steps[0][1].transformer_list]

    words, chars = vectorizers(CHAR_MIN_DF_FROM - 1)
    assert (words.analyzer, words.ngram_range, words.min_df) == ("word", (1, 2), 1)
    assert (chars.analyzer, chars.ngram_range, chars.min_df) == ("char_wb", (2, 5), 1)
    assert vectorizers(CHAR_MIN_DF_FROM)[1].min_df == 2


def test_the_cnn_ties_the_baseline_only_at_equal_accuracy():
    from pipelines.baseline import cnn_against_baseline

    assert cnn_against_baseline({"cnn_accuracy": 0.75, "accuracy": 0.75}) == (0.0, "ties")
    assert cnn_against_baseline({"cnn_accuracy": 0.80, "accuracy": 0.75})[1] == "beats"
    assert cnn_against_baseline({"cnn_accuracy": 0.70, "accuracy": 0.75})[1] == "loses to"


def test_the_image_and_audio_baseline_standardizes_its_features():
    """Pixels and MFCC statistics are on very different scales (MFCC 0 is in the hundreds, deltas
    near 0): the baseline standardizes each feature, so a feature on a tiny scale that tells the
    classes apart is still learned despite the L2 penalty."""
    from pipelines.baseline import fit_predict

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=400)
    x = rng.normal(size=(400, 16))
    x[:, 0] = (y * 2 - 1 + rng.normal(scale=0.3, size=400)) * 1e-4  # the class, at a tiny scale
    predicted = fit_predict(Modality.image, x[:300], y[:300], x[300:])
    assert np.mean(predicted == y[300:]) > 0.95


def test_a_class_only_predicted_counts_in_the_averages_and_is_marked_so():
    """scikit-learn's macro-F1 averages over classes in the truth OR the predictions: a class the
    model predicts but no test input has pulls macro-F1 down with its F1 of 0, so per_class must
    say it counts ("in_averages": True), else the table shows "-" for a class that is in the average."""
    from sklearn.metrics import f1_score

    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 2, 1, 1])  # class 2 ("gamma") predicted once, never true
    metrics = classification_metrics(y_true, y_pred, ["alpha", "beta", "gamma", "delta"])
    assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    flags = {label: s["in_averages"] for label, s in metrics["per_class"].items()}
    assert flags == {"alpha": True, "beta": True, "gamma": True, "delta": False}
    # the flag agrees with the average itself: the mean F1 of the flagged classes is macro-F1
    flagged = [s["f1"] for s in metrics["per_class"].values() if s["in_averages"]]
    assert np.mean(flagged) == pytest.approx(metrics["macro_f1"])


def test_the_baseline_counts_test_inputs_copied_from_validation_on_the_runs_own_split(cli_runner, image_run, tmp_path):
    """On the run's own test split, copies are read from config.json: the baseline is fitted on
    train AND validation, so a test input copying a validation input is a copy of a fitted input
    too (the CNN's own count, test_copies_of_training_inputs, is train only)."""
    import json
    import shutil

    from tests.conftest import describe_result, invoke

    run = tmp_path / "run"
    shutil.copytree(image_run.run_dir, run, ignore=shutil.ignore_patterns("report"))
    document = json.loads((run / "config.json").read_text())
    # a run from before the combined count: the sum, an upper bound
    document["copies_across_splits"] = {"test_in_train": 1, "test_in_validation": 1}
    (run / "config.json").write_text(json.dumps(document))
    result = invoke(cli_runner, ["evaluate", run, "--baseline", "--out", tmp_path / "report"])
    assert result.exit_code == 0, describe_result(result)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["data"]["test_copies_of_training_inputs"] == 1
    assert report["linear_baseline"]["scored_copies_of_fitted_inputs"] == 2
    # one test input that copies a training and a validation input is one copy
    document["copies_across_splits"]["test_in_train_or_validation"] = 1
    (run / "config.json").write_text(json.dumps(document))
    result = invoke(cli_runner, ["evaluate", run, "--baseline", "--out", tmp_path / "report"])
    assert result.exit_code == 0, describe_result(result)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["linear_baseline"]["scored_copies_of_fitted_inputs"] == 1


def test_evaluate_data_with_train_and_test_folders_scores_the_test_folder_only(cli_runner, image_run, tmp_path):
    """`evaluate --data` on a train/ + test/ layout must score test/ alone: scoring train/ too
    would count inputs a model of that data trained on. Without test/, it is refused."""
    import json

    from tests.conftest import assert_one_line_error, describe_result, invoke, write_image_folder

    data = tmp_path / "split"
    write_image_folder(data / "train", per_class=4)
    write_image_folder(data / "test", per_class=2, seed=7)
    result = invoke(cli_runner, ["evaluate", image_run.run_dir, "--data", data, "--out", tmp_path / "r"])
    assert result.exit_code == 0, describe_result(result)
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["n_samples"] == 6
    assert sum(map(sum, report["confusion_matrix"])) == 6
    assert report["data"]["evaluated_class_counts"] == {"alpha": 2, "beta": 2, "gamma": 2}
    # named as a run trained on the folder names it (what compare matches), and said to be its test/
    assert report["data"]["location"] == str(data.resolve()) and report["data"]["folder"] == "test"
    assert "its test/ folder" in " ".join(result.output.split())  # the table's title, maybe wrapped
    assert f"Scored on {data.resolve()}, its test/ folder (data given with --data)" in (tmp_path / "r" / "report.html").read_text()

    (data / "test").rename(data / "val")
    result = invoke(cli_runner, ["evaluate", image_run.run_dir, "--data", data, "--out", tmp_path / "r2"])
    assert_one_line_error(result, "has train/ and val/ but no test/ to score", f"e.g. --data {data / 'val'}")  # a folder that is there


def test_the_data_fingerprint_compare_uses_changes_with_the_labels():
    """`compare` flags runs scored on different data by this fingerprint: the same ids under other
    labels (a relabelled CSV) are other data."""
    from pipelines.datasets import Dataset
    from pipelines.report_sections import data_fingerprint

    ids = ["row 2", "row 3"]
    first = data_fingerprint("/data/x.csv", Dataset(["a", "b"], ["sports", "cooking"], ids))
    relabelled = data_fingerprint("/data/x.csv", Dataset(["a", "b"], ["cooking", "sports"], ids))
    assert first != relabelled
    assert first == data_fingerprint("/data/x.csv", Dataset(["a", "b"], ["sports", "cooking"], ids))
    assert first != data_fingerprint("/data/y.csv", Dataset(["a", "b"], ["sports", "cooking"], ids))


def test_reports_that_scored_other_inputs_of_the_same_data_have_other_fingerprints(cli_runner, image_run, tmp_path):
    # Runs that skip other inputs (another --bit-depth or max_pixels) were marked as scored on the
    # same data and ranked on different sets of inputs.
    data = tmp_path / "data"
    shutil.copytree(image_run.data, data)
    reports = []
    for name in ("all", "one-unreadable"):
        if name == "one-unreadable":
            next((data / "alpha").iterdir()).write_bytes(b"not an image")
        result = invoke(cli_runner, ["evaluate", image_run.run_dir, "--data", data, "--out", tmp_path / name])
        assert result.exit_code == 0, describe_result(result)
        reports.append(json.loads((tmp_path / name / "report.json").read_text()))
    assert reports[0]["n_samples"] == reports[1]["n_samples"] + 1
    assert reports[0]["data"]["fingerprint"] != reports[1]["data"]["fingerprint"]


def test_evaluate_scores_only_the_readable_test_inputs_and_lists_the_one_it_skipped(cli_runner, image_run, tmp_path):
    # An unreadable input in the middle of the scored data is left out of the labels as well as
    # the predictions: every other input keeps its own label, and the counts all agree.
    data = tmp_path / "data"
    shutil.copytree(image_run.data, data)
    bad = sorted((data / "beta").iterdir())[3]
    bad.write_bytes(b"\x89PNG garbage")
    result = invoke(cli_runner, ["evaluate", image_run.run_dir, "--data", data, "--out", tmp_path / "r"])
    assert result.exit_code == 0, describe_result(result)
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    readable = len(list(data.rglob("*.png"))) - 1
    assert report["n_samples"] == readable
    assert [entry["input"] for entry in report["skipped"]["inputs"]] == [f"beta/{bad.name}"]
    assert report["data"]["skipped_in_evaluation"] == report["skipped"]["inputs"]
    assert sum(map(sum, report["confusion_matrix"])) == readable
    assert report["data"]["evaluated_class_counts"] == {"alpha": 12, "beta": 11, "gamma": 12}
    assert [sum(row) for row in report["confusion_matrix"]] == [12, 11, 12]  # true labels, per class
    assert all(bad.name not in entry["input"] for entry in report["misclassified"])


def test_an_evaluate_that_fails_writing_the_report_leaves_no_new_report_json(cli_runner, image_run, tmp_path, monkeypatch):
    # report.json is written last: `compare` trusts it, so its presence must mean the figures and
    # report.html beside it were written by the same evaluate.
    import pipelines.evaluation

    out = tmp_path / "report"
    render_report = pipelines.evaluation.render_report

    def failing(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipelines.evaluation, "render_report", failing)
    failed = invoke(cli_runner, ["evaluate", image_run.run_dir, "--out", out])
    assert failed.exit_code != 0, describe_result(failed)
    assert not (out / "report.json").exists()

    monkeypatch.setattr(pipelines.evaluation, "render_report", render_report)
    result = invoke(cli_runner, ["evaluate", image_run.run_dir, "--out", out])
    assert result.exit_code == 0, describe_result(result)
    earlier = (out / "report.json").read_bytes()
    monkeypatch.setattr(pipelines.evaluation, "render_report", failing)
    failed = invoke(cli_runner, ["evaluate", image_run.run_dir, "--out", out])
    assert failed.exit_code != 0, describe_result(failed)
    assert (out / "report.json").read_bytes() == earlier  # the earlier, complete report is kept


def test_each_mistake_preview_is_made_from_that_mistakes_input(cli_runner, image_run, tmp_path, monkeypatch):
    """report.html shows a picture (or a text snippet) beside each of the most confident mistakes:
    it must be made from that mistake's own input and array, not from the first inputs scored."""
    import json

    import pipelines.mistake_previews
    from tests.conftest import describe_result, invoke

    seen = {}
    previews = pipelines.mistake_previews.previews

    def spy(modality, preprocessor, arrays, raw_inputs, mistakes):
        seen.update(arrays=np.asarray(arrays), raw=list(raw_inputs), mistakes=list(mistakes))
        return previews(modality, preprocessor, arrays, raw_inputs, mistakes)

    monkeypatch.setattr(pipelines.mistake_previews, "previews", spy)
    data = json.loads((image_run.run_dir / "config.json").read_text())["config"]["data"]
    result = invoke(cli_runner, ["evaluate", image_run.run_dir, "--data", data, "--out", tmp_path / "r"])
    assert result.exit_code == 0, describe_result(result)
    mistakes = seen["mistakes"]
    assert mistakes, "the tiny model must make mistakes on its 36 training images for this test"
    shown = len(seen["raw"])
    assert shown == min(len(mistakes), 16) == len(seen["arrays"])
    assert [str(raw) for raw in seen["raw"]] == [m["input"] for m in mistakes[:shown]]
    from pipelines.run_dir import Run

    preprocessor = Run.open(image_run.run_dir).preprocessor
    for raw, array in zip(seen["raw"], seen["arrays"]):
        np.testing.assert_allclose(array, preprocessor.transform_one(raw), atol=1e-6)


def test_the_reports_calibration_is_of_the_top_probability_against_correctness(cli_runner, image_run, tmp_path, monkeypatch):
    """Calibration asks whether the model's confidence in the class it chose (the largest
    probability) matches how often that choice is right; any other column, such as the first
    class', says nothing of the sort. Fixed probabilities whose first column is never the
    largest tell the two apart."""
    import keras

    import pipelines.evaluation

    n = len(json.loads((image_run.run_dir / "split.json").read_text())["test"])
    fixed = np.tile([[0.10, 0.60, 0.30], [0.20, 0.15, 0.65], [0.05, 0.90, 0.05]], (n, 1))[:n].astype(np.float32)
    monkeypatch.setattr(keras.Model, "predict", lambda self, *args, **kwargs: fixed)
    seen = {}
    metrics = pipelines.evaluation.classification_metrics

    def spy(y_true, y_pred, labels):
        seen.update(y_true=np.asarray(y_true), y_pred=np.asarray(y_pred))
        return metrics(y_true, y_pred, labels)

    monkeypatch.setattr(pipelines.evaluation, "classification_metrics", spy)
    result = invoke(cli_runner, ["evaluate", image_run.run_dir, "--out", tmp_path / "r"])
    assert result.exit_code == 0, describe_result(result)
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    np.testing.assert_array_equal(seen["y_pred"], fixed.argmax(axis=1))
    expected = calibration(fixed.max(axis=1), seen["y_pred"] == seen["y_true"])
    assert report["calibration"]["ece"] == pytest.approx(expected["ece"])
    assert [b["count"] for b in report["calibration"]["bins"]] == [b["count"] for b in expected["bins"]]
    for got, want in zip(report["calibration"]["bins"], expected["bins"]):
        assert got["accuracy"] == pytest.approx(want["accuracy"]) and got["confidence"] == pytest.approx(want["confidence"])


def test_a_demo_run_whose_demo_data_changed_is_told_to_train_the_demo_again(cli_runner, image_run, tmp_path):
    # "Pass --data" gave a user no path to the demo data an older convpipe built
    run = tmp_path / "demo-run"
    shutil.copytree(image_run.run_dir, run, ignore=shutil.ignore_patterns("report"))
    document = json.loads((run / "config.json").read_text())
    document["config"]["data"] = None  # trained on the built-in data
    (run / "config.json").write_text(json.dumps(document))
    split = json.loads((run / "split.json").read_text())
    split["test"] = ["an-older-demo-input"]
    (run / "split.json").write_text(json.dumps(split))
    assert_one_line_error(invoke(cli_runner, ["evaluate", run]), "recorded input(s) are gone", "train the demo again")
