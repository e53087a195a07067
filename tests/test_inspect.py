"""`inspect`: every promised figure for each modality, index.html, and n-grams on planted text."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from pipelines.inspection import inspect
from pipelines.prediction import predict
from tests.conftest import TINY_AUDIO, assert_one_line_error, describe_result, invoke, selected_tests_use, write_audio_folder

PNG = b"\x89PNG\r\n\x1a\n"
FILLER = ["the", "a", "of", "and", "with", "fresh", "some", "more", "other", "very"]
PLANTED = "zebra quartz"


def first_input(run) -> str:
    return str(sorted(p for p in Path(run.data).rglob("*") if p.suffix in {".png", ".wav"})[0])


def assert_complete_page(out: Path, expected_pngs: set[str]) -> str:
    names = {p.name for p in out.iterdir()}
    assert expected_pngs | {"index.html"} <= names, sorted(names)
    for name in expected_pngs:
        assert (out / name).read_bytes()[:8] == PNG, name
    page = (out / "index.html").read_text(encoding="utf-8")
    # Self-contained: every figure is embedded, none is linked.
    assert page.count("src='data:image/png;base64,") == len(expected_pngs)
    assert "src='block" not in page and "src='input" not in page
    return page


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_inspect_writes_every_figure_for_grid_runs(modality, request, cli_runner, tmp_path):
    run = request.getfixturevalue(f"{modality}_run")
    value = first_input(run)
    out = tmp_path / "inside"
    result = invoke(cli_runner, ["inspect", run.run_dir, value, "--out", out, "--channels", "3"])
    assert result.exit_code == 0, describe_result(result)
    expected = {"input.png", "filters.png", "block1_relu.png", "block1_pool.png", "probabilities.png"}
    page = assert_complete_page(out, expected)
    # Network order: input, filters, maps after ReLU, after pooling, votes.
    order = [page.index(f"<code>{name}</code>") for name in
             ("input.png", "filters.png", "block1_relu.png", "block1_pool.png", "probabilities.png")]
    assert order == sorted(order)
    # The votes agree with `predict` on the same input.
    top = predict(run.run_dir, [value], top_k=1)[0]["top"][0]
    assert f"{top['label']} {top['probability']:.3f}" in result.output


def test_audio_feature_maps_are_drawn_and_titled_time_along_x(audio_run, tmp_path, monkeypatch):
    import pipelines.figures

    drawn = []
    original = pipelines.figures.map_grid
    monkeypatch.setattr(pipelines.figures, "map_grid", lambda path, maps, title: drawn.append((maps.shape, title)) or original(path, maps, title))
    inspect(audio_run.run_dir, first_input(audio_run), out=tmp_path / "inside", channels=2)
    (shape, title), *_ = drawn
    frames, bands = shape[1], shape[0]  # drawn frequency up the rows, time along the columns
    # The title said "bands x frames" (the drawn array's shape) for a time x frequency map.
    assert f": {frames}x{bands} (time x frequency), " in title and frames != bands


def test_inspect_text_writes_every_figure_and_escapes_the_page(text_run, tmp_path):
    text = "apple <script>alert(1)</script> & banana grape"
    inspection = inspect(text_run.run_dir, text, out=tmp_path / "inside", channels=2)
    expected = {"input.png", "probabilities.png"} | {
        f"window{w}_{kind}.png" for w in (2, 3) for kind in ("filters", "relu", "pool")
    }
    page = assert_complete_page(tmp_path / "inside", expected)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert sum(inspection.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    rows = list(csv.DictReader((tmp_path / "inside" / "ngrams.csv").open(encoding="utf-8")))
    assert len(rows) == 4  # 2 filters shown x widths 2 and 3
    words = text.lower().split()
    for row in (row for row in rows if row["position"]):  # filters silent on this text name no window
        window = row["input n-gram"].split(" ")
        assert len(window) == int(row["window"])
        assert all(w in re.findall(r"\w+|[^\w\s]", text.lower()) for w in window), row
    assert set(words) & set(" ".join(r["input n-gram"] for r in rows).split())


def test_a_filter_silent_on_the_input_names_no_window():
    from pipelines.text_inspection import ngram_rows

    relu = np.array([[0.0, 0.5], [0.0, 2.0]])  # filter 0 never fires; argmax would say position 0
    kernel = np.ones((2, 4, 2))
    rows = ngram_rows(relu, ["a b", "b c"], kernel, np.zeros(2), ["x", "y"], width=2, joiner=" ")
    assert (rows[0]["input n-gram"], rows[0]["position"], rows[0]["activation"]) == ("", None, 0.0)
    assert (rows[1]["input n-gram"], rows[1]["position"]) == ("b c", 1)


@pytest.mark.parametrize("text_kernel", ["factorized", "full"])
def test_the_effective_kernel_of_a_one_position_window_spans_the_vocabulary(text_kernel):
    # A Conv1D of width 1 has two weights, as many as a FullHeightConv of width 1 (one table and
    # a bias): telling the two apart by that count read the Conv1D's kernel as a table, and
    # `inspect` of a run trained with --window-sizes 1 ended in an IndexError traceback.
    from models import ModelSpec, build_text_model
    from pipelines.text_inspection import effective_kernel, text_branches

    spec = ModelSpec(filters=(4,), window_sizes=(1, 2), head="global_max", dense=(), dropout=0.0,
                     text_kernel=text_kernel, embedding_dim=3)
    model = build_text_model(positions=6, num_ids=10, num_classes=2, spec=spec)
    ids = np.array([[2, 5, 7, 0, 0, 0]])
    for branch in text_branches(model):
        kernel, bias = effective_kernel(model, branch, 4)
        assert kernel.shape == (branch.width, 10, 4)
        # The full-height window on the one-hot rows: summed kernel rows plus the bias.
        windows = len(ids[0]) - branch.width + 1
        expected = np.stack([
            sum(kernel[k, ids[0, p + k]] * (ids[0, p + k] != 0) for k in range(branch.width)) + bias
            for p in range(windows)
        ])
        probe = keras_output(model, branch.conv.name, ids)
        np.testing.assert_allclose(probe, expected, rtol=1e-5, atol=1e-6)


def keras_output(model, layer_name: str, ids: np.ndarray) -> np.ndarray:
    import keras

    return np.asarray(keras.Model(model.input, model.get_layer(layer_name).output)(ids))[0]


def write_planted_texts(path: Path, per_class: int = 40, seed: int = 0) -> Path:
    """Class 'planted' hides the bigram 'zebra quartz' among filler words; 'plain' has filler only."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for label in ("planted", "plain"):
            for _ in range(per_class):
                words = list(rng.choice(FILLER, size=8))
                if label == "planted":
                    position = int(rng.integers(0, 7))
                    words[position:position] = PLANTED.split()
                writer.writerow([" ".join(words), label])
    return path


