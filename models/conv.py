"""The image/audio factory: [Conv -> ReLU -> MaxPool] x depth, then fully connected votes."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import keras

from models.augment import add_augmentation
from models.spec import ModelSpec, check_positive_int, given_spec, is_int
from models.votes import add_votes, global_pool

logger = logging.getLogger(__name__)


def build_conv_model(
    input_shape: Sequence[int], num_classes: int, spec: ModelSpec | None = None
) -> keras.Model:
    """Build a 2-D CNN classifier for `(height, width, channels)` inputs.

    Each value of `spec.filters` adds one block: a `kernel_size` convolution ("same" padding,
    so the border is read too), optional batch normalization, ReLU, and max pooling with
    `pool_size` window and `pool_stride` stride. With `spec.augment`, layers that change each
    training input at random come first (models/augment.py). The head flattens or globally pools the last
    maps, then `spec.dense` hidden layers with dropout before each, then a softmax.

    Args:
        input_shape: `(height, width, channels)`; the channel axis is always explicit.
        num_classes: number of output classes (>= 2).
        spec: hyperparameters; `ModelSpec()` defaults when omitted.

    Returns:
        An uncompiled `keras.Model` mapping `(batch, *input_shape)` to `(batch, num_classes)`
        probabilities.
    """
    spec = given_spec(spec, ModelSpec()).validate()
    input_shape = check_input_shape(input_shape, spec)
    num_classes = check_positive_int("num_classes", num_classes, minimum=2)
    check_feature_maps(input_shape, spec)
    spec.warn_of_ignored(text=False)
    gap = spec.pooling_gap()
    if gap:  # a warning, not an error: Keras builds it, and runs trained so must still resume
        logger.warning("%s; use pool_stride <= pool_size.", gap)

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = add_augmentation(inputs, spec.augment, spec.augment_kind)
    for depth, filters in enumerate(spec.filters, start=1):
        x = keras.layers.Conv2D(
            filters, spec.kernel_size, padding="same", use_bias=not spec.batch_norm, name=f"conv{depth}"
        )(x)
        if spec.batch_norm:
            x = keras.layers.BatchNormalization(name=f"norm{depth}")(x)
        x = keras.layers.ReLU(name=f"relu{depth}")(x)
        x = keras.layers.MaxPooling2D(
            spec.pool_size, strides=spec.pool_stride, padding="same", name=f"pool{depth}"
        )(x)
    if spec.head in (None, "flatten"):
        x = keras.layers.Flatten(name="head")(x)
    else:
        x = global_pool(x, spec.head, keras.layers.GlobalMaxPooling2D, keras.layers.GlobalAveragePooling2D)
    outputs = add_votes(x, num_classes, spec)
    return keras.Model(inputs, outputs, name="conv2d_classifier")


def check_input_shape(input_shape: Sequence[Any], spec: ModelSpec) -> tuple:
    """`input_shape` as a tuple of plain ints; height and width may be None (any size) only when
    the head pools globally, since flattening needs to know the size of the last maps."""
    shape = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else None
    flatten = spec.head in (None, "flatten")
    if shape is None or len(shape) != 3 or not all(
        (is_int(side) and side > 0) or (side is None and axis < 2 and not flatten) for axis, side in enumerate(shape)
    ):
        sizes = "positive ints" if flatten else "positive ints (height and width may be None with a global head)"
        raise ValueError(f"`input_shape` must be (height, width, channels) of {sizes}. Received: {input_shape!r}")
    return tuple(None if side is None else int(side) for side in shape)


def check_feature_maps(input_shape: Sequence[int], spec: ModelSpec) -> None:
    """Raise ValueError when a block's pooling window is larger than the map it pools, along
    both sides.

    "same" padding would let such a model build, but its windows would read mostly padding and
    the later blocks a 1x1 map: it trains, at chance. A map only one side has shrunk to 1 still
    pools along the other (few mel bands, many time steps), so that is allowed. Convolutions keep
    the size ("same"); each pooling makes a side `ceil(side / pool_stride)`.
    """
    if None in input_shape[:2]:
        return  # sized at call time
    height, width = int(input_shape[0]), int(input_shape[1])
    for block in range(len(spec.filters)):
        if spec.pool_size > max(height, width):
            window = f"{spec.pool_size}x{spec.pool_size} pooling window"
            problem = f"the {input_shape[0]}x{input_shape[1]} input is smaller than a {window}"
            if block:
                problem = (
                    f"after {block} block{'s' if block > 1 else ''} the {input_shape[0]}x{input_shape[1]} "
                    f"input is {height}x{width}: a {window} does not fit"
                )
            fewer = "fewer `filters` blocks, " if block else ""
            raise ValueError(f"{problem}; use {fewer}a smaller `pool_size` or a larger input.")
        height, width = math.ceil(height / spec.pool_stride), math.ceil(width / spec.pool_stride)
