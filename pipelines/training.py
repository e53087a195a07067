"""`train`: data -> split -> fitted preprocessor -> arrays -> Keras model -> run directory."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines import environment
from pipelines.cache import PreprocessCache, fitted_digest
from pipelines.config import READING_SETTINGS, RunConfig, TrainSettings
from pipelines.datasets import Dataset, DataSource, first_three, label_groups, load_source, moved_run_data, retyped, split_dataset
from pipelines.defaults import CHOICES_VERSION, build_preprocessor, fitted_choices
from pipelines.featurize import Skipped, check_skip_share, encode_to_shards, fit_cached, read_cached
from pipelines.heartbeat import heartbeat
from pipelines.leakage import find_copies
from pipelines.memory import available_memory, check_training_memory
from pipelines.modality import Modality
from pipelines.progress import ProgressReporter, stage
from pipelines.run_dir import RUN_FORMAT, check_folder_path, check_run_folder, write_history
from pipelines.shards import ShardedArray
from pipelines.workers import Workers
from preprocess import ConvpipeError, Preprocessor, atomic

if TYPE_CHECKING:
    from pipelines.compute import Compute
    from pipelines.resume import TrainState

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    val_accuracy: float | None
    epochs: int
    best_epoch: int
    interrupted: bool
    skipped: Skipped
    #: files in the data folders that are not of the modality's types, never read
    ignored: int
    class_counts: dict[str, dict[str, int]]
    #: the whole command, and the part of it spent fitting the model (config.json's train_seconds)
    seconds: float
    train_seconds: float
    #: False on a non-chief multi-worker task: `run_dir` is then its scratch folder, holding only
    #: final.weights.h5 (the chief writes the run)
    chief: bool = True


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and the backend; with `deterministic`, also TensorFlow op determinism.

    Op determinism guarantees the same weights and metrics for the same seed, data and machine
    by choosing deterministic kernels, which can cost speed (the image demo once trained 1.8x
    slower on 2 CPU cores; a later check found no difference). Seeding alone already reproduced
    that run exactly on the CPU.
    """
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def extra_callbacks() -> list:
    """Callbacks added to every fit; empty here, a seam for tests and later features."""
    return []


def default_run_dir(modality: Modality, root: Path = Path("runs")) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / f"{modality.value}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = root / f"{modality.value}-{stamp}-{suffix}"
    return path


#: What spreadsheets and pandas write for a missing value (casefolded): as a manifest's label,
#: most likely a row without one. Still a class (a class may be called "None"), so it is only said.
MISSING_VALUE_LABELS = {"nan", "none", "null", "n/a", "#n/a"}


def warn_of_near_duplicate_labels(classes: list[str], manifest: bool = False) -> None:
    """Labels that differ only in case, spaces or leading zeros ("Sports" / "sports", "1" / "01")
    are separate classes, often one class typed two ways; in a CSV `manifest`, labels that read
    as a missing value ("nan", "None") are often rows without a label. Both are said."""
    twins = [" / ".join(group) for group in label_groups(classes).values() if len(group) > 1]
    if twins:
        logger.warning(
            "Labels that differ only in case, spacing or leading zeros are separate classes: %s.", "; ".join(twins)
        )
    missing = [label for label in classes if manifest and label.casefold() in MISSING_VALUE_LABELS]
    if missing:
        logger.warning(
            "Label(s) %s read like a spreadsheet's missing value, yet are classes here; leave the label cell "
            "empty to leave a row out.", ", ".join(missing),
        )


