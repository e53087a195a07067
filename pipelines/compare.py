"""`compare`: runs side by side, best test accuracy first, flagging runs scored on other data.

A run without report/report.json is evaluated first, on its own held-out test split, exactly as
`convpipe evaluate RUN` would (the report is written into the run, so the next compare is fast).
"""

from __future__ import annotations

import contextlib
import json
import logging
import string
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from pipelines.devices import DEVICES, check_choice
from pipelines.modality import MODALITIES, Modality
from pipelines.report_html import CSS
from pipelines.run_dir import REQUIRED_FILES, Run, check_output_folder, check_run_folder, holds_run, is_unfinished
from preprocess import ConvpipeError, atomic

logger = logging.getLogger(__name__)

REQUIRED_REPORT_KEYS = ("accuracy", "macro_f1", "n_samples", "data")
CONV_KEYS = ("filters", "kernel_size", "pool_size", "pool_stride", "head", "batch_norm", "dense", "dropout")
TEXT_KEYS = ("filters", "window_sizes", "text_kernel", "embedding_dim", "head", "dense", "dropout")
TRAIN_KEYS = ("batch_size", "learning_rate")
#: Settings that never change what a run learns (the cache returns what decoding would), left out
#: of the settings that differ between runs.
NOT_LEARNED = ("workers", "cache", "cache_dir", "cache_verify")
#: Settings that follow from the modality, which has a column of its own (no flag sets them).
FOLLOW_THE_MODALITY = ("augment_kind",)
DIFFERENT_DATA = " <span class='wrong'>different data</span>"


@dataclass
class ComparedRun:
    run: str
    modality: str
    hyperparameters: dict[str, Any]
    parameters: int | None
    train_seconds: float | None
    accuracy: float
    macro_f1: float
    n_samples: int
    data: str
    #: same letter = same data location and the same input ids; A is the best run's data
    data_group: str = ""
    different_data: bool = False
    evaluated_now: bool = False
    #: the linear baseline's test accuracy, where the report has one (evaluate --baseline)
    baseline_accuracy: float | None = None

    def hyperparameter_text(self) -> str:
        return " ".join(f"{key}={_compact(value)}" for key, value in self.hyperparameters.items())


@dataclass
class Comparison:
    runs: list[ComparedRun]  # best first
    same_data: bool
    data_groups: dict[str, dict[str, Any]]
    #: the settings (preprocessing, model, training) whose values are not the same in every run
    settings_that_differ: list[str] = field(default_factory=list)
    #: each folder given that is not a run, and the runs found directly inside it (name order)
    found_in: dict[str, list[str]] = field(default_factory=dict)
    #: runs given or found that are still training or were interrupted, left out
    left_out: list[str] = field(default_factory=list)
    json_path: Path | None = None
    html_path: Path | None = None

    @property
    def has_baselines(self) -> bool:
        """Whether any run's report has a linear baseline (a column for it, then)."""
        return any(row.baseline_accuracy is not None for row in self.runs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "same_data": self.same_data,
            "data_groups": self.data_groups,
            "settings_that_differ": self.settings_that_differ,
            "found_in": self.found_in,
            "left_out": self.left_out,
            "runs": [asdict(row) for row in self.runs],
        }


def _baseline_accuracy(report: dict[str, Any]) -> float | None:
    baseline = report.get("linear_baseline")
    if not isinstance(baseline, dict) or not isinstance(baseline.get("accuracy"), (int, float)):
        return None
    return float(baseline["accuracy"])


