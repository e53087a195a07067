"""`predict`: top-k class probabilities for individual inputs, with a run's fitted preprocessor."""

from __future__ import annotations

import codecs
import errno
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.cache import fitted_key
from pipelines.datasets import excerpt, first_three, printable_name, walk_files
from pipelines.devices import configure_devices
from pipelines.memory import predict_batch_size
from pipelines.modality import Modality
from pipelines.parallel_read import chunk_size
from pipelines.progress import ProgressCallback, ProgressReporter, stage
from pipelines.run_dir import Run
from pipelines.workers import Workers, borrowed
from preprocess import AudioPreprocessor, ConvpipeError, InputError
from preprocess.text import OOV_ID, is_blank

logger = logging.getLogger(__name__)

#: A clip whose loudest sample lies below this many dB of full scale is silence, as far as a
#: prediction goes. Its spectrogram cannot tell: decibels are measured from each clip's own
#: peak (`top_db`), so faint hiss reads like a loud clip.
SILENT_PEAK_DBFS = -60.0


def _file_kind(value: str) -> str | None:
    """What `value` names: "file", "folder", or None (nothing, or not a possible path)."""
    if not value.strip():  # Path("") is the current folder
        return None
    try:
        path = Path(value)
        # a pipe or device is a "file" too: reading it says what it is, not "not found"
        return "folder" if path.is_dir() else "file" if path.exists() else None
    except (OSError, ValueError):  # e.g. a paragraph of text is too long to be a file name
        return None


def looks_like_path(value: str, extensions: tuple[str, ...]) -> bool:
    """Whether a text run's input is meant as a file: it ends with a text extension, or holds a
    path separator and no whitespace (text has spaces; a mistyped path must not be classified)."""
    has_separator = "/" in value or os.sep in value
    return value.lower().endswith(extensions) or (has_separator and not any(c.isspace() for c in value))


def input_source(run: Run, value: str, literal_text: bool = False) -> Any:
    """`value` as the preprocessor takes it: a path when it names a file; for a text run,
    anything that does not look like a path is the text itself, and with `literal_text` (the
    `--text` flag) everything is."""
    return _source(run, value, None if literal_text else _file_kind(value), literal_text)


def _source(run: Run, value: str, kind: str | None, literal_text: bool = False) -> Any:
    """`input_source`, given what `value` names (`_file_kind`)."""
    text_run = run.config.modality is Modality.text
    if literal_text and not text_run:
        raise ConvpipeError(f"--text is for text runs; this run's modality is {run.config.modality.value}.")
    if not value.strip():  # before the file system: Path("") is the current folder
        raise ConvpipeError(f"Cannot use input {value!r}: empty text" if text_run else f"Input not found: {value!r}")
    if text_run and kind is None and is_blank(value):  # zero-width characters: an all-padding input
        raise ConvpipeError(f"Cannot use input {value!r}: empty text (only invisible characters)")
    if literal_text:
        return value
    if kind == "folder":  # inspect and explain take one input; predict expands folders first
        raise ConvpipeError(f"Cannot use input {value}: is a folder, expected a file")
    if kind == "file":
        return Path(value)
    if not text_run or looks_like_path(value, run.preprocessor.extensions):
        raise ConvpipeError(f"Input not found: {value}{_why_missing(value)}{TEXT_HINT if text_run else ''}")
    return value


# A text without spaces can hold a "/" ("价格是100元/公斤"), and a file name can be text.
TEXT_HINT = " (to classify it as text, pass --text)"


