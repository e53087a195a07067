"""Small pictures or snippets of misclassified inputs, for the HTML report.

Images and audio are shown as the model saw them (the preprocessed array), so a preview never
needs the original file again; text is shown as the raw text, which people can read.
"""

from __future__ import annotations

import io
import re
import warnings
from typing import Any

import numpy as np

from pipelines.modality import Modality
from preprocess import InputError, InputWarning, Preprocessor

PREVIEW_PIXELS = 96  # longer side of an image thumbnail
SPECTROGRAM_HEIGHT = 64
SNIPPET_CHARACTERS = 300


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 3|4) pixels -> PNG file bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _resized(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(pixels)
    # Nearest keeps small inputs (8x8 digits, 16-band spectrograms) crisp instead of blurred.
    resample = Image.Resampling.NEAREST if image.height <= height else Image.Resampling.LANCZOS
    return np.asarray(image.resize((max(1, width), max(1, height)), resample))


def image_thumbnail(array: np.ndarray, value_range: str = "0..1") -> bytes:
    """A preprocessed image `np.ndarray [shape=(H, W, C)]` as a PNG about PREVIEW_PIXELS wide."""
    values = np.asarray(array, dtype=np.float32)
    if value_range == "-1..1":
        values = (values + 1.0) / 2.0
    pixels = np.round(np.clip(np.nan_to_num(values), 0.0, 1.0) * 255).astype(np.uint8)
    pixels = pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels
    height, width = pixels.shape[:2]
    scale = PREVIEW_PIXELS / max(height, width)
    return png_bytes(_resized(pixels, round(height * scale), round(width * scale)))


def spectrogram_picture(array: np.ndarray) -> bytes:
    """A preprocessed spectrogram `np.ndarray [shape=(time, frequency, 1)]` as a small PNG:
    time left to right, low frequencies at the bottom, colours scaled per clip."""
    from matplotlib import colormaps

    values = np.nan_to_num(np.asarray(array, dtype=np.float32)[:, :, 0].T[::-1])
    low, high = np.percentile(values, [1, 99])
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(values)
    pixels = (colormaps["magma"](scaled)[:, :, :3] * 255).astype(np.uint8)
    width = min(3 * SPECTROGRAM_HEIGHT, max(SPECTROGRAM_HEIGHT, round(values.shape[1] * SPECTROGRAM_HEIGHT / values.shape[0])))
    return png_bytes(_resized(pixels, SPECTROGRAM_HEIGHT, width))


def text_snippet(preprocessor: Preprocessor, raw: Any, limit: int = SNIPPET_CHARACTERS) -> str:
    """The start of the text, whitespace collapsed to single spaces."""
    try:
        with warnings.catch_warnings():  # a Latin-1 note was already recorded when it was read
            warnings.simplefilter("ignore", InputWarning)
            text = preprocessor.read_text(raw)
    except InputError as error:
        return f"(cannot read the text again: {error.reason})"
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def previews(
    modality: Modality, preprocessor: Preprocessor, arrays: np.ndarray, raw_inputs: list[Any], mistakes: list[dict]
) -> list[dict[str, Any]]:
    """`mistakes` (report.json entries) with a `png` (image, audio) or `snippet` (text) added.

    `arrays[i]` and `raw_inputs[i]` belong to `mistakes[i]`.
    """
    shown = []
    for mistake, array, raw in zip(mistakes, arrays, raw_inputs):
        entry = dict(mistake)
        if modality is Modality.image:
            entry["png"] = image_thumbnail(array, getattr(preprocessor, "value_range", "0..1"))
        elif modality is Modality.audio:
            entry["png"] = spectrogram_picture(array)
        else:
            entry["snippet"] = text_snippet(preprocessor, raw)
        shown.append(entry)
    return shown
