"""The fully connected end of every convpipe model: hidden "vote" layers, dropout, softmax."""

from __future__ import annotations

import keras

from models.spec import ModelSpec


def add_votes(features, num_classes: int, spec: ModelSpec):
    """Dropout before each of `spec.dense` ReLU layers, then a float32 softmax over classes.

    The softmax stays float32 so probabilities are exact under mixed precision.
    """
    x = features
    for index, units in enumerate(spec.dense, start=1):
        x = keras.layers.Dropout(spec.dropout, name=f"dropout{index}")(x)
        x = keras.layers.Dense(units, activation="relu", name=f"dense{index}")(x)
    x = keras.layers.Dropout(spec.dropout, name="dropout_out")(x)
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="votes")(x)
