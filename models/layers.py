"""convpipe's own layers (full-height windows over token ids, spectrogram masks), registered so
`.keras` files reload safely once this module is imported."""

from __future__ import annotations

import math
import numbers

import keras
from keras import ops

from models.spec import check_positive_int, is_int


def _lookup(table, ids, dtype):
    """Rows of `table` for `ids`; padding ids (0) give zero rows, as in the one-hot matrix.

    `ids` is `(batch, positions)`, or `(batch, positions, k)` when each position holds k ids
    (a character and its n-grams): their rows are summed, i.e. the row of a multi-hot matrix.
    """
    rows = ops.take(table, ids, axis=0) * ops.expand_dims(ops.cast(ops.not_equal(ids, 0), dtype), -1)
    return ops.sum(rows, axis=2) if len(ids.shape) == 3 else rows


#: The out-of-vocabulary id (preprocess.text.OOV_ID; models import no preprocessing).
OOV_ID = 1


def _zero_oov_row(initializer):
    """`initializer` with the out-of-vocabulary row set to zero.

    A vocabulary fitted on every training token (min_count 1, fewer tokens than its size) never
    gives the OOV id in training, so its row gets no gradient and keeps its random start; at
    inference every unseen token would add that untrained noise. Started at zero, an unseen
    token adds nothing, like padding, unless training texts do hold OOV tokens and teach it.
    The other rows draw exactly what they drew before.
    """

    def initialize(shape, dtype=None):
        values = initializer(shape, dtype=dtype)
        oov = ops.expand_dims(ops.equal(ops.arange(shape[0]), OOV_ID), -1)
        return ops.where(oov, ops.zeros_like(values), values)

    return initialize


@keras.saving.register_keras_serializable(package="convpipe")
class FullHeightConv(keras.layers.Layer):
    """A convolution whose window spans the whole vocabulary, computed from token ids.

    On the one-hot `(positions, num_ids)` matrix, a window of `window_size` positions that
    spans all `num_ids` columns is a Conv2D with kernel `(window_size, num_ids)` and valid
    padding. Because each one-hot row has a single 1, that convolution is exactly the sum of
    `window_size` looked-up kernel rows, which is what this layer computes: its cost does not grow
    with the vocabulary and the one-hot matrix is never built. One `(num_ids, filters)` table is
    kept per window offset and read with a gather (under TensorFlow its gradient holds only the
    rows read; JAX and PyTorch give dense gradients, and Adam updates every row on any backend).

    Args:
        num_ids: vocabulary width, including the reserved padding (0) and out-of-vocabulary ids.
        window_size: positions per window.
        filters: number of filters (output channels).

    Input shape: `(batch, positions)` integer token ids in `[0, num_ids)`, or `(batch, positions,
    k)` with k ids per position (summed, as rows of a multi-hot matrix); `positions` >=
    `window_size`. Ids outside the range are not checked (TensorFlow raises, JAX reads NaN).
    Output shape: `(batch, positions - window_size + 1, filters)`, before any activation.
    """

    def __init__(self, num_ids: int, window_size: int, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.num_ids = check_positive_int("num_ids", num_ids, minimum=2)  # padding and one more
        self.window_size = check_positive_int("window_size", window_size)
        self.filters = check_positive_int("filters", filters)

    def build(self, input_shape):
        positions = input_shape[1]
        if positions is not None and positions < self.window_size:
            raise ValueError(
                f"Every window must fit in the text: positions={positions} is shorter than "
                f"window_size={self.window_size}."
            )
        # Only `window_size` rows are active per output, so scale like a conv with that fan-in.
        limit = math.sqrt(3.0 / self.window_size)
        self.tables = [
            self.add_weight(
                name=f"kernel_offset_{k}",
                shape=(self.num_ids, self.filters),
                initializer=_zero_oov_row(keras.initializers.RandomUniform(-limit, limit)),
            )
            for k in range(self.window_size)
        ]
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, ids):
        ids = ops.cast(ids, "int32")
        length = ops.shape(ids)[1] - self.window_size + 1
        total = 0
        for k, table in enumerate(self.tables):
            total = total + _lookup(table, ids[:, k : k + length], self.compute_dtype)
        return total + self.bias

    def compute_output_shape(self, input_shape):
        positions = input_shape[1]
        length = None if positions is None else positions - self.window_size + 1
        return (input_shape[0], length, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "num_ids": self.num_ids,
            "window_size": self.window_size,
            "filters": self.filters,
        }


@keras.saving.register_keras_serializable(package="convpipe")
class TokenEmbedding(keras.layers.Layer):
    """A D-dimensional projection of the vocabulary whose padding id maps to the zero vector.

    Followed by a convolution over positions, it is a full-height window whose
    `(window_size x num_ids)` kernel is constrained to rank `dim`: the factorized form.

    Args:
        num_ids: vocabulary width, including the reserved ids.
        dim: embedding dimension D.

    Input shape: `(batch, positions)` or `(batch, positions, k)` integer token ids in
        `[0, num_ids)`, as `TextPreprocessor.transform` gives them. Ids outside that range are
        not checked here (backends differ: TensorFlow raises, JAX reads NaN).
    Output shape: `(batch, positions, dim)`.
    """

    def __init__(self, num_ids: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.num_ids = check_positive_int("num_ids", num_ids, minimum=2)
        self.dim = check_positive_int("dim", dim)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_ids, self.dim),
            initializer=_zero_oov_row(keras.initializers.RandomUniform(-0.05, 0.05)),
        )

    def call(self, ids):
        ids = ops.cast(ids, "int32")
        return _lookup(self.embeddings, ids, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.dim)

    def get_config(self):
        return {**super().get_config(), "num_ids": self.num_ids, "dim": self.dim}


@keras.saving.register_keras_serializable(package="convpipe")
class SpectrogramMasks(keras.layers.Layer):
    """SpecAugment's time and frequency masking for `(batch, time, frequency, channels)` inputs.

    While training, each input gets `masks` stretches of time steps and `masks` stretches of
    frequency bands set to the input's mean (per channel), each of a width drawn from
    [0, `strength` x the axis length). At inference the input passes unchanged.
    """

    def __init__(self, strength: float, masks: int = 2, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0 <= strength <= 1:
            raise ValueError(f"`strength` must be in [0, 1]. Received: strength={strength!r}")
        if not is_int(masks) or masks < 0:
            raise ValueError(f"`masks` must be a non-negative int. Received: masks={masks!r}")
        self.strength = strength
        self.masks = int(masks)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or not self.strength:
            return inputs
        keep = None
        for axis in (1, 2):
            size = inputs.shape[axis] if inputs.shape[axis] is not None else ops.shape(inputs)[axis]
            steps = ops.cast(ops.arange(size), "float32")[None, :]
            for _ in range(self.masks):
                width = keras.random.uniform((ops.shape(inputs)[0], 1), 0.0, self.strength, seed=self.seed_generator)
                width = width * ops.cast(size, "float32")
                start = keras.random.uniform(ops.shape(width), seed=self.seed_generator) * (ops.cast(size, "float32") - width)
                outside = ops.logical_or(steps < start, steps >= start + width)  # (batch, size)
                outside = ops.expand_dims(ops.expand_dims(outside, -1), 3 - axis)  # along `axis`
                keep = outside if keep is None else ops.logical_and(keep, outside)
        # the input's own mean: 0 after per-band normalization, and still a level the input has
        # with normalization "none" (decibels, where 0 would be the loudest)
        return ops.where(keep, inputs, ops.mean(inputs, axis=(1, 2), keepdims=True))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "strength": self.strength, "masks": self.masks, "seed": self.seed}
