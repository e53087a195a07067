"""Reusable preprocessors that turn images, audio and text into 2-D arrays.

Imports numpy, Pillow, soundfile and librosa only, never TensorFlow or Keras, so other projects
can use them without a deep-learning framework:

    from preprocess import AudioPreprocessor
    spectrogram = AudioPreprocessor().fit(train_paths).transform_one("clip.wav")
"""

from preprocess.audio import AUDIO_EXTENSIONS, AudioPreprocessor
from preprocess.base import Preprocessor
from preprocess.errors import ConvpipeError, InputError, InputWarning, NotFittedError
from preprocess.image import IMAGE_EXTENSIONS, ImagePreprocessor, probe_images
from preprocess.text import TEXT_EXTENSIONS, TextPreprocessor, decode_text

PREPROCESSORS: dict[str, type[Preprocessor]] = {
    cls.__name__: cls for cls in (ImagePreprocessor, AudioPreprocessor, TextPreprocessor)
}

__all__ = [
    "AUDIO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "TEXT_EXTENSIONS",
    "AudioPreprocessor",
    "ConvpipeError",
    "ImagePreprocessor",
    "InputError",
    "InputWarning",
    "NotFittedError",
    "PREPROCESSORS",
    "Preprocessor",
    "TextPreprocessor",
    "decode_text",
    "probe_images",
]