def make_splits(source: DataSource, config: RunConfig) -> dict[str, Dataset]:
    settings = config.train
    if source.predefined_split:
        given = {name: getattr(source, name) for name in ("validation", "test") if getattr(source, name) is not None}
        for name, part in given.items():
            unseen = sorted(set(part.labels) - set(source.train.labels))
            if unseen:  # found now, not after training, at evaluate
                folder, train = source.folder_of(part), source.folder_of(source.train)
                renames = [f"{folder}/{label}/ to {folder}/{known}/" for label, known in retyped(unseen, sorted(set(source.train.labels)))]
                # "Cat" in train/ and "cat" in test/ are two classes: the folder to rename is named
                retyped_note = (
                    f" Some differ from {train}/'s only in case, spacing or leading zeros: rename {first_three(renames)}."
                    if renames else ""
                )
                raise ConvpipeError(
                    f"{source.location}: {folder}/ has class(es) that {train}/ lacks: {', '.join(unseen)}; the model "
                    f"could never predict them. Add them to {train}/ or remove them from {folder}/.{retyped_note}"
                )
        asked = (("validation", "--val-split", settings.val_split, TrainSettings.val_split),
                 ("test", "--test-split", settings.test_split, TrainSettings.test_split))
        for name, flag, share, default in asked:
            if name in given and share != default:  # said, not silently ignored
                source.warn_of_unused_share(name, flag, share)
        # What is not given as a folder is split from train/.
        parts = split_dataset(
            source.train,
            0.0 if "validation" in given else settings.val_split,
            0.0 if "test" in given else settings.test_split,
            settings.seed,
        )
        return {**parts, **given}
    return split_dataset(source.full, settings.val_split, settings.test_split, settings.seed)


def featurize_splits(
    preprocessor: Preprocessor,
    splits: dict[str, Dataset],
    strict: bool,
    max_skipped: float,
    cache: PreprocessCache,
    workers: int | None = None,
    progress: ProgressReporter | None = None,
) -> tuple[dict[str, tuple[ShardedArray, list[str], list[str]]], Skipped]:
    """Read train and validation inputs through the cache, fit on train only, encode both into
    shards on disk.

    Returns `{split: (arrays, labels, ids)}` for the inputs that could be read.
    """
    skipped = Skipped()
    with Workers(workers, type(preprocessor)) as pool:  # one set of worker processes for every split and step
        read = {
            name: read_cached(preprocessor, splits[name], name, skipped, strict, cache, pool, stage(progress, f"reading {name}"))
            for name in ("train", "validation")
        }
        check_skip_share(skipped, max_skipped)
        train_items, _ = read["train"]
        if not len(train_items):
            raise ConvpipeError("No training input could be read; see the skipped inputs.")
        fit_cached(preprocessor, train_items)
        arrays = {}
        for name, (items, kept) in read.items():
            subset = splits[name].subset(kept)
            x = encode_to_shards(preprocessor, items, stage(progress, f"encoding {name}"), pool)
            arrays[name] = (x, subset.labels, subset.ids)
    return arrays, skipped


def build_model(config: RunConfig, preprocessor: Preprocessor, num_classes: int):
    import models

    if config.modality is Modality.text:
        shape = preprocessor.output_shape
        return models.build_text_model(
            shape[0], preprocessor.num_ids, num_classes, config.model, ids_per_position=shape[1] if len(shape) > 1 else 1
        )
    return models.build_conv_model(preprocessor.output_shape, num_classes, config.model)


IN_MEMORY_BYTES = 128 * 2**20


