"""Hostile inputs: empty, mislabelled, truncated, exotic-format and non-finite files, awkward
encodings and CSVs, and hostile paths (missing, wrong kind, unreadable, symlink loops, non-ASCII
and non-UTF-8 names, hidden and unsupported files).

Every input is generated in `tmp_path`. Each test asserts the exact outcome: decoded correctly
(shape and values), skipped with the right reason, or one CLI error line with exit code 1.
Preprocessors are used directly where that is enough; the CLI trains only where the pipeline's
behaviour is the point (one shared training on a hostile folder, one for non-UTF-8 file names).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import os
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

import preprocess.base
from pipelines.datasets import Dataset, read_class_folders, read_manifest, split_dataset
from pipelines.featurize import Skipped, read_inputs
from pipelines.modality import Modality
from preprocess import AudioPreprocessor, ConvpipeError, ImagePreprocessor, InputError, InputWarning, TextPreprocessor
from tests.conftest import (
    assert_one_line_error,
    CLASSES,
    SAMPLE_RATE,
    TINY_IMAGE,
    TINY_TEXT,
    class_image,
    describe_result,
    invoke,
    tone,
    write_image_folder,
    write_png,
    write_wav,
)

# librosa's fallback for files libsndfile rejects announces itself; the InputError is the outcome.
ignore_fallback_warnings = pytest.mark.filterwarnings(
    "ignore:PySoundFile failed:UserWarning", "ignore::FutureWarning"
)


def read_error(preprocessor, x) -> InputError:
    with pytest.raises(InputError) as info:
        preprocessor.read(x)
    return info.value


def noisy_rgb(seed: int = 0, size=(64, 64)) -> np.ndarray:
    """Incompressible pixels, so a cut anywhere in the file lands inside the pixel data."""
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def encoded(array: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, image_format)
    return buffer.getvalue()


def call_with_timeout(function, seconds: float):
    """`function()`'s result; fails the test instead of hanging if it does not return in time."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:  # re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{function} did not return within {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# ---- files that are not what their name says -----------------------------------------------


@pytest.mark.parametrize(
    "suffix, preprocessor",
    [(".png", ImagePreprocessor()), (".wav", AudioPreprocessor()), (".txt", TextPreprocessor())],
    ids=["png", "wav", "txt"],
)
def test_zero_byte_file_is_an_empty_file_input_error(tmp_path, suffix, preprocessor):
    path = tmp_path / f"nothing{suffix}"
    path.write_bytes(b"")
    error = read_error(preprocessor, path)
    assert (error.source, error.reason) == (str(path), "empty file")
    assert str(error) == f"{path}: empty file"


@pytest.mark.parametrize(
    "suffix, preprocessor, reason",
    [
        (".png", ImagePreprocessor(), "not a readable image (unknown or corrupt format)"),
        (".wav", AudioPreprocessor(), "not a readable audio file ("),
    ],
    ids=["png", "wav"],
)
@ignore_fallback_warnings
def test_text_file_renamed_to_a_media_extension_is_not_readable(tmp_path, suffix, preprocessor, reason):
    path = tmp_path / f"notes{suffix}"
    path.write_text("Meeting notes, not media.\n" * 20, encoding="utf-8")
    error = read_error(preprocessor, path)
    assert error.source == str(path)
    assert error.reason.startswith(reason), error.reason


@pytest.mark.parametrize("image_format, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
@pytest.mark.parametrize("kept", [0.5, 0.9])
def test_truncated_image_is_a_corrupt_or_truncated_input_error(tmp_path, image_format, suffix, kept):
    data = encoded(noisy_rgb(), image_format)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: int(len(data) * kept)])
    # The intact file decodes, so the error below is caused by the cut alone.
    assert ImagePreprocessor(image_size=(64, 64), color_mode="rgb").read(data).shape == (64, 64, 3)

    error = read_error(ImagePreprocessor(image_size=(64, 64), color_mode="rgb"), path)
    assert error.source == str(path)
    assert error.reason.startswith("corrupt or truncated image ("), error.reason


# ---- audio ---------------------------------------------------------------------------------


