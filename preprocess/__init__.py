"""Reusable preprocessors that turn images, audio and text into 2-D arrays.

Imports numpy, Pillow, soundfile and librosa only, never TensorFlow or Keras, so other projects
can use them without a deep-learning framework:

    from preprocess import AudioPreprocessor
    spectrogram = AudioPreprocessor().fit(train_paths).transform_one("clip.wav")

The errors are imported eagerly; everything else on first use, so that programs which only need
the error classes (a CLI printing `--help`) do not pay for numpy, Pillow and soundfile.
"""

from importlib import import_module
from typing import TYPE_CHECKING

from preprocess.errors import ConvpipeError, FitError, InputError, InputWarning, NotFittedError

if TYPE_CHECKING:  # what `__getattr__` returns, for type checkers (a module `__getattr__` is Any to them)
    from preprocess.audio import AUDIO_EXTENSIONS, AudioPreprocessor
    from preprocess.base import Preprocessor
    from preprocess.image import IMAGE_EXTENSIONS, ImagePreprocessor, probe_images
    from preprocess.text import TEXT_EXTENSIONS, TextPreprocessor, decode_text

_LAZY = {
    "AUDIO_EXTENSIONS": "preprocess.audio",
    "AudioPreprocessor": "preprocess.audio",
    "IMAGE_EXTENSIONS": "preprocess.image",
    "ImagePreprocessor": "preprocess.image",
    "probe_images": "preprocess.image",
    "TEXT_EXTENSIONS": "preprocess.text",
    "TextPreprocessor": "preprocess.text",
    "decode_text": "preprocess.text",
    "Preprocessor": "preprocess.base",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    if name == "PREPROCESSORS":  # class name -> class, for `Preprocessor.load`
        return {n: __getattr__(n) for n in ("ImagePreprocessor", "AudioPreprocessor", "TextPreprocessor")}
    raise AttributeError(f"module 'preprocess' has no attribute {name!r}")


__all__ = ["ConvpipeError", "FitError", "InputError", "InputWarning", "NotFittedError", "PREPROCESSORS", *_LAZY]
