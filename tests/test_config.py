"""Run configuration: defaults < TOML file < flags, and the config.json round trip."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

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
    assert config.data == str(toml_file.parent / "from" / "toml")
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
    # (the image settings of [preprocess] would be refused for text, see below)
    toml = TOML.replace("filters = [8, 16]", "filters = [8]").replace('image_size = [16, 16]\ncolor_mode = "rgb"\n', "")
    toml_file.write_text(toml, encoding="utf-8")
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


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("seed = 7", 'seed = 7\nlearning_rate = "fast"', r'\[train\] learning_rate must be a number, got "fast"'),
        ("seed = 7", "seed = 1.5", r"\[train\] seed must be an integer, got 1.5"),
        ("seed = 7", "seed = true", r"\[train\] seed must be an integer, got true"),
        ("epochs = 3", 'epochs = "two"', r"\[train\] epochs must be an integer, got \"two\""),
        ("seed = 7", 'seed = 7\ncache = "yes"', r"\[train\] cache must be true or false, got \"yes\""),
        ("seed = 7", 'seed = 7\ndeterministic = "no"', r"\[train\] deterministic must be true or false"),
        ("seed = 7", "seed = 7\nstrict = 1", r"\[train\] strict must be true or false, got 1"),
        ("seed = 7", "seed = 7\nglobal_batch_size = true", r"\[train\] global_batch_size must be an integer"),
        ("dropout = 0.1", 'dropout = 0.1\nhead = 3', r"\[model\] head must be a string, got 3"),
        ("filters = [8, 16]", 'filters = "sixteen"', r'\[model\] filters must be a list of integers, got "sixteen"'),
        ("filters = [8, 16]", "filters = [8, true]", r"\[model\] filters must be a list of integers"),
        ("dropout = 0.1", "dropout = false", r"\[model\] dropout must be a number, got false"),
        ("dropout = 0.1", "dropout = 0.1\nbatch_norm = 1", r"\[model\] batch_norm must be true or false, got 1"),
    ],
)
def test_wrongly_typed_toml_values_are_a_clear_error_naming_the_file_and_key(toml_file, old, new, message):
    toml_file.write_text(TOML.replace(old, new), encoding="utf-8")
    with pytest.raises(ConvpipeError, match=f"^{toml_file}: {message}"):
        resolve_config(None, config_file=toml_file)


@pytest.mark.parametrize(
    "text, message",
    [
        ("modality = 5", "modality must be a string, got 5"),
        ('modality = "image"\ndata = 7', "data must be a string, got 7"),
        ('modality = "image"\nmodel = 3', r"model must be a table \(\[model\]\), got 3"),
        ('modality = "image"\ntrain = [1]', r"train must be a table \(\[train\]\), got \[1\]"),
        ('modality = "image"\npreprocess = "x"', r"preprocess must be a table"),
    ],
)
def test_wrongly_typed_top_level_toml_values_are_a_clear_error(tmp_path, text, message):
    path = tmp_path / "run.toml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConvpipeError, match=f"^{path}: {message}"):
        resolve_config(None, config_file=path)


def test_one_toml_value_stands_for_a_list_of_one(toml_file):
    toml_file.write_text(TOML.replace("filters = [8, 16]", "filters = 8"), encoding="utf-8")
    assert resolve_config(None, config_file=toml_file).model.filters == (8,)


def test_a_relative_toml_data_path_is_relative_to_the_file_and_a_flag_to_the_cwd(toml_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    relative = toml_file.relative_to(tmp_path.parent)  # the file given by a relative path
    assert resolve_config(None, config_file=relative).data == str(relative.parent / "from" / "toml")
    assert resolve_config(None, config_file=relative, data="from/flag").data == "from/flag"
    toml_file.write_text(TOML.replace('"from/toml"', f'"{tmp_path / "elsewhere"}"'), encoding="utf-8")
    assert resolve_config(None, config_file=toml_file).data == str(tmp_path / "elsewhere")


@pytest.mark.parametrize(
    "modality, model, preprocess, message",
    [
        ("text", {"kernel_size": 99}, {}, "--kernel-size does not apply to text models (they use --window-sizes)"),
        ("text", {"pool_size": 50}, {}, "--pool-size does not apply to text models"),
        ("text", {"pool_stride": 2}, {}, "--pool-stride does not apply to text models"),
        ("text", {"batch_norm": True}, {}, "--batch-norm does not apply to text models"),
        ("text", {"batch_norm": False}, {}, "--batch-norm does not apply to text models"),
        ("image", {"window_sizes": (3,)}, {}, "--window-sizes does not apply to image models (text models only)"),
        ("audio", {"text_kernel": "full"}, {}, "--text-kernel does not apply to audio models"),
        ("image", {"embedding_dim": 8}, {}, "--embedding-dim does not apply to image models"),
        ("audio", {}, {"level": "word"}, "--level does not apply to audio inputs"),
        ("image", {}, {"level": "word"}, "--level does not apply to image inputs"),
        ("text", {}, {"num_mels": 16}, "--num-mels does not apply to text inputs"),
    ],
)
def test_flags_for_knobs_the_modality_does_not_have_are_refused(modality, model, preprocess, message):
    with pytest.raises(ConvpipeError, match=re.escape(message)):
        resolve_config(modality, model=model, preprocess=preprocess)


@pytest.mark.parametrize(
    "modality, key, message",
    [
        ("text", "kernel_size = 5", "[model] kernel_size does not apply to text models (they use window_sizes)"),
        ("image", "window_sizes = [3]", "[model] window_sizes does not apply to image models"),
    ],
)
def test_toml_keys_for_knobs_the_modality_does_not_have_are_refused(toml_file, modality, key, message):
    toml_file.write_text(TOML.replace('modality = "image"', f'modality = "{modality}"').replace(
        "filters = [8, 16]", f"filters = [8]\n{key}"), encoding="utf-8")
    with pytest.raises(ConvpipeError, match=re.escape(f"{toml_file}: {message}")):
        resolve_config(None, config_file=toml_file)


def test_defaults_and_unset_flags_of_other_modalities_are_fine():
    flags = {"kernel_size": None, "window_sizes": None, "batch_norm": None, "embedding_dim": None}
    for modality in Modality:
        resolve_config(modality.value, model=flags, preprocess={"level": None, "num_mels": None})


@pytest.mark.parametrize("modality", list(Modality))
def test_an_older_runs_config_json_with_every_knob_still_trains_again(tmp_path, modality):
    config = resolve_config(modality.value)
    recorded = config.to_dict()
    # Runs before the unused knobs were left out recorded them all, some set (flags took them).
    other = {"kernel_size": 5} if modality is Modality.text else {"window_sizes": [7], "embedding_dim": 8}
    recorded["model"] = {**config.model.to_dict(), **other}
    (tmp_path / "config.json").write_text(json.dumps({"run_format": 1, "config": recorded}), encoding="utf-8")
    assert RunConfig.from_dict(recorded).model == config.model  # read back as defaults: no warning
    assert resolve_config(None, config_file=tmp_path / "config.json").model == config.model


def test_an_older_full_kernel_text_runs_recorded_embedding_dim_reads_back_as_the_default():
    # which fields are unused depends on the kernel the run recorded, not the modality's default one
    config = resolve_config("text", model={"text_kernel": "full"})
    recorded = config.to_dict()
    recorded["model"] = {**config.model.to_dict(), "embedding_dim": 8}
    assert RunConfig.from_dict(recorded).model == config.model


@pytest.mark.parametrize(
    "model, toml, message",
    [
        ({"pool_stride": 3}, "", "pool_stride=3 is larger than pool_size=2: each pooling skips 1 of every 3 rows"),
        ({}, "pool_size = 1\npool_stride = 2", "pool_stride=2 is larger than pool_size=1"),
        ({"pool_size": 3, "pool_stride": 2}, "", None),  # overlapping windows read everything
        ({"pool_size": 2, "pool_stride": 2}, "", None),
    ],
)
def test_a_pooling_stride_larger_than_its_window_is_refused(toml_file, model, toml, message):
    toml_file.write_text(TOML.replace("dropout = 0.1", f"dropout = 0.1\n{toml}"), encoding="utf-8")
    if message is None:
        assert resolve_config(None, config_file=toml_file, model=model).model.pool_stride == model["pool_stride"]
        return
    with pytest.raises(ConvpipeError, match=re.escape(message)) as error:
        resolve_config(None, config_file=toml_file, model=model)
    assert "lower --pool-stride" in str(error.value) and "raise --pool-size" in str(error.value)


@pytest.mark.parametrize("modality", list(Modality))
def test_config_json_records_only_the_knobs_the_model_has(modality):
    config = resolve_config(modality.value)
    recorded = config.to_dict()["model"]
    unused = ModelSpec.unused_fields(text=modality is Modality.text)
    assert unused and not set(unused) & set(recorded)
    assert "filters" in recorded and "dropout" in recorded
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    "train, message",
    [
        ({"epochs": 0}, "--epochs must be a positive integer"),
        ({"batch_size": -2}, "--batch-size must be a positive integer"),
        ({"patience": -1}, "--patience must be 0 or a positive integer, got -1"),  # said positive; 0 is allowed
        ({"learning_rate": 0.0}, "--learning-rate must be a positive finite number"),
        ({"learning_rate": float("inf")}, "--learning-rate must be a positive finite number, got inf"),
        ({"val_split": 1.0}, r"--val-split must be in \[0, 1\)"),
        ({"val_split": 0.5, "test_split": 0.45}, "must leave data to train on"),
        ({"seed": -1}, r"--seed must be an integer from 0 to 2\*\*32 - 1, got -1"),
        ({"seed": 2**32}, "--seed must be an integer from 0 to"),
        ({"seed": 99999999999999999999}, "--seed must be an integer from 0 to"),
        ({"seed": 1.5}, "--seed must be an integer from 0 to"),
        ({"seed": True}, "--seed must be an integer from 0 to"),
        ({"cache": "yes"}, "cache must be true or false"),
    ],
)
def test_bad_training_settings_are_rejected(train, message):
    with pytest.raises(ConvpipeError, match=message):
        resolve_config("image", train=train)


def test_a_toml_file_with_a_byte_order_mark_is_read_and_one_not_in_utf8_is_named(tmp_path):
    marked = tmp_path / "notepad.toml"
    marked.write_bytes(b"\xef\xbb\xbfmodality = \"image\"\n")  # as Windows Notepad saves UTF-8
    assert resolve_config(None, config_file=marked).modality is Modality.image
    latin = tmp_path / "latin.toml"
    latin.write_bytes('modality = "image"\n# café\n'.encode("latin-1"))
    with pytest.raises(ConvpipeError, match=r"latin.toml is not UTF-8 text \(invalid"):  # said "not valid JSON"
        resolve_config(None, config_file=latin)


def test_patience_zero_is_allowed():
    assert resolve_config("image", train={"patience": 0}).train.patience == 0


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("epochs", 0, r"run.toml: \[train\] epochs must be a positive integer, got 0\.$"),  # said --epochs
        ("val_split", 1.5, r"run.toml: \[train\] val_split must be in \[0, 1\)"),
        ("device", "tpu", r"run.toml: \[train\] device must be one of auto \| cpu \| gpu"),
    ],
)
def test_out_of_range_toml_values_name_the_file_and_key_and_flags_the_flag(toml_file, key, value, message):
    text = re.sub(rf"^{key} = .*\n", "", TOML, flags=re.M).replace("[train]\n", f"[train]\n{key} = {json.dumps(value)}\n")
    toml_file.write_text(text, encoding="utf-8")
    with pytest.raises(ConvpipeError, match=message):
        resolve_config(None, config_file=toml_file)
    # The same value given as a flag, over the file's, is the flag's fault.
    with pytest.raises(ConvpipeError, match=f"^--{key.replace('_', '-')} must"):
        resolve_config(None, config_file=toml_file, train={key: value})


@pytest.mark.parametrize(
    "modality, model, name",
    [
        ("image", {"filters": ()}, "filters"),
        ("text", {"filters": (4, 8)}, "filters"),
        ("image", {"dropout": 1.5}, "dropout"),
        ("text", {"window_sizes": (3, 3)}, "`window_sizes` must be distinct"),
    ],
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


def test_a_new_seed_on_an_unseeded_runs_config_json_turns_on_determinism_too(tmp_path):
    # the record's "deterministic": false is what the missing seed made of it, not a choice
    recorded = run_config_json(tmp_path, resolve_config("image"))
    assert resolve_config(None, config_file=recorded).train.deterministic is False
    assert resolve_config(None, config_file=recorded, train={"seed": 3}).train.deterministic is True
    assert resolve_config(None, config_file=recorded, train={"seed": 3, "deterministic": False}).train.deterministic is False
    fast = tmp_path / "fast"
    fast.mkdir()  # a run asked for --seed 0 --fast keeps it when retrained as it was
    seeded_fast = run_config_json(fast, resolve_config("image", train={"seed": 0, "deterministic": False}))
    assert resolve_config(None, config_file=seeded_fast).train.deterministic is False


def test_batch_size_and_global_batch_size_are_one_setting(tmp_path):
    with pytest.raises(ConvpipeError, match="--batch-size and --global-batch-size both set the batch size"):
        resolve_config("image", train={"batch_size": 4, "global_batch_size": 16})
    # --batch-size over a file's global batch size: the flag decides, as flags do
    recorded = run_config_json(tmp_path, resolve_config("image", train={"global_batch_size": 16}))
    config = resolve_config(None, config_file=recorded, train={"batch_size": 2})
    assert (config.train.batch_size, config.train.global_batch_size) == (2, None)
    assert resolve_config(None, config_file=recorded).train.global_batch_size == 16


def test_paths_in_a_toml_file_are_relative_to_it_and_an_empty_data_path_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "configs" / "sub"
    folder.mkdir(parents=True)
    (folder / "run.toml").write_text('modality = "image"\ndata = "../../data"\n[train]\ncache_dir = "mycache"\n')
    monkeypatch.chdir(tmp_path)
    config = resolve_config(None, config_file=folder / "run.toml")
    assert Path(config.train.cache_dir) == (folder / "mycache").resolve()  # was ./mycache, stored relative
    # a run's config.json records its cache as it was used (a relative one before it was made
    # absolute): not moved to beside the run
    recorded = run_config_json(tmp_path, resolve_config("image", train={"cache_dir": "old-relative"}))
    assert resolve_config(None, config_file=recorded).train.cache_dir == "old-relative"
    (folder / "empty.toml").write_text('modality = "image"\ndata = ""\n')
    with pytest.raises(ConvpipeError, match="data is empty"):
        resolve_config(None, config_file=folder / "empty.toml")


def test_the_embedding_size_of_the_full_text_kernel_which_has_none_is_refused_not_recorded(tmp_path):
    # accepted and recorded, it made a sweep over --embedding-dim train identical models that
    # compare listed as differing in embedding_dim
    with pytest.raises(ConvpipeError, match="--embedding-dim does not apply to the full text kernel"):
        resolve_config("text", model={"text_kernel": "full", "embedding_dim": 999})
    toml = tmp_path / "full.toml"
    toml.write_text('modality = "text"\n[model]\ntext_kernel = "full"\nembedding_dim = 8\n')
    with pytest.raises(ConvpipeError, match=r"full.toml: \[model\] embedding_dim does not apply"):
        resolve_config(None, config_file=toml)
    # a factorized run's record, retrained with the full kernel: its embedding size was no choice
    recorded = run_config_json(tmp_path, resolve_config("text", model={"embedding_dim": 32}))
    config = resolve_config(None, config_file=recorded, model={"text_kernel": "full"})
    assert config.model.text_kernel == "full" and "embedding_dim" not in config.to_dict()["model"]
    assert "embedding_dim" in resolve_config("text").to_dict()["model"]


def test_hash_buckets_without_character_n_grams_are_refused_not_recorded(tmp_path):
    with pytest.raises(ConvpipeError, match=r"--hash-buckets does not apply without character n-grams \(word level"):
        resolve_config("text", preprocess={"level": "word", "hash_buckets": 100})
    with pytest.raises(ConvpipeError, match=r"--hash-buckets does not apply without character n-grams \(--ngram-sizes ''"):
        resolve_config("text", preprocess={"level": "char", "ngram_sizes": (), "hash_buckets": 100})
    toml = tmp_path / "words.toml"
    toml.write_text('modality = "text"\n[preprocess]\nlevel = "word"\nhash_buckets = 100\n')
    with pytest.raises(ConvpipeError, match=r"words.toml: \[preprocess\] hash_buckets does not apply"):
        resolve_config(None, config_file=toml)
    # a word-level run's record holds every setting, the unused hash_buckets too: no choice
    recorded = run_config_json(tmp_path, resolve_config("text", preprocess={"level": "word"}))
    assert resolve_config(None, config_file=recorded).preprocess["level"] == "word"
    assert resolve_config("text", preprocess={"hash_buckets": 100}).preprocess["hash_buckets"] == 100  # char read later


def test_a_run_record_read_under_another_level_leaves_its_level_settings_to_the_new_level(tmp_path):
    # a char-level run's n-grams and positions (in characters), retrained with --level word
    recorded = run_config_json(tmp_path, resolve_config("text", preprocess={"level": "char", "ngram_sizes": (2, 3), "positions": 900}))
    words = resolve_config(None, config_file=recorded, preprocess={"level": "word"}).preprocess
    assert words["level"] == "word" and not {"ngram_sizes", "hash_buckets", "positions"} & set(words)
    kept = resolve_config(None, config_file=recorded, preprocess={"level": "word", "positions": 50}).preprocess
    assert kept["positions"] == 50  # flags still decide
    assert resolve_config(None, config_file=recorded).preprocess["ngram_sizes"] == [2, 3]  # same level: kept
    # a word-level run's record holds ngram_sizes = [] and the library's buckets: under --level
    # char they read bare characters; now the character defaults choose n-grams
    folder = tmp_path / "words"
    folder.mkdir()
    record = {"level": "word", "ngram_sizes": [], "hash_buckets": 16384, "positions": None, "vocabulary_size": 500, "tokenizer_version": 2}
    recorded = run_config_json(folder, resolve_config("text", preprocess={"level": "word", "vocabulary_size": 500}))
    document = json.loads(recorded.read_text())
    document["config"]["preprocess"] = record  # as train records a fitted preprocessor's settings
    recorded.write_text(json.dumps(document))
    chars = resolve_config(None, config_file=recorded, preprocess={"level": "char", "hash_buckets": 100}).preprocess
    assert chars == {"level": "char", "vocabulary_size": 500, "hash_buckets": 100, "tokenizer_version": 2}
    with pytest.raises(ConvpipeError) as caught:  # another error over a word-level record: no n-gram hint
        resolve_config(None, config_file=recorded, preprocess={"vocabulary_size": 2})
    assert "vocabulary_size" in str(caught.value) and "--ngram-sizes" not in str(caught.value)
    # a TOML file's n-grams are the user's own: under --level word, the error names the way out
    toml = tmp_path / "chars.toml"
    toml.write_text('modality = "text"\n[preprocess]\nngram_sizes = [2, 3]\n')
    with pytest.raises(ConvpipeError, match="pass --ngram-sizes '' to read words without them"):
        resolve_config(None, config_file=toml, preprocess={"level": "word"})


def run_config_json(tmp_path, config: RunConfig) -> Path:
    """A run's config.json as train writes it: the settings under `config` (with the reader
    versions every fitted preprocessor records), beside other records."""
    path = tmp_path / "run" / "config.json"
    path.parent.mkdir()
    settings = config.to_dict()
    settings["preprocess"] = {**current_versions(config.modality), **settings["preprocess"]}
    document = {"run_format": 1, "config": settings, "classes": ["a", "b"], "val_accuracy": 0.5}
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return path


def current_versions(modality) -> dict:
    """The reading parameters added after runs were first saved, at this version's values."""
    from pipelines.modality import MODALITIES, parse_modality

    cls = MODALITIES[parse_modality(str(getattr(modality, "value", modality)))].preprocessor
    return {name: getattr(cls(), name) for name in cls.saved_before}


