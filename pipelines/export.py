"""`preprocess`: export the 2-D arrays, labels and label names for use outside convpipe."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from pipelines.datasets import load_source, moved_run_data
from pipelines.defaults import build_preprocessor
from pipelines.cache import PreprocessCache
from pipelines.featurize import Skipped, encode_to_shards, fit_cached, read_cached
from pipelines.progress import ProgressReporter, stage
from pipelines.modality import Modality
from pipelines.run_dir import Run
from pipelines.shards import ShardedArray
from pipelines.workers import Workers
from preprocess import ConvpipeError, atomic

logger = logging.getLogger(__name__)

#: Bytes of `x` copied from the shards into the .npz at a time; `x` is never held whole.
BLOCK_BYTES = 64 * 2**20


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
    when `modality` is not None, must match), and its data when `data` is None; otherwise a new
    preprocessor with default settings is fitted on all the data.
    Inputs are read through `cache` (a temporary one when None).
    """
    out = Path(out)
    if out.suffix != ".npz":
        raise ConvpipeError(f"--out must end in .npz, got {out}.")
    cache = cache if cache is not None else PreprocessCache.open(None, enabled=False)
    try:
        if run_path is not None:
            run = Run.open(run_path)
            modality = run.config.modality if modality is None else modality
            if run.config.modality is not modality:
                raise ConvpipeError(f"{run_path} was trained on {run.config.modality.value} data, not {modality.value}.")
            preprocessor, label_names = run.preprocessor, run.labels
            # without --data, the run's own data (the demo data, for a run trained on it), not the demo's
            if data is None:
                moved = moved_run_data(run.config.data)
                if moved:
                    raise ConvpipeError(f"Cannot read the data of {run_path}: {moved}. Or pass --data.")
                data = run.config.data
        source = load_source(data, modality)
        dataset = source.everything()
        if run_path is None:
            preprocessor, _ = build_preprocessor(modality, {}, dataset, command="preprocess", cache=cache)
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
            x = encode_to_shards(preprocessor, items, stage(progress, "encoding"), pool, resizable=False)
        y = np.array([index[label] for label in used.labels], dtype=np.int32)
        try:
            write_npz_in_blocks(out, x, {"y": y, "label_names": np.array(label_names), "ids": np.array(used.ids)})
        finally:
            x.close()
    finally:  # on errors too, and after the write: --no-cache's shards are in the temporary cache
        cache.cleanup()
    for name, reason in source.ignored:  # not inputs at all: other file types, bad manifest rows
        logger.info("ignoring %s: %s", name, reason)
    return {
        "path": str(out), "shape": list(x.shape), "classes": len(label_names), "skipped": skipped.summary(),
        "ignored": len(source.ignored),
    }


def write_npz_in_blocks(out: Path, x: ShardedArray, arrays: dict[str, np.ndarray]) -> None:
    """The arrays `np.savez(out, x=x, **arrays)` writes, with `x` copied from its shards a block of
    rows at a time: loading it whole first took 30,000 texts' export to 1.2 GB.

    Token ids (an integer `x`) are deflated, as `np.savez_compressed` would: they are mostly
    padding, and the file shrinks 7x (the built-in docstrings) to 14x (3,000 long-tailed texts)
    in no more time. Float arrays are stored as they are; they hardly shrink. `np.load` reads both.
    """
    header = {"descr": np.lib.format.dtype_to_descr(x.dtype), "fortran_order": False, "shape": x.shape}
    rows = max(1, BLOCK_BYTES // max(x.dtype.itemsize * int(np.prod(x.row_shape, dtype=np.int64)), 1))
    deflate = np.issubdtype(x.dtype, np.integer)
    compression = {"compression": zipfile.ZIP_DEFLATED, "compresslevel": 1} if deflate else {}
    with atomic.atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True, **compression) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            for start in range(0, len(x), rows):
                member.write(x.take(np.arange(start, min(start + rows, len(x)))).tobytes())
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
