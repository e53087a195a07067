"""Run configuration: one dataclass per concern, merged from defaults, a TOML file and flags.

    defaults (per modality)  <  --config run.toml  <  command-line flags

The resolved `RunConfig` is written to the run's config.json and reads back to an equal object.
A TOML file has the same three tables as config.json:

    modality = "audio"
    data = "speech/train"       # relative to the TOML file's folder
    [preprocess]
    num_mels = 40
    [model]
    filters = [32, 64]
    [train]
    epochs = 30

A run's config.json is a config file too (its `config` holds these tables): `train --config
RUN/config.json` trains that run again, and flags on top of it make a variant.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models import ModelSpec
from pipelines.datasets import check_not_empty
from pipelines.devices import DEVICES, PRECISIONS, check_choice
from pipelines.distribution import STRATEGIES
from pipelines.modality import MODALITIES, Modality, parse_modality
from pipelines.workers import MAX_WORKERS
from preprocess import ConvpipeError
from preprocess.errors import SettingError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


CONFIG_KEYS = ("modality", "data", "preprocess", "model", "train")
#: numpy's and TensorFlow's seeds are unsigned 32-bit integers.
MAX_SEED = 2**32 - 1


def check_seed(seed: Any) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise SettingError("seed", f"must be an integer from 0 to 2**32 - 1, got {seed!r}.")


#: How each training input's loss is weighted (TrainSettings.class_weight).
CLASS_WEIGHTS = ("none", "balanced")
#: TrainSettings fields that say how inputs are read and cached, never what a run computes: a
#: `train --resume` may change them.
READING_SETTINGS = frozenset({"workers", "cache", "cache_dir", "cache_verify"})


@dataclass(frozen=True)
class TrainSettings:
    """How the model is trained and the data split.

    Args:
        epochs: maximum number of passes over the training split.
        batch_size: inputs per gradient step on each replica (device); the global batch is
            this times the number of replicas, unless `global_batch_size` is set.
        learning_rate: Adam's step size.
        val_split: share of the data held out for validation (early stopping; ignored when the
            data has train/ and val/ folders).
        test_split: share held out for the final test (ignored when the data has train/ and
            test/ folders).
        seed: seeds the split, weight initialization and shuffling.
        deterministic: also make every TensorFlow op deterministic, so the same seed, data and
            machine give identical metrics (can be slower: once 1.8x on the image demo on CPU). On by
            default when a seed is given explicitly (flag or TOML), off otherwise.
        patience: epochs without a better validation loss before training stops; the best
            weights are restored.
        strict: stop at the first input that cannot be read instead of skipping it.
        max_skipped: largest share of inputs that may be skipped before training refuses to go on.
        workers: processes that decode inputs (0: one per CPU core; 1: no extra process).
        cache: keep preprocessed inputs in the cache folder, so the next run decodes nothing.
        cache_dir: the cache folder (default: $XDG_CACHE_HOME/convpipe or ~/.cache/convpipe).
        cache_verify: also identify cached files by a hash of their content, not only by path,
            size and modification time.
        device: "auto" (the GPUs TensorFlow sees, else the CPU), "cpu" or "gpu".
        precision: "float32" or "mixed" (mixed_float16 on GPU, mixed_bfloat16 on CPUs with
            bfloat16 instructions, refused on other CPUs).
        jit: XLA compilation; None means off on CPU (measured slower), Keras' "auto" on GPU.
        strategy: "none", "mirrored" (all local GPUs, or `cpu_replicas` CPU devices) or
            "multiworker" (several machines, from TF_CONFIG).
        cpu_replicas: logical devices the CPU is split into when no GPU is used (for mirrored).
        global_batch_size: inputs per gradient step over all replicas; overrides `batch_size`.
        class_weight: "none", or "balanced": each input's loss weighs n / (classes x n_class),
            from the training split's class counts, so that every class counts as much as the
            others in training and in the validation loss early stopping watches.
    """

    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    val_split: float = 0.1
    test_split: float = 0.1
    seed: int = 0
    deterministic: bool = False
    patience: int = 5
    strict: bool = False
    max_skipped: float = 0.1
    workers: int = 0
    cache: bool = True
    cache_dir: str | None = None
    cache_verify: bool = False
    device: str = "auto"
    precision: str = "float32"
    jit: bool | None = None
    strategy: str = "none"
    cpu_replicas: int = 1
    global_batch_size: int | None = None
    class_weight: str = "none"

    def validate(self) -> "TrainSettings":
        for name in ("epochs", "batch_size", "patience"):
            value = getattr(self, name)
            minimum = 0 if name == "patience" else 1  # patience 0: stop at the first epoch without improvement
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                wanted = "0 or a positive integer" if minimum == 0 else "a positive integer"
                raise SettingError(name, f"must be {wanted}, got {value!r}.")
        for name in ("learning_rate", "val_split", "test_split", "max_skipped"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise SettingError(name, f"must be a number, got {value!r}.")
        if not 0 < self.learning_rate < float("inf"):
            raise SettingError("learning_rate", f"must be a positive finite number, got {self.learning_rate!r}.")
        for name in ("val_split", "test_split"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise SettingError(name, f"must be in [0, 1), got {value!r}.")
        if self.val_split + self.test_split >= 0.9:
            raise ConvpipeError(
                f"--val-split + --test-split must leave data to train on, got "
                f"{self.val_split} + {self.test_split}."
            )
        check_seed(self.seed)
        for name in ("deterministic", "strict", "cache", "cache_verify"):
            if not isinstance(getattr(self, name), bool):
                raise SettingError(name, f"must be true or false, got {getattr(self, name)!r}.", flag=False)
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or not 0 <= self.workers <= MAX_WORKERS:
            raise SettingError(
                "workers", f"must be 0 (one per CPU core) or a positive integer up to {MAX_WORKERS}, got {self.workers!r}."
            )
        check_choice("class_weight", self.class_weight, CLASS_WEIGHTS)
        if not 0.0 <= self.max_skipped <= 1.0:
            raise SettingError("max_skipped", f"must be in [0, 1], got {self.max_skipped!r}.", flag=False)
        self.validate_compute()
        return self

    def validate_compute(self) -> None:
        check_choice("device", self.device, DEVICES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("strategy", self.strategy, STRATEGIES)
        if self.jit is not None and not isinstance(self.jit, bool):
            raise SettingError("jit", f"must be true or false, got {self.jit!r}.", flag=False)
        for name in ("cpu_replicas", "global_batch_size"):
            value = getattr(self, name)
            if value is None and name == "global_batch_size":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingError(name, f"must be a positive integer, got {value!r}.")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run.

    `preprocess` holds constructor arguments of the modality's preprocessor; after training,
    config.json holds the preprocessor's complete resolved config.
    """

    modality: Modality
    data: str | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSettings = field(default_factory=TrainSettings)

    def to_dict(self) -> dict[str, Any]:
        # Knobs this modality's factory never reads were not used, so they are not recorded
        # (`from_dict` gives them their defaults back).
        unused = ModelSpec.unused_fields(text=self.modality is Modality.text, text_kernel=self.model.text_kernel)
        return {
            "modality": self.modality.value,
            "data": self.data,
            "preprocess": dict(self.preprocess),
            "model": {k: v for k, v in self.model.to_dict().items() if k not in unused},
            "train": dataclasses.asdict(self.train),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        unknown = sorted(set(values) - set(CONFIG_KEYS))
        if unknown:
            raise ConvpipeError(f"Unknown configuration key(s): {', '.join(unknown)}.")
        if "modality" not in values:
            raise ConvpipeError("The configuration names no modality.")
        train_fields = {f.name for f in dataclasses.fields(TrainSettings)}
        bad = sorted(set(values.get("train", {})) - train_fields)
        if bad:
            raise ConvpipeError(
                f"Unknown [train] setting(s): {', '.join(bad)}. Known: {', '.join(sorted(train_fields))}."
            )
        modality = parse_modality(values["modality"])
        model_values = dict(values.get("model", {}))
        # Runs from before augmentation recorded no kind; theirs is the modality's (never used).
        model_values.setdefault("augment_kind", MODALITIES[modality].model_defaults.augment_kind)
        # Knobs this modality's factory never reads read back as defaults, as `to_dict` leaves
        # them out: runs before that recorded every field, and the factory warns of a set one.
        kernel = model_values.get("text_kernel", MODALITIES[modality].model_defaults.text_kernel)
        for name in ModelSpec.unused_fields(text=modality is Modality.text, text_kernel=kernel):
            model_values.pop(name, None)
        try:
            model = ModelSpec.from_dict(model_values)
        except (TypeError, ValueError) as error:
            raise ConvpipeError(f"[model]: {error}") from None
        return cls(
            modality=modality,
            data=values.get("data"),
            preprocess=dict(values.get("preprocess", {})),
            model=model,
            train=TrainSettings(**values.get("train", {})),
        )


def read_config_file(path: Path) -> tuple[dict[str, Any], bool]:
    """The tables of a TOML file, or of a `.json` file: a run's config.json (its `config`, the
    settings that run was trained with) or a JSON object with the TOML file's tables; and
    whether it is a run's config.json."""
    path = Path(path)
    if path.is_dir():
        hint = f" (a run's settings are in {path / 'config.json'})" if (path / "config.json").is_file() else ""
        raise ConvpipeError(f"Config file {path} is a folder; pass a TOML file or a run's config.json{hint}.")
    try:
        text = path.read_text(encoding="utf-8-sig")  # with or without Notepad's byte-order mark
        if path.suffix.lower() != ".json":
            return tomllib.loads(text), False
        document = json.loads(text)
    except FileNotFoundError:
        raise ConvpipeError(f"Config file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConvpipeError(f"Config file {path} is not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConvpipeError(f"Config file {path} is not UTF-8 text ({error.reason} at byte {error.start}).") from None
    except json.JSONDecodeError as error:
        raise ConvpipeError(f"Config file {path} is not valid JSON: {error}") from None
    run_record = isinstance(document, dict) and "run_format" in document
    if run_record:
        document = document.get("config")
    if not isinstance(document, dict):
        raise ConvpipeError(f"Config file {path} is not a JSON object with {', '.join(CONFIG_KEYS)}.")
    return document, run_record


def _matches(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits a dataclass field's type (bool is an int in Python: not here).
    None (JSON's null, e.g. `jit` in a run's config.json) fits a field that may be None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(value is None if arg is type(None) else _matches(value, arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:  # tuple[int, ...]: a list, or one value (ModelSpec)
        item = typing.get_args(hint)[0]
        return _matches(value, item) or (isinstance(value, list) and all(_matches(v, item) for v in value))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0]).split(' ', 1)[1]}s"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[hint]


def check_toml_types(layer: dict[str, Any], path: Path) -> None:
    """Refuse a TOML value of the wrong type before it is merged with the flags, naming the file
    and key: later checks speak of flags, and some wrong types would pass them (cache = "yes")."""
    for key in ("modality", "data"):
        if key in layer and not isinstance(layer[key], str) and not (key == "data" and layer[key] is None):
            raise ConvpipeError(f"{path}: {key} must be a string, got {json.dumps(layer[key], default=str)}.")
    for table in ("preprocess", "model", "train"):
        if table in layer and not isinstance(layer[table], dict):
            raise ConvpipeError(
                f"{path}: {table} must be a table ([{table}]), got {json.dumps(layer[table], default=str)}."
            )
    for table, cls in (("model", ModelSpec), ("train", TrainSettings)):
        hints = typing.get_type_hints(cls)
        for key, value in layer.get(table, {}).items():
            if key in hints and not _matches(value, hints[key]):  # unknown keys: from_dict names them
                raise ConvpipeError(
                    f"{path}: [{table}] {key} must be {_describe(hints[key])}, got {json.dumps(value, default=str)}."
                )


def recorded_config(values: Any, path: Path) -> "RunConfig":
    """The RunConfig a run recorded (config.json's `config`, train_state/request.json), its types
    checked as a TOML file's are: a hand-edited `epochs = "8"` is one line naming the file."""
    if not isinstance(values, dict):
        raise ConvpipeError(f"{path}: the run's configuration must be a JSON object, got {json.dumps(values, default=str)[:40]}.")
    check_toml_types(values, path)
    return RunConfig.from_dict(values)


def check_applies(
    modality: Modality,
    config_file: Path | None,
    layer: dict[str, Any],
    model: dict[str, Any],
    preprocess: dict[str, Any],
    run_record: bool = False,
) -> None:
    """Refuse a knob, given as a flag or in the TOML file, that this modality's model or
    preprocessor does not have: silently ignored, it would be recorded as if it had been used."""
    text = modality is Modality.text

    def hint(name: str, window_sizes: str) -> str:  # named as a TOML key or as a flag
        if not text:
            return " (text models only)"
        return " (image and audio models only)" if name.startswith("augment") else f" (they use {window_sizes})"

    for name in ModelSpec.unused_fields(text=text):
        # a run's record is no choice: older runs recorded every field (from_dict drops them)
        if name in layer.get("model", {}) and not run_record:
            raise ConvpipeError(
                f"{config_file}: [model] {name} does not apply to {modality.value} models{hint(name, 'window_sizes')}."
            )
        if model.get(name) is not None:
            raise ConvpipeError(
                f"--{name.replace('_', '-')} does not apply to {modality.value} models{hint(name, '--window-sizes')}."
            )
    kernel = model.get("text_kernel") or layer.get("model", {}).get("text_kernel") or MODALITIES[modality].model_defaults.text_kernel
    if text and kernel == "full":  # a run's record of a factorized run's embedding is no choice
        where = "--embedding-dim" if model.get("embedding_dim") is not None else None
        if where is None and "embedding_dim" in layer.get("model", {}) and not run_record:
            where = f"{config_file}: [model] embedding_dim"
        if where is not None:
            raise ConvpipeError(
                f"{where} does not apply to the full text kernel (one weight per vocabulary id, no "
                "embedding); use --text-kernel factorized."
            )
    if text:
        _check_hash_buckets(config_file, layer.get("preprocess", {}), preprocess, run_record)
    # The kind of augmentation follows from what the inputs are: rotating a spectrogram, or an
    # image model holding spectrogram masks (a layer of convpipe's own), would be neither.
    kind = layer.get("model", {}).get("augment_kind")
    own = MODALITIES[modality].model_defaults.augment_kind
    if not text and kind is not None and kind != own:
        raise ConvpipeError(
            f"{config_file}: [model] augment_kind = {kind!r} does not apply to {modality.value} models; "
            f"theirs is {own!r} (or leave it out)."
        )
    params = MODALITIES[modality].preprocessor().get_config()
    for name in layer.get("preprocess", {}):  # now, not after the inputs are read
        if name not in params:
            raise ConvpipeError(
                f"{config_file}: [preprocess] {name} is not a setting of {modality.value} inputs; "
                f"known: {', '.join(params)}."
            )
    for name, value in preprocess.items():
        if value is not None and name not in params:
            raise ConvpipeError(f"--{name.replace('_', '-')} does not apply to {modality.value} inputs.")


def _check_hash_buckets(config_file: Path | None, in_file: dict[str, Any], flags: dict[str, Any], run_record: bool) -> None:
    """Refuse hash buckets, given as a flag or in the file, where no character n-grams are read:
    the setting would be recorded unused."""
    where = "--hash-buckets" if flags.get("hash_buckets") is not None else None
    if where is None and "hash_buckets" in in_file and not run_record:  # a run records every setting
        where = f"{config_file}: [preprocess] hash_buckets"
    sizes = flags["ngram_sizes"] if flags.get("ngram_sizes") is not None else in_file.get("ngram_sizes")
    level = flags.get("level") or in_file.get("level")
    if where is None or (len(sizes) > 0 if sizes is not None else level != "word"):
        return
    if sizes is None:
        why, advice = "word level reads none", "read characters with their n-grams (--level char)"
    else:  # the flag, or a word-level run's record (or a file) that says no n-grams
        given = "--ngram-sizes ''" if flags.get("ngram_sizes") is not None else f"{config_file}: [preprocess] ngram_sizes = []"
        why, advice = f"{given} reads none", "give n-gram sizes (--ngram-sizes 2,3,4,5)"
    raise ConvpipeError(f"{where} does not apply without character n-grams ({why}); leave it out, or {advice}.")


def check_preprocessing(
    modality: Modality, params: dict[str, Any], config_file: Path | None, from_file: set[str], from_flags: set[str]
) -> None:
    """Refuse preprocessing values that no data can make right (fmax above half the sample rate)
    now, before any input is listed or read, naming the file when only the file set them."""
    def refusal(values: dict[str, Any]) -> str | None:
        values = dict(values)
        if modality is Modality.text and "level" not in values and "ngram_sizes" in values:
            values["level"] = "char"  # the data may choose it later; n-gram settings need it
        try:
            MODALITIES[modality].preprocessor.from_config(values).validate_params()
        except (TypeError, ValueError) as error:
            return str(error)
        return None

    error = refusal(params)
    if error is None:
        return
    # Blame one side only where it alone gives this same error (alone, it also meets defaults
    # the other side replaced, which can fail for another reason).
    if not from_file or (from_flags and refusal({k: params[k] for k in from_flags}) == error):
        where = ""  # the flags' values
    elif not from_flags or refusal({k: params[k] for k in from_file if k not in from_flags}) == error:
        where = f"{config_file}: [preprocess] "  # the file's values
    else:  # each right alone, wrong together: fmax = 7000 in the file with --sample-rate 8000
        where = f"{config_file}: [preprocess] (with the flags given) "
    if "ngram_sizes" in from_file - from_flags and params.get("ngram_sizes") and "`ngram_sizes` needs level='char'" in error:
        error += "; pass --ngram-sizes '' to read words without them"  # a config file's n-grams under --level word
    raise ConvpipeError(f"{where}Bad {modality.value} preprocessing setting: {error}")


#: Text settings a run records for its own level: counted in characters or words, and n-grams
#: only characters have.
LEVEL_SETTINGS = ("positions", "ngram_sizes", "hash_buckets")


def _record_under_level(layer: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """A run's record read with another `--level`: the record's level settings (a word-level
    run's `ngram_sizes = []`, a char-level run's n-grams, positions in the other unit) are left
    to the new level's defaults, unless flags give them. Kept, `--level char` over a word-level
    run read bare characters (0.78 against 0.85 with n-grams on the docstrings)."""
    recorded = layer.get("preprocess", {})
    if flags.get("level") is None or recorded.get("level", flags["level"]) == flags["level"]:
        return layer
    return {**layer, "preprocess": {k: v for k, v in recorded.items() if k not in LEVEL_SETTINGS}}


def resolve_config(
    modality: str | None,
    config_file: Path | None = None,
    data: str | None = None,
    preprocess: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
) -> RunConfig:
    """Merge modality defaults, the TOML file and flags (`None` values mean "not given").

    A relative `data` path in the TOML file is relative to the file's folder; `data` from a
    flag stays relative to the current directory.
    """
    layer, run_record = read_config_file(config_file) if config_file else ({}, False)
    unknown = sorted(set(layer) - set(CONFIG_KEYS))
    if unknown:
        raise ConvpipeError(
            f"{config_file}: unknown key(s) or table(s) {', '.join(unknown)}; expected {', '.join(CONFIG_KEYS)}."
        )
    if config_file:
        check_toml_types(layer, config_file)
        # Paths in the file are relative to its folder (`/` keeps an absolute one as it is).
        if layer.get("data") is not None:
            if not str(layer["data"]).strip():
                raise ConvpipeError(f"{config_file}: data is empty; name the data folder or CSV file, or leave it out.")
            layer["data"] = str(Path(config_file).parent / Path(layer["data"]).expanduser())
        cache_dir = layer.get("train", {}).get("cache_dir")
        if cache_dir and not run_record:  # "" is the default cache; a run records its own as it was used
            layer["train"]["cache_dir"] = str((Path(config_file).parent / Path(cache_dir).expanduser()).resolve())
    if data is not None:  # now: train makes the path absolute before it is listed
        check_not_empty(data)
    chosen = modality or layer.get("modality")
    if chosen is None:
        raise ConvpipeError("No modality given: pass --modality image|audio|text.")
    parsed = parse_modality(chosen)
    info = MODALITIES[parsed]
    if run_record:
        layer = _record_under_level(layer, preprocess or {})
        # a run recorded before a reading parameter existed read its inputs the way it then did
        layer["preprocess"] = info.preprocessor.as_saved(layer.get("preprocess", {}))
    check_applies(parsed, config_file, layer, model or {}, preprocess or {}, run_record)
    merged_model = {**info.model_defaults.to_dict(), **layer.get("model", {})}
    merged_train = {**info.train_defaults, **layer.get("train", {})}
    merged_pre = dict(layer.get("preprocess", {}))
    given_by_flag = {k for k, v in (train or {}).items() if v is not None}
    if {"batch_size", "global_batch_size"} <= given_by_flag:
        raise ConvpipeError("--batch-size and --global-batch-size both set the batch size: give one.")
    if "batch_size" in given_by_flag:  # the flag decides over a global batch size from the file
        merged_train["global_batch_size"] = None
    for target, flags in ((merged_model, model), (merged_train, train), (merged_pre, preprocess)):
        target.update({k: v for k, v in (flags or {}).items() if v is not None})
    # Asking for a seed means asking for a repeatable run: op determinism comes with it unless
    # the user chose otherwise (--fast). Without --seed, training keeps the faster kernels.
    given = {**layer.get("train", {}), **{k: train[k] for k in given_by_flag}}
    if run_record and "seed" in given_by_flag and "deterministic" not in given_by_flag:
        given.pop("deterministic", None)  # a run's record of what its own seed made of it, not a choice
    if given.get("seed") is not None and "deterministic" not in given:
        merged_train["deterministic"] = True
    try:
        config = RunConfig.from_dict(
            {
                "modality": parsed.value,
                "data": data if data is not None else layer.get("data"),
                "preprocess": merged_pre,
                "model": merged_model,
                "train": merged_train,
            }
        )
        config.train.validate()
        config.model.validate(text=config.modality is Modality.text)
    except SettingError as error:
        if error.name not in layer.get("train", {}) or error.name in given_by_flag:
            raise
        # `epochs = 0` in the file: name the key there, not a flag the user never typed
        raise ConvpipeError(f"{config_file}: [train] {error.name} {error.reason}") from None
    except (TypeError, ValueError) as error:  # e.g. learning_rate = "fast" in a TOML file
        raise ConvpipeError(f"Invalid setting: {error}") from None
    gap = config.model.pooling_gap() if config.modality is not Modality.text else None
    if gap:  # refused for a new run; the library only warns, so that older runs still resume
        raise ConvpipeError(
            f"{gap}; lower --pool-stride to {config.model.pool_size} "
            f"or raise --pool-size to {config.model.pool_stride}."
        )
    if config.train.jit and config.model.augment and config.model.augment_kind == "image":
        # Keras would turn XLA off for the whole model with a warning, and the run record it on
        raise ConvpipeError(
            "--jit cannot compile the image augmentation layers (Keras' random shift, zoom and "
            "rotation have no XLA form): drop --jit or --augment."
        )
    check_preprocessing(
        config.modality, config.preprocess, config_file, set(layer.get("preprocess", {})),
        {k for k, v in (preprocess or {}).items() if v is not None},
    )
    positions = config.preprocess.get("positions")
    if config.modality is Modality.text and isinstance(positions, int):
        if positions < max(config.model.window_sizes):
            raise ConvpipeError(
                f"positions={positions} is shorter than the largest text window "
                f"({max(config.model.window_sizes)}); lower --window-sizes or raise --positions."
            )
    return config