def expanded_sources(run: Run, inputs: list[str], skip_bad: bool = False, literal_text: bool = False) -> tuple[list[str], list[Any]]:
    """`inputs` with each folder replaced by the files below it that the run's modality reads,
    in path order (hidden entries skipped and linked folders not followed, as `train` reads a
    class folder), and each one's `input_source`; every input is looked up once. A folder
    holding no such file is an error; so is a file that is not there, unless `skip_bad` (its
    reading then fails, and it is left out with the unreadable ones). Missing files are all
    looked for before the error, which names the first three and how many."""
    if literal_text:  # every input is a text: nothing to look up
        return list(inputs), [input_source(run, value, literal_text=True) for value in inputs]
    names, sources, missing = [], [], []
    for value in inputs:
        kind = _file_kind(value)
        if kind != "folder":
            try:
                source = _source(run, value, kind)
            except ConvpipeError:
                if is_blank(value):  # empty, not missing
                    raise
                if not skip_bad:  # _source's one refusal of a name: nothing there
                    missing.append(f"{value}{_why_missing(value)}")
                source = Path(value)  # not there: "no such file" when read
            names.append(value)
            sources.append(source)
            continue
        extensions = run.preprocessor.extensions
        files = [path for parts, path in walk_files(Path(value)) if parts[-1].lower().endswith(extensions)]
        if not files:
            modality = run.config.modality.value
            raise ConvpipeError(f"Folder {value} holds no {modality} files ({', '.join(extensions)}).")
        names += [str(path) for path in files]
        sources += files
    if missing:
        others = "; pass --skip-bad to predict the others" if len(missing) < len(names) else ""
        hint = "" if run.config.modality is not Modality.text else TEXT_HINT if len(missing) == 1 else TEXT_HINT.replace(" it ", " them ")
        raise ConvpipeError(f"Input{'s' if len(missing) > 1 else ''} not found: {first_three(missing)}{hint}{others}")
    return names, sources


def _why_missing(value: str) -> str:
    """Why a name that is not a file or folder fails, where a link explains it."""
    try:
        if not os.path.islink(value):
            return ""
        os.stat(value)
    except OSError as error:
        if error.errno == errno.ENOENT:
            return f" (a link to {os.readlink(value)}, which does not exist)"
        return f" ({error.strerror.lower()})" if error.strerror else ""
    return ""


def encode_input(run: Run, value: str, literal_text: bool = False) -> np.ndarray:
    """The array the run's model reads for one image or clip (inspect and explain read texts
    with `text_inspection.read_tokens`); a bad input is one clear error, and a silent clip is
    warned of, as in predict."""
    try:
        x, silent = _transform_one(run.preprocessor, input_source(run, value, literal_text))
    except InputError as error:
        raise ConvpipeError(f"Cannot use input {value}: {error.reason}") from None
    warn_of_silent_clips([value], np.array([silent]))
    return x


#: Seconds of decoding left in this process above which `predict` starts worker processes.
PARALLEL_AFTER_SECONDS = 3.0


def encode_inputs(
    run: Run, inputs: list[str], sources: list[Any], workers: Workers | int | None = 1,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, list[int], list[tuple[str, str]], np.ndarray]:
    """Every usable input's array, in one block; the indices of those inputs; for each one
    that cannot be used, (name, reason); and which rows of the block are silent clips (see
    `SILENT_PEAK_DBFS`; none for images and texts). Inputs that take long to decode are
    decoded by `workers` processes."""
    preprocessor = run.preprocessor
    tasks = list(enumerate(sources))
    with borrowed(workers, type(preprocessor)) as pool:
        # The first chunk is decoded here and timed: worker processes take 2-3 s to start, so
        # they are started only where the rest would take longer than that here (measured on
        # 2 cores: 400 clips 6.8 s here, 8.0 s with 2 workers; 2,000 clips 19.2 s, 9.5 s).
        size = chunk_size(len(tasks), pool.count)
        done = [_transform_chunk(preprocessor, tasks[:1])]  # not timed: the first call warms librosa up
        started = time.perf_counter()
        done.append(_transform_chunk(preprocessor, tasks[1:size]))
        rest = tasks[size:]
        per_input = (time.perf_counter() - started) / max(size - 1, 1)
        parallel = pool.count > 1 and per_input * len(rest) > PARALLEL_AFTER_SECONDS
        if progress is not None:
            progress(min(size, len(tasks)), len(tasks))
        chunks = [rest[start : start + size] for start in range(0, len(rest), size)]
        # children rebuild the fitted preprocessor once, as evaluate's encoding workers do
        fitted = (fitted_key(preprocessor), type(preprocessor).__name__, preprocessor.get_config(), preprocessor._fitted_state())
        done += pool.map_chunks(
            chunks,
            local=lambda chunk: _transform_chunk(preprocessor, chunk),
            remote=lambda chunk: (_transform_chunk_in_child, *fitted, chunk),
            parallel=parallel,
            progress=None if progress is None else lambda count: progress(min((count + 1) * size, len(tasks)), len(tasks)),
        )
    x = np.empty((len(inputs), *preprocessor.output_shape), dtype=preprocessor.output_dtype)
    kept, failed, silent = [], [], np.zeros(len(inputs), dtype=bool)
    for chunk in done:
        for index, row, reason, quiet in chunk:
            if reason is not None:
                failed.append((printable_name(inputs[index]), reason))
                continue
            x[len(kept)], silent[len(kept)] = row, quiet
            kept.append(index)
        chunk.clear()  # each row is held once more only until it is copied in
    return x[: len(kept)], kept, failed, silent[: len(kept)]


