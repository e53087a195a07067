"""Shards on disk and the tf.data pipeline that streams them."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines import shards
from pipelines.shards import ShardedArray, ShardWriter, open_shards, write_rows
from pipelines.streaming import streaming_dataset


def write_shards(
    folder: Path,
    items: Sequence[Any],
    encode: Callable[[Any], np.ndarray],
    row_shape: tuple[int, ...],
    dtype: str,
    chunk: int = 64,
) -> ShardedArray:
    """Encode `items` into .npy shards in `folder`, `chunk` rows at a time, in this process: the
    serial core of `pipelines.parallel_encode.encode_into_shards`, without the cache."""
    writer = ShardWriter(folder, len(items), row_shape, dtype)
    try:
        for start, end in writer.ranges(chunk):
            rows = np.stack([np.asarray(encode(items[i]), dtype=writer.dtype) for i in range(start, end)])
            write_rows(writer.target(start), rows, writer.row_shape, writer.dtype)
        return writer.commit()
    except BaseException:
        writer.abort()
        raise


def sharded(tmp_path, array: np.ndarray, monkeypatch, rows_per_shard: int = 7) -> ShardedArray:
    row_bytes = array[0].nbytes
    monkeypatch.setattr(shards, "SHARD_BYTES", rows_per_shard * row_bytes)
    return write_shards(tmp_path / "shards", list(array), lambda row: row, array.shape[1:], array.dtype.str)


def test_shards_return_exactly_the_rows_asked_for(tmp_path, monkeypatch):
    array = np.random.default_rng(0).standard_normal((30, 4, 3, 1)).astype(np.float32)
    x = sharded(tmp_path, array, monkeypatch)
    assert len(x.paths) == 5 and x.shape == array.shape
    order = np.random.default_rng(1).permutation(30)
    np.testing.assert_array_equal(x.take(order), array[order])
    np.testing.assert_array_equal(x.to_numpy(), array)
    view = x[np.array([3, 29, 8])]
    np.testing.assert_array_equal(view.take([2, 0]), array[[8, 3]])
    assert x.take([]).shape == (0, 4, 3, 1) and x.take(np.array([], int)).dtype == np.float32  # no mistakes to show
    reopened = open_shards(tmp_path / "shards")
    np.testing.assert_array_equal(reopened.to_numpy(), array)


def test_a_truncated_shard_is_not_reused(tmp_path, monkeypatch):
    x = sharded(tmp_path, np.arange(60, dtype=np.int32).reshape(20, 3), monkeypatch)
    x.paths[1].write_bytes(x.paths[1].read_bytes()[:-4])
    assert open_shards(tmp_path / "shards") is None
    (tmp_path / "shards" / shards.MANIFEST).unlink()
    assert open_shards(tmp_path / "shards") is None


def test_a_shard_whose_bytes_changed_is_not_reused(tmp_path, monkeypatch):
    # bit rot or a stray write inside a shard kept its size and header: its values (3.4e38)
    # were trained on and exported without a word
    import os

    x = sharded(tmp_path, np.arange(60, dtype=np.float32).reshape(20, 3), monkeypatch)
    assert open_shards(tmp_path / "shards") is not None and open_shards(tmp_path / "shards", verify=True) is not None
    written = x.paths[1].stat()
    data = bytearray(x.paths[1].read_bytes())
    data[-4:] = b"\x7f\x7f\x7f\x7f"
    x.paths[1].write_bytes(bytes(data))
    assert open_shards(tmp_path / "shards") is None  # its modification time tells
    os.utime(x.paths[1], ns=(written.st_atime_ns, written.st_mtime_ns))  # bit rot keeps it
    assert open_shards(tmp_path / "shards") is not None
    assert open_shards(tmp_path / "shards", verify=True) is None  # its CRC-32 tells (--cache-verify)
    manifest = json.loads((tmp_path / "shards" / shards.MANIFEST).read_text())
    del manifest["crc32"], manifest["mtime_ns"]  # shards written before these checks: encoded again, once
    (tmp_path / "shards" / shards.MANIFEST).write_text(json.dumps(manifest))
    assert open_shards(tmp_path / "shards") is None


def test_every_shard_is_on_disk_before_the_manifest_that_vouches_for_it(tmp_path, monkeypatch):
    # Shards are created at full size, so the size check cannot tell rows a power cut never
    # wrote from written ones: the data must be synced before the manifest exists.
    import os

    synced, fsync = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name) or fsync(fd))
    x = sharded(tmp_path, np.arange(60, dtype=np.int32).reshape(20, 3), monkeypatch)
    assert len(x.paths) == 3 and len(synced) == 4
    assert all(name.endswith(".tmp.npy") for name in synced[:3])  # each shard, before its rename
    assert synced[3].startswith(f".{shards.MANIFEST.split('.')[0]}.")  # then the manifest


def test_an_encoding_that_fails_midway_leaves_no_shard_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "SHARD_BYTES", 7 * 12)

    def encode(row):
        if row[0] == 30:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third shard
        return row

    with pytest.raises(KeyboardInterrupt):
        write_shards(tmp_path / "s", list(np.arange(60, dtype=np.int32).reshape(20, 3)), encode, (3,), "<i4", chunk=4)
    assert list((tmp_path / "s").iterdir()) == [] and open_shards(tmp_path / "s") is None


def test_rows_written_in_any_order_by_range_make_the_same_shards(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "SHARD_BYTES", 7 * 12)
    array = np.arange(60, dtype=np.int32).reshape(20, 3)
    writer = shards.ShardWriter(tmp_path / "s", 20, (3,), "<i4")
    ranges = writer.ranges(4)
    assert all(writer.starts[i] <= a and b <= writer.starts[i + 1] for a, b in ranges
               for i in [int(np.searchsorted(writer.starts, a, side="right")) - 1])  # never across shards
    for start, end in reversed(ranges):
        shards.write_rows(writer.target(start), array[start:end], (3,), np.dtype("<i4"))
    np.testing.assert_array_equal(writer.commit().to_numpy(), array)
    np.testing.assert_array_equal(open_shards(tmp_path / "s").to_numpy(), array)


def test_streamed_batches_are_the_arrays_in_order_or_a_seeded_permutation(tmp_path, monkeypatch):
    array = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
    labels = np.arange(23, dtype=np.int32)
    dataset = streaming_dataset(sharded(tmp_path, array, monkeypatch), labels, batch_size=5)
    batches = list(dataset.as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [5, 5, 5, 5, 3] and dataset.cardinality().numpy() == 5
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), array)

    shuffled = streaming_dataset(ShardedArray(sorted((tmp_path / "shards").glob("*.npy"))), labels, 5, shuffle_seed=3)
    epochs = [np.concatenate([b[1] for b in shuffled.as_numpy_iterator()]) for _ in range(2)]
    for seen in epochs:
        assert sorted(seen.tolist()) == labels.tolist()  # every row once per epoch
    assert epochs[0].tolist() != epochs[1].tolist()  # reshuffled each epoch
    again = streaming_dataset(ShardedArray(sorted((tmp_path / "shards").glob("*.npy"))), labels, 5, shuffle_seed=3)
    assert np.concatenate([b[1] for b in again.as_numpy_iterator()]).tolist() == epochs[0].tolist()
    x_of = {row[0]: i for i, row in enumerate(array)}
    first = next(iter(shuffled.as_numpy_iterator()))
    assert [x_of[row[0]] for row in first[0]] == first[1].tolist()  # rows stay with their labels


def test_streaming_training_reaches_the_accuracy_of_in_memory_training(tmp_path, monkeypatch):
    import keras

    from pipelines import training
    from pipelines.training import to_tf_dataset

    monkeypatch.setattr(training, "IN_MEMORY_BYTES", 0)  # stream even this small set
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240).astype(np.int32)
    x = (rng.standard_normal((240, 6, 6, 1)) * 0.5).astype(np.float32)
    x[np.arange(240), 2 * y] += 1.0  # each class lights its own row
    accuracies = []
    for source in (x, sharded(tmp_path, x, monkeypatch, rows_per_shard=50)):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(to_tf_dataset(source, y, 16, shuffle_seed=0), epochs=6, verbose=0, shuffle=False)
        accuracies.append(model.evaluate(to_tf_dataset(source, y, 64, None), verbose=0)[1])
    assert accuracies[0] >= 0.9
    assert accuracies[1] == pytest.approx(accuracies[0], abs=0.03)


def test_small_shards_are_loaded_and_large_ones_streamed(tmp_path, monkeypatch):
    from pipelines import streaming, training

    streamed = []
    original = streaming.streaming_dataset
    monkeypatch.setattr(streaming, "streaming_dataset", lambda *a, **k: streamed.append(1) or original(*a, **k))
    array = np.arange(40, dtype=np.float32).reshape(20, 2)
    x = sharded(tmp_path, array, monkeypatch)
    for limit, expected_streams in ((array.nbytes, 0), (array.nbytes - 1, 1)):
        monkeypatch.setattr(training, "IN_MEMORY_BYTES", limit)
        dataset = training.to_tf_dataset(x, np.zeros(20, np.int32), 8, None)
        assert len(streamed) == expected_streams
        np.testing.assert_array_equal(np.concatenate([b.numpy() for b, _ in dataset]), array)


def test_balanced_class_weights_are_n_over_classes_times_count():
    from pipelines.training import balanced_class_weights

    weights = balanced_class_weights(np.array([0, 0, 0, 1, 0, 0], np.int32), 3)
    np.testing.assert_allclose(weights, [6 / (3 * 5), 6 / (3 * 1), 1.0], rtol=1e-6)  # class 2: no input
    y = np.array([0] * 90 + [1] * 10, np.int32)
    assert np.mean(balanced_class_weights(y, 2)[y]) == pytest.approx(1.0)  # the loss keeps its scale


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("shuffle_seed", [None, 3])
def test_class_weights_follow_each_input_through_every_pipeline(tmp_path, monkeypatch, streamed, shuffle_seed):
    from pipelines import training

    array = np.arange(40, dtype=np.float32).reshape(20, 2)
    labels = (np.arange(20) % 3 == 0).astype(np.int32)
    x = sharded(tmp_path, array, monkeypatch)
    monkeypatch.setattr(training, "IN_MEMORY_BYTES", 0 if streamed else array.nbytes)
    dataset = training.to_tf_dataset(x, labels, 8, shuffle_seed, class_weights=np.array([0.5, 4.0], np.float32))
    batches = [[part.numpy() for part in batch] for batch in dataset]
    inputs, batch_labels, weights = (np.concatenate(parts) for parts in zip(*batches))
    np.testing.assert_array_equal(batch_labels, labels[(inputs[:, 0] / 2).astype(int)])  # rows keep their labels
    np.testing.assert_array_equal(weights, np.where(batch_labels == 1, 4.0, 0.5))


def test_shards_that_hold_fewer_rows_than_the_manifest_says_are_not_reused(tmp_path, monkeypatch):
    """Each shard matching its own header is not enough: rows missing as a whole shard would
    shift every label after them onto another input (the labels are not stored in the shards)."""
    sharded(tmp_path, np.arange(60, dtype=np.int32).reshape(20, 3), monkeypatch)
    path = tmp_path / "shards" / shards.MANIFEST
    manifest = json.loads(path.read_text())
    assert manifest["rows"] == 20 and len(manifest["shards"]) == 3
    path.write_text(json.dumps({**manifest, "shards": manifest["shards"][:2]}))  # a shard lost from the list
    assert open_shards(tmp_path / "shards") is None
    path.write_text(json.dumps({**manifest, "rows": 21}))
    assert open_shards(tmp_path / "shards") is None
    path.write_text(json.dumps(manifest))
    assert len(open_shards(tmp_path / "shards")) == 20