def test_a_run_recorded_before_a_reading_parameter_existed_is_retrained_as_it_read(tmp_path):
    # a text run from before tokenizer_version 2: its config.json holds no such key, and
    # retraining from it used this version's tokenizer
    for modality, name in (("text", "tokenizer_version"),):
        (tmp_path / modality).mkdir()
        path = run_config_json(tmp_path / modality, resolve_config(modality))
        document = json.loads(path.read_text())
        assert document["config"]["preprocess"].pop(name) == 2
        path.write_text(json.dumps(document))
        assert resolve_config(None, config_file=path).preprocess[name] == 1
        assert resolve_config(None, config_file=path, preprocess={name: 2}).preprocess[name] == 2  # flags still win


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_a_runs_config_json_is_a_config_file_that_gives_back_its_settings(tmp_path, modality):
    preprocess = {
        "image": {"image_size": [8, 8], "color_mode": "grayscale"},
        "audio": {"num_mels": 16, "fmax": None, "top_db": None},  # JSON null: kept, not the default
        "text": {"level": "char", "positions": None, "ngram_sizes": [2, 3], "hash_buckets": 64},
    }[modality]
    recorded = resolve_config(modality, preprocess=preprocess, model={"filters": (4,)}, train={"epochs": 2, "seed": 9})
    assert recorded.train.jit is None and recorded.train.cache_dir is None  # null in config.json
    path = run_config_json(tmp_path, recorded)
    recorded = dataclasses.replace(recorded, preprocess={**current_versions(modality), **recorded.preprocess})
    assert resolve_config(None, config_file=path) == recorded
    # flags still override it: one knob changed, everything else as recorded
    variant = resolve_config(None, config_file=path, model={"filters": (16,)}, train={"epochs": None})
    assert variant == dataclasses.replace(recorded, model=dataclasses.replace(recorded.model, filters=(16,)))


