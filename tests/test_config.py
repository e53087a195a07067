"""Run configuration: defaults < TOML file < flags, and the config.json round trip."""

from __future__ import annotations

import json

import pytest

from models import ModelSpec
from pipelines.config import RunConfig, TrainSettings, resolve_config
from pipelines.modality import MODALITIES, Modality
from preprocess import ConvpipeError

TOML = """
modality = "image"
data = "from/toml"

[preprocess]
image_size = [16, 16]
color_mode = "rgb"

[model]
filters = [8, 16]
dense = [32]
dropout = 0.1

[train]
epochs = 3
batch_size = 4
seed = 7
"""


@pytest.fixture
def toml_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(TOML, encoding="utf-8")
    return path


def test_defaults_come_from_the_modality_table():
    for modality in Modality:
        config = resolve_config(modality.value)
        assert config.modality is modality
        assert config.model == MODALITIES[modality].model_defaults
        assert config.train == TrainSettings(**MODALITIES[modality].train_defaults)
        assert config.preprocess == {} and config.data is None
    assert resolve_config("audio").model.head == "global_max"
    assert resolve_config("audio").train.epochs == 40
    assert resolve_config("text").model.filters == (128,)


def test_toml_overrides_defaults(toml_file):
    config = resolve_config(None, config_file=toml_file)
    assert config.modality is Modality.image
    assert config.data == "from/toml"
    assert config.preprocess == {"image_size": [16, 16], "color_mode": "rgb"}
    assert config.model.filters == (8, 16) and config.model.dense == (32,) and config.model.dropout == 0.1
    assert config.model.kernel_size == MODALITIES[Modality.image].model_defaults.kernel_size
    assert (config.train.epochs, config.train.batch_size, config.train.seed) == (3, 4, 7)
    assert config.train.learning_rate == TrainSettings().learning_rate


def test_flags_override_toml_and_unset_flags_do_not(toml_file):
    config = resolve_config(
        None,
        config_file=toml_file,
        data="from/flag",
        preprocess={"color_mode": "grayscale", "image_size": None},
        model={"filters": (4,), "dense": None, "dropout": None},
        train={"epochs": 1, "seed": None},
    )
    assert config.data == "from/flag"
    assert config.preprocess == {"image_size": [16, 16], "color_mode": "grayscale"}
    assert config.model.filters == (4,) and config.model.dense == (32,) and config.model.dropout == 0.1
    assert config.train.epochs == 1 and config.train.seed == 7


def test_modality_flag_overrides_the_file(toml_file):
    toml_file.write_text(TOML.replace("filters = [8, 16]", "filters = [8]"), encoding="utf-8")
    assert resolve_config("text", config_file=toml_file).modality is Modality.text


def test_run_config_round_trips_through_json():
    config = RunConfig(
        modality=Modality.audio,
        data="clips",
        preprocess={"num_mels": 16, "duration": 0.5},
        model=ModelSpec(filters=(4, 8), dense=(), batch_norm=True),
        train=TrainSettings(epochs=2, seed=5, strict=True),
    )
    document = json.loads(json.dumps(config.to_dict()))
    assert document["modality"] == "audio" and document["model"]["filters"] == [4, 8]
    assert RunConfig.from_dict(document) == config


@pytest.mark.parametrize(
    "document, message",
    [
        ({"modality": "image", "epochs": 3}, "Unknown configuration key.*epochs"),
        ({"modality": "image", "train": {"epoch": 3}}, r"Unknown \[train\] setting.*epoch"),
        ({"modality": "image", "model": {"filtres": [4]}}, r"\[model\]: Unknown model setting.*filtres"),
        ({"data": "x"}, "names no modality"),
        ({"modality": "video"}, "Unknown modality 'video'. Choose one of: image, audio, text"),
    ],
)
def test_unknown_keys_and_values_are_rejected(document, message):
    with pytest.raises(ConvpipeError, match=message):
        RunConfig.from_dict(document)


def test_unknown_keys_in_the_toml_file_are_rejected(toml_file):
    toml_file.write_text(TOML.replace("seed = 7", "seed = 7\nlearnin_rate = 0.1"), encoding="utf-8")
    with pytest.raises(ConvpipeError, match="learnin_rate"):
        resolve_config(None, config_file=toml_file)


def test_unknown_toml_tables_are_rejected(toml_file):
    toml_file.write_text(TOML.replace("[train]", "[trian]"), encoding="utf-8")
    with pytest.raises(ConvpipeError, match="trian"):
        resolve_config(None, config_file=toml_file)


def test_wrongly_typed_toml_values_are_a_clear_error(toml_file):
    toml_file.write_text(TOML.replace("seed = 7", 'seed = 7\nlearning_rate = "fast"'), encoding="utf-8")
    with pytest.raises(ConvpipeError, match="learning-rate"):
        resolve_config(None, config_file=toml_file)


@pytest.mark.parametrize(
    "train, message",
    [
        ({"epochs": 0}, "--epochs must be a positive integer"),
        ({"batch_size": -2}, "--batch-size must be a positive integer"),
        ({"learning_rate": 0.0}, "--learning-rate must be positive"),
        ({"val_split": 1.0}, r"--val-split must be in \[0, 1\)"),
        ({"val_split": 0.5, "test_split": 0.45}, "must leave data to train on"),
    ],
)
def test_bad_training_settings_are_rejected(train, message):
    with pytest.raises(ConvpipeError, match=message):
        resolve_config("image", train=train)


@pytest.mark.parametrize(
    "modality, model, name",
    [("image", {"filters": ()}, "filters"), ("text", {"filters": (4, 8)}, "filters"), ("image", {"dropout": 1.5}, "dropout")],
)
def test_bad_model_settings_are_rejected_naming_the_field(modality, model, name):
    with pytest.raises(ConvpipeError, match=name):
        resolve_config(modality, model=model)


def test_missing_modality_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConvpipeError, match="No modality given"):
        resolve_config(None)
    with pytest.raises(ConvpipeError, match="Config file not found"):
        resolve_config("image", config_file=tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("modality = \n", encoding="utf-8")
    with pytest.raises(ConvpipeError, match="is not valid TOML"):
        resolve_config(None, config_file=bad)


def test_an_explicit_seed_turns_on_determinism_unless_fast_is_asked_for(toml_file):
    assert resolve_config("image").train.deterministic is False
    assert resolve_config("image", train={"seed": 3}).train.deterministic is True
    assert resolve_config("image", train={"seed": 3, "deterministic": False}).train.deterministic is False
    assert resolve_config(None, config_file=toml_file).train.deterministic is True  # the TOML sets seed = 7
