"""The linear baseline `evaluate --baseline` scores beside the CNN: a scikit-learn logistic
regression fitted on the run's training and validation inputs, which read as

    image: the preprocessed pixels, standardized
    audio: MFCC statistics (mean and std over time of 20 MFCCs and of their deltas)
    text:  TF-IDF of word 1-2-grams and character 2-5-grams

A CNN that does not beat it on the same test inputs costs more and buys nothing. It is the
strongest linear model the benchmarks found for text, and the one benchmarks/baselines.py uses
for the README's numbers. The CNN held the validation inputs out for early stopping; the linear
model needs no such hold-out, so it is fitted on both.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines.datasets import Dataset
from pipelines.modality import Modality
from pipelines.parallel_read import PARALLEL_MIN_INPUTS, chunk_size
from pipelines.progress import ProgressCallback, ProgressReporter, stage
from pipelines.workers import Workers, borrowed
from preprocess import ConvpipeError, InputError

DESCRIPTIONS = {
    Modality.image: "logistic regression on pixels",
    Modality.audio: "logistic regression on MFCC statistics",
    Modality.text: "logistic regression on TF-IDF word and character n-grams",
}
#: Character n-grams found in fewer training texts are dropped (TF-IDF's min_df), once there are
#: enough texts for a count of 2 to mean anything.
CHAR_MIN_DF, CHAR_MIN_DF_FROM = 2, 50


def linear_features(
    modality: Modality, preprocessor: Any, inputs: list, progress: ProgressCallback | None = None,
    pool: Workers | None = None,
):
    """The baseline's features for `inputs` (an array; raw texts for text) and the indices of
    the inputs that could be read. Images and audio are read by `pool`'s worker processes when
    there are many (as training reads them); texts need no decoding."""
    if modality is Modality.text:
        rows, kept = [], []
        for i, x in enumerate(inputs):
            try:
                rows.append(preprocessor.read_text(x))
            except InputError:
                continue
            kept.append(i)
        if progress is not None:
            progress(len(inputs), len(inputs))
        return rows, kept
    pool = pool or Workers(1)  # one worker: everything is read here
    tasks = list(enumerate(inputs))
    parallel = pool.count > 1 and len(tasks) >= PARALLEL_MIN_INPUTS
    size = chunk_size(len(tasks), pool.count if parallel else 1)
    chunks = [tasks[start : start + size] for start in range(0, len(tasks), size)]
    name, config = type(preprocessor).__name__, preprocessor.get_config()
    done = pool.map_chunks(
        chunks,
        local=lambda chunk: _feature_rows(modality, preprocessor, chunk),
        remote=lambda chunk: (_feature_chunk, modality.value, name, config, chunk),
        parallel=parallel,
        progress=None if progress is None else lambda count: progress(min(count * size, len(tasks)), len(tasks)),
    )
    found = [(index, row) for chunk in done for index, row in chunk if row is not None]
    if progress is not None:
        progress(len(inputs), len(inputs))
    if not found:
        return np.zeros((0, 0), np.float32), []
    return np.stack([row for _, row in found]), [index for index, _ in found]


def _feature_rows(modality: Modality, preprocessor: Any, chunk: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """(index, features or None where the input cannot be read) for each input of `chunk`."""
    rows = []
    for index, x in chunk:
        try:
            if modality is Modality.image:
                row = preprocessor.transform_one(x).ravel()
            else:
                row = mfcc_statistics(preprocessor.load_waveform(x), preprocessor.sample_rate)
        except InputError:
            row = None
        rows.append((index, row))
    return rows


def _feature_chunk(modality: str, class_name: str, config: dict, chunk: list) -> list[tuple[int, Any]]:
    """Child side: rebuild the preprocessor from its config, then `_feature_rows`."""
    from preprocess import PREPROCESSORS

    return _feature_rows(Modality(modality), PREPROCESSORS[class_name].from_config(config), chunk)


def mfcc_statistics(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    import librosa

    # librosa's default window (2,048 samples), shrunk to a power of 2 for clips shorter than it.
    # Such a short window leaves some of the 128 mel bands empty, which librosa warns about:
    # their MFCC part is constant, so the statistics are still fine.
    n_fft = min(2048, 2 ** int(np.log2(max(len(waveform), 16))))
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):  # overflow: refused below
        if n_fft < 2048:
            warnings.simplefilter("ignore", UserWarning)
        mfcc = librosa.feature.mfcc(y=waveform, sr=sample_rate, n_mfcc=20, n_fft=n_fft, hop_length=n_fft // 4)
    if not np.all(np.isfinite(mfcc)):  # samples so large that the power overflows; delta would fail
        raise InputError("audio", "samples too large for MFCCs")
    # "interp" (librosa's default) needs 9 frames; a clip of under about 0.3 s has fewer
    delta = librosa.feature.delta(mfcc, mode="interp" if mfcc.shape[1] >= 9 else "nearest")
    return np.concatenate([mfcc.mean(1), mfcc.std(1), delta.mean(1), delta.std(1)])


def linear_model(modality: Modality, n_fit: int, one_letter_words: bool = False):
    """The unfitted scikit-learn pipeline for `modality`, fitted later on `n_fit` inputs."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.preprocessing import StandardScaler

    if modality is Modality.text:
        return make_pipeline(
            make_union(
                TfidfVectorizer(
                    ngram_range=(1, 2), sublinear_tf=True, min_df=1,
                    **({"token_pattern": r"(?u)\b\w+\b"} if one_letter_words else {}),
                ),
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
                    min_df=CHAR_MIN_DF if n_fit >= CHAR_MIN_DF_FROM else 1,
                ),
            ),
            LogisticRegression(C=10.0, max_iter=2000),
        )
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))


