"""Device choice, precision policy, XLA setting and the batch-size rule (no GPU needed)."""

from __future__ import annotations

import json

import pytest

from pipelines import devices
from pipelines.devices import cpu_flags, jit_setting, precision_policy
from pipelines.distribution import replica_batches, global_batch_size, worker_role, worker_scratch_dir
from preprocess import ConvpipeError
from tests.conftest import TINY_IMAGE, assert_one_line_error, invoke

# ---- precision rule --------------------------------------------------------------------------


def test_float32_everywhere_mixed_float16_on_gpu():
    assert precision_policy("float32", "cpu", set()) == "float32"
    assert precision_policy("float32", "gpu", set()) == "float32"
    assert precision_policy("mixed", "gpu", set()) == "mixed_float16"


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_mixed_on_a_cpu_with_bfloat16_instructions_is_bfloat16(flag):
    assert precision_policy("mixed", "cpu", {"avx2", flag}) == "mixed_bfloat16"


def test_mixed_on_a_cpu_without_bfloat16_is_refused():
    with pytest.raises(ConvpipeError, match="--precision float32"):
        precision_policy("mixed", "cpu", {"avx2", "avx512f", "fma"})


def test_unknown_precision_lists_the_choices():
    with pytest.raises(ConvpipeError, match="float32 | mixed"):
        precision_policy("half", "gpu", set())


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16 amx_tile\nbogomips: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512_bf16", "amx_tile"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_jit_is_off_on_cpu_auto_on_gpu_unless_asked():
    assert jit_setting(None, "cpu") is False
    assert jit_setting(None, "gpu") == "auto"
    assert jit_setting(True, "cpu") is True and jit_setting(False, "gpu") is False
    assert jit_setting(None, "cpu", "jax") == "auto" and jit_setting(False, "cpu", "jax") is False  # JAX without jit: op by op


# ---- batch sizes and TF_CONFIG ----------------------------------------------------------------


def test_global_batch_scales_with_replicas_unless_given():
    assert global_batch_size(32, None, 1) == 32
    assert global_batch_size(32, None, 4) == 128
    assert global_batch_size(32, 64, 4) == 64
    with pytest.raises(ConvpipeError, match="multiple of 4"):
        global_batch_size(32, 30, 4)


@pytest.mark.parametrize(
    "inputs, global_batch, replicas, expected",
    [
        (100, 16, 2, (16, 100)),  # a full first batch splits, and so does the last (4)
        (3, 16, 1, (16, 3)),
        (4, 16, 2, (4, 4)),
        (7, 16, 2, (4, 7)),  # 6 + 1 would leave a replica empty; 4 + 3 does not
        (65, 32, 2, (30, 65)),  # 32 + 32 + 1 -> 30 + 30 + 5
        (3, 16, 2, (2, 2)),  # no even size leaves both replicas inputs: the last one is left out
        (9, 8, 4, (8, 8)),
    ],
)
def test_batches_split_over_replicas_without_an_empty_one(inputs, global_batch, replicas, expected):
    size, used = replica_batches(inputs, global_batch, replicas)
    assert (size, used) == expected
    assert size % replicas == 0 or replicas == 1
    last = used % size
    assert last == 0 or last >= replicas


def test_a_split_smaller_than_the_replicas_is_an_error():
    with pytest.raises(ConvpipeError, match="fewer than the 2 replicas"):
        replica_batches(1, 16, 2, "validation")


def cluster(task_type: str, index: int, chief: bool = False) -> str:
    members = {"worker": ["127.0.0.1:1", "127.0.0.1:2"], **({"chief": ["127.0.0.1:3"]} if chief else {})}
    return json.dumps({"cluster": members, "task": {"type": task_type, "index": index}})


def test_worker_zero_is_chief_only_without_a_chief_task():
    assert worker_role(cluster("worker", 0)).is_chief
    assert not worker_role(cluster("worker", 1)).is_chief
    assert worker_role(cluster("worker", 1)).workers == 2
    assert not worker_role(cluster("worker", 0, chief=True)).is_chief
    assert worker_role(cluster("chief", 0, chief=True)).is_chief
    assert worker_role(cluster("chief", 0, chief=True)).workers == 3


@pytest.mark.parametrize(
    "text, fragment",
    [("", "needs the TF_CONFIG"), ("{not json", "not valid"), (cluster("worker", 5), "index 5 is not in its cluster"),
     (cluster("ps", 0), "'ps'")],
)
def test_bad_tf_config_is_one_clear_error(text, fragment):
    with pytest.raises(ConvpipeError, match=fragment):
        worker_role(text)