def test_a_runs_config_json_keeps_its_absolute_data_path_and_null_data_means_the_demo(tmp_path):
    path = run_config_json(tmp_path, resolve_config("image", data=str(tmp_path / "photos")))
    assert resolve_config(None, config_file=path).data == str(tmp_path / "photos")
    path.write_text(path.read_text().replace(json.dumps(str(tmp_path / "photos")), "null"), encoding="utf-8")
    assert resolve_config(None, config_file=path).data is None


def test_a_json_config_file_with_the_toml_tables_and_its_errors(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"modality": "image", "data": "photos", "model": {"filters": [8]}}), encoding="utf-8")
    config = resolve_config(None, config_file=path)
    assert config.data == str(tmp_path / "photos") and config.model.filters == (8,)
    path.write_text(json.dumps({"modality": "image", "train": {"epochs": None}}), encoding="utf-8")
    with pytest.raises(ConvpipeError, match=re.escape(f"{path}: [train] epochs must be an integer, got null")):
        resolve_config(None, config_file=path)
    path.write_text("{modality: image", encoding="utf-8")
    with pytest.raises(ConvpipeError, match="is not valid JSON"):
        resolve_config(None, config_file=path)
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ConvpipeError, match="is not a JSON object"):
        resolve_config(None, config_file=path)