def balanced_class_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """n / (classes x n_class) per class id, from the training labels `y` (scikit-learn's
    "balanced"): every class then adds as much to the loss as the others, and the weights
    average 1 over the inputs. A class with no training input gets weight 1."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(y) / (num_classes * np.maximum(counts, 1)), 1.0)
    return weights.astype(np.float32)


def to_tf_dataset(
    x: np.ndarray | ShardedArray,
    y: np.ndarray,
    batch_size: int,
    shuffle_seed: int | None,
    first_epoch: int = 0,
    class_weights: np.ndarray | None = None,
):
    """Batches of `(x, y)`: streamed from shards when they are large, else from arrays in memory.
    With `class_weights` (one per class id), batches of `(x, y, sample weights)`.

    With `shuffle_seed`, each pass is a new seeded order; a run resumed at `first_epoch` gets the
    orders an uninterrupted run would have had from there on.

    Shards up to `IN_MEMORY_BYTES` are loaded: the Python generator that streams them made the
    audio demo's steps 50% slower on 2 cores. Larger data streams, so memory stays bounded by
    max(IN_MEMORY_BYTES, batch and shard size), whatever the data set's size.
    """
    import tensorflow as tf

    from pipelines.streaming import in_memory_dataset, streaming_dataset

    if isinstance(x, ShardedArray) and len(x) * int(np.prod(x.row_shape)) * x.dtype.itemsize > IN_MEMORY_BYTES:
        dataset = streaming_dataset(x, y, batch_size, shuffle_seed, first_epoch)
    else:
        x = x.take(np.arange(len(x))) if isinstance(x, ShardedArray) else x
        if shuffle_seed is not None:
            dataset = in_memory_dataset(x, y, batch_size, shuffle_seed, first_epoch)
        else:
            dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    if class_weights is None:
        return dataset
    table = tf.constant(class_weights, dtype=tf.float32)
    return dataset.map(lambda inputs, labels: (inputs, labels, tf.gather(table, labels)))


def fit_replicas(split: tuple, global_batch: int, replicas: int, name: str) -> tuple[tuple, int]:
    """`(x, y)` and a batch size for `replicas` (`replica_batches`); inputs it leaves out are
    named in a warning."""
    from pipelines.distribution import replica_batches

    x, y = split
    size, used = replica_batches(len(x), global_batch, replicas, name)
    if name == "training" and len(x) >= global_batch and size != global_batch:
        logger.warning(
            "Training batches of %d inputs, not %d: with %d the last batch would leave a replica empty.",
            size, global_batch, global_batch,
        )
    if used == len(x):
        return split, size
    logger.warning(
        "The %s split's last %d input(s) are left out: %d inputs do not split over %d replicas "
        "without leaving one empty.", name, len(x) - used, len(x), replicas,
    )
    keep = np.arange(used)
    return (x.take(keep) if isinstance(x, ShardedArray) else x[:used], y[:used]), size


def fit_model(
    model, train: tuple, validation: tuple | None, settings: TrainSettings, state: TrainState, verbose,
    compute: Compute, class_weights: np.ndarray | None = None,
) -> tuple[dict, bool]:
    """Compile and fit with early stopping on the validation loss (restoring the best weights),
    continuing from `state` when an earlier attempt was interrupted. `class_weights` (one per
    class id) weigh each input's loss, in training and in the validation loss.

    Returns the per-epoch history (all epochs, resumed ones included) and whether Ctrl-C ended
    training; after Ctrl-C the model holds the best completed epoch's weights.
    """
    import keras

    from pipelines.distribution import fewest_completed_epochs, shard_by_data
    from pipelines.resume import ResumableEarlyStopping
    from pipelines.strategy_loop import fit_with_strategy_run

    with compute.strategy.scope():  # optimizer variables are mirrored like the model's
        model.compile(
            optimizer=keras.optimizers.Adam(settings.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=compute.jit,
        )
        # Now, in the scope: resuming reads optimizer state before training creates its slots.
        model.optimizer.build(model.trainable_variables)
    batch_size = compute.global_batch_size
    monitor = "val_loss" if validation is not None else "loss"
    completed = state.completed_epochs()
    if compute.role is not None:  # restarted workers resume from the same epoch
        agreed = fewest_completed_epochs(compute.strategy, completed)
        if agreed < completed:
            state.roll_back_to(agreed)
            completed = agreed
    earlier = state.history(completed, backed_up=True)
    if completed:
        logger.warning("Resuming after epoch %d of %d.", completed, settings.epochs)
        state.restore_random_state(model, completed)
    stopper = ResumableEarlyStopping(
        monitor=monitor,
        patience=settings.patience,
        restore_best_weights=True,
        resume_from=state.early_stopping_state(model, earlier, monitor) if completed else None,
    )
    if stopper.stopped_before_resume(completed, earlier):
        # Killed after early stopping ended it, before the run was written: fit would train
        # on (Keras checks patience only after an epoch), and the resumed run would not be
        # the uninterrupted one. Only writing the run is left.
        model.set_weights(stopper.resume_from["weights"])
        return state.history(settings.epochs), False
    interrupted = False
    try:
        train, train_batch = fit_replicas(train, batch_size, compute.replicas, "training")
        train_data = shard_by_data(to_tf_dataset(*train, train_batch, settings.seed, completed, class_weights))
        if validation is not None:
            validation, validation_batch = fit_replicas(validation, batch_size, compute.replicas, "validation")
        validation_data = None if validation is None else shard_by_data(
            to_tf_dataset(*validation, validation_batch, None, class_weights=class_weights)
        )
        # A loss that is not a number does not come back: stop there rather than train on
        # `patience` epochs of NaN weights (the best epoch's weights are restored all the same).
        callbacks = [stopper, *state.callbacks(stopper), keras.callbacks.TerminateOnNaN(), *extra_callbacks()]
        if verbose == 2:  # one line per epoch (not a terminal): say where a long epoch is
            callbacks.append(heartbeat())
        if compute.uses_fit:
            model.fit(
                train_data,
                validation_data=validation_data,
                epochs=settings.epochs,
                callbacks=callbacks,
                verbose=verbose,
                shuffle=False,  # the tf.data pipeline shuffles (seeded) each epoch
            )
        else:  # the same callbacks and logs, through strategy.run (keras-team/keras #20585)
            fit_with_strategy_run(
                model, compute.strategy, train_data, validation_data,
                epochs=settings.epochs, initial_epoch=completed, callbacks=callbacks, verbose=verbose,
            )
    except KeyboardInterrupt:
        interrupted = True
    history = state.history(settings.epochs)
    if interrupted:
        if not history:
            raise ConvpipeError("Interrupted before the first epoch finished; nothing was written.") from None
        if stopper.best_weights is not None:
            model.set_weights(stopper.best_weights)
        logger.warning("Interrupted: keeping the best of %d completed epoch(s).", len(history[monitor]))
    elif stopper.best_weights is not None and not stopper.stopped_epoch and completed >= settings.epochs:
        model.set_weights(stopper.best_weights)  # nothing left to run: Keras never called on_train_end
    return history, interrupted


def kept_epoch(history: dict, monitor: str, settings: TrainSettings) -> int:
    """The epoch (from 1) whose weights early stopping kept: the lowest `monitor`, ignoring
    epochs where it is not finite, as EarlyStopping does. An error when no epoch has a finite
    one (the training diverged from the start: no weights are worth keeping); a warning naming
    the epochs whose loss was not finite."""
    # `TrainState.history` leaves out a column that has no number at all
    values = np.asarray(history.get(monitor, [math.nan]), dtype=float)
    advice = f"lower --learning-rate (it was {settings.learning_rate:g})" + (
        ", or train with --precision float32" if settings.precision == "mixed" else ""
    )
    name = "validation loss" if monitor == "val_loss" else "loss"
    finite = np.isfinite(values)
    if not finite.any():
        raise ConvpipeError(
            f"Training diverged: the {name} was not a finite number in any epoch, so no weights are worth "
            f"keeping and nothing was written; {advice}."
        )
    best = int(np.argmin(np.where(finite, values, np.inf))) + 1
    # the training loss too: TerminateOnNaN stops at the first batch whose loss is NaN or infinite
    losses = np.asarray(history.get("loss", [math.nan] * len(values)), dtype=float)
    failed = [str(epoch) for epoch, (value, loss) in enumerate(zip(values, losses), start=1)
              if not (np.isfinite(value) and np.isfinite(loss))]
    if failed:
        logger.warning(
            "The loss was not a finite number in epoch(s) %s: training diverged there, and stopped. The run keeps "
            "epoch %d's weights; to train on, %s.", ", ".join(failed), best, advice,
        )
    return best


def remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (another run's files), or already gone
        pass


def stopped_with_ctrl_c(run_dir: Path) -> bool:
    """Whether the complete run in `run_dir` was ended by Ctrl-C (config.json says so)."""
    try:
        return json.loads((run_dir / "config.json").read_text(encoding="utf-8")).get("interrupted") is True
    except (OSError, ValueError, AttributeError):
        return False


def check_out_free(run_dir: Path, state: TrainState, is_chief: bool) -> None:
    """One line when `run_dir` holds a run, is being trained, or holds an interrupted run."""
    if is_chief and (run_dir / "config.json").exists():
        raise ConvpipeError(f"{run_dir} already holds a run; choose another --out or delete it.")
    if state.request.exists():
        state.check_not_held()
        raise ConvpipeError(
            f"{run_dir} holds an interrupted run: continue it with `train --resume {run_dir}`, or delete it."
        )


def claim_run_dir(
    run_dir: Path, state: TrainState, config: RunConfig, is_chief: bool, default_out: bool
) -> tuple[Path, TrainState]:
    """Start `state` in `run_dir`, or, when another train got there first, in the next free
    default run directory (`default_out`: trains started in the same second, e.g. a sweep run
    in parallel, all chose the same one); with --out, that is an error."""
    from pipelines.resume import TrainState

    while True:
        try:
            state.start(config)
            return run_dir, state
        except FileExistsError:  # another train with this run directory got here first
            if not default_out:
                check_out_free(run_dir, state, is_chief)
                raise ConvpipeError(f"{run_dir} is being written by another convpipe command; choose another --out.") from None
            run_dir = default_run_dir(config.modality)
            state = TrainState(run_dir)


def requested_run(
    config: RunConfig | None, out: Path | None, resume: Path | None, resume_settings: dict[str, Any] | None = None
) -> tuple[Path, RunConfig]:
    """The run directory to write and its configuration: with `resume`, that interrupted run's
    own, with `resume_settings` (TrainSettings fields that change no result: workers and cache)
    in place of its own; else `config` (its data made absolute) and `out` (default
    runs/<modality>-<time>)."""
    from pipelines.resume import TrainState

    if resume is not None:
        run_dir = Path(resume)
        check_run_folder(run_dir)  # as evaluate and predict say it: a mistyped path, not a finished run
        if (run_dir / "model.keras").exists():
            if stopped_with_ctrl_c(run_dir):
                raise ConvpipeError(
                    f"{run_dir} was stopped with Ctrl-C and finished with its best epoch, so it cannot be "
                    "resumed; train again with a new --out (with more --epochs if it stopped too early)."
                )
            raise ConvpipeError(f"{run_dir} is already complete; nothing to resume.")
        config = TrainState(run_dir).load_request()
        if resume_settings:
            assert resume_settings.keys() <= READING_SETTINGS, f"a resume keeps {resume_settings.keys() - READING_SETTINGS}"
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, **resume_settings).validate())
        return run_dir, config
    run_dir = Path(out) if out is not None else default_run_dir(config.modality)
    check_folder_path(run_dir, "--out")  # now, not after the inputs are read
    if config.data is not None:  # evaluate and --resume may run from another folder
        config = dataclasses.replace(config, data=str(Path(config.data).expanduser().resolve()))
    return run_dir, config


def write_run(
    run_dir: Path,
    model,
    preprocessor: Preprocessor,
    document: dict,
    source: DataSource,
    splits: dict[str, Dataset],
    skipped: Skipped,
    history: dict[str, list[float]],
) -> None:
    """Write the run directory's files (config.json is `document`), model.keras last: its
    presence marks a complete run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    preprocessor.save(run_dir / "preprocessor.json")
    atomic.write_json(run_dir / "labels.json", document["classes"])
    # The splits' fingerprints let evaluate refuse data edited since (its ids may be CSV row
    # numbers): the test split's for scoring, the others for --baseline's fit. Runs written
    # before them are evaluated without the check.
    atomic.write_json(
        run_dir / "split.json",
        {"data": source.location, **{k: v.ids for k, v in splits.items()},
         "fingerprints": {k: v.fingerprint() for k, v in splits.items()}},
    )
    atomic.write_json(
        run_dir / "skipped.json",
        {"summary": skipped.summary(), "skipped": skipped.entries, "notes": skipped.notes,
         "ignored": [{"input": i, "reason": r} for i, r in source.ignored]},
    )
    write_history(run_dir / "history.csv", history)
    atomic.write_json(run_dir / "config.json", document)
    with atomic.atomic_path(run_dir / "model.keras") as tmp:
        model.save(tmp)


