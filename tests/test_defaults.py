"""Preprocessing choices made from the training data, each recorded with its reason."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipelines.datasets import Dataset
from pipelines.defaults import CHAR_LEVEL_BELOW, build_preprocessor
from pipelines.modality import Modality


def dataset(inputs) -> Dataset:
    return Dataset(list(inputs), ["a"] * len(inputs), [str(i) for i in range(len(inputs))])


def test_short_texts_are_read_as_characters_with_n_grams():
    pre, choices = build_preprocessor(Modality.text, {}, dataset(["short text here"] * 10))
    assert pre.level == "char" and list(pre.ngram_sizes) == [2, 3, 4, 5]
    assert "median training text is 15 characters" in choices["level"]
    assert "ngram_sizes" in choices


def test_long_texts_are_read_as_words_and_explicit_settings_win():
    long_text = "word " * (CHAR_LEVEL_BELOW // 4)
    pre, choices = build_preprocessor(Modality.text, {}, dataset([long_text] * 4))
    assert pre.level == "word" and not pre.ngram_sizes
    # An explicit char level gets the n-grams the chosen one gets (it read bare characters)...
    pre, choices = build_preprocessor(Modality.text, {"level": "char"}, dataset([long_text] * 4))
    assert pre.level == "char" and list(pre.ngram_sizes) == [2, 3, 4, 5] and set(choices) == {"ngram_sizes", "hash_buckets"}
    # ...unless they are given too.
    pre, choices = build_preprocessor(Modality.text, {"level": "char", "ngram_sizes": []}, dataset([long_text] * 4))
    assert pre.level == "char" and not pre.ngram_sizes and choices == {}


def test_n_gram_settings_make_the_level_characters():
    long_text = "word " * (CHAR_LEVEL_BELOW // 4)  # words, left to the data
    for given in ({"hash_buckets": 1000}, {"ngram_sizes": [2, 3]}):
        pre, choices = build_preprocessor(Modality.text, given, dataset([long_text] * 4))
        assert pre.level == "char" and pre.ngram_sizes and choices["level"] == "char: character n-gram settings were given"
    pre, _ = build_preprocessor(Modality.text, {"ngram_sizes": []}, dataset([long_text] * 4))
    assert pre.level == "word"


def test_n_gram_sizes_given_alone_keep_the_default_buckets():
    pre, choices = build_preprocessor(Modality.text, {"ngram_sizes": [2, 3]}, dataset(["short text here"] * 10))
    assert pre.hash_buckets == 32768 and "hash_buckets" in choices  # not the library's 16384
    pre, choices = build_preprocessor(Modality.text, {"level": "char", "ngram_sizes": []}, dataset(["short text"] * 10))
    assert not pre.ngram_sizes and "hash_buckets" not in choices


def test_long_texts_without_spaces_are_read_as_characters():
    chinese = "今天天气很好我们去公园散步吧。" * 80  # 1,200 characters, no space: one "word" per clause
    pre, choices = build_preprocessor(Modality.text, {}, dataset([chinese] * 4))
    assert pre.level == "char" and list(pre.ngram_sizes) == [2, 3, 4, 5]
    assert choices["level"].startswith("char: 1200 characters per space-separated word")


def test_image_size_and_colour_come_from_the_training_images(tmp_path):
    paths = []
    for i, size in enumerate([(40, 20), (44, 24), (48, 28)]):  # (width, height)
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(path)
        paths.append(path)
    pre, choices = build_preprocessor(Modality.image, {}, dataset(paths))
    assert list(pre.image_size) == [24, 44] and pre.color_mode == "rgb"
    assert set(choices) == {"image_size", "color_mode"}
    pre, choices = build_preprocessor(Modality.image, {"image_size": [8, 8], "color_mode": "grayscale"}, dataset(paths))
    assert choices == {} and pre.output_shape == (8, 8, 1)


def test_given_size_and_colour_leave_only_the_bit_depth_to_look_for(tmp_path, monkeypatch, caplog):
    """With --image-size and --color-mode given, the sample is opened for the 16-bit check alone:
    no EXIF orientation, which for a PNG reads the whole file (60 ms for 12 megapixels)."""
    import logging

    import preprocess.image

    paths = []
    for i, value in enumerate((300, 4000)):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((6, 6), value, dtype=np.uint16)).save(paths[-1])
    train = Dataset(paths, ["a", "b"], ["0", "1"])

    def no_orientation(image):
        raise AssertionError("oriented an image whose size was not wanted")

    monkeypatch.setattr(preprocess.image, "_upright_header", no_orientation)
    with caplog.at_level(logging.WARNING):
        preprocessor, choices = build_preprocessor(Modality.image, {"image_size": [8, 8], "color_mode": "grayscale"}, train)
    assert choices == {} and preprocessor.image_size == [8, 8]
    assert "fit in 12 bits (0-4095)" in caplog.text and "pass --bit-depth 12" in caplog.text


def test_a_run_interrupted_under_the_older_rules_is_fitted_by_them_again():
    # CHOICES_VERSION 1: the level from the data, the library's buckets for given sizes
    long_text = "word " * (CHAR_LEVEL_BELOW // 4)
    pre, _ = build_preprocessor(Modality.text, {"hash_buckets": 1000}, dataset([long_text] * 4), choices_version=1)
    assert pre.level == "word"
    pre, _ = build_preprocessor(Modality.text, {"ngram_sizes": [2, 3]}, dataset(["short text here"] * 10), choices_version=1)
    assert pre.level == "char" and pre.hash_buckets == 16384


def test_the_image_probe_sees_the_last_classes_and_older_runs_resume_with_their_sample():
    # Inputs come sorted by class. Of 399 images the probe read the first 200 (every 1st, capped):
    # a last class in colour went unseen, and the run read every image as grayscale.
    images = [np.zeros((8, 8), np.uint8)] * 200 + [np.zeros((8, 8, 3), np.uint8)] * 199
    pre, choices = build_preprocessor(Modality.image, {}, dataset(images))
    assert pre.color_mode == "rgb" and choices["color_mode"] == "rgb: some training images have colour"
    pre, _ = build_preprocessor(Modality.image, {}, dataset(images), choices_version=2)  # as it started
    assert pre.color_mode == "grayscale"


def command_flags(name: str) -> set[str]:
    """Every flag the CLI command `name` takes."""
    import typer.main

    import cli

    command = typer.main.get_command(cli.app).commands[name]
    return {flag for param in command.params for flag in (*param.opts, *getattr(param, "secondary_opts", []))}


def named_flags(text: str) -> set[str]:
    import re

    return set(re.findall(r"--[a-z][a-z-]*", text))


def test_the_choice_warnings_of_preprocess_and_check_locality_name_only_flags_they_can_follow(tmp_path, caplog):
    """preprocess and check-locality read the defaults and take no --duration or --bit-depth:
    their warnings send the user to train (and to `preprocess --run`), not to a flag that the
    command refuses as unknown."""
    import logging

    import soundfile

    from pipelines.export import export_arrays
    from pipelines.locality import featurize

    clips = tmp_path / "clips"
    for label in ("a", "b"):
        (clips / label).mkdir(parents=True)
        for i in range(2):
            soundfile.write(clips / label / f"{i}.wav", np.zeros(3 * 8000, np.float32), 8000)
    with caplog.at_level(logging.WARNING):
        export_arrays(Modality.audio, str(clips), tmp_path / "x.npz", workers=1)
    assert "only its first 1.0 s is read" in caplog.text
    assert "train with --duration 3, then `preprocess --run RUN`" in caplog.text
    assert named_flags(caplog.text) - {"--duration"} <= command_flags("preprocess")

    paths = []
    for i, value in enumerate((300, 4000)):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((6, 6), value, dtype=np.uint16)).save(paths[-1])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        featurize(Modality.image, Dataset(paths, ["a", "b"], ["0", "1"]), Dataset(paths, ["a", "b"], ["0", "1"]))
    assert "fit in 12 bits" in caplog.text and "train with --bit-depth 12 to use them all" in caplog.text
    assert "pass --bit-depth" not in caplog.text
    assert named_flags(caplog.text) - {"--bit-depth"} <= command_flags("check-locality")
    assert {"--duration", "--bit-depth"} <= command_flags("train")