def _transform_chunk(preprocessor: Any, chunk: list[tuple[int, Any]]) -> list[tuple[int, Any, str | None, bool]]:
    """(index, array, None, silent) for each input of `chunk` that can be used, (index, None,
    reason, False) else."""
    rows = []
    for index, source in chunk:
        try:
            row, quiet = _transform_one(preprocessor, source)
            rows.append((index, row, None, quiet))
        except InputError as error:
            rows.append((index, None, error.reason, False))
    return rows


def _transform_one(preprocessor: Any, source: Any) -> tuple[np.ndarray, bool]:
    """`source`'s array, and whether it is a silent clip. A clip is decoded once, for both: the
    spectrogram of its decoded waveform (the part the model reads) is the file's."""
    if not isinstance(preprocessor, AudioPreprocessor):
        return preprocessor.transform_one(source), False
    waveform = preprocessor.load_waveform(source)
    peak = float(np.max(np.abs(waveform), initial=0.0))
    return preprocessor.transform_one((waveform, preprocessor.sample_rate)), peak < 10 ** (SILENT_PEAK_DBFS / 20)


def _transform_chunk_in_child(fit: str, name: str, config: dict, state: tuple, chunk: list) -> list:
    from pipelines.parallel_encode import fitted_in_child

    return _transform_chunk(fitted_in_child(fit, name, config, state), chunk)


def unusable_inputs(failed: list[tuple[str, str]], total: int) -> str:
    """One line naming the inputs that cannot be used (the first few, then how many more)."""
    if total == 1:
        return f"Cannot use input {failed[0][0]}: {failed[0][1]}"
    shown = "; ".join(f"{name} ({reason})" for name, reason in failed[:3])
    return f"{len(failed)} of {total} inputs cannot be used: {shown}" + (f"; and {len(failed) - 3} more" if len(failed) > 3 else "")


def with_stdin_lines(inputs: list[str], stdin: Any) -> list[str]:
    """`inputs` with `-` replaced by the non-empty lines of `stdin` (file names from `find`, or
    a text run's texts), each then used as an argument would be. Lines are decoded as file names
    are (`os.fsdecode`): a name that is not UTF-8 still opens, and text reads as a file's bytes."""
    if "-" not in inputs:
        return inputs
    lines = stdin_lines(stdin)
    if not lines:
        raise ConvpipeError("Nothing to predict: - was given, and standard input holds no lines.")
    index = inputs.index("-")
    return [*inputs[:index], *lines, *(value for value in inputs[index + 1 :] if value != "-")]


def stdin_lines(stdin: Any) -> list[str]:
    """The non-empty lines of `stdin`, decoded as file names are (see `with_stdin_lines`)."""
    raw = stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read().encode("utf-8", "surrogateescape")
    raw = raw.removeprefix(codecs.BOM_UTF8)  # written by Windows editors; not part of the first input
    return [os.fsdecode(line) for line in raw.splitlines() if line.strip()]


def with_stdin_line(value: str, stdin: Any, command: str) -> str:
    """inspect's and explain's one INPUT: `-` is the one non-empty line of `stdin`, used as the
    argument would be, as predict reads `-` (a file named `-` is `./-`)."""
    if value != "-":
        return value
    lines = stdin_lines(stdin)
    if len(lines) != 1:
        raise ConvpipeError(
            f"{command} takes one input: - was given, and standard input holds "
            + ("no lines." if not lines else f"{len(lines):,} lines; give one (predict takes many).")
        )
    return lines[0]


