"""Resumable training: the state `train --resume RUN` needs after a crash, SIGKILL or reboot.

While a run trains, RUN/train_state/ holds:

    request.json          the configuration the run was started with
    backup/               Keras BackupAndRestore: weights, optimizer and epoch after each epoch,
                          with the previous epoch's copy kept beside it (double checkpoint)
    history.csv           one row per completed epoch (Keras CSVLogger, appended)
    best.weights.h5       weights of the best epoch so far, with that epoch and its monitored
                          value as attributes of the same file, written atomically
    classes.json          the classes in the model's output order, which a resume checks
    data.json             the training and validation splits' fingerprints and the fitted
                          preprocessor's digest, which a resume checks too
    previous-best.weights.h5
                          the best before it, moved aside when a new best is written, for a
                          kill before that epoch's backup
    random.json           the dropout layers' random-number states after each of the last two
                          epochs (Keras saves them with no weights file)

When the run directory is complete, train_state/ is removed. While a process trains the run, it
holds a lock on request.json, so that a second `train` with the same --out or a `--resume` of
the same run fails at once instead of training into the same files.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
from pathlib import Path

import h5py
import keras
import numpy as np

from pipelines.config import RunConfig, recorded_config
from pipelines.defaults import CHOICES_VERSION
from pipelines.file_locks import lock
from pipelines.run_dir import STATE_DIR, history_columns
from preprocess import ConvpipeError, atomic

logger = logging.getLogger(__name__)


def _h5_damage(path: Path) -> str | None:
    """Why the HDF5 file at `path` cannot be read in full, or None when it can."""

    def read(name, item):
        if isinstance(item, h5py.Dataset):
            item[()]  # a file cut off can still open; its data then fails to read

    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(read)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    return None


def _damaged(path: Path, why: str) -> ConvpipeError:
    return ConvpipeError(
        f"Cannot resume: {path} is damaged ({why}) and the run cannot go on without it; "
        f"delete {path.parent.parent} to train from the start."
    )


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that can start from the best epoch of an interrupted run.

    Keras' own callback forgets the best value, patience count and best weights at the start of
    every `fit`, so a resumed run would stop later and restore the wrong weights.
    """

    def __init__(self, *, resume_from: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.resume_from = resume_from

    def stopped_before_resume(self, completed: int, history: dict) -> bool:
        """Whether the interrupted run's `completed` epochs (`history`) had already ended it:
        the last of them did not improve (Keras never stops on one that did, whatever the
        patience) and Keras' check (`wait >= patience`, past the first epoch) would have stopped
        there, or its training loss was not finite (TerminateOnNaN stopped it)."""
        if not self.resume_from:
            return False
        losses = history.get("loss") or [0.0]
        return (completed > 1 and self.resume_from["wait"] >= max(self.patience, 1)) or not math.isfinite(losses[-1])

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.resume_from:
            self.best = self.resume_from["best"]
            self.best_epoch = self.resume_from["best_epoch"]
            self.wait = self.resume_from["wait"]
            self.best_weights = self.resume_from["weights"]


BEST_EPOCH, BEST_VALUE = "convpipe_best_epoch", "convpipe_best_value"


class SaveBestWeights(keras.callbacks.Callback):
    """After each epoch that improved on the best, write its weights atomically.

    The epoch and its value go into the same file as attributes: kept in a second file, a kill
    between the two writes would pair one epoch's weights with another's number.
    """

    def __init__(self, state: "TrainState", stopper: keras.callbacks.EarlyStopping):
        super().__init__()
        self.state, self.stopper = state, stopper

    def on_epoch_end(self, epoch, logs=None):
        if self.stopper.best_epoch == epoch and self.stopper.best is not None:
            # The best so far moves aside rather than being overwritten: until this epoch's
            # backup is written, a resume starts from the epoch before it, whose best it is.
            if self.state.best_weights.exists():
                os.replace(self.state.best_weights, self.state.previous_best_weights)
            with atomic.atomic_path(self.state.best_weights) as tmp:
                self.model.save_weights(tmp)
                with h5py.File(tmp, "a") as handle:
                    handle.attrs[BEST_EPOCH] = epoch
                    handle.attrs[BEST_VALUE] = float(self.stopper.best)


def _random_states(model) -> list:
    """The state variables of the model's random-number generators (its dropout layers'), in
    model order."""
    return [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]


class SaveRandomState(keras.callbacks.Callback):
    """After each epoch, the random-number states, so that a resumed run draws the dropout masks
    an uninterrupted one would have drawn. The two latest epochs are kept: a kill may land
    between this write and the backup's."""

    def __init__(self, state: "TrainState"):
        super().__init__()
        self.state = state
        self.saved: dict[str, list] = {}

    def on_train_begin(self, logs=None):
        self.saved = self.state.random_states()  # a resumed run's earlier epochs

    def on_epoch_end(self, epoch, logs=None):
        self.saved[str(epoch + 1)] = [v.numpy().tolist() for v in _random_states(self.model)]
        self.saved = {k: self.saved[k] for k in sorted(self.saved, key=int)[-2:]}
        atomic.write_json(self.state.random_json, self.saved)


class TrainState:
    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / STATE_DIR
        self.request = self.dir / "request.json"
        self.backup = self.dir / "backup"
        self.history_csv = self.dir / "history.csv"
        self.best_weights = self.dir / "best.weights.h5"
        self.previous_best_weights = self.dir / "previous-best.weights.h5"  # the best before it
        self.classes_json = self.dir / "classes.json"
        self.data_json = self.dir / "data.json"  # what a resume checks its data against
        self.best_json = self.dir / "best.json"  # where earlier convpipe versions kept them
        self.random_json = self.dir / "random.json"
        self._lock = None  # request.json, open and locked while this process trains the run

    def start(self, config: RunConfig) -> None:
        """Claim the run directory and hold it (`hold`). Raises FileExistsError when request.json
        exists: two `train`s with the same --out read their data at once, and only the first to
        get here may train."""
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.request, config.to_dict(), replace=False)
        self.hold()

    def hold(self) -> None:
        """Lock request.json until `finish` or the end of the process (killed or not)."""
        handle = open(self.request, "r+")  # an exclusive lock needs write access
        try:
            # Closing any other handle of request.json in this process would drop the lock:
            # nothing reads the file after `load_request`.
            locked = lock(handle, exclusive=True)
        except OSError:
            handle.close()
            raise ConvpipeError(
                f"{self.dir.parent} is being trained by another running convpipe command; "
                "wait for it to finish, or choose another --out."
            ) from None
        if not locked:  # Windows: no guard
            handle.close()
            return
        self._lock = handle

    def check_not_held(self) -> None:
        """Raise `hold`'s error when another running process trains the run."""
        self.hold()
        self.release()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def load_request(self) -> RunConfig:
        if not self.request.is_file():
            raise ConvpipeError(
                f"Nothing to resume in {self.dir.parent}: no {STATE_DIR}/request.json "
                "(the run finished, or training never started there)."
            )
        try:
            return recorded_config(json.loads(self.request.read_text(encoding="utf-8")), self.request)
        except (OSError, ValueError) as error:
            raise ConvpipeError(f"Cannot resume: {self.request} is unreadable ({error}).") from None

    def record_data(self, classes: list[str], fingerprints: dict[str, str], fitted: str) -> None:
        """Record what the first epochs learned from: the classes in output order, the training
        and validation splits' fingerprints, the fitted preprocessor's digest, and by which rules
        preprocessing was chosen from the data (`choices_version`)."""
        atomic.write_json(self.classes_json, classes)
        atomic.write_json(
            self.data_json, {"fingerprints": fingerprints, "fitted": fitted, "choices_version": CHOICES_VERSION}
        )

    def choices_version(self) -> int:
        """The `CHOICES_VERSION` the run was started under, which it must be resumed under to
        fit its preprocessor as it first did. A run that trained epochs without recording it (a
        convpipe before data.json) is refused: how it read its inputs is unknown."""
        recorded = self._recorded_data()
        if not recorded:
            if self.backup.exists() and not self.data_json.exists():
                raise ConvpipeError(
                    f"Cannot resume {self.dir.parent}: it was interrupted by an older convpipe that did not "
                    f"record how it read its inputs ({self.data_json.name}), which this one may read otherwise. "
                    "Finish it with the version that started it, or train it anew."
                )
            return CHOICES_VERSION  # no epoch trained yet: read and fitted now, for all of them
        version = recorded.get("choices_version", 1)
        return version if isinstance(version, int) and not isinstance(version, bool) else 1

    def _recorded_data(self) -> dict:
        try:
            text = self.data_json.read_text(encoding="utf-8")
        except FileNotFoundError:  # not recorded yet: see `choices_version`
            return {}
        except OSError as error:
            raise _damaged(self.data_json, error.strerror or str(error)) from None
        try:
            recorded = json.loads(text)
        except ValueError:  # written whole or not at all: cut off or edited since
            raise _damaged(self.data_json, "not JSON") from None
        fingerprints = recorded.get("fingerprints", {}) if isinstance(recorded, dict) else None
        if not isinstance(fingerprints, dict) or not isinstance(recorded.get("fitted", ""), str):
            raise _damaged(self.data_json, "not the fingerprints and fit train records")
        return recorded

    def check_same_splits(self, fingerprints: dict[str, str]) -> None:
        """Refuse to resume on data that now splits otherwise: inputs the first epochs trained on
        could land in the test split, and the finished run would score them as unseen."""
        recorded = self._recorded_data().get("fingerprints") or {}
        changed = [name for name, value in recorded.items() if fingerprints.get(name) != value]
        if changed:
            raise ConvpipeError(
                f"The data changed since {self.dir.parent} was interrupted: its {' and '.join(changed)} "
                "split(s) now differ (inputs added, removed, renamed, resized or relabelled). Restore the "
                "data, or train anew."
            )

    def check_same_fit(self, fitted: str) -> None:
        """Refuse to resume when the preprocessor fitted again differs (a vocabulary, statistics
        or image size): the weights learned so far read its arrays differently."""
        recorded = self._recorded_data().get("fitted")
        if recorded is not None and recorded != fitted:
            raise ConvpipeError(
                f"The data changed since {self.dir.parent} was interrupted: the preprocessor fitted on it "
                "now differs (its vocabulary, statistics or input size, or convpipe's reading of the inputs). "
                "Restore the data, or train anew."
            )

    def check_same_classes(self, classes: list[str]) -> None:
        """Refuse to resume a run whose data now gives other classes, or the same in another
        order: the model's outputs would be read as the wrong classes (runs interrupted before
        the classes were recorded are resumed unchecked)."""
        try:
            recorded = json.loads(self.classes_json.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(recorded, list):  # "ab" read as the classes a, b
            raise _damaged(self.classes_json, "not a list of class names")
        if recorded != classes:
            raise ConvpipeError(
                f"The data's classes changed since {self.dir.parent} was interrupted: it was training "
                f"{', '.join(map(str, recorded))}, the data now gives {', '.join(classes)}. Restore the data, or train anew."
            )

    def completed_epochs(self) -> int:
        """Epochs in the backup, after repairing a half-written one; 0 when there is none."""
        metadata = self.backup / "training_metadata.json"
        previous = Path(f"{metadata}.bkp")
        weights = self.backup / "latest.weights.h5"
        previous_weights = Path(f"{weights}.bkp")
        if not metadata.exists():
            # Keras writes the weights, then the metadata: weights alone are the first epoch's
            # backup cut off, which Keras would try to load, failing on every resume.
            if weights.exists():
                shutil.rmtree(self.backup, ignore_errors=True)
                logger.warning("The first backup was half-written (%s); training restarts from the first epoch.", weights)
            return 0
        # Both halves are checked here: Keras would fall back to the previous copy on its own
        # when the weights fail to load, silently, after the history and the random states were
        # already cut to the epoch in the metadata, and the run would train one epoch too many.
        try:
            epoch = int(json.loads(metadata.read_text())["epoch"])
            damage = None if weights.exists() else "missing"
            damage = damage or _h5_damage(weights)
            damaged = weights
        except (OSError, ValueError, KeyError, TypeError) as error:
            epoch, damage, damaged = None, str(error) or type(error).__name__, metadata
        if damage is None:
            return epoch
        # The backup was cut off while being written: go back to the previous epoch's copy.
        try:
            epoch = int(json.loads(previous.read_text())["epoch"])
            if _h5_damage(previous_weights) is not None:
                raise OSError(f"{previous_weights} is damaged too")
            shutil.copyfile(previous_weights, weights)
            shutil.copyfile(previous, metadata)
            logger.warning(
                "The last backup was half-written (%s: %s); resuming from epoch %d instead.", damaged, damage, epoch
            )
            return epoch
        except (OSError, ValueError, KeyError, TypeError):
            shutil.rmtree(self.backup, ignore_errors=True)
            logger.warning("The backup in %s was unreadable; training restarts from the first epoch.", self.backup)
            return 0

    def roll_back_to(self, epoch: int) -> None:
        """Make the previous epoch's backup copy the latest, when it holds `epoch`.

        Workers of a multi-worker run back up one after another at each epoch's end; one may
        have been killed between its own backup and a peer's, one epoch behind.
        """
        metadata = self.backup / "training_metadata.json"
        previous = Path(f"{metadata}.bkp")
        try:
            found = int(json.loads(previous.read_text())["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            found = None
        if found != epoch:
            raise ConvpipeError(
                f"Cannot rejoin: the other workers resume after epoch {epoch}, and {self.backup} holds no "
                f"backup of that epoch; delete every worker's {STATE_DIR} folder to train from the start."
            )
        weights = self.backup / "latest.weights.h5"
        shutil.copyfile(Path(f"{weights}.bkp"), weights)
        shutil.copyfile(previous, metadata)
        logger.warning("Rolled back to epoch %d, the last epoch every worker backed up.", epoch)

    def history(self, epochs: int, *, backed_up: bool = False) -> dict[str, list[float]]:
        """Per-epoch logs of the first `epochs` epochs; rows beyond them (written after the last
        backup, before the kill) are dropped from the file too. With `backed_up`, the backup holds
        `epochs` epochs, so each of them must have its row."""
        if not self.history_csv.exists():
            if backed_up and epochs:
                raise _damaged(self.history_csv, "missing")
            return {}
        try:
            with open(self.history_csv, newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if (row.get("epoch") or "").isdigit()]
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise _damaged(self.history_csv, str(error)) from None
        rows = [row for row in rows if int(row["epoch"]) < epochs]
        # The rows of backed-up epochs were written before their backup: one cut off or missing
        # means the file itself was damaged, and those epochs' logs cannot be rebuilt.
        numbers = [int(row["epoch"]) for row in rows]
        if numbers != list(range(epochs if backed_up else len(rows))) or any(
            None in row or None in row.values() for row in rows
        ):
            raise _damaged(self.history_csv, f"it lacks complete rows for the {epochs} backed-up epoch(s)")
        keys = [key for key in (rows[0] if rows else {}) if key != "epoch"]
        lines = [",".join(["epoch", *keys])] + [",".join(row[k] for k in ["epoch", *keys]) for row in rows]
        atomic.write_text(self.history_csv, "\n".join(lines) + "\n" if rows else "")
        return history_columns(rows)

    def early_stopping_state(self, model, history: dict, monitor: str) -> dict | None:
        """Best value, epoch, patience count and best weights of the interrupted run: from the
        best weights saved, or, when they are of an epoch after the last backup (which runs
        again), from the best saved before them."""
        if not history.get(monitor):
            return None
        completed = len(history[monitor])
        for path in (self.best_weights, self.previous_best_weights):
            if not path.exists():
                continue
            # Written atomically, so only a damaged disk cuts it off; no other copy holds that epoch.
            damage = _h5_damage(path)
            if damage is not None:
                raise _damaged(path, damage)
            best_epoch, value = self._best_epoch_and_value(path)
            if best_epoch >= completed:  # saved after the last backup: that epoch runs again
                continue
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            current = model.get_weights()
            model.load_weights(path)
            weights = model.get_weights()
            model.set_weights(current)
            return {"best": value, "best_epoch": best_epoch, "wait": completed - 1 - best_epoch, "weights": weights}
        return None

    def _best_epoch_and_value(self, weights: Path) -> tuple[int, float]:
        with h5py.File(weights, "r") as handle:
            attributes = dict(handle.attrs)
        legacy = BEST_EPOCH not in attributes and weights == self.best_weights  # epoch and value in best.json
        source, path = (None, self.best_json) if legacy else (attributes, weights)
        try:
            if source is None:
                saved = json.loads(self.best_json.read_text())
                source = {BEST_EPOCH: saved["epoch"], BEST_VALUE: saved["value"]}
            return int(source[BEST_EPOCH]), float(source[BEST_VALUE])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise _damaged(path, str(error) or type(error).__name__) from None

    def random_states(self) -> dict[str, list]:
        try:
            saved = json.loads(self.random_json.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(saved, dict) or not all(key.isdigit() and isinstance(v, list) for key, v in saved.items()):
            raise _damaged(self.random_json, "not the random states per epoch train records")
        return saved

    def restore_random_state(self, model, epochs: int) -> None:
        """Put the random-number states back as they were after `epochs` completed epochs."""
        variables = _random_states(model)
        if not variables:  # no dropout: nothing random to put back
            return
        saved = self.random_states().get(str(epochs))
        if saved is None or [np.shape(value) for value in saved] != [tuple(v.shape) for v in variables]:
            logger.warning("No random-number state saved after epoch %d: dropout draws new masks from there.", epochs)
            return
        for variable, value in zip(variables, saved):
            variable.assign(value)

    def callbacks(self, stopper) -> list:
        # Order matters for a kill between two writes: the history row, the best weights and the
        # random states come before the backup, so the backup never claims an epoch they lack.
        return [
            keras.callbacks.CSVLogger(str(self.history_csv), append=True),
            SaveBestWeights(self, stopper),
            SaveRandomState(self),
            keras.callbacks.BackupAndRestore(str(self.backup), double_checkpoint=True, delete_checkpoint=False),
        ]

    def finish(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.release()