def train(
    config: RunConfig | None,
    out: Path | None = None,
    verbose: int | str = "auto",
    resume: Path | None = None,
    progress: ProgressReporter | None = None,
    resume_settings: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a model as `config` says and write a complete run directory to `out`.

    With `resume`, continue the interrupted run in that directory with its own configuration,
    but for `resume_settings` (workers and cache fields, which change no result).
    `progress(stage, done, total)` is called while inputs are read and encoded.
    """
    import keras

    from pipelines.compute import prepare_compute
    from pipelines.distribution import worker_scratch_dir
    from pipelines.resume import TrainState

    started = time.perf_counter()
    run_dir, config = requested_run(config, out, resume, resume_settings)
    # First, before TensorFlow runs any op: devices are fixed when its runtime starts.
    compute = prepare_compute(config.train, out_given=resume is not None or out is not None)
    # A non-chief worker keeps its state in a scratch folder and writes nothing to the run.
    state = TrainState(run_dir if compute.is_chief else worker_scratch_dir(run_dir, compute.role))
    # A restarted multi-worker task runs the same command again and rejoins from its last backup.
    continuing = resume is not None or (compute.role is not None and state.request.exists())
    if not continuing:
        check_out_free(run_dir, state, compute.is_chief)
    else:
        state.hold()  # now, not after the inputs are read: another command may be training it
        if resume is None:
            logger.warning("Rejoining the interrupted multi-worker run from %s.", state.dir)
    settings = config.train

    moved = moved_run_data(config.data) if continuing else None
    if moved:
        raise ConvpipeError(f"Cannot resume {run_dir}: {moved}; a resume reads the data the run started with.")
    source = load_source(config.data, config.modality)
    splits = make_splits(source, config)
    classes = sorted(set(splits["train"].labels))
    if len(classes) < 2:
        raise ConvpipeError(
            f"Need at least 2 classes to train a classifier; {source.location} has "
            f"{len(classes)} ({', '.join(classes) or 'none'})."
        )
    # What the model learns from: a resume must find the same (test inputs may be added).
    fingerprints = {name: splits[name].fingerprint() for name in ("train", "validation")}
    if continuing:
        state.check_same_classes(classes)
        state.check_same_splits(fingerprints)
    warn_of_near_duplicate_labels(classes, manifest=config.data is not None and Path(config.data).is_file())
    # a run interrupted under older choice rules is fitted by them again, or it could not resume
    choices_version = state.choices_version() if continuing else CHOICES_VERSION
    cache = PreprocessCache.open(settings.cache_dir, enabled=settings.cache, verify=settings.cache_verify)
    try:
        preprocessor, choices = build_preprocessor(
            config.modality, config.preprocess, splits["train"], choices_version=choices_version,
            command="train --resume" if resume is not None else "train", cache=cache,
        )
        arrays, skipped = featurize_splits(
            preprocessor, splits, settings.strict, settings.max_skipped, cache, settings.workers, progress
        )
        # after reading: inputs that could not be read are copies of nothing the model is taught
        unused = frozenset(
            (name, id_) for name in ("train", "validation") for id_ in set(splits[name].ids) - set(arrays[name][2])
        )
        copies = find_copies(splits, unused=unused)
        if continuing:
            state.check_same_fit(fitted_digest(preprocessor))
        choices.update(fitted_choices(preprocessor))
        x_train, train_labels, _ = arrays["train"]
        unreadable = sorted(set(classes) - set(train_labels))
        if unreadable:
            raise ConvpipeError(f"Class(es) with no readable training input: {', '.join(unreadable)}.")
        index = {label: i for i, label in enumerate(classes)}
        y_train = np.array([index[label] for label in train_labels], dtype=np.int32)
        x_val, val_labels, _ = arrays["validation"]
        val_known = [i for i, label in enumerate(val_labels) if label in index]
        x_val = x_val[val_known]
        y_val = np.array([index[val_labels[i]] for i in val_known], dtype=np.int32)
        preprocess_seconds = time.perf_counter() - started

        seed_everything(settings.seed, settings.deterministic)
        try:
            with compute.strategy.scope():
                model = build_model(config, preprocessor, len(classes))
        except ValueError as error:
            raise ConvpipeError(str(error)) from None
        if compute.setup.kind == "cpu":  # an accelerator's own out-of-memory error is caught as it happens
            # no batch holds more than the training inputs (spread over the replicas)
            largest_batch = min(compute.global_batch_size, -(-len(x_train) // compute.replicas) * compute.replicas)
            check_training_memory(model, largest_batch, compute.policy, available_memory())
        has_val = len(x_val) > 0
        monitor = "val_loss" if has_val else "loss"
        # whether this command makes the run folder (a diverged run removes it): a default one
        # always is new, and so is the one that replaces it when another train took it first
        created = not continuing and (out is None or not run_dir.exists())
        if not continuing:  # only now: a run that fails on its data leaves nothing behind
            run_dir, state = claim_run_dir(run_dir, state, config, compute.is_chief, default_out=out is None)
            state.record_data(classes, fingerprints, fitted_digest(preprocessor))
        weights = balanced_class_weights(y_train, len(classes)) if settings.class_weight == "balanced" else None
        history, interrupted = fit_model(
            model, (x_train, y_train), (x_val, y_val) if has_val else None, settings, state, verbose, compute, weights
        )
        try:
            best_epoch = kept_epoch(history, monitor, settings)
        except ConvpipeError:
            state.finish()  # nothing worth resuming either
            if created:
                remove_if_empty(run_dir)
            raise
        val_accuracy = float(history["val_accuracy"][best_epoch - 1]) if has_val else None
        train_seconds = time.perf_counter() - started - preprocess_seconds
        outcome = dict(
            val_accuracy=val_accuracy,
            epochs=len(history[monitor]),
            best_epoch=best_epoch,
            interrupted=interrupted,
            skipped=skipped,
            ignored=len(source.ignored),
            train_seconds=train_seconds,
        )
        if not compute.is_chief:
            scratch = finish_worker(state, model)
            seconds = time.perf_counter() - started
            return TrainResult(run_dir=scratch, class_counts={}, seconds=seconds, chief=False, **outcome)

        resolved = RunConfig(
            modality=config.modality,
            data=config.data,
            preprocess=preprocessor.get_config(),
            model=config.model,
            train=settings,
        )
        # Inputs trained and validated on, skipped ones left out; the test split is read (and its
        # skips counted) by evaluate, whose report also counts what it scored.
        used = {"train": train_labels, "validation": [val_labels[i] for i in val_known]}
        class_counts = {name: dict(sorted(Counter(labels).items())) for name, labels in used.items()}
        class_counts["test"] = splits["test"].class_counts()
        document = {
            "run_format": RUN_FORMAT,
            "config": resolved.to_dict(),
            "data_source": source.location,
            "data_choices": choices,
            "classes": classes,
            "class_counts": class_counts,
            "copies_across_splits": copies,
            "class_weights": None if weights is None else {c: round(float(w), 6) for c, w in zip(classes, weights)},
            "input_shape": list(model.input_shape[1:]),
            "parameters": int(model.count_params()),
            "epochs_run": outcome["epochs"],
            "interrupted": interrupted,
            "best_epoch": best_epoch,
            "val_accuracy": val_accuracy,
            "timing": {"preprocess_seconds": round(preprocess_seconds, 3), "train_seconds": round(train_seconds, 3)},
            "cache": {"path": None if cache.temporary else str(cache.root), **dataclasses.asdict(cache.stats)},
            "versions": environment.versions(),
            "keras_backend": keras.backend.backend(),
            # what Keras made of "auto" (on under JAX where the layers allow it, off on TF's CPU)
            "compute": {**compute.describe(), "jit": getattr(model, "jit_compile", compute.jit)},
            "created": datetime.now().isoformat(timespec="seconds"),
        }
        write_run(run_dir, model, preprocessor, document, source, splits, skipped, history)
        state.finish()
        return TrainResult(run_dir=run_dir, class_counts=class_counts, seconds=time.perf_counter() - started, **outcome)
    finally:  # on errors too: the cache's lock, and --no-cache's temporary folder
        cache.cleanup()


def finish_worker(state: TrainState, model) -> Path:
    """A non-chief worker's end: its final weights in its scratch folder (returned), its backups
    removed."""
    scratch = state.dir.parent
    with atomic.atomic_path(scratch / "final.weights.h5") as tmp:
        model.save_weights(tmp)
    state.finish()
    return scratch
