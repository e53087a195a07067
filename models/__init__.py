"""Keras model factories: (input shape, number of classes, spec) -> keras.Model.

Uses `keras` and `keras.ops` only, so the models run on the TensorFlow, JAX and PyTorch backends.
"""

from models.conv import build_conv_model
from models.layers import FullHeightConv, TokenEmbedding
from models.spec import HEADS, TEXT_KERNELS, ModelSpec
from models.text_cnn import build_text_model

__all__ = [
    "HEADS",
    "TEXT_KERNELS",
    "FullHeightConv",
    "ModelSpec",
    "TokenEmbedding",
    "build_conv_model",
    "build_text_model",
]