def warn_of_unknown_texts(run: Run, inputs: list[str], x: np.ndarray) -> None:
    """Say which texts hold no token of the run's vocabulary (another language or script, or
    words the training texts never used): each reads as out-of-vocabulary ids alone, so the model
    still gives it a class, one that says nothing about the text."""
    tokens = x if x.ndim == 2 else x[..., 0]  # with character n-grams, column 0 holds the characters
    unknown = np.flatnonzero(~(tokens > OOV_ID).any(axis=1))
    if len(unknown):
        names = first_three([repr(excerpt(printable_name(inputs[i]))) for i in unknown])
        level = "word" if run.preprocessor.level == "word" else "character"
        if len(inputs) == 1:  # inspect, explain
            logger.warning("The text holds no %s the run's vocabulary knows: its prediction says nothing about it.", level)
            return
        logger.warning(
            "%d of %d texts hold no %s the run's vocabulary knows (%s): their predictions say nothing about them.",
            len(unknown), len(inputs), level, names,
        )


def warn_of_silent_clips(inputs: list[str], silent: np.ndarray) -> None:
    """Say which clips are silent (see `SILENT_PEAK_DBFS`): the model still gives each a class,
    one that says nothing about the clip unless the run learned a class of silence."""
    found = np.flatnonzero(silent)
    if len(found):
        names = first_three([printable_name(inputs[i]) for i in found])
        if len(inputs) == 1:  # inspect, explain
            logger.warning(
                "The clip is silent, its loudest sample below %g dBFS: its prediction says nothing about it, "
                "unless the run was trained on a class of silence.", SILENT_PEAK_DBFS,
            )
            return
        logger.warning(
            "%d of %d clips are silent, their loudest sample below %g dBFS (%s): their predictions say nothing "
            "about them, unless the run was trained on a class of silence.",
            len(found), len(inputs), SILENT_PEAK_DBFS, names,
        )


def predict(
    run_path: Path, inputs: list[str], top_k: int = 3, device: str = "auto", skip_bad: bool = False,
    skipped: list[tuple[str, str]] | None = None, workers: int | None = None, progress: ProgressReporter | None = None,
    literal_text: bool = False,
) -> list[dict[str, Any]]:
    """`[{"input": ..., "kind": "file" | "text", "top": [{"label", "probability"}, ...]}]`, one
    entry per input, in order.

    A folder stands for the files below it that the run's modality reads. For a text run, an
    input that names an existing file is read from it; one that looks like a
    path (see `looks_like_path`) but names nothing is an error; anything else is the text itself.
    With `literal_text`, every input is text.
    An input that cannot be decoded is an error naming every such input; with `skip_bad`, the
    others are predicted and each one left out is added to `skipped` as (name, reason).
    """
    if top_k < 1:
        raise ConvpipeError(f"--top-k must be at least 1, got {top_k}.")
    if not inputs:
        raise ConvpipeError("Nothing to predict: pass one or more inputs.")
    configure_devices(device)  # before TensorFlow's first op, which fixes its devices
    run = Run.open(run_path)
    run.preprocessor  # a damaged preprocessor.json is named as such, not as a missing input
    inputs, sources = expanded_sources(run, inputs, skip_bad, literal_text)  # every input checked before any is decoded
    run.model  # files that do not fit together are refused before any input is decoded
    x, kept, failed, silent = encode_inputs(run, inputs, sources, workers, stage(progress, "reading inputs"))
    if failed and (not skip_bad or not kept):
        hint = "" if skip_bad else "; pass --skip-bad to predict the others"
        raise ConvpipeError(unusable_inputs(failed, len(inputs)) + (hint if kept else "") + ("" if len(inputs) == 1 else "."))
    if skipped is not None:
        skipped += failed
    inputs, sources = [inputs[i] for i in kept], [sources[i] for i in kept]
    if run.config.modality is Modality.text:
        warn_of_unknown_texts(run, inputs, x)
    warn_of_silent_clips(inputs, silent)
    # Batch by batch: model.predict on the whole array copied it into TensorFlow twice over
    # (6,000 images: 4.2 GB at the peak, for 0.8 GB of inputs).
    size = predict_batch_size(run.model)
    probabilities = np.concatenate(
        [np.asarray(run.model.predict_on_batch(x[start : start + size])) for start in range(0, len(x), size)]
    )
    k = min(top_k, len(run.labels))
    results = []
    for value, source, row in zip(inputs, sources, probabilities):
        order = np.argsort(-row)[:k]
        results.append(
            {
                "input": printable_name(value),
                "kind": "file" if isinstance(source, Path) else "text",  # a text run's literal text
                "top": [{"label": run.labels[i], "probability": float(row[i])} for i in order],
            }
        )
    return results
