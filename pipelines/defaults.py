"""Preprocessing choices that adapt to the training data, each one recorded with its reason."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipelines.cache import PreprocessCache
from pipelines.datasets import Dataset
from pipelines.modality import MODALITIES, Modality
from preprocess import InputWarning, Preprocessor, TextPreprocessor, probe_images
from preprocess.image import MAX_PIXELS, probe_sample
from preprocess.text import MAX_LEARNED_POSITIONS, MIN_LEARNED_POSITIONS

#: Texts whose median length is below this many characters are read at character level with
#: hashed character n-grams: short texts have too few words for word windows to match, and
#: n-grams let unseen words share pieces with training words. Measured on stdlib docstrings
#: (median 110 characters): 0.83-0.85 test accuracy against 0.77-0.79 at word level. On long
#: documents (median 1,838) both levels score 0.94, and characters take 2-4x as long.
CHAR_LEVEL_BELOW = 1000
#: Longer texts are still read as characters when their "words" (runs between spaces) are
#: longer than this in the median text: scripts written without spaces (Chinese, Japanese,
#: Thai) would make every clause one word, each seen once (a CJK set trained to chance at word
#: level, and to 1.000 at character level). English words average about 5 characters.
CHARS_PER_WORD_ABOVE = 15
CHAR_NGRAMS = {"ngram_sizes": [2, 3, 4, 5], "hash_buckets": 32768}
#: Default-length audio is said to be cut short when the median training clip is longer than
#: this many times `duration`.
LONG_CLIPS = 1.5

#: The rules `build_preprocessor` chooses preprocessing by; an interrupted run is resumed
#: under the rules it started with (`resume.RunState.choices_version`).
#: 2: n-gram settings without a level choose characters, and n-gram sizes without buckets get
#: the default 32,768 (before, the level came from the data and the buckets from the library's
#: 16,384).
#: 3: the image size and colour come from up to 200 images spread over all the training images
#: (before, every (n // 200)-th of the first 200 * (n // 200): of 399 images, the first 200).
CHOICES_VERSION = 3

logger = logging.getLogger(__name__)


def set_by(flag: str, command: str) -> str:
    """How to set a preprocessing `flag` ("--duration 3"), said to a user of `command`: only
    `train` takes these flags (not `train --resume`, which keeps the run's); `preprocess` reads a
    run's settings with --run."""
    if command == "train":
        return f"pass {flag}"
    if command == "train --resume":  # which refuses it: the run keeps the settings it started with
        return f"a resumed run keeps its settings: train anew with {flag}"
    then = ", then `preprocess --run RUN`" if command == "preprocess" else ""
    return f"{command} reads the defaults: train with {flag}{then}"


def build_preprocessor(
    modality: Modality, params: dict[str, Any], train: Dataset, choices_version: int = CHOICES_VERSION,
    command: str = "train", cache: PreprocessCache | None = None,
) -> tuple[Preprocessor, dict[str, str]]:
    """The modality's preprocessor with `params`, filling unset data-dependent parameters
    (`choices_version`: by the rules of that `CHOICES_VERSION`, for a run interrupted under them;
    `command`: the command whose user the warnings advise, see `set_by`; `cache`: where what the
    sampled training files showed is kept, so that a warm run does not open them again).

    Returns the preprocessor and `{parameter: reason}` for every choice made from the data.
    """
    params = dict(params)
    choices: dict[str, str] = {}
    legacy = choices_version < 2
    if modality is Modality.image and not {"image_size", "color_mode", "bit_depth"} <= set(params):
        arguments = {
            "max_pixels": params.get("max_pixels", MAX_PIXELS),
            "upright": not {"image_size", "color_mode"} <= set(params),  # else only the bit depth is wanted
            "depth": "bit_depth" not in params,
        }
        sample = probe_sample(train.inputs) if choices_version >= 3 else _sample_before_version_3(train.inputs)
        probed = remembered(cache, "images", sample, arguments, lambda: probe_images(sample, **arguments))
        reasons = {
            "image_size": "median height and width of the training images",
            "color_mode": "some training images have colour" if probed.get("color_mode") == "rgb"
            else "no sampled training image has colour",
        }
        # Said, not chosen: an image outside the sample may be brighter, and a resumed or retrained
        # run must read its images as it first did.
        suggested = probed.pop("bit_depth", 16)
        if suggested < 16:
            logger.warning(
                "The sampled 16-bit training images fit in %d bits (0-%d): read on the 16-bit scale they use only "
                "the bottom %d of 256 gray levels; %s to use them all.",
                suggested, 2**suggested - 1, 2 ** (suggested - 8), set_by(f"--bit-depth {suggested}", command),
            )
        for name, value in probed.items():
            if name not in params:
                params[name] = value
                choices[name] = f"{value}: {reasons[name]}"
    if modality is Modality.text and "level" not in params:
        if legacy:  # CHOICES_VERSION 1
            params["level"], choices["level"] = text_level(train)
        elif params.get("ngram_sizes") or "hash_buckets" in params and params.get("ngram_sizes") is None:
            # n-gram settings were given, and only character level reads n-grams
            params["level"], choices["level"] = "char", "char: character n-gram settings were given"
        else:
            params["level"], choices["level"] = text_level(train)
    # Character level, chosen or asked for, reads hashed n-grams too unless told otherwise: the
    # characters alone scored 0.78 against 0.85 with them on the docstrings (benchmarks/README.md).
    # Sizes given without buckets get the default's buckets too, not the library's smaller default.
    if modality is Modality.text and params.get("level") == "char" and (
        "ngram_sizes" not in params if legacy else params.get("ngram_sizes", True)
    ):
        for name, value in CHAR_NGRAMS.items():
            if name not in params:
                params[name] = value
                choices[name] = f"{value}: hashed character n-grams for character-level text"
    if modality is Modality.audio and "duration" not in params:
        warn_of_long_clips(train, command, cache)
    cls = MODALITIES[modality].preprocessor
    try:
        preprocessor = cls.from_config(params)
        preprocessor.validate_params()
    except (TypeError, ValueError) as error:
        from preprocess import ConvpipeError

        raise ConvpipeError(f"Bad {modality.value} preprocessing setting: {error}") from None
    return preprocessor, choices


def fitted_choices(preprocessor: Preprocessor) -> dict[str, str]:
    """`{parameter: reason}` for the choices the preprocessor itself made while fitting: a text
    preprocessor's positions when none were given (config.json's `positions` stays null)."""
    if isinstance(preprocessor, TextPreprocessor) and preprocessor.positions is None:
        most = MAX_LEARNED_POSITIONS[preprocessor.level]
        return {"positions": f"{preprocessor.positions_}: 90th percentile of training lengths, kept within {MIN_LEARNED_POSITIONS} to {most}"}
    return {}


def text_level(train: Dataset) -> tuple[str, str]:
    """`"word"` or `"char"` for texts like `train`'s, judged on about 200 of them, and the reason."""
    probe = TextPreprocessor()
    step = max(1, len(train) // 200)
    lengths, word_lengths = [], []
    with warnings.catch_warnings():  # decoding notes are recorded when inputs are read for real
        warnings.simplefilter("ignore", InputWarning)
        for x in train.inputs[::step]:
            try:
                text = probe.read_text(x)
            except Exception:  # unreadable inputs are reported when they are read for real
                continue
            lengths.append(len(text))
            word_lengths.append(len(text) / max(len(text.split()), 1))
    median = float(np.median(lengths)) if lengths else 0.0
    per_word = float(np.median(word_lengths)) if word_lengths else 0.0
    if median < CHAR_LEVEL_BELOW or per_word <= CHARS_PER_WORD_ABOVE:
        level = "char" if median < CHAR_LEVEL_BELOW else "word"
        return level, f"{level}: median training text is {median:.0f} characters (char level below {CHAR_LEVEL_BELOW})"
    return "char", (
        f"char: {per_word:.0f} characters per space-separated word in the median text "
        f"(char level above {CHARS_PER_WORD_ABOVE}: a script written without spaces)"
    )


def _sample_before_version_3(inputs: Sequence[Any], limit: int = 200) -> list[Any]:
    """The images the probe opened under `CHOICES_VERSION` 2 and before."""
    return list(inputs)[:: max(1, len(inputs) // limit)][:limit]


def remembered(
    cache: PreprocessCache | None, name: str, sample: Sequence[Any], arguments: dict[str, Any], probe: Callable[[], Any]
) -> Any:
    """`probe()` of the training files `sample`, through `cache` when there is one."""
    return probe() if cache is None else cache.probe(name, sample, arguments, probe)


def warn_of_long_clips(train: Dataset, command: str = "train", cache: PreprocessCache | None = None) -> None:
    """Say so when the default `duration` keeps only the start of most training clips: a sound
    later in a clip is never heard, and nothing else would tell (judged from the headers of
    about 200 files; kept in `cache` for the same files)."""
    from preprocess import AudioPreprocessor

    duration = AudioPreprocessor().duration
    step = max(1, len(train) // 200)
    sample = train.inputs[::step]
    median = remembered(cache, "clip_lengths", sample, {}, lambda: clip_length_median(sample))
    if median is not None and median > LONG_CLIPS * duration:
        logger.warning(
            "The median training clip is %.1f s long, and only its first %.1f s is read (the default --duration): "
            "%s to hear whole clips.", median, duration, set_by(f"--duration {np.ceil(median):.0f}", command),
        )


def clip_length_median(inputs: Sequence[Any]) -> float | None:
    """The median length in seconds of the audio files among `inputs` that soundfile reads
    from their headers; None when there is none."""
    import soundfile

    from preprocess.base import not_a_file

    lengths = []
    for x in inputs:
        if isinstance(x, (str, os.PathLike)) and not not_a_file(x):  # a pipe would wait for a writer
            try:
                lengths.append(soundfile.info(x).duration)
            except Exception:  # unreadable, or a format only the fallback decoder reads
                continue
    return float(np.median(lengths)) if lengths else None
