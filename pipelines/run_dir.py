"""The run directory: everything needed to evaluate, predict or inspect a trained model.

    model.keras         trained Keras model (native format, loaded with safe_mode on)
    preprocessor.json   fitted preprocessor (+ preprocessor.npz when it has arrays)
    labels.json         class names in output order
    config.json         resolved configuration, data-dependent choices, versions
    split.json          ids of the inputs in train, validation and test, and a fingerprint of each
    history.csv         one row per epoch
    skipped.json        inputs that were not used, with reasons
    report/             written by `evaluate`

Every file is written atomically, the model last, so a run is complete only when model.keras
exists; an interrupted `train` never leaves a half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import unicodedata
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pipelines.cache import file_sha256
from pipelines.config import RunConfig, recorded_config
from preprocess import ConvpipeError, InputError, Preprocessor, atomic

RUN_FORMAT = 1
REQUIRED_FILES = ("model.keras", "preprocessor.json", "labels.json", "config.json", "split.json")
STATE_DIR = "train_state"  # where an unfinished run keeps what resuming needs (pipelines.resume)


def read_history(path: Path) -> dict[str, list[float]]:
    """history.csv as `{column: values per epoch}`; columns with no number at all are dropped."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return {}
    return history_columns(rows)


def history_columns(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """history.csv's rows (`csv.DictReader`) as `{column: values per epoch}`, the epoch column
    left out; a cell that is not a number (CSVLogger's "NA" for a metric an epoch did not have,
    e.g. no validation split) is NaN, and columns with no number at all are dropped."""
    keys = [key for key in (rows[0] if rows else {}) if key != "epoch" and key is not None]
    columns = {key: [_number(row.get(key)) for row in rows] for key in keys}
    return {key: values for key, values in columns.items() if not all(math.isnan(v) for v in values)}


def _number(text: str | None) -> float:
    try:
        return float(text or "nan")
    except ValueError:
        return math.nan


def write_history(path: Path, history: dict[str, list[float]]) -> None:
    keys = list(history)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for epoch in range(len(history[keys[0]]) if keys else 0):
        writer.writerow([epoch + 1, *(f"{history[k][epoch]:.6g}" for k in keys)])
    atomic.write_text(path, buffer.getvalue())


def check_folder_path(path: Path, flag: str) -> None:
    """A one-line error when `path` cannot become a folder: it, or a folder above it, is a file."""
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                where = "is a file" if part == path else f"is under {part}, which is a file"
                raise ConvpipeError(f"{flag} {path} {where}; choose a folder.")
            return


def check_output_folder(path: Path, chosen: bool) -> None:
    """Refuse, before any work, an output folder that cannot be written: it or a folder above
    it is a file, or the nearest existing folder is read-only (a run shared read-only, or on a
    read-only mount). `chosen`: `path` came from --out, else it is the default inside the run."""
    problem = None
    for part in (path, *path.parents):
        if not part.exists():
            continue
        name = "it" if part == path else str(part)
        if not part.is_dir():
            problem = f"{name} is a file"
        elif not os.access(part, os.W_OK | os.X_OK):
            try:
                read_only = bool(os.statvfs(part).f_flag & os.ST_RDONLY)
            except (AttributeError, OSError):  # no statvfs (Windows)
                read_only = False
            problem = f"{name} is on a read-only file system" if read_only else f"no permission to write in {name}"
        break
    if problem:
        advice = "choose another --out" if chosen else "pass --out to write elsewhere"
        raise ConvpipeError(f"Cannot write to {path}: {problem}; {advice}.")


def holds_run(path: Path) -> bool:
    """Whether the folder `path` holds a run, finished, unfinished or damaged: a file of a
    finished run, or the train_state/ folder that is all a run has while it trains."""
    return any((path / name).is_file() for name in REQUIRED_FILES) or (path / STATE_DIR).is_dir()


def is_unfinished(path: Path) -> bool:
    """Whether `path` holds a run still training or interrupted: it has train_state/request.json
    and not yet every file of a finished run (model.keras is written last)."""
    return (path / STATE_DIR / "request.json").is_file() and not all((path / name).is_file() for name in REQUIRED_FILES)


def check_run_folder(path: Path) -> None:
    """Refuse a `path` that is no folder: a mistyped run, or a file given for one."""
    if path.is_file():
        raise ConvpipeError(f"{path} is a file, not a run directory (the folder train wrote).")
    if not path.is_dir():
        raise ConvpipeError(f"Run directory not found: {path}")


@dataclass
class Run:
    """A run directory opened for reading; fails with one clear line if it is incomplete."""

    path: Path
    document: dict[str, Any]  # config.json as written
    labels: list[str]  # NFC-normalized, as data is read now
    split: dict[str, Any]
    config: RunConfig = field(init=False)
    #: labels.json as written: runs from before class names were NFC-normalized hold them as
    #: their data spelt them (a macOS folder's "cafe" + combining accent), and so do their
    #: split fingerprints
    recorded_labels: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.recorded_labels = list(self.labels)
        normalized = _nfc(self.labels)
        if len(set(normalized)) == len(normalized):  # else two classes would become one name
            self.labels = normalized
        try:
            self.config = recorded_config(self.document["config"], self.path / "config.json")
        except (KeyError, TypeError, ValueError) as error:
            raise ConvpipeError(f"{self.path / 'config.json'} is not a valid run config ({error}).") from None

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        path = Path(path)
        check_run_folder(path)
        missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
        if is_unfinished(path):
            raise ConvpipeError(
                f"{path} has not finished training (it is still running, or was interrupted): "
                f"continue an interrupted run with `train --resume {path}`."
            )
        if len(missing) == len(REQUIRED_FILES):
            raise ConvpipeError(f"{path} is not a run directory (no {', '.join(REQUIRED_FILES)}): pass the folder train wrote.")
        if missing:
            raise ConvpipeError(
                f"{path} is not a complete run: missing {', '.join(missing)}. "
                "Was training interrupted? Train again or pass another run."
            )
        document = _read_json(path / "config.json")
        run_format = document.get("run_format") if isinstance(document, dict) else None
        if not isinstance(run_format, int) or isinstance(run_format, bool):
            raise ConvpipeError(f"{path / 'config.json'} is not a convpipe run config (no run_format).")
        if run_format > RUN_FORMAT:
            versions = document.get("versions")
            version = versions.get("convpipe", "a newer version") if isinstance(versions, dict) else "a newer version"
            raise ConvpipeError(
                f"{path} was written by convpipe {version} (run format {run_format}); this convpipe "
                f"reads run format {RUN_FORMAT} or older: upgrade convpipe to use it."
            )
        labels = _read_json(path / "labels.json")
        if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(label, str) for label in labels):
            raise ConvpipeError(f"{path / 'labels.json'} must list at least two class names (strings).")
        if len(set(labels)) != len(labels):  # two outputs under one name: predictions would merge them
            raise ConvpipeError(f"{path / 'labels.json'} lists a class twice; the run's files were edited or damaged.")
        classes = document.get("classes")
        if isinstance(classes, list) and _nfc(classes) != _nfc(labels):  # the model's output order: swapped, every score is wrong
            raise ConvpipeError(
                f"{path / 'labels.json'} lists {', '.join(labels)[:80]} but config.json trained "
                f"{', '.join(map(str, classes))[:80]}, in that order; the run's files were edited or come from different runs."
            )
        split = _read_json(path / "split.json")
        if not isinstance(split, dict):
            raise ConvpipeError(
                f"{path / 'split.json'} must be a JSON object of input ids per split, as train writes it; "
                f"found {json.dumps(split)[:40]}."
            )
        return cls(path=path, document=document, labels=list(labels), split=split)

    def model_digest(self) -> str:
        """SHA-256 of model.keras: which trained model a report scores (a copied run keeps it)."""
        return file_sha256(self.path / "model.keras")

    @property
    def history(self) -> dict[str, list[float]]:
        """Loss and metrics per epoch from history.csv ({} when it is missing)."""
        return read_history(self.path / "history.csv")

    @property
    def skipped_in_training(self) -> list[dict[str, str]]:
        """Inputs training could not use, with reasons (skipped.json; [] when it is missing)."""
        path = self.path / "skipped.json"
        if not path.is_file():
            return []
        document = _read_json(path)
        entries = document.get("skipped", []) if isinstance(document, dict) else []
        return [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []

    @cached_property
    def preprocessor(self) -> Preprocessor:
        modality = self.config.modality
        try:
            preprocessor = Preprocessor.load(self.path / "preprocessor.json")
        except InputError as error:
            raise ConvpipeError(str(error)) from None
        from pipelines.modality import MODALITIES

        expected = MODALITIES[modality].preprocessor
        if not isinstance(preprocessor, expected):
            raise ConvpipeError(
                f"{self.path}: preprocessor is a {type(preprocessor).__name__} but the run's "
                f"modality is {modality.value}."
            )
        return preprocessor

    @cached_property
    def model(self):
        """The Keras model, loaded with safe_mode on: a file with arbitrary code is refused."""
        import keras

        import models.layers  # noqa: F401  (registers convpipe's custom layers)

        path = self.path / "model.keras"
        try:
            model = keras.models.load_model(path, safe_mode=True)
        except ValueError as error:
            text = str(error)
            if "safe_mode" in text or "lambda" in text.lower():
                raise ConvpipeError(
                    f"Refused to load {path}: it contains arbitrary Python code (e.g. a Lambda "
                    "layer), which convpipe never runs from a file."
                ) from None
            if zipfile.is_zipfile(path):
                raise ConvpipeError(f"Cannot load {path}: {text.splitlines()[0]}") from None
            # Keras says "File not found" for a file that is there but cut off or not a .keras zip
            raise ConvpipeError(f"Cannot load {path}: not a complete .keras file (damaged or cut off).") from None
        except (OSError, KeyError) as error:
            raise ConvpipeError(f"Cannot load {path}: {error}") from None
        n_outputs = model.output_shape[-1]
        if n_outputs != len(self.labels):
            raise ConvpipeError(
                f"{path} predicts {n_outputs} classes but labels.json lists {len(self.labels)}."
            )
        expected, produced = tuple(model.input_shape[1:]), tuple(self.preprocessor.output_shape)
        if expected != produced:
            raise ConvpipeError(
                f"{self.path}: the model reads inputs of shape {expected} but preprocessor.json makes "
                f"{produced}; the files come from different runs."
            )
        # Token ids past the model's table: a traceback on the CPU, silent zeros on a GPU's gather.
        tables = {layer.num_ids for layer in model.layers if hasattr(layer, "num_ids")}
        ids = getattr(self.preprocessor, "num_ids", None)
        if tables and ids is not None and tables != {ids}:
            raise ConvpipeError(
                f"{self.path}: the model reads token ids below {min(tables)} but preprocessor.json gives ids up to "
                f"{ids - 1}; the files come from different runs."
            )
        return model


def _nfc(names: list) -> list[str]:
    """Class names as data is read now: older runs spelt them as their data did."""
    return [unicodedata.normalize("NFC", str(name)) for name in names]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConvpipeError(f"Cannot read {path}: {error}") from None
