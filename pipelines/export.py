"""`preprocess`: export the 2-D arrays, labels and label names for use outside convpipe."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipelines.datasets import load_source
from pipelines.defaults import build_preprocessor
from pipelines.cache import PreprocessCache
from pipelines.featurize import Skipped, encode_to_shards, fit_cached, read_cached
from pipelines.progress import ProgressReporter, stage
from pipelines.modality import Modality
from pipelines.run_dir import Run
from pipelines.workers import Workers
from preprocess import ConvpipeError, atomic

logger = logging.getLogger(__name__)


def export_arrays(
    modality: Modality | None,
    data: str | None,
    out: Path,
    run_path: Path | None = None,
    strict: bool = False,
    cache: PreprocessCache | None = None,
    workers: int | None = None,
    progress: ProgressReporter | None = None,
) -> dict:
    """Write `out` (.npz): `x`, `y` (indices into `label_names`), `label_names`, `ids`.

    With `run_path`, the run's fitted preprocessor and label order are used (and its modality,
    when `modality` is not None, must match); otherwise a new preprocessor with default settings
    is fitted on all the data.
    Inputs are read through `cache` (a temporary one when None).
    """
    out = Path(out)
    if out.suffix != ".npz":
        raise ConvpipeError(f"--out must end in .npz, got {out}.")
    cache = cache if cache is not None else PreprocessCache.open(None, enabled=False)
    if run_path is not None:
        run = Run.open(run_path)
        modality = run.config.modality if modality is None else modality
        if run.config.modality is not modality:
            raise ConvpipeError(f"{run_path} was trained on {run.config.modality.value} data, not {modality.value}.")
        preprocessor, label_names = run.preprocessor, run.labels
    source = load_source(data, modality)
    dataset = source.everything()
    if run_path is None:
        preprocessor, _ = build_preprocessor(modality, {}, dataset)
        label_names = sorted(set(dataset.labels))
    skipped = Skipped()
    with Workers(workers, type(preprocessor)) as pool:
        items, kept = read_cached(preprocessor, dataset, "", skipped, strict, cache, pool, stage(progress, "reading"))
        if not len(items):
            raise ConvpipeError(f"No input in {source.location} could be read: {skipped.summary()}.")
        if run_path is None:
            fit_cached(preprocessor, items)
        used = dataset.subset(kept)
        unknown = sorted(set(used.labels) - set(label_names))
        if unknown:
            raise ConvpipeError(f"Label(s) the run never saw: {', '.join(unknown)}.")
        index = {label: i for i, label in enumerate(label_names)}
        x = encode_to_shards(preprocessor, items, stage(progress, "encoding"), pool).to_numpy()  # one .npz holds it all
    y = np.array([index[label] for label in used.labels], dtype=np.int32)
    cache.cleanup()
    atomic.write_npz(out, {"x": x, "y": y, "label_names": np.array(label_names), "ids": np.array(used.ids)})
    for name, reason in source.ignored:  # not inputs at all: other file types, bad manifest rows
        logger.info("ignoring %s: %s", name, reason)
    return {
        "path": str(out), "shape": list(x.shape), "classes": len(label_names), "skipped": skipped.summary(),
        "ignored": len(source.ignored),
    }