def fit_predict(modality: Modality, x_fit: Any, y_fit: Sequence[Any], x_test: Any) -> np.ndarray:
    """Fit the baseline and predict `x_test`; a failed fit is a one-line error."""
    from sklearn.exceptions import ConvergenceWarning

    def fit(model):
        with warnings.catch_warnings():
            # an unconverged fit after max_iter is still a fair baseline; its score says how good
            warnings.simplefilter("ignore", ConvergenceWarning)
            return model.fit(x_fit, y_fit)

    model = linear_model(modality, len(y_fit))
    try:
        try:
            fit(model)
        except ValueError as error:
            if modality is not Modality.text or "empty vocabulary" not in str(error):
                raise
            # no word of two or more letters in any text (scikit-learn's default words): read
            # one-letter words too, rather than fail; the default stays, as the benchmarks measured it
            model = linear_model(modality, len(y_fit), one_letter_words=True)
            fit(model)
    except ValueError as error:  # e.g. texts with no word left, or one class after skipping
        raise ConvpipeError(f"The linear baseline could not be fitted: {error}") from None
    return model.predict(x_test)


def training_inputs(training: Any) -> Dataset:
    """The run's training and validation inputs (`training`: evaluate's `TrainingData`), read
    again from the data it was trained on, refused where that data changed since training
    (fitting on other inputs would compare the CNN with a model of other data)."""
    try:
        parts = []
        for name in ("train", "validation"):
            part = training.split(name)
            if part is None:
                raise ConvpipeError(
                    f"{training.location} changed since training: the run's recorded {name} inputs are no longer the "
                    "same (edited, reordered or replaced), so the baseline cannot be fitted on what the CNN learned from."
                )
            parts.append(part)
        return Dataset.joined(parts)
    except ConvpipeError as error:
        raise ConvpipeError(
            f"--baseline fits on the run's training data, which cannot be used now: {str(error).rstrip('.')}. "
            "Restore it as it was, or leave out --baseline."
        ) from None


def cnn_against_baseline(baseline: dict[str, Any]) -> tuple[float, str]:
    """From a `linear_baseline` result: the CNN's accuracy minus the baseline's, and whether the
    CNN "beats", "ties" or "loses to" it."""
    gap = baseline["cnn_accuracy"] - baseline["accuracy"]
    return gap, "beats" if gap > 0 else ("ties" if gap == 0 else "loses to")


def linear_baseline(
    run: Any,
    fit_part: Dataset,
    scored: Dataset,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    known_copies: int | None,
    progress: ProgressReporter | None = None,
    workers: Workers | int | None = None,
) -> dict[str, Any]:
    """Fit the baseline on `fit_part` (`training_inputs(training)`) and score it on `scored`, the
    inputs the CNN was scored on (`y_true`, and the CNN's `y_pred`, in `run.labels` indices).
    Both accuracies are over the inputs the baseline could read too, so they compare.
    `known_copies`: how many scored inputs copy fitted ones (None: not known). `workers` (a
    `Workers`, e.g. the command's own, or a count) read images and audio."""
    from pipelines.evaluation import classification_metrics

    started = time.perf_counter()
    modality = run.config.modality
    index = {label: i for i, label in enumerate(run.labels)}
    with borrowed(workers, type(run.preprocessor)) as pool:
        x_fit, kept_fit = linear_features(
            modality, run.preprocessor, fit_part.inputs, stage(progress, "linear baseline: reading training inputs"), pool
        )
        x_test, kept_test = linear_features(
            modality, run.preprocessor, scored.inputs, stage(progress, "linear baseline: reading scored inputs"), pool
        )
    if not kept_fit or not kept_test:
        raise ConvpipeError("The linear baseline could not read any of the run's training inputs or of the scored inputs.")
    y_fit = np.array([index[fit_part.labels[i]] for i in kept_fit])
    fitting = stage(progress, "linear baseline: fitting") or (lambda done, total: None)
    fitting(0, 1)
    baseline_pred = fit_predict(modality, x_fit, y_fit, x_test)
    fitting(1, 1)
    truth = y_true[kept_test]
    metrics = classification_metrics(truth, baseline_pred, run.labels)
    return {
        "model": DESCRIPTIONS[modality],
        "fitted_on": len(kept_fit),
        "n_samples": len(kept_test),
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "cnn_accuracy": float(np.mean(y_pred[kept_test] == truth)),
        "cnn_macro_f1": classification_metrics(truth, y_pred[kept_test], run.labels)["macro_f1"],
        # scored inputs that are copies of inputs the baseline was fitted on (the CNN only
        # trained on some of those: it held the validation inputs out)
        "scored_copies_of_fitted_inputs": known_copies,
        "seconds": round(time.perf_counter() - started, 2),
    }