def test_a_10_ms_clip_is_padded_with_silence_to_the_output_shape(tmp_path):
    clip = tone(1000.0, duration=0.01)  # 160 samples = one hop
    path = write_wav(tmp_path / "blip.wav", clip)
    pre = AudioPreprocessor(duration=0.25, num_mels=32, normalization="none")  # top_db=80

    decibels = pre.read(path)
    assert decibels.shape == pre.output_shape[:2] == (26, 32)
    assert decibels[:2].max() == 0.0  # the clip itself: the loudest cell is the reference
    # Frames whose 512-sample window starts past the clip's 160 samples see only the padding,
    # which sits exactly at the floor `top_db` below the peak.
    first_silent = int(np.ceil((len(clip) + pre.n_fft // 2) / pre.hop_length))
    assert first_silent == 3
    np.testing.assert_array_equal(decibels[first_silent:], np.full((26 - 3, 32), -80.0, np.float32))

    fitted = AudioPreprocessor(duration=0.25, num_mels=32).fit([path])
    out = fitted.transform_one(path)
    assert out.shape == fitted.output_shape == (26, 32, 1)
    assert out.dtype == np.float32 and np.all(np.isfinite(out))


def _wav(subtype):
    def write(path: Path, samples: np.ndarray, rate: int) -> Path:
        return write_wav(path.with_suffix(".wav"), samples, rate, subtype=subtype)

    return write


def _soundfile(suffix: str, **options):
    def write(path: Path, samples: np.ndarray, rate: int) -> Path:
        path = path.with_suffix(suffix)
        soundfile.write(path, samples, rate, **options)
        return path

    return write


# (writer, sample rate, channels, top_db of the comparison).
# top_db=40 compares everything within 40 dB of the peak: 8-bit PCM's quantization noise lies
# ~45 dB below this tone. Vorbis is lossy (~28 dB signal-to-noise on a pure tone at default
# quality), so it is compared on the cells within 20 dB of the peak.
AUDIO_FORMATS = {
    "pcm_u8": (_wav("PCM_U8"), SAMPLE_RATE, 1, 40.0),
    "pcm_24": (_wav("PCM_24"), SAMPLE_RATE, 1, 40.0),
    "stereo_44k": (_wav("PCM_16"), 44100, 2, 40.0),
    "flac": (_soundfile(".flac", format="FLAC"), SAMPLE_RATE, 1, 40.0),
    "ogg_vorbis": (_soundfile(".ogg", format="OGG", subtype="VORBIS"), SAMPLE_RATE, 1, 20.0),
}


@pytest.mark.parametrize("name", list(AUDIO_FORMATS))
def test_audio_formats_decode_like_the_same_tone_given_as_an_array(tmp_path, name):
    writer, rate, channels, top_db = AUDIO_FORMATS[name]
    if name == "ogg_vorbis" and "VORBIS" not in soundfile.available_subtypes("OGG"):
        pytest.skip(f"libsndfile {soundfile.__libsndfile_version__} cannot write OGG Vorbis")
    samples = tone(1000.0, sample_rate=rate)
    if channels == 2:
        samples = np.stack([samples, samples], axis=1)
    path = writer(tmp_path / f"tone_{name}", samples, rate)
    pre = AudioPreprocessor(duration=0.25, normalization="none", top_db=top_db)

    decoded = pre.read(path)
    expected = pre.read((tone(1000.0), SAMPLE_RATE))
    assert decoded.shape == expected.shape == pre.output_shape[:2]
    assert decoded.dtype == np.float32 and np.all(np.isfinite(decoded))
    assert decoded.mean(axis=0).argmax() == expected.mean(axis=0).argmax()  # same loudest band
    np.testing.assert_allclose(decoded, expected, atol=1.5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_float_wav_with_non_finite_samples_is_refused(tmp_path, bad):
    samples = tone(500.0)
    samples[1000] = bad
    path = write_wav(tmp_path / "bad.wav", samples, subtype="FLOAT")
    assert not np.isfinite(soundfile.read(path)[0][1000])  # the file really holds it

    error = read_error(AudioPreprocessor(), path)
    assert (error.source, error.reason) == (str(path), "audio contains NaN or infinite samples")


@pytest.mark.parametrize("garbage", ["zeros", "random"])
@ignore_fallback_warnings
def test_wav_with_a_garbled_header_is_not_readable(tmp_path, garbage):
    path = write_wav(tmp_path / "garbled.wav", tone(500.0))
    data = bytearray(path.read_bytes())
    header = bytes(44) if garbage == "zeros" else np.random.default_rng(0).bytes(44)
    data[:44] = header
    path.write_bytes(bytes(data))

    error = read_error(AudioPreprocessor(), path)
    assert error.source == str(path)
    assert error.reason.startswith("not a readable audio file ("), error.reason


# ---- text and CSV --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*not valid UTF-8")
def test_non_utf8_text_file_decodes_as_latin1(tmp_path):
    path = tmp_path / "legacy.txt"
    path.write_bytes("Grüße, café © naïve ÿ".encode("latin-1"))
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")

    assert TextPreprocessor().read_text(path) == "Grüße, café © naïve ÿ"
    assert TextPreprocessor(level="word").read(path) == ["grüße", ",", "café", "©", "naïve", "ÿ"]
    assert TextPreprocessor(level="char", lowercase=False).read(path)[:5] == ["G", "r", "ü", "ß", "e"]


def test_whitespace_only_and_binary_training_texts_are_skipped_and_recorded(tmp_path):
    from tests.conftest import write_text_folder

    data = write_text_folder(tmp_path / "texts", per_class=2)
    (data / "alpha" / "blank.txt").write_text("  \n\n\t ", encoding="utf-8")
    (data / "beta" / "photo.txt").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
    dataset, _ = read_class_folders(data, Modality.text)
    skipped = Skipped()
    _, kept = read_inputs(TextPreprocessor(), dataset, "train", skipped, strict=False)
    assert len(kept) == 6
    assert {(e["input"], e["reason"].split(" (")[0]) for e in skipped.entries} == {
        ("alpha/blank.txt", "empty file"), ("beta/photo.txt", "not a text file"),
    }


def test_a_1_mb_text_is_cut_to_positions_quickly(tmp_path):
    path = tmp_path / "huge.txt"
    path.write_bytes(b"apple banana cherry " * 52429)  # 1,048,580 bytes, ~157k words
    pre = TextPreprocessor(level="word", positions=16).fit(["apple banana", "banana cherry"])

    started = time.perf_counter()
    tokens = pre.read(path)
    ids = pre.transform_one(path)
    seconds = time.perf_counter() - started

    assert len(tokens) == 16  # tokenizing stops at `positions`, it does not list 157k words
    assert tokens[:4] == ["apple", "banana", "cherry", "apple"]
    banana, apple, cherry = (pre.vocabulary_.index(w) + 2 for w in ("banana", "apple", "cherry"))
    assert ids.shape == (16,) and ids.dtype == np.int32
    assert ids.tolist() == ([apple, banana, cherry] * 6)[:16]
    assert seconds < 2.0, f"reading a 1 MB text took {seconds:.2f} s"


def test_csv_with_a_non_utf8_row_loads_with_that_row_decoded(tmp_path):
    path = tmp_path / "texts.csv"
    path.write_bytes(
        b"text,label\n"
        b"plain ascii text,alpha\n"
        + b'"' + "naïve façade, déjà vu".encode("latin-1") + b'",beta\n'
        + b"more ascii,beta\n"
    )
    data, ignored = read_manifest(path, Modality.text)
    assert data.inputs == ["plain ascii text", "naïve façade, déjà vu", "more ascii"]
    assert data.labels == ["alpha", "beta", "beta"]
    assert ignored == []


def test_csv_with_one_latin1_row_keeps_its_utf8_rows_intact(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        "text,label\ncafé au lait,alpha\nüber cool,alpha\n".encode("utf-8")
        + "naïve row,beta\n".encode("latin-1")
    )
    data, _ = read_manifest(path, Modality.text)
    assert data.inputs == ["café au lait", "über cool", "naïve row"]


def test_quoted_commas_quotes_and_newlines_in_csv_fields_are_preserved(tmp_path):
    texts = [
        'apples, pears, and "plums"',
        "first line\nsecond line, with a comma",
        "windows line\r\nends inside a field",
        'only a "quote',
    ]
    path = tmp_path / "texts.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        for i, text in enumerate(texts):
            writer.writerow([f"id,{i}", text, "alpha" if i % 2 else "beta"])

    data, ignored = read_manifest(path, Modality.text)
    assert data.inputs == texts
    assert data.labels == ["beta", "alpha", "beta", "alpha"]
    assert ignored == []


def test_csv_without_a_label_column_names_the_columns_found(tmp_path):
    path = tmp_path / "texts.csv"
    path.write_text("id,text,category\n1,hello there,greeting\n", encoding="utf-8")
    with pytest.raises(ConvpipeError) as info:
        read_manifest(path, Modality.text)
    message = str(info.value)
    assert not isinstance(info.value, InputError)
    assert f"{path} is missing column(s) label; found: id, text, category." in message
    assert "needs a header 'text,label'" in message


def test_a_label_with_a_single_sample_stays_in_train_with_a_warning(caplog):
    labels = ["common"] * 8 + ["other"] * 8 + ["lonely"]
    data = Dataset([f"text {i}" for i in range(17)], labels, [f"row {i}" for i in range(17)])
    with caplog.at_level(logging.WARNING, logger="pipelines.datasets"):
        parts = split_dataset(data, val_split=0.25, test_split=0.25, seed=0)

    assert parts["train"].ids.count("row 16") == 1
    assert "lonely" not in parts["validation"].labels + parts["test"].labels
    all_ids = parts["train"].ids + parts["validation"].ids + parts["test"].ids
    assert sorted(all_ids) == sorted(data.ids)  # disjoint and complete
    for label in ("common", "other"):
        assert parts["validation"].labels.count(label) == 2 and parts["test"].labels.count(label) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["1 class(es) too small to hold any input out for the test split (inputs in brackets): lonely (1)."]


def test_many_small_classes_give_one_warning_line_and_case_twins_are_named(caplog):
    from pipelines.training import warn_of_near_duplicate_labels

    labels = [f"c{i:03d}" for i in range(250) for _ in range(2)]  # 250 classes of 2 inputs each
    data = Dataset([f"text {i}" for i in range(500)], labels, [f"row {i}" for i in range(500)])
    with caplog.at_level(logging.WARNING):
        split_dataset(data, val_split=0.1, test_split=0.1, seed=0)
        warn_of_near_duplicate_labels(["01", "1", "Cooking", "None", "Sports", "cooking", "nan", "sports", "tennis"], manifest=True)
        warn_of_near_duplicate_labels(["defect", "none"])  # class folders: "none" is a class like any other
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert warnings[0].startswith("250 class(es) too small") and warnings[0].endswith("c009 (2) and 240 more.")
    assert warnings[1] == (
        "Labels that differ only in case, spacing or leading zeros are separate classes: 01 / 1; Cooking / cooking; Sports / sports."
    )
    assert warnings[2].startswith("Label(s) None, nan read like a spreadsheet's missing value, yet are classes here")


def test_a_manifest_with_only_one_class_fails_with_one_line(cli_runner, tmp_path):
    path = tmp_path / "texts.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([f"sample text number {i}", "only"] for i in range(10))
    result = invoke(
        cli_runner, ["train", "--modality", "text", "--data", path, "--out", tmp_path / "run", *TINY_TEXT]
    )
    assert_one_line_error(result, "Need at least 2 classes", f"{path} has 1 (only)")
    assert not (tmp_path / "run").exists()


# ---- paths ---------------------------------------------------------------------------------


def test_a_missing_data_path_fails_with_one_line(cli_runner, tmp_path):
    missing = tmp_path / "no such folder"
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", missing, "--out", tmp_path / "run"])
    assert_one_line_error(result, f"Data path not found: {missing}")


def test_data_pointing_at_an_image_file_fails_with_one_line(cli_runner, tmp_path):
    image = write_png(tmp_path / "picture.png", class_image(0, np.random.default_rng(0)))
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", image, "--out", tmp_path / "run"])
    assert_one_line_error(result, f"--data {image} is a file; expected a folder with one subfolder per class")


def _dataset_and_skips(root: Path, preprocessor) -> tuple[Dataset, list, Skipped]:
    data, ignored = read_class_folders(root, Modality.image)
    skipped = Skipped()
    read_inputs(preprocessor, data, "train", skipped, strict=False)
    return data, ignored, skipped


def test_an_unreadable_file_is_skipped_as_permission_denied(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=2)
    locked = root / "beta" / "locked.png"
    write_png(locked, class_image(1, np.random.default_rng(0)))
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as a user (e.g. root) who can read a chmod 000 file")
        data, _, skipped = _dataset_and_skips(root, ImagePreprocessor(image_size=(8, 8)))
    finally:
        locked.chmod(0o644)
    assert "beta/locked.png" in data.ids
    assert skipped.entries == [{"input": "beta/locked.png", "reason": "permission denied", "split": "train"}]


def test_a_permission_error_on_open_is_skipped_as_permission_denied(tmp_path, monkeypatch):
    """The same outcome as above without relying on file modes, so it also runs as root."""
    root = write_image_folder(tmp_path / "images", per_class=2)
    locked = write_png(root / "beta" / "locked.png", class_image(1, np.random.default_rng(0)))

    def guarded_open(file, *args, **kwargs):
        if Path(file) == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return open(file, *args, **kwargs)

    monkeypatch.setattr(preprocess.base, "open", guarded_open, raising=False)
    pre = ImagePreprocessor(image_size=(8, 8))
    error = read_error(pre, locked)
    assert (error.source, error.reason) == (str(locked), "permission denied")
    _, _, skipped = _dataset_and_skips(root, pre)
    assert skipped.entries == [{"input": "beta/locked.png", "reason": "permission denied", "split": "train"}]
    assert skipped.total == 7


def test_symlink_loops_in_a_class_folder_end_the_scan_and_are_not_read(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=2)
    os.symlink("loop.png", root / "alpha" / "loop.png")  # a file link pointing to itself
    os.symlink("self", root / "beta" / "self")  # the same, without an extension
    os.symlink("..", root / "alpha" / "up")  # a folder link to the class folder's parent
    (root / "gamma" / "deeper").mkdir()
    os.symlink("../..", root / "gamma" / "deeper" / "root")  # and one to the data root

    data, ignored = call_with_timeout(lambda: read_class_folders(root, Modality.image), seconds=10)

    real = [f"{label}/{label}_{i:02d}.png" for label in CLASSES for i in range(2)]
    assert sorted(data.ids) == sorted([*real, "alpha/loop.png"])  # nothing read through up/ or root/
    assert sorted(ignored) == [
        ("alpha/up", "a linked folder (not followed)"),
        ("beta/self", "unsupported file type (none)"),
        ("gamma/deeper/root", "a linked folder (not followed)"),
    ]
    skipped = Skipped()
    _, kept = read_inputs(ImagePreprocessor(image_size=(8, 8)), data, "train", skipped, strict=False)
    assert skipped.entries == [
        {"input": "alpha/loop.png", "reason": f"cannot be read ({os.strerror(errno.ELOOP)})", "split": "train"}
    ]
    assert sorted(data.ids[i] for i in kept) == sorted(real)


def test_a_class_folder_symlink_to_the_data_root_is_not_a_class(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=2)
    os.symlink(".", root / "mirror")

    data, _ = call_with_timeout(lambda: read_class_folders(root, Modality.image), seconds=10)

    assert data.class_counts() == {label: 2 for label in CLASSES}


def test_a_class_folder_symlink_to_a_folder_above_the_data_is_not_a_class(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=2)
    os.symlink("..", root / "up")  # holds images/ itself: every input again under the label "up"

    data, ignored = call_with_timeout(lambda: read_class_folders(root, Modality.image), seconds=10)

    assert data.class_counts() == {label: 2 for label in CLASSES}
    assert ("up", "links back to the data folder") in ignored


def test_a_class_folder_that_links_to_another_class_is_listed_not_a_second_label(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=2)
    os.symlink("alpha", root / "alias")  # the same images under a second class name
    os.symlink(root / "beta", root / "zeta")
    outside = write_image_folder(tmp_path / "elsewhere", per_class=1)
    os.symlink(outside / "gamma", root / "omega")  # a link to a folder of other images is a class

    data, ignored = call_with_timeout(lambda: read_class_folders(root, Modality.image), seconds=10)

    assert data.class_counts() == {**{label: 2 for label in CLASSES}, "omega": 1}
    assert sorted(ignored) == [
        ("alias", "links to class folder alpha (its inputs under a second label)"),
        ("zeta", "links to class folder beta (its inputs under a second label)"),
    ]
    linked = tmp_path / "linked"  # every class folder a link into a store, two of them to one place
    linked.mkdir()
    for name, target in (("alpha", "alpha"), ("beta", "beta"), ("copy", "alpha")):
        os.symlink(root / target, linked / name)
    data, ignored = read_class_folders(linked, Modality.image)
    assert data.class_counts() == {"alpha": 2, "beta": 2}
    assert ignored == [("copy", "links to class folder alpha (its inputs under a second label)")]
    # a link to a folder that holds another link's folder, in either order of their names
    store = tmp_path / "store"
    write_image_folder(store / "animals" / "dogs", classes=["dog"], per_class=2)
    write_image_folder(store / "animals", classes=["cat"], per_class=2)
    for first, second in (("a_dogs", "b_animals"), ("b_dogs", "a_animals")):
        nested = tmp_path / f"nested-{first}"
        nested.mkdir()
        os.symlink(store / "animals" / "dogs", nested / first)
        os.symlink(store / "animals", nested / second)
        data, ignored = read_class_folders(nested, Modality.image)
        assert len({path.resolve() for path in data.inputs}) == len(data)  # no file under two labels
        assert len(ignored) == 1 and "(its inputs under a second label)" in ignored[0][1]


@pytest.mark.parametrize("modality, name", [("image", "pipe.png"), ("audio", "pipe.wav"), ("text", "pipe.txt")])
def test_a_named_pipe_among_the_inputs_is_skipped_not_waited_on(tmp_path, modality, name):
    pipe = tmp_path / name
    os.mkfifo(pipe)  # opening it for reading would wait for a writer forever
    pre = {"image": ImagePreprocessor(image_size=(8, 8)), "audio": AudioPreprocessor(duration=0.25), "text": TextPreprocessor()}[modality]
    with pytest.raises(InputError, match="not a regular file"):
        call_with_timeout(lambda: pre.read(pipe), seconds=10)
    from pipelines.cache import input_identity
    from pipelines.defaults import warn_of_long_clips
    from pipelines.leakage import find_copies
    from preprocess import probe_images

    data = Dataset([pipe, pipe], ["a", "b"], ["0", "1"])
    call_with_timeout(lambda: (input_identity(pipe, verify=True), probe_images([pipe]), warn_of_long_clips(data),
                               find_copies({"train": data.subset([0]), "test": data.subset([1])})), seconds=10)


def test_names_that_are_not_utf8_train_evaluate_and_compare(cli_runner, tmp_path):
    # a data folder and a class folder named in Latin-1 (an old zip, a Windows share): the run's
    # JSON once failed to be written after training, leaving a run --resume could not finish
    root = Path(os.fsdecode(os.fsencode(tmp_path) + b"/d\xe9ta"))
    write_image_folder(root, per_class=6)
    os.rename(root / "alpha", Path(os.fsdecode(os.fsencode(root) + b"/caf\xe9")))
    out = tmp_path / "run"
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", root, "--out", out, *TINY_IMAGE])
    assert result.exit_code == 0, describe_result(result)
    assert "d\\xe9ta" in result.stdout  # the byte, shown as itself
    assert json.loads((out / "labels.json").read_text(encoding="utf-8")) == ["beta", "caf\\xe9", "gamma"]
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["config"]["data"] == str(root)
    result = invoke(cli_runner, ["evaluate", out, "--baseline"])
    assert result.exit_code == 0, describe_result(result)
    assert "caf\\xe9" in (out / "report" / "report.html").read_text(encoding="utf-8")


# ---- one real training on a hostile class folder --------------------------------------------

UNICODE_NAMES = {"alpha": "ünïcode file ☃.png", "beta": "with  two spaces.png", "gamma": "日本語 ファイル.png"}


@pytest.fixture(scope="module")
def hostile_run(cli_runner, tmp_path_factory):
    """Train and evaluate once on class folders full of traps.

    Per class: 11 ordinary PNGs plus one with a non-ASCII, space-containing name; hidden files
    and folders holding garbage; files of unsupported types; and three unreadable inputs (an
    empty PNG, a truncated PNG, a self-referencing symlink), 3 of 39 inputs: under the 10 % limit.
    """
    root = tmp_path_factory.mktemp("hostile") / "data ünï"
    rng = np.random.default_rng(0)
    for index, label in enumerate(CLASSES):
        for i in range(11):
            write_png(root / label / f"{label}_{i:02d}.png", class_image(index, rng))
        write_png(root / label / UNICODE_NAMES[label], class_image(index, rng))
    garbage = b"\x89PNG\r\n\x1a\n this is not really a png"
    (root / "alpha" / ".hidden.png").write_bytes(garbage)
    (root / "alpha" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "beta" / ".thumbs").mkdir()
    (root / "beta" / ".thumbs" / "thumb.png").write_bytes(garbage)
    (root / ".trash" / "old").mkdir(parents=True)
    (root / ".trash" / "old" / "x.png").write_bytes(garbage)
    (root / "alpha" / "notes.md").write_text("# not an image\n", encoding="utf-8")
    (root / "beta" / "README").write_text("no extension\n", encoding="utf-8")
    write_wav(root / "gamma" / "clip.wav", tone(500.0))
    (root / "alpha" / "empty.png").write_bytes(b"")
    intact = encoded(np.random.default_rng(1).integers(0, 256, (10, 12), dtype=np.uint8), "PNG")
    (root / "beta" / "cut.png").write_bytes(intact[: len(intact) // 2])
    os.symlink("loop.png", root / "gamma" / "loop.png")
    os.symlink("..", root / "gamma" / "up")

    run_dir = tmp_path_factory.mktemp("hostile-run") / "run"
    train = invoke(
        cli_runner, ["train", "--modality", "image", "--data", root, "--out", run_dir, *TINY_IMAGE, "--epochs", "1"]
    )
    evaluate = invoke(cli_runner, ["evaluate", run_dir]) if train.exit_code == 0 else None
    return root, run_dir, train, evaluate


def test_non_ascii_and_spaced_names_train_evaluate_and_are_in_split_json(hostile_run, cli_runner, tmp_path):
    root, run_dir, train, evaluate = hostile_run
    assert train.exit_code == 0, describe_result(train)
    assert "Traceback" not in train.output
    split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    assert split["data"] == str(root)
    ids = split["train"] + split["validation"] + split["test"]
    readable = [f"{label}/{label}_{i:02d}.png" for label in CLASSES for i in range(11)]
    unicode_ids = [f"{label}/{name}" for label, name in UNICODE_NAMES.items()]
    unreadable = ["alpha/empty.png", "beta/cut.png", "gamma/loop.png"]
    assert sorted(ids) == sorted(readable + unicode_ids + unreadable)

    assert evaluate.exit_code == 0, describe_result(evaluate)
    report = json.loads((run_dir / "report" / "report.json").read_text(encoding="utf-8"))
    readable_test = [i for i in split["test"] if i not in unreadable]
    assert report["n_samples"] == len(readable_test) > 0
    assert {entry["input"] for entry in report["skipped"]["inputs"]} == set(split["test"]) & set(unreadable)
    # The split may put every unreadable input in train (seed 0 does): score the whole folder
    # too, so that evaluate's own skipping of them is tested, not only train's.
    whole = invoke(cli_runner, ["evaluate", run_dir, "--data", root, "--out", tmp_path / "whole"])
    assert whole.exit_code == 0, describe_result(whole)
    report = json.loads((tmp_path / "whole" / "report.json").read_text(encoding="utf-8"))
    assert report["n_samples"] == sum(map(sum, report["confusion_matrix"])) == len(readable + unicode_ids)
    assert sorted(entry["input"] for entry in report["skipped"]["inputs"]) == sorted(unreadable)


def test_unreadable_inputs_are_skipped_with_their_reasons_in_skipped_json(hostile_run):
    _, run_dir, train, _ = hostile_run
    assert train.exit_code == 0, describe_result(train)
    skipped = json.loads((run_dir / "skipped.json").read_text(encoding="utf-8"))
    split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    reasons = {entry["input"]: entry["reason"] for entry in skipped["skipped"]}
    held_out = set(split["test"])  # train only reads train and validation inputs
    expected = {
        "alpha/empty.png": "empty file",
        "beta/cut.png": "corrupt or truncated image (",
        "gamma/loop.png": f"cannot be read ({os.strerror(errno.ELOOP)})",
    }
    assert set(reasons) == set(expected) - held_out
    for name, reason in reasons.items():
        assert reason.startswith(expected[name]), (name, reason)
    # The recorded class counts are of the inputs used, not of the split before skipping.
    counts = json.loads((run_dir / "config.json").read_text())["class_counts"]
    for name in ("train", "validation"):
        listed = Counter(entry.split("/")[0] for entry in split[name])
        lost = Counter(entry.split("/")[0] for entry in reasons if entry in split[name])
        assert counts[name] == {label: listed[label] - lost[label] for label in sorted(listed)}, name
    assert any(entry in split["train"] or entry in split["validation"] for entry in reasons)  # some were lost


def test_hidden_files_are_not_read_and_unsupported_files_are_listed_as_ignored(hostile_run):
    _, run_dir, train, _ = hostile_run
    assert train.exit_code == 0, describe_result(train)
    skipped = json.loads((run_dir / "skipped.json").read_text(encoding="utf-8"))
    assert sorted(skipped["ignored"], key=lambda entry: entry["input"]) == [
        {"input": "alpha/notes.md", "reason": "unsupported file type .md"},
        {"input": "beta/README", "reason": "unsupported file type (none)"},
        {"input": "gamma/clip.wav", "reason": "unsupported file type .wav"},
        {"input": "gamma/up", "reason": "a linked folder (not followed)"},
    ]
    assert "ignored 4 entries that are not inputs" in train.stdout
    everything = json.dumps([json.loads((run_dir / name).read_text()) for name in ("split.json", "skipped.json")])
    labels = json.loads((run_dir / "labels.json").read_text())
    assert labels == list(CLASSES)  # no hidden ".trash" class
    for hidden in (".hidden.png", ".DS_Store", ".thumbs", "thumb.png", ".trash", "up/"):
        assert hidden not in everything


def test_a_file_name_that_is_not_utf8_trains_and_evaluates(cli_runner, tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=4)
    os.rename(root / "alpha" / "alpha_00.png", os.fsdecode(bytes(root / "alpha") + b"/caf\xe9.png"))
    run_dir = tmp_path / "run"
    train = invoke(
        cli_runner,
        ["train", "--modality", "image", "--data", root, "--out", run_dir, *TINY_IMAGE, "--epochs", "1"],
    )
    assert "Traceback" not in train.output
    assert train.exit_code == 0, describe_result(train)
    split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    ids = split["train"] + split["validation"] + split["test"]
    assert len(ids) == len(set(ids)) == 12
    assert sum("caf" in i for i in ids) == 1
    evaluate = invoke(cli_runner, ["evaluate", run_dir])
    assert evaluate.exit_code == 0, describe_result(evaluate)


def test_control_characters_in_file_names_reach_the_terminal_escaped(cli_runner, image_run, tmp_path):
    """ESC in a file name recoloured or cleared the terminal when predict printed it."""
    source = next(Path(image_run.data).rglob("*.png"))
    named = tmp_path / "clear\x1b[2J.png"
    named.write_bytes(source.read_bytes())
    result = invoke(cli_runner, ["predict", image_run.run_dir, named])
    assert result.exit_code == 0, describe_result(result)
    assert "\x1b" not in result.output and "clear\\x1b[2J.png: " in result.output
    missing = invoke(cli_runner, ["predict", image_run.run_dir, tmp_path / "gone\x1b[2J.png"])
    assert missing.exit_code == 1 and "\x1b" not in missing.output and "gone\\x1b[2J.png" in missing.output


# ---- memory stays bounded --------------------------------------------------------------------


def peak_allocation_bytes(function) -> int:
    """Peak Python and NumPy allocation while `function` runs (NumPy reports to tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def png_header_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels but whose data is tiny."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path):
    path = png_header_claiming(tmp_path / "bomb.png", 40_000, 40_000)  # 1.6 GB once decoded
    preprocessor = ImagePreprocessor(image_size=(8, 8))
    preprocessor.transform_one(np.zeros((8, 8), dtype=np.uint8))  # imports happen outside the measurement

    def read():
        expected = r"bomb\.png: image too large \(1,600,000,000 pixels, limit max_pixels=64,000,000\)"
        with pytest.raises(InputError, match=expected):
            preprocessor.transform_one(path)

    assert peak_allocation_bytes(read) < 5_000_000


def test_a_five_minute_clip_is_read_only_as_far_as_the_duration_needs(tmp_path):
    five_minutes = np.zeros(5 * 60 * SAMPLE_RATE, dtype=np.float32)
    five_minutes[:SAMPLE_RATE] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)
    path = tmp_path / "five minutes.wav"
    soundfile.write(path, five_minutes, SAMPLE_RATE, subtype="PCM_16")  # 9.6 MB on disk
    del five_minutes
    preprocessor = AudioPreprocessor(sample_rate=SAMPLE_RATE, duration=1.0, num_mels=16)
    preprocessor.read((np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE))  # imports happen outside the measurement
    result = {}

    peak = peak_allocation_bytes(lambda: result.setdefault("x", preprocessor.read(path)))
    assert np.isfinite(result["x"]).all() and result["x"].shape[1] == 16
    # one second of samples and its spectrogram; the whole file as float32 would be 19 MB
    assert peak < 4_000_000


# ---- one input where a batch belongs ------------------------------------------------------------


CLIP = (np.zeros(16000, np.float32), 16000)


@pytest.mark.parametrize(
    "preprocessor, train, one",
    [
        (TextPreprocessor(positions=8), ["the"], "the cat"),  # was (7, 8): one row per character
        (TextPreprocessor(positions=8), ["the"], b"the cat"),
        (ImagePreprocessor(), [], "red.png"),  # was "r: no such file"
        (ImagePreprocessor(), [], Path("red.png")),
        (ImagePreprocessor(color_mode="rgb"), [], np.zeros((5, 6, 3), np.uint8)),  # its rows became images
        (AudioPreprocessor(), [CLIP], CLIP),
        (AudioPreprocessor(), [CLIP], None),  # was "has no len()"
    ],
    ids=["text str", "text bytes", "image str", "image Path", "image array", "audio tuple", "None"],
)
def test_one_input_given_where_a_batch_belongs_is_a_type_error(preprocessor, train, one):
    preprocessor.fit(train)
    hints = {preprocessor.transform: "use transform_one", preprocessor.fit: "pass a list of one: fit([x])"}
    for call, hint in hints.items():
        with pytest.raises(TypeError) as caught:
            call(one)
        assert str(caught.value).startswith("`inputs` must be a list of inputs; got "), caught.value
        assert str(caught.value).endswith(f"For one input, {hint}.")


# ---- saved preprocessors that were edited by hand or damaged -------------------------------------


@pytest.fixture()
def saved_audio(tmp_path) -> Path:
    pre = AudioPreprocessor(duration=0.25, num_mels=16).fit([(np.sin(np.arange(4000, dtype=np.float32)), 16000)])
    pre.save(tmp_path / "audio.json")
    return tmp_path / "audio.json"


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda d: {**d, "arrays": []}, "cannot restore the fitted state (missing 'band_mean_')"),  # KeyError
        (lambda d: {**d, "fitted": "yes"}, '"fitted" must be a JSON object, found "yes"'),  # AttributeError
        (lambda d: {**d, "config": [1, 2]}, '"config" must be a JSON object, found [1, 2]'),  # TypeError
        (lambda d: {**d, "format_version": "1"}, '"format_version" must be a JSON integer, found "1"'),
        (lambda d: {**d, "reading_version": 0}, '"reading_version" must be a positive JSON integer, found 0'),
        (lambda d: {**d, "class": ["AudioPreprocessor"]}, '"class" must be a JSON string, found ["AudioPrep'),
        (lambda d: [d], 'not a convpipe preprocessor file (no "class" and "config")'),
        (lambda d: {**d, "fitted": {"fitted": "yes"}}, "cannot restore the fitted state with the arrays in audio.npz"),
        # loaded fine and failed only at the first transform
        (
            lambda d: {**d, "config": {**d["config"], "sample_rate": -5}},
            "invalid config: `sample_rate` must be a positive int. Received: sample_rate=-5",
        ),
        (lambda d: {**d, "config": {**d["config"], "colour": 1}}, "invalid config: Unknown AudioPreprocessor"),
    ],
    ids=["no arrays", "fitted str", "config list", "version str", "reading 0", "class list", "a list", "fitted value", "bad value",
         "unknown parameter"],
)
def test_a_hand_edited_preprocessor_file_is_one_input_error_naming_it(saved_audio, edit, reason):
    document = json.loads(saved_audio.read_text())
    saved_audio.write_text(json.dumps(edit(document)))
    with pytest.raises(InputError) as caught:
        AudioPreprocessor.load(saved_audio)
    assert caught.value.source == str(saved_audio)
    assert caught.value.reason.startswith(reason), caught.value.reason
    assert "\n" not in str(caught.value)


def test_a_file_saved_under_another_reading_warns_on_load_and_one_saved_before_readings_does_not(saved_audio, monkeypatch):
    document = json.loads(saved_audio.read_text())
    assert document["reading_version"] == AudioPreprocessor.reading_version
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AudioPreprocessor.load(saved_audio)  # the same reading: silent
        del document["reading_version"]  # saved before readings were recorded: nothing to compare
        saved_audio.write_text(json.dumps(document))
        AudioPreprocessor.load(saved_audio)
    document["reading_version"] = AudioPreprocessor.reading_version
    saved_audio.write_text(json.dumps(document))
    monkeypatch.setattr(AudioPreprocessor, "reading_version", AudioPreprocessor.reading_version + 1)
    with pytest.warns(InputWarning) as caught:
        loaded = AudioPreprocessor.load(saved_audio)
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(f"{saved_audio}: saved under reading version {document['reading_version']}, read now by version {AudioPreprocessor.reading_version}")
    assert loaded.is_fitted


def test_a_text_file_missing_its_learned_positions_is_an_input_error(tmp_path):
    TextPreprocessor().fit(["a b c"]).save(tmp_path / "text.json")
    document = json.loads((tmp_path / "text.json").read_text())
    del document["fitted"]["learned_positions_"]
    (tmp_path / "text.json").write_text(json.dumps(document))
    with pytest.raises(InputError) as caught:
        TextPreprocessor.load(tmp_path / "text.json")
    reason = "cannot restore the fitted state (missing 'learned_positions_')"
    assert str(caught.value) == f"{tmp_path / 'text.json'}: {reason}"


# ---- messages ----------------------------------------------------------------------------------


def test_a_path_with_a_newline_still_gives_a_one_line_error(tmp_path):
    path = tmp_path / "two\nlines.png"
    path.write_bytes(b"not an image")
    error = read_error(ImagePreprocessor(), path)
    assert error.source == str(path)  # the attribute keeps the real name
    assert str(error) == f"{tmp_path}/two\\nlines.png: not a readable image (unknown or corrupt format)"


def test_predict_names_a_named_pipe_for_what_it_is(cli_runner, image_run, tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    result = call_with_timeout(lambda: invoke(cli_runner, ["predict", image_run.run_dir, tmp_path / "pipe.png"]), seconds=60)
    assert_one_line_error(result, "pipe.png: not a regular file (a named pipe, socket or device)")


def test_a_run_from_before_class_names_were_normalized_still_evaluates(cli_runner, tmp_path):
    decomposed, composed = "cafe\u0301", "caf\u00e9"
    root = write_image_folder(tmp_path / "data", classes=[decomposed, "tea", "water"], per_class=8)
    out = tmp_path / "run"
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", root, "--out", out, *TINY_IMAGE])
    assert result.exit_code == 0, describe_result(result)
    # as an older convpipe wrote it: the label, and the fingerprints, as the folder spells it
    from pipelines.datasets import load_source

    everything = load_source(str(root), Modality.image).full
    split = json.loads((out / "split.json").read_text(encoding="utf-8"))
    for name in ("train", "validation", "test"):
        part = everything.select_ids(split[name])
        split["fingerprints"][name] = Dataset(part.inputs, [decomposed if l == composed else l for l in part.labels], part.ids).fingerprint()
    (out / "split.json").write_text(json.dumps(split), encoding="utf-8")
    (out / "labels.json").write_text(json.dumps([decomposed, "tea", "water"]), encoding="utf-8")
    for args in ([], ["--data", root], ["--baseline"]):
        result = invoke(cli_runner, ["evaluate", out, *args, "--out", tmp_path / "report"])
        assert result.exit_code == 0, describe_result(result)
    report = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert report["labels"] == [composed, "tea", "water"] and "error" not in report["linear_baseline"]
