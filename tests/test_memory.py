"""The memory check that refuses a training too large for the host before the kernel kills it."""

from __future__ import annotations

import json

import pytest

from pipelines.memory import available_memory, check_training_memory, predict_batch_size
from preprocess import ConvpipeError
from tests.conftest import assert_one_line_error, describe_result, invoke


def test_available_memory_takes_the_lower_of_the_host_and_the_container(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemAvailable:   20000000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    assert available_memory(meminfo, cgroup) == 20000000 * 1024  # no cgroup files
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "memory.current").write_text("1000\n")
    assert available_memory(meminfo, cgroup) == 20000000 * 1024  # no limit
    (cgroup / "memory.max").write_text(f"{8 * 2**30}\n")
    (cgroup / "memory.current").write_text(f"{2 * 2**30}\n")
    assert available_memory(meminfo, cgroup) == 6 * 2**30
    assert available_memory(tmp_path / "none", tmp_path / "none") is None


def test_the_estimate_counts_every_layers_output_and_the_optimizer_state():
    import keras

    model = keras.Sequential([keras.Input((10, 10, 1)), keras.layers.Conv2D(4, 3, padding="same"), keras.layers.Flatten()])
    # outputs: 400 + 400 values per input; 40 weights, each with a gradient and two Adam slots
    needed = (400 + 400) * 8 * 4 + 40 * 4 * 3
    check_training_memory(model, 8, "float32", needed)
    with pytest.raises(ConvpipeError, match=r"needs at least 0\.0 GB .*\(800 values per input"):
        check_training_memory(model, 8, "float32", needed - 1)
    check_training_memory(model, 8, "mixed_bfloat16", needed - 1)  # half the bytes per activation
    check_training_memory(model, 8, "float32", None)  # unknown: nothing to check


def test_train_refuses_a_model_too_large_for_the_memory_before_training(cli_runner, image_folder, tmp_path, monkeypatch):
    import pipelines.training

    monkeypatch.setattr(pipelines.training, "available_memory", lambda: 10**6)
    out = tmp_path / "run"
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", image_folder, "--out", out, "--epochs", "1"])
    assert_one_line_error(result, "needs at least", "GB of memory", "and 0.0 GB is free", "Lower --batch-size")
    assert not (out / "model.keras").exists() and not (out / "train_state").exists()


def test_the_memory_check_counts_the_batches_the_data_can_fill(cli_runner, image_folder, tmp_path, monkeypatch):
    # a batch size above the number of training inputs trains on batches of all of them: it was
    # refused as if each batch held --batch-size inputs ("needs at least 314.8 GB")
    import pipelines.training

    counted = []
    monkeypatch.setattr(pipelines.training, "check_training_memory", lambda model, batch, *rest: counted.append(batch))
    args = ["train", "--modality", "image", "--data", image_folder, "--epochs", "1", "--image-size", "8,8"]
    result = invoke(cli_runner, [*args, "--out", tmp_path / "run", "--batch-size", "100000000"])
    assert result.exit_code == 0, describe_result(result)
    trained_on = json.loads((tmp_path / "run" / "config.json").read_text())["class_counts"]["train"]
    assert counted == [sum(trained_on.values())]


def test_prediction_batches_hold_a_bounded_amount_of_layer_outputs(monkeypatch):
    import keras

    import pipelines.memory

    model = keras.Sequential([keras.Input((10, 10, 1)), keras.layers.Conv2D(4, 3, padding="same"), keras.layers.Flatten()])
    one_input = (400 + 400) * 4  # bytes of its layers' outputs
    monkeypatch.setattr(pipelines.memory, "PREDICT_BATCH_BYTES", 10 * one_input + 1)
    assert predict_batch_size(model) == 10
    monkeypatch.setattr(pipelines.memory, "PREDICT_BATCH_BYTES", 1)
    assert predict_batch_size(model) == 1  # never 0
    monkeypatch.setattr(pipelines.memory, "PREDICT_BATCH_BYTES", 2**40)
    assert predict_batch_size(model) == pipelines.memory.PREDICT_BATCH_SIZE


def test_evaluate_predicts_in_batches_sized_by_the_model(image_run, tmp_path, monkeypatch):
    """A fixed batch of 256 made evaluate take twice the memory training had needed."""
    import pipelines.memory
    import pipelines.streaming
    from pipelines.evaluation import evaluate

    expected = evaluate(image_run.run_dir, out=tmp_path / "whole").report
    monkeypatch.setattr(pipelines.memory, "PREDICT_BATCH_BYTES", 1)  # one input per batch
    sizes = []
    streaming_dataset = pipelines.streaming.streaming_dataset

    def spy(x, y, batch_size, *args, **kwargs):
        sizes.append(batch_size)
        return streaming_dataset(x, y, batch_size, *args, **kwargs)

    monkeypatch.setattr(pipelines.streaming, "streaming_dataset", spy)
    report = evaluate(image_run.run_dir, out=tmp_path / "one-by-one").report
    assert sizes == [1]
    assert report["confusion_matrix"] == expected["confusion_matrix"]