def test_a_run_folder_as_config_file_names_its_config_json(tmp_path):
    path = run_config_json(tmp_path, resolve_config("image"))
    with pytest.raises(ConvpipeError, match=re.escape(f"is a folder; pass a TOML file or a run's config.json (a run's settings are in {path})")):
        resolve_config(None, config_file=path.parent)


def test_an_unknown_preprocess_key_in_the_file_names_the_file_and_key(toml_file):
    toml_file.write_text(TOML.replace("image_size = [16, 16]", "image_sise = [16, 16]"), encoding="utf-8")
    with pytest.raises(ConvpipeError, match=re.escape(f"{toml_file}: [preprocess] image_sise is not a setting of image inputs; known: image_size,")):
        resolve_config(None, config_file=toml_file)
    toml_file.write_text(TOML, encoding="utf-8")
    with pytest.raises(ConvpipeError, match=re.escape("[preprocess] image_size is not a setting of audio inputs")):
        resolve_config("audio", config_file=toml_file)  # the image file's tables under --modality audio


def test_impossible_preprocessing_values_are_refused_before_any_data_naming_the_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('modality = "audio"\ndata = "nowhere"\n[preprocess]\nfmax = 20000.0\n', encoding="utf-8")
    # "nowhere" does not exist: the setting is refused first, by resolving alone
    with pytest.raises(ConvpipeError, match=rf"^{re.escape(str(path))}: \[preprocess\] Bad audio preprocessing setting: .*fmax=20000"):
        resolve_config(None, config_file=path)
    with pytest.raises(ConvpipeError, match=r"^Bad audio preprocessing setting: .*fmin=3000"):
        resolve_config("audio", preprocess={"fmin": 3000.0, "fmax": 2000.0})
    # the file's value, wrong with or without the flags': the file is named
    with pytest.raises(ConvpipeError, match=rf"^{re.escape(str(path))}: \[preprocess\] Bad audio"):
        resolve_config(None, config_file=path, preprocess={"num_mels": 16})
    # the flags' value alone is wrong: the file is not blamed
    path.write_text('modality = "audio"\n[preprocess]\nnum_mels = 16\n', encoding="utf-8")
    with pytest.raises(ConvpipeError, match=r"^Bad audio preprocessing setting: .*fmax=20000"):
        resolve_config(None, config_file=path, preprocess={"fmax": 20000.0})
    # right alone, wrong together: fmax = 7000 is fine at 16 kHz, not at --sample-rate 8000
    path.write_text('modality = "audio"\n[preprocess]\nfmax = 7000.0\n', encoding="utf-8")
    with pytest.raises(ConvpipeError, match=rf"^{re.escape(str(path))}: \[preprocess\] \(with the flags given\) Bad audio"):
        resolve_config(None, config_file=path, preprocess={"sample_rate": 8000})