def test_worker_scratch_is_stable_and_outside_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", cluster("worker", 1))
    role = worker_role()
    run_dir = tmp_path / "runs" / "speech"
    scratch = worker_scratch_dir(run_dir, role)
    assert scratch == worker_scratch_dir(run_dir, role)  # a restarted worker finds its backups
    assert run_dir not in scratch.parents and scratch.name == "worker-1"
    assert worker_scratch_dir(tmp_path / "other", role) != scratch


# ---- the CLI: refusals come first, as one line -----------------------------------------------


def test_device_gpu_without_a_gpu_says_how_to_install(cli_runner, image_folder, tmp_path):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    out = tmp_path / "run"
    args = ["train", "--modality", "image", "--data", image_folder, "--out", out, "--device", "gpu", *TINY_IMAGE]
    assert_one_line_error(invoke(cli_runner, args), "--device gpu", 'pip install -e ".[gpu]"')
    assert not out.exists()
    assert_one_line_error(invoke(cli_runner, ["evaluate", out, "--device", "gpu"]), "sees no GPU")


def test_mixed_precision_on_a_cpu_without_bfloat16_is_refused(cli_runner, image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx2", "fma"})  # the CPU of this machine
    out = tmp_path / "run"
    args = ["train", "--modality", "image", "--data", image_folder, "--out", out, "--device", "cpu",
            "--precision", "mixed", *TINY_IMAGE]
    assert_one_line_error(invoke(cli_runner, args), "--precision mixed needs a GPU", "avx512_bf16", "--precision float32")
    assert not out.exists()


@pytest.mark.parametrize(
    "options, fragment",
    [(["--strategy", "multiworker"], "TF_CONFIG"), (["--cpu-replicas", "2"], "only helps --strategy mirrored"),
     (["--strategy", "ring"], "none | mirrored | multiworker"), (["--device", "tpu"], "auto | cpu | gpu"),
     (["--strategy", "mirrored", "--global-batch-size", "0"], "--global-batch-size must be a positive integer")],
)
def test_bad_compute_options_are_one_line(cli_runner, image_folder, tmp_path, monkeypatch, options, fragment):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    args = ["train", "--modality", "image", "--data", image_folder, "--out", tmp_path / "run", *TINY_IMAGE, *options]
    assert_one_line_error(invoke(cli_runner, args), fragment)


def test_a_run_records_its_compute_settings(image_run):
    document = json.loads((image_run.run_dir / "config.json").read_text())
    train = document["config"]["train"]
    assert {k: train[k] for k in ("device", "precision", "jit", "strategy", "cpu_replicas", "global_batch_size")} == {
        "device": "auto", "precision": "float32", "jit": None, "strategy": "none", "cpu_replicas": 1,
        "global_batch_size": None,
    }
    compute = document["compute"]
    assert compute["device"] == "cpu" and compute["precision_policy"] == "float32" and compute["jit"] is False
    assert (compute["strategy"], compute["replicas"], compute["workers"]) == ("none", 1, 1)
    assert compute["global_batch_size"] == train["batch_size"] and compute["training_loop"] == "model.fit"


def test_compute_settings_come_from_toml(tmp_path):
    from pipelines.config import RunConfig, resolve_config

    path = tmp_path / "run.toml"
    path.write_text('modality = "image"\n[train]\nstrategy = "mirrored"\ncpu_replicas = 2\nprecision = "mixed"\njit = true\n')
    config = resolve_config(None, config_file=path, train={"global_batch_size": 64})
    assert (config.train.strategy, config.train.cpu_replicas, config.train.global_batch_size) == ("mirrored", 2, 64)
    assert config.train.precision == "mixed" and config.train.jit is True
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# ---- mixed precision keeps the softmax in float32 --------------------------------------------


def test_models_under_a_mixed_policy_compute_low_precision_but_output_float32():
    import keras
    import numpy as np

    from models import ModelSpec, build_conv_model, build_text_model

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        conv = build_conv_model((8, 8, 1), 3, ModelSpec(filters=(4,), dense=(8,)))
        text = build_text_model(10, 20, 3, ModelSpec(filters=(4,), window_sizes=(2, 3), embedding_dim=4))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert conv.get_layer("conv1").compute_dtype == "bfloat16"
    assert conv.get_layer("conv1").kernel.dtype == "float32"  # weights stay float32
    for model, x in ((conv, np.ones((2, 8, 8, 1), "float32")), (text, np.ones((2, 10), "int32"))):
        assert model.get_layer("votes").compute_dtype == "float32"
        probabilities = model(x)
        assert str(probabilities.dtype) in ("float32", "<dtype: 'float32'>")
        assert np.allclose(np.asarray(probabilities).sum(axis=1), 1.0, atol=1e-5)