def _compact(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def key_hyperparameters(run: Run) -> dict[str, Any]:
    """The settings that distinguish one run from another, in CLI terms."""
    config = run.config
    spec = config.to_dict()["model"]  # without what this model does not use (a full kernel's embedding)
    keys = TEXT_KEYS if config.modality is Modality.text else CONV_KEYS
    values = {key: spec[key] for key in keys if key in spec}
    if config.modality is Modality.text:
        values["level"] = config.preprocess.get("level")
    values["epochs"] = f"{run.document.get('epochs_run', '?')}/{config.train.epochs}"
    values.update({key: getattr(config.train, key) for key in TRAIN_KEYS})
    return values


def run_settings(run: Run) -> dict[str, Any]:
    """The run's recorded preprocessing, model and training settings in one table (their names
    do not collide), without those that do not change what is learned."""
    config = run.config.to_dict()
    # a run recorded before a reading parameter existed used the value it then had
    preprocess = MODALITIES[run.config.modality].preprocessor.as_saved(config["preprocess"])
    settings = {**preprocess, **config["model"], **config["train"]}
    return {key: value for key, value in settings.items() if key not in NOT_LEARNED + FOLLOW_THE_MODALITY}


def settings_that_differ(tables: list[dict[str, Any]]) -> list[str]:
    """Settings (`run_settings` of each run) that two or more runs have, with different values.
    A setting of one modality only is left out when the runs' modalities differ: the modality
    column shows that."""
    names = dict.fromkeys(key for table in tables for key in table)  # first seen first
    differ = []
    for name in names:
        values = {json.dumps(table[name], sort_keys=True) for table in tables if name in table}
        if sum(name in table for table in tables) >= 2 and len(values) > 1:
            differ.append(name)
    return differ


def load_report(run: Run, device: str = "auto") -> tuple[dict[str, Any], bool]:
    """The run's report.json, evaluating the run on its own test split (on `device`) when there
    is none.

    Returns the report and whether it was made just now.
    """
    path = run.path / "report" / "report.json"
    if not path.is_file():
        from pipelines.evaluation import evaluate

        logger.info("%s has no report yet; evaluating it on its own test split.", run.path)
        try:
            return evaluate(run.path, device=device).report, True
        except ConvpipeError as error:
            # the options it names (--data, --cache-dir) are evaluate's, not compare's
            advice = f" Those options are for `convpipe evaluate {run.path}`: run it first, then compare." if " --" in str(error) else ""
            raise ConvpipeError(
                f"{run.path} has no report, and evaluating it on its own test split failed: "
                f"{str(error).rstrip('.')}.{advice}"
            ) from None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConvpipeError(f"Cannot read {path}: {error}. Run `convpipe evaluate {run.path}` again.") from None
    missing = [key for key in REQUIRED_REPORT_KEYS if not isinstance(report, dict) or key not in report]
    if missing:
        raise ConvpipeError(
            f"{path} is not a complete report (missing {', '.join(missing)}); run `convpipe evaluate {run.path}` again."
        )
    for key in ("accuracy", "macro_f1"):  # json reads NaN; sorting by it would rank at random
        value = report[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ConvpipeError(
                f"{path} has {key} {value!r}, not a number from 0 to 1; run `convpipe evaluate {run.path}` again."
            )
    count = report["n_samples"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ConvpipeError(
            f"{path} has n_samples {count!r}, not a count of inputs; run `convpipe evaluate {run.path}` again."
        )
    # A report copied in from another run would be ranked under this run's name and settings.
    # Reports written before the digest was recorded are checked by modality and labels only.
    model = report.get("model") if isinstance(report.get("model"), dict) else {}
    if (
        report.get("modality", run.config.modality.value) != run.config.modality.value
        or report.get("labels", run.labels) != run.labels
        or model.get("sha256", None) not in (None, run.model_digest())
    ):
        raise ConvpipeError(
            f"{path} scores another model than {run.path / 'model.keras'} (copied from another run?); "
            f"run `convpipe evaluate {run.path}` again."
        )
    return report, False


def data_identity(report: dict[str, Any]) -> str:
    """Reports from before data fingerprints: fall back to the data location and input count."""
    data = report["data"]
    if isinstance(data, dict) and data.get("fingerprint"):
        return data["fingerprint"]
    return f"{data_location(report)}|{report['n_samples']}"


def data_location(report: dict[str, Any]) -> str:
    data = report["data"]
    return str(data.get("location")) if isinstance(data, dict) else str(data)


class _OwnTraces(logging.Filter):
    """Drops TensorFlow's warning that a function 'triggered tf.function retracing'. Each run's
    model traces its own predict function, and TensorFlow counts those as one function traced
    again and again: evaluating five runs printed two paragraphs of advice that do not apply."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _own_traces_unreported():
    tensorflow_logger, quiet = logging.getLogger("tensorflow"), _OwnTraces()
    tensorflow_logger.addFilter(quiet)
    try:
        yield
    finally:
        tensorflow_logger.removeFilter(quiet)


def find_runs(paths: list[Path]) -> tuple[list[Path], dict[str, list[str]]]:
    """The runs `paths` name: each path that holds a run (`holds_run`: finished, unfinished or
    damaged) stands for itself; a folder that holds none stands for the runs directly inside it,
    in name order. Hidden folders inside are passed over (.ipynb_checkpoints, .git).

    Returns the runs, in that order, and the runs found in each such folder.
    """
    seen: dict[Path, Path] = {}
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen:
            also = f" (also as {seen[resolved]})" if str(seen[resolved]) != str(path) else ""
            raise ConvpipeError(f"{path} is given twice{also}; list each run once.")
        seen[resolved] = Path(path)
    runs: list[Path] = []
    found_in: dict[str, list[str]] = {}
    origin: dict[Path, str] = {}  # each run's resolved path: how it was named
    for path in map(Path, paths):
        check_run_folder(path)
        if holds_run(path):
            found, how = [path], "named itself"
        else:
            try:
                children = sorted(path.iterdir(), key=lambda child: child.name)
            except OSError as error:
                raise ConvpipeError(f"Cannot list the runs in {path}: {error.strerror or error}.") from None
            found = [child for child in children if not child.name.startswith(".") and child.is_dir() and holds_run(child)]
            if not found:
                raise ConvpipeError(
                    f"{path} is not a run and holds none: neither it nor a folder directly inside it has a "
                    f"run's files ({', '.join(REQUIRED_FILES)}) or train_state/; pass the folders train wrote, "
                    "or the folder that holds them."
                )
            found_in[str(path)], how = [str(run) for run in found], f"found in {path}"
        for run in found:
            resolved = run.resolve()
            if resolved in origin:  # a run named beside the folder that holds it
                raise ConvpipeError(f"{run} is given twice ({origin[resolved]} and {how}); list each run once.")
            origin[resolved] = how
            runs.append(run)
    return runs, found_in


def unfinished_note(unfinished: list[Path]) -> str:
    """One sentence naming the unfinished runs a comparison leaves out, and what to do."""
    names = ", ".join(map(str, unfinished))
    if len(unfinished) == 1:
        return (
            f"1 run is unfinished (still training, or interrupted) and left out: {names}; "
            f"if it was interrupted, continue it with `train --resume {names}`."
        )
    return (
        f"{len(unfinished)} runs are unfinished (still training, or interrupted) and left out: {names}; "
        "continue an interrupted one with `train --resume RUN`."
    )


def compare(run_paths: list[Path], out: Path | None = None, device: str = "auto") -> Comparison:
    """Compare runs by test accuracy (then macro-F1); with `out`, write compare.json and
    compare.html there. Runs without a report are evaluated on `device`.

    A folder in `run_paths` that is not a run stands for the runs directly inside it
    (`find_runs`). Unfinished runs (still training, or interrupted) are left out, so that a sweep
    can be compared while some of its runs train; a damaged run is an error, as it needs attention.
    """
    check_choice("device", device, DEVICES)  # before any work, even when no run needs it
    paths, found_in = find_runs(run_paths)
    unfinished = [path for path in paths if is_unfinished(path)]
    paths = [path for path in paths if path not in unfinished]
    if len(paths) < 2:
        named = f" ({', '.join(map(str, paths))})" if paths and found_in else ""  # which the folders held
        finished, left_out = ("finished ", f" {unfinished_note(unfinished)}") if unfinished else ("", "")
        raise ConvpipeError(f"compare needs at least two {finished}runs; got {len(paths)}{named}.{left_out}")
    if out is not None:
        check_output_folder(Path(out), chosen=True)
    runs = [Run.open(path) for path in paths]  # every run checked before any is evaluated
    tables = [run_settings(run) for run in runs]
    differ = settings_that_differ(tables)
    rows, identities = [], {}
    for run, settings in zip(runs, tables):
        with _own_traces_unreported():
            report, evaluated_now = load_report(run, device)
        hyperparameters = key_hyperparameters(run)
        # and each setting that differs between the runs (seed, num_mels)
        hyperparameters.update({k: settings[k] for k in differ if k in settings and k not in hyperparameters})
        row = ComparedRun(
            run=str(run.path),
            modality=run.config.modality.value,
            hyperparameters=hyperparameters,
            parameters=run.document.get("parameters"),
            train_seconds=run.document.get("timing", {}).get("train_seconds"),
            accuracy=float(report["accuracy"]),
            macro_f1=float(report["macro_f1"]),
            n_samples=int(report["n_samples"]),
            data=data_location(report),
            evaluated_now=evaluated_now,
            baseline_accuracy=_baseline_accuracy(report),
        )
        identities[row.run] = data_identity(report)
        rows.append(row)
    rows.sort(key=lambda row: (-row.accuracy, -row.macro_f1))
    letters: dict[str, str] = {}
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        identity = identities[row.run]
        if identity not in letters:
            letters[identity] = string.ascii_uppercase[len(letters) % 26] * (1 + len(letters) // 26)
            groups[letters[identity]] = {"data": row.data, "n_samples": row.n_samples}
        row.data_group = letters[identity]
        row.different_data = row.data_group != "A"
    comparison = Comparison(
        runs=rows, same_data=len(groups) == 1, data_groups=groups, settings_that_differ=differ,
        found_in=found_in, left_out=[str(path) for path in unfinished],
    )
    if out is not None:
        comparison.json_path = Path(out) / "compare.json"
        comparison.html_path = Path(out) / "compare.html"
        atomic.write_text(comparison.html_path, render_comparison(comparison))
        atomic.write_json(comparison.json_path, comparison.to_dict())
    return comparison


def render_comparison(comparison: Comparison) -> str:
    """A self-contained HTML page with the comparison table."""
    def number(value: Any, pattern: str) -> str:
        return "n/a" if value is None else format(value, pattern)

    baselines = comparison.has_baselines

    rows = "".join(
        f"<tr class='run-row'><td>{rank}</td><td class='text'>{escape(row.run)}</td><td class='text'>{escape(row.modality)}</td>"
        f"<td class='text'>{escape(row.hyperparameter_text())}</td><td>{number(row.parameters, ',')}</td>"
        f"<td>{number(row.train_seconds, '.1f')}</td><td>{row.accuracy:.3f}</td><td>{row.macro_f1:.3f}</td>"
        + (f"<td>{number(row.baseline_accuracy, '.3f')}</td>" if baselines else "")
        + f"<td>{row.n_samples}</td><td class='text'>{escape(row.data_group)}"
        f"{DIFFERENT_DATA if row.different_data else ''}</td></tr>"
        for rank, row in enumerate(comparison.runs, start=1)
    )
    legend = "".join(
        f"<li>{escape(letter)}: {escape(group['data'])} ({group['n_samples']} inputs)</li>"
        for letter, group in comparison.data_groups.items()
    )
    differ = ", ".join(comparison.settings_that_differ) or "none"
    warning = f"<p>Settings that differ between these runs: {escape(differ)}.</p>" + (
        "" if comparison.same_data else
        "<p class='wrong'>These runs were scored on different data: compare accuracies across data groups "
        "with care.</p>"
    ) + (
        f"<p class='wrong'>{escape(unfinished_note([Path(run) for run in comparison.left_out]))}</p>"
        if comparison.left_out else ""
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>convpipe run comparison</title>"
        f"<style>{CSS}</style></head><body><h1>Run comparison</h1>{warning}"
        "<table><thead><tr><th>#</th><th>run</th><th>modality</th><th>key hyperparameters</th><th>parameters</th>"
        "<th>training s</th><th>test accuracy</th><th>macro F1</th>"
        + ("<th>linear baseline accuracy</th>" if baselines else "")
        + "<th>inputs</th><th>data</th></tr></thead>"
        f"<tbody>{rows}</tbody></table><h2>Data groups</h2><ul>{legend}</ul></body></html>\n"
    )
