"""`explain`: Grad-CAM finds a planted pattern; every modality writes its overlay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.saliency import explain
from tests.conftest import assert_one_line_error, describe_result, invoke, write_png

SIZE = 16
MARK = 4


def marked_image(rng: np.random.Generator, marked: bool, corner: tuple[int, int] | None = None) -> np.ndarray:
    """Dim noise; 'marked' pictures also hold a bright 4x4 X at `corner` (random when None)."""
    image = rng.integers(0, 60, size=(SIZE, SIZE)).astype(np.uint8)
    if marked:
        r, c = corner if corner is not None else rng.integers(0, SIZE - MARK + 1, size=2)
        for i in range(MARK):
            image[r + i, c + i] = image[r + i, c + MARK - 1 - i] = 255
    return image


@pytest.fixture(scope="module")
def marked_run(cli_runner, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("marked")
    rng = np.random.default_rng(0)
    for label, marked in (("marked", True), ("plain", False)):
        for i in range(40):
            write_png(folder / "data" / label / f"{i:02d}.png", marked_image(rng, marked))
    result = invoke(cli_runner, [
        "train", "--modality", "image", "--data", folder / "data", "--out", folder / "run", "--epochs", "10",
        "--filters", "8,8", "--dense", "16", "--head", "global_max", "--seed", "0", "--image-size", "16,16",
        "--learning-rate", "0.01",
    ])
    assert result.exit_code == 0, describe_result(result)
    return folder / "run"


def test_grad_cam_puts_most_saliency_on_the_planted_pattern(marked_run, tmp_path):
    corner = (9, 2)
    probe = write_png(tmp_path / "probe.png", marked_image(np.random.default_rng(7), True, corner))
    explanation = explain(marked_run, str(probe), out=tmp_path / "explained")
    assert explanation.label == "marked" and explanation.method == "grad-cam"
    saliency = explanation.saliency
    assert saliency.shape == (SIZE, SIZE) and saliency.max() == pytest.approx(1.0)
    peak = np.unravel_index(np.argmax(saliency), saliency.shape)
    r, c = corner
    assert r <= peak[0] < r + MARK and c <= peak[1] < c + MARK, peak
    # The pattern plus a one-pixel rim is 36 of 256 pixels (14%) but holds most of the saliency.
    inside = saliency[r - 1 : r + MARK + 1, c - 1 : c + MARK + 1].sum()
    assert inside / saliency.sum() > 0.5
    stored = np.load(tmp_path / "explained" / "saliency.npz")
    assert np.array_equal(stored["saliency"], saliency)


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_explain_writes_the_overlay_for_every_modality(modality, request, cli_runner, tmp_path):
    run = request.getfixturevalue(f"{modality}_run")
    if modality == "text":
        value = "apple apricot with fresh avocado"
    else:
        value = str(sorted(p for p in Path(run.data).rglob("*") if p.suffix in {".png", ".wav"})[0])
    result = invoke(cli_runner, ["explain", run.run_dir, value, "--out", tmp_path / "why"])
    assert result.exit_code == 0, describe_result(result)
    assert (tmp_path / "why" / "saliency.png").read_bytes()[:4] == b"\x89PNG"
    document = json.loads((tmp_path / "why" / "explanation.json").read_text(encoding="utf-8"))
    assert document["method"] == ("occlusion" if modality == "text" else "grad-cam")
    assert document["label"] in result.output
    stored = np.load(tmp_path / "why" / "saliency.npz")
    values = stored["contribution" if modality == "text" else "saliency"]
    assert np.isfinite(values).all()
    if modality == "text":
        assert values.shape == (5,) and len(document["top_positions"]) == 5
    else:  # on the input's grid: for audio (26 time steps x 16 bands) not the transposed one
        assert values.shape == stored["input"].shape[:2]


def test_heatmap_rows_are_all_labelled_up_to_a_hundred(monkeypatch, tmp_path):
    from pipelines import figures

    labelled = {}

    def record(setter, labels, rotation=0, most=figures.MAX_TICKS):
        labelled[setter.__name__] = len(np.unique(np.linspace(0, len(labels) - 1, min(len(labels), most)).round()))

    monkeypatch.setattr(figures, "set_ticks", record)
    figures.heatmap(tmp_path / "map.png", np.zeros((44, 3)), "t", row_labels=[str(i) for i in range(44)],
                    column_labels=["a", "b", "c"])
    assert labelled == {"set_yticks": 44, "set_xticks": 3}  # a 44-character text: every position named


def one_map_model(input_shape, kernel, bias):
    """A hand-set Grad-CAM subject: one 1x1 convolution that copies the input, its ReLU, global
    average pooling and the softmax layer `votes` with the given kernel (1 x classes) and bias."""
    import keras

    inputs = keras.Input(input_shape)
    maps = keras.layers.ReLU(name="relu1")(keras.layers.Conv2D(1, 1, name="conv1")(inputs))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.MaxPooling2D(name="pool1")(maps))
    model = keras.Model(inputs, keras.layers.Dense(len(bias), activation="softmax", name="votes")(pooled))
    model.get_layer("conv1").set_weights([np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)])
    model.get_layer("votes").set_weights([np.asarray(kernel, np.float32), np.asarray(bias, np.float32)])
    return model


def test_grad_cam_of_a_non_square_input_lies_on_its_grid_where_the_evidence_is():
    """Audio inputs are never square: a map resized with height and width swapped would come
    back transposed (or stretched), with its hot spot in the wrong place."""
    from pipelines.saliency import grad_cam

    model = one_map_model((6, 10, 1), kernel=[[-1.0, 1.0]], bias=[0.0, 0.0])
    x = np.zeros((6, 10, 1), np.float32)
    x[1, 7] = 1.0  # the only evidence, so the map is this spot and zero elsewhere
    cam = grad_cam(model, x, 1)
    assert cam.shape == (6, 10)
    np.testing.assert_allclose(cam, x[..., 0], atol=1e-6)


def test_grad_cam_drops_evidence_against_the_class():
    """Grad-CAM's ReLU keeps only what speaks for the class: when the one feature map counts
    against the predicted class (which wins on its bias), the map is zero, not that evidence's
    size."""
    from pipelines.saliency import grad_cam

    model = one_map_model((6, 10, 1), kernel=[[-1.0, 1.0]], bias=[5.0, 0.0])
    x = np.zeros((6, 10, 1), np.float32)
    x[1, 7] = 1.0
    assert int(np.argmax(model.predict(x[None], verbose=0)[0])) == 0
    np.testing.assert_array_equal(grad_cam(model, x, 0), 0.0)


@pytest.mark.parametrize("command", ["explain", "inspect"])
def test_dash_reads_the_one_input_from_standard_input_as_predict_does(command, cli_runner, text_run, image_run, tmp_path):
    import cli

    # `-` was the text "-" for a text run, and "Input not found: -" for an image run
    text = "banana basil bean"
    piped = cli_runner.invoke(cli.app, [command, str(text_run.run_dir), "-", "--out", str(tmp_path / "piped")], input=f"{text}\n")
    given = invoke(cli_runner, [command, text_run.run_dir, text, "--out", tmp_path / "given"])
    assert piped.exit_code == 0 and given.exit_code == 0, describe_result(piped)
    assert piped.stdout.replace(str(tmp_path / "piped"), "OUT") == given.stdout.replace(str(tmp_path / "given"), "OUT")
    image = str(sorted(Path(image_run.data).rglob("*.png"))[0])
    from_stdin = cli_runner.invoke(cli.app, [command, str(image_run.run_dir), "-", "--out", str(tmp_path / "image")], input=f"{image}\n")
    assert from_stdin.exit_code == 0 and from_stdin.stdout.startswith(f"{image}: "), describe_result(from_stdin)
    two = cli_runner.invoke(cli.app, [command, str(text_run.run_dir), "-"], input="apple\nbanana\n")
    assert_one_line_error(two, f"{command} takes one input", "2 lines")
    empty = cli_runner.invoke(cli.app, [command, str(image_run.run_dir), "-"], input="\n")
    assert_one_line_error(empty, "standard input holds no lines")


@pytest.mark.parametrize("command", ["explain", "inspect"])
def test_a_silent_clip_or_a_text_of_unknown_words_is_warned_of_as_predict_does(command, cli_runner, audio_run, text_run, tmp_path, caplog):
    from tests.conftest import write_wav

    silence = write_wav(tmp_path / "silence.wav", np.zeros(4000, dtype=np.float32))
    with caplog.at_level("WARNING"):
        result = invoke(cli_runner, [command, audio_run.run_dir, silence, "--out", tmp_path / "clip"])
        assert result.exit_code == 0, describe_result(result)
        assert "The clip is silent, its loudest sample below -60 dBFS" in caplog.text
        caplog.clear()
        result = invoke(cli_runner, [command, text_run.run_dir, "Привет мир", "--out", tmp_path / "text"])
        assert result.exit_code == 0, describe_result(result)
        assert "The text holds no" in caplog.text and "vocabulary knows" in caplog.text
        caplog.clear()
        result = invoke(cli_runner, [command, text_run.run_dir, "banana basil bean", "--out", tmp_path / "known"])
        assert result.exit_code == 0 and "vocabulary" not in caplog.text, describe_result(result)
