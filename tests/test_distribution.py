"""tf.distribute on the CPU: mirrored over 2 logical CPU devices, and two workers on 127.0.0.1.

Logical devices and collective ops must be configured before TensorFlow starts, so these runs
are subprocesses of the real CLI. A worker whose peer never starts waits forever and ignores
SIGTERM: every process is killed with SIGKILL when it runs past its time.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import describe_result, invoke, write_image_folder, write_text_csv

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240
#: Dropout 0 and one batch per epoch (the global batch holds the whole training split of 24;
#: 6 validation inputs split evenly too): two replicas must then compute exactly what one device
#: computes, up to float summation order.
EXACT = ["--modality", "image", "--epochs", "2", "--filters", "4", "--dense", "8", "--image-size", "8,8",
         "--seed", "0", "--val-split", "0.2", "--test-split", "0.2", "--dropout", "0", "--global-batch-size", "24"]


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), **extra}


def start(args: list, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "cli.py", *map(str, args)], cwd=ROOT, env=environment(**extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(processes: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    """Wait for every process; SIGKILL all of them if any runs past TIMEOUT."""
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            results.append((process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
    return results


def history(run_dir: Path) -> dict[str, list[float]]:
    with open(run_dir / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in rows[0] if key != "epoch"}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("distributed") / "images")


def test_mirrored_on_two_cpu_replicas_matches_one_device(cli_runner, images, tmp_path):
    mirrored, single = tmp_path / "mirrored", tmp_path / "single"
    process = start(["train", *EXACT, "--data", images, "--out", mirrored, "--strategy", "mirrored", "--cpu-replicas", "2"])
    result = invoke(cli_runner, ["train", *EXACT, "--data", images, "--out", single])
    assert result.exit_code == 0, describe_result(result)
    [(code, stdout, stderr)] = finish([process])
    assert code == 0, stderr[-3000:]

    compute = json.loads((mirrored / "config.json").read_text())["compute"]
    assert (compute["strategy"], compute["replicas"], compute["workers"]) == ("mirrored", 2, 1)
    assert compute["devices"] == ["/device:CPU:0", "/device:CPU:1"] and compute["global_batch_size"] == 24
    expected, got = history(single), history(mirrored)
    assert got.keys() == expected.keys() and len(got["loss"]) == 2
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, atol=1e-5, err_msg=key)

    reports = []
    for run_dir in (mirrored, single):
        evaluated = invoke(cli_runner, ["evaluate", run_dir, "--device", "cpu"])
        assert evaluated.exit_code == 0, describe_result(evaluated)
        reports.append(json.loads((run_dir / "report" / "report.json").read_text()))
    assert reports[0]["n_samples"] == reports[1]["n_samples"] == 6
    assert reports[0]["confusion_matrix"] == reports[1]["confusion_matrix"]


def test_mirrored_runs_whose_last_batch_leaves_a_replica_empty(images, tmp_path):
    """Two runs, started together to share the start-up time.

    Text: 9 validation texts in batches of 8 + 1 left one replica an empty batch, on which
    TensorFlow's CPU Conv1D failed ("Must provide as many biases ...").
    Image: 21 training inputs in batches of 10 + 10 + 1 left a replica an empty batch, on which
    Conv2D failed ("input depth must be evenly divisible by filter depth"); now 8 + 8 + 5."""
    texts = write_text_csv(tmp_path / "texts.csv", per_class=26)  # 78: 60 train, 9 validation, 9 test
    text_run, image_run = tmp_path / "text-run", tmp_path / "image-run"
    processes = [
        start(["train", "--modality", "text", "--data", texts, "--out", text_run, "--epochs", "1",
               "--val-split", "0.1", "--test-split", "0.1", "--strategy", "mirrored", "--cpu-replicas", "2"]),
        start(["train", "--modality", "image", "--epochs", "2", "--filters", "4", "--dense", "8",
               "--image-size", "8,8", "--val-split", "0.15", "--test-split", "0.25", "--global-batch-size", "10",
               "--data", images, "--out", image_run, "--strategy", "mirrored", "--cpu-replicas", "2"]),
    ]
    for code, stdout, stderr in finish(processes):
        assert code == 0, stderr[-3000:]
    assert len(json.loads((text_run / "split.json").read_text())["validation"]) % 2 == 1
    assert len(history(text_run)["val_loss"]) == 1
    assert len(history(image_run)["val_loss"]) == 2


def test_two_workers_train_one_run_written_by_the_chief(images, tmp_path):
    import keras

    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    run_dir = tmp_path / "run"
    scratch = [tmp_path / f"tmp{index}" for index in range(2)]
    processes = []
    for index in range(2):
        scratch[index].mkdir()
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(
            start(["train", *EXACT, "--global-batch-size", "8", "--data", images, "--out", run_dir,
                   "--strategy", "multiworker"], TF_CONFIG=tf_config, TMPDIR=str(scratch[index]))
        )
    results = finish(processes)
    for code, stdout, stderr in results:
        assert code == 0, stderr[-3000:]

    # The chief (worker 0) wrote a complete run; worker 1 wrote nothing there, only its scratch.
    document = json.loads((run_dir / "config.json").read_text())
    assert document["compute"]["workers"] == 2 and document["compute"]["training_loop"] == "strategy.run"
    assert document["epochs_run"] == 2 and len(history(run_dir)["val_loss"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tmp0", "tmp1"]
    assert not any(scratch[0].rglob("*"))
    [weights_file] = scratch[1].rglob("final.weights.h5")
    assert "final.weights.h5" in results[1][1] and not (weights_file.parent / "train_state").exists()

    # Both workers end with the same weights.
    model = keras.models.load_model(run_dir / "model.keras")
    chief = [w.copy() for w in model.get_weights()]
    model.load_weights(weights_file)
    for a, b in zip(chief, model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert any(np.abs(w).sum() > 0 for w in chief)


def test_a_worker_one_epoch_ahead_rolls_back_to_the_epoch_all_backed_up(tmp_path):
    from pipelines.resume import TrainState
    from preprocess import ConvpipeError

    import h5py

    state = TrainState(tmp_path / "run")
    state.backup.mkdir(parents=True)
    for suffix, epoch in (("", 3), (".bkp", 2)):  # BackupAndRestore's double checkpoint
        with h5py.File(state.backup / f"latest.weights.h5{suffix}", "w") as weights:  # read in full on resume
            weights["epoch"] = epoch
        (state.backup / f"training_metadata.json{suffix}").write_text(json.dumps({"epoch": epoch, "batch": 0}))
    assert state.completed_epochs() == 3
    with pytest.raises(ConvpipeError, match="resume after epoch 1"):
        state.roll_back_to(1)
    state.roll_back_to(2)
    assert state.completed_epochs() == 2
    with h5py.File(state.backup / "latest.weights.h5", "r") as weights:
        assert weights["epoch"][()] == 2


@pytest.mark.parametrize("strategy", ["mirrored", "multiworker"])
def test_a_distribution_strategy_on_another_keras_backend_is_one_line(strategy, monkeypatch):
    # Keras' JAX trainer ignores tf.distribute: mirrored trained on one device while config.json
    # recorded two replicas, and multiworker ended in a 90-line traceback and a half-made run
    import keras

    from pipelines.compute import prepare_compute
    from pipelines.config import TrainSettings
    from preprocess import ConvpipeError

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ConvpipeError, match=f"--strategy {strategy} needs the tensorflow Keras backend, not jax"):
        prepare_compute(TrainSettings(strategy=strategy))
