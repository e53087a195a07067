"""`evaluate`: score a run on its held-out test split or on other data; write the report folder:
report.json, report.html and the figures beside it."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import mistake_previews, report_figures
from pipelines import report_sections as sections
from pipelines.calibration import calibration
from pipelines.datasets import VALIDATION_FOLDERS, Dataset, first_three, load_source, moved_run_data, retyped
from pipelines.cache import PreprocessCache
from pipelines.featurize import Skipped, encode_to_shards, read_cached
from pipelines.leakage import copies_of_earlier
from pipelines.progress import ProgressReporter, stage
from pipelines.devices import configure_devices
from pipelines.memory import predict_batch_size
from pipelines.report_html import render_report
from pipelines.run_dir import Run, check_output_folder
from pipelines.workers import Workers
from preprocess import ConvpipeError, atomic


MISTAKES_SHOWN = 16  # previews in report.html; report.json lists every mistake


@dataclass
class Evaluation:
    report: dict[str, Any]
    report_path: Path  # report.json; report.html and the figures are beside it

    @property
    def html_path(self) -> Path:
        return self.report_path.with_name("report.html")


class TrainingData:
    """The data a run was trained on, listed at most once per evaluate, however many parts of
    it (the own test split, the baseline's training inputs, the copy check) are used."""

    def __init__(self, run: Run):
        self.run = run
        self._listed: tuple[Dataset, str] | None = None

    @property
    def location(self) -> str:
        return self._list()[1]

    def _list(self) -> tuple[Dataset, str]:
        if self._listed is None:
            source = load_source(self.run.config.data, self.run.config.modality)
            self._listed = (source.everything(), source.location)
        return self._listed

    def missing_files(self, name: str) -> list[str]:
        """The files of the run's `name` split that are not there now."""
        everything, location = self._list()
        dataset = everything.select_ids(self.run.split.get(name) or [], source=location)
        return [os.fsdecode(x) for x in dataset.inputs if isinstance(x, os.PathLike) and not os.path.exists(x)]

    def split(self, name: str) -> Dataset | None:
        """The run's `name` split ("train", "validation", "test") read again, or None if those
        inputs changed since training (their recorded fingerprint differs). Runs from before a
        split's fingerprint was recorded are taken as they are. A split whose inputs are gone
        is an error naming the data."""
        everything, location = self._list()
        dataset = everything.select_ids(self.run.split.get(name) or [], source=location)
        fingerprints = self.run.split.get("fingerprints")
        recorded = fingerprints.get(name) if isinstance(fingerprints, dict) else None  # none recorded: unchecked
        if recorded is None or dataset.fingerprint() == recorded:
            return dataset
        # a run from before class names were NFC-normalized recorded them as the data spelt them
        spelt = {label: old for label, old in zip(self.run.labels, self.run.recorded_labels) if label != old}
        if spelt and Dataset(dataset.inputs, [spelt.get(label, label) for label in dataset.labels], dataset.ids).fingerprint() == recorded:
            return dataset
        return None


def evaluation_data(run: Run, data: str | None, training: TrainingData) -> tuple[Dataset, str, str | None]:
    """The inputs to score: `data`'s test part (or all of it), else the run's own test split;
    where they are; and the folder of `data` scored, when that is its test folder alone."""
    if data is not None:
        source = load_source(data, run.config.modality)
        if source.predefined_split and source.test is None:
            found = sorted(p.name for p in Path(data).expanduser().iterdir() if p.name.lower() in VALIDATION_FOLDERS)
            folder = f"{found[0]}/" if found else "a validation folder"
            example = f", e.g. --data {Path(data) / found[0]}" if found else ""
            raise ConvpipeError(
                f"{data} has train/ and {folder} but no test/ to score: pass the folder to score itself{example}."
            )
        # absolute, as train records its data, so compare shows one file under one name; a
        # split's test/ is named apart, so the location matches a run trained on `data`
        location = str(Path(data).expanduser().resolve())
        if source.predefined_split:
            return source.test, location, source.folder_of(source.test)
        return source.full, location, None
    if not run.split.get("test"):
        raise ConvpipeError(f"{run.path} has no held-out test inputs; pass --data to evaluate on other data.")
    moved = moved_run_data(run.config.data)
    if moved:  # --data alone would score all of the data, training inputs too
        raise ConvpipeError(f"Cannot score the own test split of {run.path}: {moved}. Or pass --data to score other data.")
    # the built-in demo data changes with convpipe's version, and no path holds the old one
    advice = (
        "The built-in demo data changed with this version of convpipe: train the demo again, or pass --data."
        if run.config.data is None else "Pass --data to evaluate on other data."
    )
    try:
        dataset = training.split("test")
    except ConvpipeError as error:  # gone, or inputs gone from it
        raise ConvpipeError(f"{str(error).rstrip('.')}. {advice}") from None
    if dataset is None:
        missing = training.missing_files("test")
        if missing:  # e.g. a CSV moved without its files: its relative paths point elsewhere
            csv = Path(training.location).suffix.lower() == ".csv"
            todo = "; its paths are relative to its own folder): move it back beside its files" if csv else "): restore them"
            raise ConvpipeError(
                f"{training.location} names {len(missing)} of the run's test inputs where there is now no file "
                f"(first: {missing[0]}{todo}. {advice}"
            )
        # The same ids now name other inputs (e.g. a sorted CSV): scoring them could score
        # training inputs.
        raise ConvpipeError(
            f"{training.location} changed since training: its recorded test inputs are no longer the "
            f"same (edited, reordered or replaced). {advice}"
        )
    return dataset, training.location, None


def copies_of_training_inputs(
    dataset: Dataset, training: TrainingData, baseline: bool = False
) -> tuple[int | None, int | None]:
    """How many of `dataset`'s inputs (given with --data) are exact copies of the run's
    training inputs (a test folder holding training files under other names; None where the
    training data is gone or changed), and, with `baseline`, how many copy a training or
    validation input (what the baseline is fitted on). One pass over the files for both."""
    try:
        train = training.split("train")
    except (ConvpipeError, OSError):
        train = None
    if train is None:  # gone or changed (then --baseline was refused before any scoring)
        return None, None
    earlier = {"train": train}
    if baseline:  # train and validation as disjoint parts: each file hashed, and counted, once
        earlier["validation"] = training.split("validation")
    counts = copies_of_earlier(dataset, earlier)
    if counts is None:
        return None, None
    return counts["train"], (counts["any"] if baseline else None)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy, F1 averages, confusion matrix (rows true, columns predicted) and per-class scores.

    Averages are over the classes that occur in the truth or the predictions (scikit-learn's
    default); `per_class` lists every class the model knows, in `labels` order, each marked
    with whether it counts in those averages.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    indices = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=indices, zero_division=0
    )
    averaged = set(np.unique(y_true)) | set(np.unique(y_pred))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "n_samples": int(len(y_true)),
        "labels": list(labels),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=indices).tolist(),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                # False: no test input and no prediction; its scores are undefined (shown as 0)
                "in_averages": i in averaged,
            }
            for i, label in enumerate(labels)
        },
    }