@pytest.fixture(scope="module")
def planted_text_run(cli_runner, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("planted-text")
    data = write_planted_texts(folder / "texts.csv")
    run_dir = folder / "run"
    result = invoke(cli_runner, [
        "train", "--modality", "text", "--data", data, "--out", run_dir, "--epochs", "10", "--filters", "16",
        "--dense", "", "--seed", "0", "--level", "word", "--positions", "12", "--embedding-dim", "8",
        "--window-sizes", "2", "--learning-rate", "0.01",
    ])
    assert result.exit_code == 0, describe_result(result)
    return run_dir


def test_the_ngram_table_names_the_planted_bigram(planted_text_run, cli_runner, tmp_path):
    out = tmp_path / "inside"
    text = "of the zebra quartz with some fresh more"
    result = invoke(cli_runner, ["inspect", planted_text_run, text, "--out", out, "--channels", "16"])
    assert result.exit_code == 0, describe_result(result)
    rows = list(csv.DictReader((out / "ngrams.csv").open(encoding="utf-8")))
    strongest = max(rows, key=lambda row: float(row["activation"]))
    assert strongest["input n-gram"] == PLANTED
    # Searched over the training vocabulary, some filter's favourite bigram is the planted one.
    assert PLANTED in {row["vocabulary n-gram"] for row in rows}
    assert PLANTED in (out / "index.html").read_text(encoding="utf-8")


def test_explain_text_gives_the_planted_words_the_largest_contributions(planted_text_run):
    from pipelines.saliency import explain

    text = "of the zebra quartz with some fresh more"
    explanation = explain(planted_text_run, text, out=planted_text_run.parent / "explained")
    assert explanation.label == "planted"
    assert explanation.saliency.shape == (8,)
    assert {token for _, token, _ in explanation.top_positions[:1]} <= {"zebra", "quartz"}
    planted = explanation.saliency[[2, 3]].sum()
    assert planted > 0 and planted > 3 * np.abs(np.delete(explanation.saliency, [2, 3])).max()


def test_inspect_rejects_a_missing_input_and_bad_channels(image_run, cli_runner, tmp_path):
    missing = invoke(cli_runner, ["inspect", image_run.run_dir, tmp_path / "nope.png"])
    assert_one_line_error(missing, "Input not found")
    channels = invoke(cli_runner, ["inspect", image_run.run_dir, first_input(image_run), "--channels", "0"])
    assert_one_line_error(channels, "--channels")
    not_a_run = invoke(cli_runner, ["explain", tmp_path, first_input(image_run)])
    assert_one_line_error(not_a_run, "is not a run directory")


def test_inputs_with_the_same_file_name_get_their_own_folders(tmp_path):
    from pipelines.inspection import output_name

    first, second = tmp_path / "a" / "16.webp", tmp_path / "b" / "16.webp"
    for path in (first, second):
        path.parent.mkdir()
        path.write_bytes(b"x")
    assert output_name(str(first)) != output_name(str(second))
    assert output_name(str(first)) == output_name(str(first.parent / ".." / "a" / "16.webp"))
    assert output_name(str(first)).startswith("16-")
    assert output_name("Return the loop.").startswith("text-")


def mixed_precision_train_and_inspect(audio_folder: Path, folder: Path, env: dict[str, str]):
    """`train --precision mixed` then `inspect` of its run: two fresh `cli.py` processes."""

    def run(*args: object) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "cli.py", *map(str, args)], cwd=Path(__file__).resolve().parents[1],
                              capture_output=True, text=True, timeout=240, env=env)

    run_dir = folder / "run"
    trained = run("train", "--modality", "audio", "--data", audio_folder, "--out", run_dir, *TINY_AUDIO, "--epochs", "1",
                  "--precision", "mixed")
    if trained.returncode != 0:
        return trained, None
    clip = next(Path(audio_folder).rglob("*.wav"))
    return trained, run("inspect", run_dir, clip, "--out", folder / "inspect")