def test_n_gram_settings_without_a_level_wait_for_the_data_to_choose_it():
    # the data may choose character level, which n-grams need: not refused before it is read
    config = resolve_config("text", preprocess={"ngram_sizes": [2, 3]})
    assert config.preprocess == {"ngram_sizes": [2, 3]}
    with pytest.raises(ConvpipeError, match="ngram_sizes"):
        resolve_config("text", preprocess={"ngram_sizes": [2, 3], "level": "word"})


def test_a_run_from_before_augmentation_reads_as_its_modalitys_kind():
    for modality, kind in (("audio", "spectrogram"), ("image", "image")):
        config = RunConfig.from_dict({"modality": modality, "model": {"filters": [4], "dropout": 0.1}})
        assert (config.model.augment, config.model.augment_kind) == (0.0, kind)


def test_jit_with_image_augmentation_is_refused_not_silently_dropped():
    with pytest.raises(ConvpipeError, match="--jit cannot compile the image augmentation layers"):
        resolve_config("image", model={"augment": 0.1}, train={"jit": True})
    assert resolve_config("audio", model={"augment": 0.1}, train={"jit": True}).train.jit is True  # masks compile
    assert resolve_config("image", model={"augment": 0.1}).train.jit is None


def test_the_file_is_named_when_its_value_alone_gives_the_error(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('modality = "audio"\n[preprocess]\nn_fft = 256\nfmax = 9000.0\n', encoding="utf-8")
    # --duration 0.02 alone fails too (against the default n_fft), but for another reason
    with pytest.raises(ConvpipeError, match=rf"^{re.escape(str(path))}: \[preprocess\] Bad audio .*fmax=9000"):
        resolve_config(None, config_file=path, preprocess={"duration": 0.02})


def test_held_out_shares_of_exactly_nine_tenths_are_refused_and_just_below_accepted():
    with pytest.raises(ConvpipeError, match="must leave data to train on"):
        resolve_config("image", train={"val_split": 0.5, "test_split": 0.4})
    settings = resolve_config("image", train={"val_split": 0.45, "test_split": 0.4}).train
    assert (settings.val_split, settings.test_split) == (0.45, 0.4)


@pytest.mark.parametrize(
    "modality, expected",
    [
        ("image", (30, 32, 1e-3, 0.1, 0.1, 0, 5)),
        ("audio", (40, 32, 1e-3, 0.1, 0.1, 0, 8)),
        ("text", (30, 32, 3e-3, 0.1, 0.1, 0, 5)),
    ],
)
def test_training_defaults_are_the_ones_the_readme_table_states(modality, expected):
    """README: `--epochs --batch-size --learning-rate --val-split --test-split --seed --patience`
    default to 30 (audio 40), 32, 1e-3 (text 3e-3), 0.1, 0.1, 0, 5 (audio 8)."""
    train = resolve_config(modality).train
    found = (train.epochs, train.batch_size, train.learning_rate, train.val_split, train.test_split, train.seed, train.patience)
    assert found == pytest.approx(expected)


@pytest.mark.parametrize(
    "modality, expected",
    [
        ("image", ((32, 64), 3, 2, 2, "flatten", False, (128,), 0.3, 0.0)),
        ("audio", ((16, 32, 64, 64), 3, 2, 2, "global_max", False, (128,), 0.3, 0.0)),
        ("text", ((128,), 3, 2, 2, "global_max_average", False, (), 0.5, 0.0)),
    ],
)
def test_model_defaults_are_the_ones_the_readme_table_states(modality, expected):
    """README, "Choosing the model": `--filters` 32,64 / 16,32,64,64 / 128, `--kernel-size` 3,
    `--pool-size --pool-stride` 2, 2, `--head` flatten / global_max / global_max_average,
    `--batch-norm` off, `--dense` 128 / 128 / none, `--dropout` 0.3 / 0.3 / 0.5, `--augment` 0."""
    model = resolve_config(modality).model
    found = (
        model.filters, model.kernel_size, model.pool_size, model.pool_stride, model.head,
        model.batch_norm, model.dense, model.dropout, model.augment,
    )
    assert found == expected
    if modality == "text":  # `--window-sizes 3,4,5`, `--text-kernel factorized`, `--embedding-dim 64`
        assert (model.window_sizes, model.text_kernel, model.embedding_dim) == ((3, 4, 5), "factorized", 64)


def test_the_largest_seed_workers_and_skip_share_are_accepted_and_one_more_workers_is_refused():
    from pipelines.workers import MAX_WORKERS

    train = resolve_config("image", train={"seed": 2**32 - 1, "workers": MAX_WORKERS, "max_skipped": 1.0}).train
    assert (train.seed, train.workers, train.max_skipped) == (2**32 - 1, MAX_WORKERS, 1.0)
    for workers in (-1, MAX_WORKERS + 1):  # refused with the settings, not later by the process pool
        with pytest.raises(ConvpipeError, match=f"--workers must be 0 .* up to {MAX_WORKERS}, got {workers}"):
            resolve_config("image", train={"workers": workers})


def test_text_positions_as_long_as_the_largest_window_are_enough():
    config = resolve_config("text", preprocess={"positions": 5}, model={"window_sizes": (3, 5)})
    assert config.preprocess["positions"] == 5
    with pytest.raises(ConvpipeError, match="positions=4 is shorter than the largest text window"):
        resolve_config("text", preprocess={"positions": 4}, model={"window_sizes": (3, 5)})


@pytest.mark.parametrize("modality, other", [("image", "spectrogram"), ("audio", "image")])
def test_another_modalitys_augmentation_kind_in_the_file_is_refused(tmp_path, modality, other):
    path = tmp_path / "run.toml"
    path.write_text(f'modality = "{modality}"\n[model]\naugment = 0.2\naugment_kind = "{other}"\n', encoding="utf-8")
    with pytest.raises(ConvpipeError, match=rf"\[model\] augment_kind = '{other}' does not apply to {modality} models"):
        resolve_config(None, config_file=path)


def test_a_run_record_read_under_its_own_level_keeps_its_level_settings(tmp_path):
    recorded = run_config_json(tmp_path, resolve_config("text", preprocess={"level": "char", "ngram_sizes": (2, 3), "positions": 900}))
    again = resolve_config(None, config_file=recorded, preprocess={"level": "char"}).preprocess
    assert (again["ngram_sizes"], again["positions"]) == ([2, 3], 900)  # --level char names the level it has


def test_a_runs_config_json_with_an_upper_case_suffix_is_read_as_json(tmp_path):
    recorded = run_config_json(tmp_path, resolve_config("image", model={"filters": (4,)}))
    shouted = recorded.rename(recorded.with_name("CONFIG.JSON"))  # as some Windows tools name it
    assert resolve_config(None, config_file=shouted).model.filters == (4,)
