"""The end of every convpipe model: global pooling, hidden "vote" layers, dropout, softmax."""

from __future__ import annotations

import keras

from models.spec import ModelSpec


def add_votes(features: keras.KerasTensor, num_classes: int, spec: ModelSpec) -> keras.KerasTensor:
    """Dropout before each of `spec.dense` ReLU layers and before the float32 softmax over classes.

    The softmax stays float32 so probabilities are exact under mixed precision.
    """
    x = features
    for index, units in enumerate(spec.dense, start=1):
        x = keras.layers.Dropout(spec.dropout, name=f"dropout{index}")(x)
        x = keras.layers.Dense(units, activation="relu", name=f"dense{index}")(x)
    x = keras.layers.Dropout(spec.dropout, name="dropout_out")(x)
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="votes")(x)


def global_pool(
    x: keras.KerasTensor,
    head: str,
    max_layer: type[keras.layers.Layer],
    average_layer: type[keras.layers.Layer],
    suffix: str = "",
) -> keras.KerasTensor:
    """Pool feature maps over every axis but channels: max, average, or both concatenated.

    Max says whether a filter found its pattern anywhere; average says how much of the input
    matched, which is what word counts carry for text.
    """
    pooled = []
    if head in ("global_max", "global_max_average"):
        pooled.append(max_layer(name=f"max_pool{suffix}")(x))
    if head in ("global_average", "global_max_average"):
        pooled.append(average_layer(name=f"average_pool{suffix}")(x))
    return pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name=f"pooled{suffix}")(pooled)
