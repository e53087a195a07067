"""tf.data pipelines that read batches from .npy shards instead of arrays held in memory."""

from __future__ import annotations

import itertools
import math

import numpy as np

from pipelines.shards import ShardedArray


def batch_order(size: int, batch_size: int, shuffle_seed: int | None, epoch: int) -> list[np.ndarray]:
    """Row indices of each batch: in order, or a permutation seeded by (seed, epoch)."""
    if shuffle_seed is None:
        order = np.arange(size)
    else:
        order = np.random.default_rng([shuffle_seed, epoch]).permutation(size)
    return [order[start : start + batch_size] for start in range(0, size, batch_size)]


def _passes(size: int, batch_size: int, shuffle_seed: int | None, first_epoch: int):
    """A generator function for tf.data: each call is the next pass over the data, yielding the
    row indices of each batch (pass numbers start at `first_epoch`)."""
    epochs = itertools.count(first_epoch)

    def one_pass():
        yield from batch_order(size, batch_size, shuffle_seed, next(epochs))

    return one_pass


def _batches(generator, signature, size: int, batch_size: int):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(math.ceil(size / batch_size)))


def streaming_dataset(
    x: ShardedArray, y: np.ndarray | None, batch_size: int, shuffle_seed: int | None = None, first_epoch: int = 0
):
    """A tf.data.Dataset of `(x, y)` batches (or `x` batches when `y` is None) read from shards.

    With `shuffle_seed`, every pass over the data is a new seeded permutation of all rows, so
    runs with the same seed see the same batches (from pass `first_epoch` on). Only `batch_size`
    rows (plus two prefetched batches) are in memory at a time.
    """
    import tensorflow as tf

    passes = _passes(len(x), batch_size, shuffle_seed, first_epoch)
    labels = None if y is None else np.asarray(y)

    def batches():
        for indices in passes():
            rows = x.take(indices)
            yield rows if labels is None else (rows, labels[indices])

    x_spec = tf.TensorSpec((None, *x.row_shape), tf.as_dtype(x.dtype))
    signature = x_spec if labels is None else (x_spec, tf.TensorSpec((None,), tf.as_dtype(labels.dtype)))
    return _batches(batches, signature, len(x), batch_size).prefetch(2)


def in_memory_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int, first_epoch: int = 0):
    """Shuffled `(x, y)` batches of arrays held in memory, in `streaming_dataset`'s orders.

    Each pass's order comes from (seed, pass number), not from a shuffle op's hidden state, so a
    run resumed at `first_epoch` sees the batches an uninterrupted run would have seen. Only the
    row indices pass through Python; the rows are gathered in the graph.
    """
    import tensorflow as tf

    passes = _passes(len(x), batch_size, shuffle_seed, first_epoch)
    indices = _batches(passes, tf.TensorSpec((None,), tf.int64), len(x), batch_size)
    features, labels = tf.constant(x), tf.constant(y)
    return indices.map(lambda rows: (tf.gather(features, rows), tf.gather(labels, rows))).prefetch(tf.data.AUTOTUNE)