@pytest.fixture(scope="module")
def mixed_precision_processes(tmp_path_factory):
    """Started as the module starts (see below) on a thread of its own: the two processes mostly
    start TensorFlow, and beside the in-process tests they use the core those leave idle."""
    folder = tmp_path_factory.mktemp("mixed-precision")
    audio_folder = write_audio_folder(folder / "audio")  # what the audio_folder fixture writes
    with ThreadPoolExecutor(max_workers=1) as executor:
        yield folder, executor.submit(mixed_precision_train_and_inspect, audio_folder, folder, dict(os.environ))


@pytest.fixture(scope="module", autouse=True)
def start_the_mixed_precision_processes_early(request):
    if selected_tests_use(request, "mixed_precision_processes"):
        request.getfixturevalue("mixed_precision_processes")


def test_inspect_a_mixed_precision_run(mixed_precision_processes):
    """Under mixed precision the layers give bfloat16 on CPU, which matplotlib cannot plot.
    Fresh processes, as a user runs them: in this one the failure did not show, and training
    here would leave Keras' global policy at mixed precision for the tests that follow."""
    folder, processes = mixed_precision_processes
    trained, result = processes.result()
    if trained.returncode == 1 and "bfloat16" in trained.stderr:
        pytest.skip("this CPU has no bfloat16 instructions, so --precision mixed is refused")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert result.returncode == 0, result.stderr[-3000:]
    assert (folder / "inspect" / "index.html").exists()