def retyped_labels(unknown: list[str], known: list[str]) -> str:
    """A sentence naming the `unknown` labels that are one of the run's classes typed another
    way (case, spaces, leading zeros), or "": a class name must match exactly, since training
    keeps "Cat" and "cat" apart, so evaluate does not guess."""
    pairs = [f"{label!r} as {known_label!r}" for label, known_label in retyped(unknown, known)]
    if not pairs:
        return ""
    return f" Some differ only in case, spacing or leading zeros: write {first_three(pairs)} in the data."


def evaluate(
    run_path: Path,
    data: str | None = None,
    out: Path | None = None,
    workers: int | None = None,
    cache_dir: str | None = None,
    use_cache: bool | None = None,
    cache_verify: bool | None = None,
    progress: ProgressReporter | None = None,
    device: str = "auto",
    baseline: bool = False,
) -> Evaluation:
    """Score the run on `data` (default: its own test split) on `device`; cache settings left
    as None are the ones the run was trained with. `baseline`: also fit and score the linear
    baseline of pipelines/baseline.py on the same inputs."""
    configure_devices(device)  # first: TensorFlow fixes its devices at its first op
    run = Run.open(run_path)
    out_dir = Path(out) if out is not None else run.path / "report"
    check_output_folder(out_dir, chosen=out is not None)  # now, not after every input is scored
    settings = run.config.train
    training = TrainingData(run)
    dataset, location, folder = evaluation_data(run, data, training)
    unknown = sorted(set(dataset.labels) - set(run.labels))
    if unknown:
        raise ConvpipeError(
            f"The evaluation data has label(s) the model never saw: {', '.join(unknown)}. "
            f"It knows: {', '.join(run.labels)}.{retyped_labels(unknown, run.labels)}"
        )
    if len(dataset) == 0:
        raise ConvpipeError(f"No inputs to evaluate in {location}.")
    if baseline:  # its training data checked before any scoring
        from pipelines.baseline import linear_baseline, training_inputs

        fit_part = training_inputs(training)
    preprocessor, model = run.preprocessor, run.model
    started = time.perf_counter()
    skipped = Skipped()
    cache = PreprocessCache.open(
        cache_dir if cache_dir is not None else settings.cache_dir,
        enabled=settings.cache if use_cache is None else use_cache,
        verify=settings.cache_verify if cache_verify is None else cache_verify,
    )
    # one set of worker processes (started on first use) reads the test inputs and the baseline's
    pool = Workers(settings.workers if workers is None else workers, type(preprocessor))
    try:
        items, kept = read_cached(
            preprocessor, dataset, "test", skipped, settings.strict, cache, pool, stage(progress, "reading test")
        )
        if not len(items):
            raise ConvpipeError(f"None of the {len(dataset)} evaluation inputs could be read: {skipped.summary()}.")
        x = encode_to_shards(preprocessor, items, stage(progress, "encoding test"), pool, resizable=False)
        used = dataset.subset(kept)
        index = {label: i for i, label in enumerate(run.labels)}
        y_true = np.array([index[label] for label in used.labels])
        from pipelines.streaming import streaming_dataset

        probabilities = model.predict(streaming_dataset(x, None, batch_size=predict_batch_size(model)), verbose=0)
        y_pred = probabilities.argmax(axis=1)
        seconds = time.perf_counter() - started

        metrics = classification_metrics(y_true, y_pred, run.labels)
        if data is None:  # the own test split: copies were counted at training
            recorded = run.document.get("copies_across_splits", {})
            copies = recorded.get("test_in_train", 0)
            either = recorded.get("test_in_train_or_validation")  # runs before it: an upper bound
            fitted_copies = min(copies + recorded.get("test_in_validation", 0) if either is None else either, len(used))
        else:
            copies, fitted_copies = copies_of_training_inputs(used, training, baseline)
        report = {
            "run": str(run.path),
            "data": sections.data_summary(
                run, location, dataset, used, data is None, skipped.entries, copies, folder
            ),
            "modality": run.config.modality.value,
            **metrics,
            "top_confusions": sections.top_confusions(metrics["confusion_matrix"], run.labels),
            "misclassified": sections.misclassified(used, y_true, probabilities, run.labels),
            "calibration": calibration(probabilities.max(axis=1), y_pred == y_true),
            "skipped": {"summary": skipped.summary(), "inputs": skipped.entries, "notes": skipped.notes},
            "model": sections.model_summary(run, model),
            "timing": sections.timing_summary(run, seconds, len(x)),
            "cache": {"path": None if cache.temporary else str(cache.root), **dataclasses.asdict(cache.stats)},
            "environment": sections.environment_summary(),
        }
        if baseline:
            try:
                report["linear_baseline"] = linear_baseline(run, fit_part, used, y_true, y_pred, fitted_copies, progress, pool)
            except ConvpipeError as error:  # the CNN's report is still worth writing
                report["linear_baseline"] = {"error": str(error)}
        shown = sections.mistake_order(y_true, probabilities)[:MISTAKES_SHOWN]
        previews = mistake_previews.previews(
            run.config.modality, preprocessor, x.take(shown), [used.inputs[i] for i in shown], report["misclassified"]
        )
    finally:  # on errors too: the workers, the cache's lock, and --no-cache's temporary folder
        pool.close()
        cache.cleanup()
    report_path = write_report(out_dir, report, run, previews)
    return Evaluation(report=report, report_path=report_path)


def write_report(out_dir: Path, report: dict[str, Any], run: Run, previews: list[dict[str, Any]]) -> Path:
    """report.json, the three figures and report.html (which inlines them) into `out_dir`."""
    figures = {
        "confusion_matrix.png": report_figures.confusion_matrix_png(report["confusion_matrix"], report["labels"]),
        "training_curves.png": report_figures.training_curves_png(run.history, report["model"]["best_epoch"]),
        "reliability.png": report_figures.reliability_png(report["calibration"]),
    }
    for name, png in figures.items():
        atomic.write_bytes(out_dir / name, png)
    atomic.write_text(out_dir / "report.html", render_report(report, figures, previews))
    report_path = out_dir / "report.json"
    atomic.write_json(report_path, report)  # last: its presence marks a complete report
    return report_path
