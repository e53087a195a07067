"""Keras model factories: (input shape, number of classes, spec) -> keras.Model.

Uses `keras` and `keras.ops` only, so the models run on the TensorFlow, JAX and PyTorch backends.
`ModelSpec` is importable without Keras; the factories and layers import it on first use, so
that tools which only parse options (`convpipe --help`) start fast.
"""

from importlib import import_module

from models.spec import HEADS, TEXT_DEFAULTS, TEXT_KERNELS, ModelSpec

_LAZY = {
    "build_conv_model": "models.conv",
    "build_text_model": "models.text_cnn",
    "FullHeightConv": "models.layers",
    "TokenEmbedding": "models.layers",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


__all__ = ["HEADS", "TEXT_DEFAULTS", "TEXT_KERNELS", "ModelSpec", *_LAZY]
