"""`train --resume` after a SIGKILL mid-epoch, including a half-written backup."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, describe_result, invoke, make_cli_runner, selected_tests_use, write_image_folder
from preprocess import ConvpipeError

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 5
# --augment: its random shifts, zooms and turns must repeat after a resume too, like dropout's masks
OPTIONS = ["--epochs", str(EPOCHS), "--patience", "100", "--filters", "4", "--dense", "8",
           "--image-size", "8,8", "--batch-size", "8", "--seed", "0", "--augment", "0.2"]

# Trains in a child process that SIGKILLs itself in the middle of the third epoch, after the
# second epoch's backup was written: nothing gets a chance to clean up.
KILLER = """
import os, signal, sys
import keras
import cli
import pipelines.training

class KillMidEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 2 and batch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

class KillAtTheEnd(keras.callbacks.Callback):
    def on_train_end(self, logs=None):  # training over, nothing of the run written yet
        os.kill(os.getpid(), signal.SIGKILL)

class PoisonWeights(keras.callbacks.Callback):  # a run that diverges in this epoch
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == int(os.environ.get("POISON_AT", "-1")):
            for variable in self.model.trainable_variables:
                variable.assign(variable * float("nan"))

pipelines.training.extra_callbacks = lambda: [
    PoisonWeights(), KillAtTheEnd() if os.environ.get("KILL_AT_END") else KillMidEpoch()
]
sys.argv = ["cli.py", *sys.argv[1:]]
cli.app()
"""


def killer_command(data: Path, out: Path, options: list[str] = OPTIONS, at_end: bool = False, poison_at: int = -1):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **({"KILL_AT_END": "1"} if at_end else {}), "POISON_AT": str(poison_at)}
    args = [sys.executable, "-c", KILLER, "train", "--modality", "image", "--data", str(data), "--out", str(out), *options]
    return args, env


def run_killed(args: list[str], env: dict[str, str]) -> None:
    try:
        completed = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the training process did not kill itself")
    assert completed.returncode == -9, completed.stderr[-2000:]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("resume") / "images")


#: The module's trainings killed in a child process (KILLER), by the fixture that hands each
#: out, with killer_command's arguments: the shared one first.
KILLS = {
    "killed_run": {},
    "killed_after_early_stopping": {"options": [*OPTIONS, "--epochs", "30", "--patience", "0", "--learning-rate", "0.05"],
                                    "at_end": True},
    "killed_after_diverging": {"at_end": True, "poison_at": 2},
    "killed_without_patience": {"options": [*OPTIONS, "--patience", "0"]},
}


class Kills:
    """Each killed training is the same fresh child process as ever, started as the module starts
    and run by one background thread, one after another: the child mostly starts TensorFlow,
    and beside the in-process tests it uses the core they leave idle. A test waits for its own."""

    def __init__(self, data: Path, tmp_path_factory):
        self.data, self.tmp_path_factory = data, tmp_path_factory
        self.executor = ThreadPoolExecutor(max_workers=1)
        self.started: dict[str, tuple[Path, Future]] = {}

    def start(self, name: str) -> None:
        if name not in self.started:
            out = self.tmp_path_factory.mktemp(name) / "run"
            command = killer_command(self.data, out, **KILLS[name])  # the environment as it is now
            self.started[name] = out, self.executor.submit(run_killed, *command)

    def result(self, name: str) -> Path:
        self.start(name)
        out, future = self.started[name]
        future.result()  # the child's failure, raised here
        return out


@pytest.fixture(scope="module")
def kills(data, tmp_path_factory):
    kills = Kills(data, tmp_path_factory)
    yield kills
    kills.executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module", autouse=True)
def start_the_kills_the_selected_tests_need(request):
    needed = [name for name in KILLS if selected_tests_use(request, name)]
    if needed:
        kills = request.getfixturevalue("kills")
        for name in needed:
            kills.start(name)


def killed_training(name: str):
    """The module fixture `name`: the run folder of the killed training KILLS names so."""

    @pytest.fixture(scope="module", name=name)
    def fixture(kills) -> Path:
        return kills.result(name)

    return fixture


killed_run, killed_after_early_stopping, killed_after_diverging, killed_without_patience = map(killed_training, KILLS)


@pytest.fixture
def killed(killed_run, tmp_path) -> Path:
    """A fresh copy of the killed run for each test."""
    copy = tmp_path / "run"
    shutil.copytree(killed_run, copy)
    return copy


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = invoke(make_cli_runner(), ["train", "--modality", "image", "--data", data, "--out", out, *OPTIONS])
    assert result.exit_code == 0, describe_result(result)
    return out


def epochs_in(run_dir: Path) -> int:
    return len((run_dir / "history.csv").read_text().strip().splitlines()) - 1


def test_resume_after_sigkill_repeats_the_uninterrupted_run(cli_runner, killed, uninterrupted):
    out = killed
    assert not (out / "model.keras").exists() and not (out / "config.json").exists()
    metadata = json.loads((out / "train_state" / "backup" / "training_metadata.json").read_text())
    assert metadata["epoch"] == 2  # two completed epochs were backed up

    result = invoke(cli_runner, ["train", "--resume", out])
    assert result.exit_code == 0, describe_result(result)
    assert epochs_in(out) == EPOCHS
    document = json.loads((out / "config.json").read_text())
    assert document["epochs_run"] == EPOCHS
    assert not (out / "train_state").exists()

    assert epochs_in(uninterrupted) == epochs_in(out)
    # The same batches, augmentations and dropout masks after the resume: the same losses, epoch
    # by epoch (the default image model has dropout, and --seed turns on op determinism).
    assert (out / "history.csv").read_text() == (uninterrupted / "history.csv").read_text()


def test_a_half_written_backup_is_reported_and_the_previous_epoch_used(cli_runner, killed, caplog):
    out = killed
    (out / "train_state" / "backup" / "training_metadata.json").write_text('{"epo')  # cut off mid-write
    result = invoke(cli_runner, ["train", "--resume", out])
    assert result.exit_code == 0, describe_result(result)
    assert "half-written" in caplog.text and "resuming from epoch 1" in caplog.text
    assert epochs_in(out) == EPOCHS
    assert "No random-number state" not in caplog.text  # the state after epoch 1 was kept too


def test_half_written_backup_weights_are_reported_and_the_previous_epoch_used(cli_runner, killed, uninterrupted, caplog):
    # Killed while Keras wrote latest.weights.h5: its metadata still names epoch 2. Keras alone
    # would fall back to epoch 1's copy silently, after the history was cut to 2 epochs: the
    # resumed run trained one epoch too many.
    weights = killed / "train_state" / "backup" / "latest.weights.h5"
    os.truncate(weights, weights.stat().st_size // 2)
    result = invoke(cli_runner, ["train", "--resume", killed])
    assert result.exit_code == 0, describe_result(result)
    assert "half-written" in caplog.text and "latest.weights.h5" in caplog.text
    assert "resuming from epoch 1" in caplog.text and "Resuming after epoch 1 of 5" in caplog.text
    assert epochs_in(killed) == EPOCHS
    assert json.loads((killed / "config.json").read_text())["epochs_run"] == EPOCHS
    # The previous copy holds every state of epoch 1, so the run still repeats the uninterrupted one.
    assert (killed / "history.csv").read_text() == (uninterrupted / "history.csv").read_text()


def best_attributes(path: Path, **changes) -> dict:
    import h5py

    with h5py.File(path, "a") as handle:
        for key, value in changes.items():
            if value is None:
                del handle.attrs[key]
            else:
                handle.attrs[key] = value
        return dict(handle.attrs)


def test_a_first_backup_cut_off_before_its_metadata_restarts_from_the_first_epoch(cli_runner, killed, uninterrupted, caplog):
    backup = killed / "train_state" / "backup"
    for path in backup.iterdir():  # killed while Keras wrote the first epoch's weights
        path.unlink()
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(4000))
    result = invoke(cli_runner, ["train", "--resume", killed])
    assert result.exit_code == 0, describe_result(result)
    assert "first backup was half-written" in caplog.text
    assert (killed / "history.csv").read_text() == (uninterrupted / "history.csv").read_text()


def test_best_weights_carry_their_epoch_and_a_later_unbacked_one_runs_again(cli_runner, killed, uninterrupted):
    best = killed / "train_state" / "best.weights.h5"
    attributes = best_attributes(best)
    assert int(attributes["convpipe_best_epoch"]) in (0, 1) and float(attributes["convpipe_best_value"]) > 0
    # Killed right after the third epoch's best weights were written, before its backup: those
    # weights (here: made up) must not become the best of the two backed-up epochs.
    import keras
    import numpy as np

    from pipelines.resume import TrainState

    model = keras.saving.load_model(uninterrupted / "model.keras", safe_mode=True)
    expected = model.get_weights()
    state, history = TrainState(killed), {"val_loss": [1.0, 1.0]}
    if int(attributes["convpipe_best_epoch"]) == 1:  # epoch 2 improved: epoch 1's best was moved aside
        assert int(best_attributes(state.previous_best_weights)["convpipe_best_epoch"]) == 0
    before = state.early_stopping_state(model, history, "val_loss")
    shutil.copy(best, state.previous_best_weights)  # moved aside, as SaveBestWeights does
    model.set_weights([w * 0.5 for w in expected])
    model.save_weights(best)
    best_attributes(best, convpipe_best_epoch=2, convpipe_best_value=0.0)
    # the best before it, not none: without op determinism epoch 3 may not be as good again
    after = state.early_stopping_state(model, history, "val_loss")
    assert (after["best_epoch"], after["best"], after["wait"]) == (before["best_epoch"], before["best"], before["wait"])
    assert all(np.array_equal(a, b) for a, b in zip(after["weights"], before["weights"]))
    result = invoke(cli_runner, ["train", "--resume", killed])
    assert result.exit_code == 0, describe_result(result)
    assert (killed / "history.csv").read_text() == (uninterrupted / "history.csv").read_text()
    resumed = keras.saving.load_model(killed / "model.keras", safe_mode=True).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(resumed, expected))


def test_a_run_saved_by_an_earlier_version_resumes_from_best_json(cli_runner, killed, uninterrupted):
    best = killed / "train_state" / "best.weights.h5"
    attributes = best_attributes(best, convpipe_best_epoch=None, convpipe_best_value=None)
    assert "convpipe_best_epoch" not in attributes
    (killed / "train_state" / "best.json").write_text(json.dumps({"epoch": 1, "value": 1e9}))
    result = invoke(cli_runner, ["train", "--resume", killed])
    assert result.exit_code == 0, describe_result(result)
    assert epochs_in(killed) == EPOCHS


@pytest.mark.parametrize("damaged, size", [("best.weights.h5", 1000), ("history.csv", 60)])
def test_damage_no_copy_covers_is_one_line_naming_the_file(cli_runner, killed, damaged, size):
    # Written before the backup (the best weights atomically), so a kill cannot cut these off for
    # a backed-up epoch: only a damaged disk does, and no other copy holds those epochs.
    os.truncate(killed / "train_state" / damaged, size)
    line = assert_one_line_error(invoke(cli_runner, ["train", "--resume", killed]), damaged)
    assert f"delete {killed} to train from the start" in line
    assert (killed / "train_state").is_dir()


def test_resume_refuses_every_option_that_changes_results(cli_runner, killed):
    args = ["--epochs", "20", "--modality", "image", "--out", "elsewhere", "--seed", "5", "--batch-size", "8",
            "--device", "cpu", "--no-cache", "--workers", "1"]
    line = assert_one_line_error(invoke(cli_runner, ["train", "--resume", killed, *args]))
    assert line.endswith(
        "with the settings it started with; drop --modality, --out, --epochs, --batch-size, --seed, --device."
    )
    assert not (killed / "config.json").exists()  # nothing trained
    result = invoke(cli_runner, ["train", "--resume", killed, "-v"])  # -v changes only the log
    assert result.exit_code == 0, describe_result(result)


def test_resume_takes_other_workers_and_cache_settings_and_still_repeats_the_uninterrupted_run(
    cli_runner, killed, uninterrupted, tmp_path
):
    # the cache moved, or the machine has fewer cores: how inputs are read changes no result
    result = invoke(cli_runner, ["train", "--resume", killed, "--workers", "2", "--cache-dir", tmp_path / "moved", "--cache-verify"])
    assert result.exit_code == 0, describe_result(result)
    assert (killed / "history.csv").read_text() == (uninterrupted / "history.csv").read_text()
    settings = json.loads((killed / "config.json").read_text())["config"]["train"]
    assert (settings["workers"], settings["cache_dir"], settings["cache_verify"]) == (2, str((tmp_path / "moved").resolve()), True)
    assert any((tmp_path / "moved").iterdir())  # the new cache folder was used


def test_a_resume_without_the_cache_repeats_the_uninterrupted_run(cli_runner, killed, uninterrupted):
    result = invoke(cli_runner, ["train", "--resume", killed, "--no-cache"])
    assert result.exit_code == 0, describe_result(result)
    assert (killed / "history.csv").read_text() == (uninterrupted / "history.csv").read_text()
    assert json.loads((killed / "config.json").read_text())["config"]["train"]["cache"] is False


def test_advice_to_change_a_setting_while_resuming_says_how_resume_allows_it(cli_runner, killed, monkeypatch):
    """The memory refusal's "Lower --batch-size" cannot be followed with --resume (it refuses
    every other option), nor by training into the interrupted run's folder: the error says so."""
    import pipelines.training

    monkeypatch.setattr(pipelines.training, "available_memory", lambda: 1000)  # 1 kB free
    line = assert_one_line_error(invoke(cli_runner, ["train", "--resume", killed]))
    assert "Lower --batch-size" in line
    assert line.endswith(
        f"(--resume keeps the settings {killed} started with, but for --workers and the cache's: to change another, "
        f"train it anew with another --out, or delete {killed} first.)"
    )
    followed = assert_one_line_error(invoke(cli_runner, ["train", "--resume", killed, "--batch-size", "1"]))
    assert followed.endswith("drop --batch-size.")  # why the advice above had to say more


def test_the_options_resume_takes_are_the_reading_settings_and_verbose_however_spelt():
    import typer.main

    import cli
    from pipelines.config import READING_SETTINGS

    options = {param.name: param for param in typer.main.get_command(cli.app).commands["train"].params}
    typed = {flag for name in cli.RESUME_PARAMETERS for flag in (*options[name].opts, *options[name].secondary_opts)}
    assert cli.RESUME_TAKES == typed - {"-v"}
    settings = cli.cache_settings(1, None, False, False)
    assert settings.keys() == READING_SETTINGS  # what the CLI hands a resume is what it may change


def test_resume_errors_without_a_flag_to_change_are_left_as_they_are(tmp_path):
    from cli import resumed_error
    from preprocess import ConvpipeError

    error = ConvpipeError("The data changed since run was interrupted. Restore the data, or train anew.")
    assert resumed_error(error, tmp_path) is error
    assert resumed_error(KeyError("x"), tmp_path).__class__ is KeyError
    # dashes inside a path are no flag to change
    odd = tmp_path / "lr--fast"
    error = ConvpipeError(f"The data changed since {odd} was interrupted: Restore the data, or train anew.")
    assert resumed_error(error, odd) is error
    # advice that already says to train anew with another --out needs no note, and must never
    # gain "delete RUN first": the run is complete (Ctrl-C) or another command is training it
    for message in (
        f"{odd} was stopped with Ctrl-C and finished with its best epoch, so it cannot be resumed; train again "
        "with a new --out (with more --epochs if it stopped too early).",
        f"{odd} is being trained by another running convpipe command; wait for it to finish, or choose another --out.",
    ):
        error = ConvpipeError(message)
        assert resumed_error(error, odd) is error


def test_a_resume_of_a_run_another_process_trains_never_advises_deleting_it(cli_runner, killed):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; h = open(sys.argv[1], 'r+'); fcntl.lockf(h, fcntl.LOCK_EX); "
         "print('held', flush=True); time.sleep(60)", str(killed / "train_state" / "request.json")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        line = assert_one_line_error(invoke(cli_runner, ["train", "--resume", killed]), "is being trained by another")
    finally:
        holder.kill()
        holder.wait()
    assert "delete" not in line


def test_a_bug_while_resuming_keeps_its_cause(cli_runner, killed, monkeypatch):
    import pipelines.training

    def bug(*args, **kwargs):
        try:
            raise KeyError("the cause")
        except KeyError as error:
            raise RuntimeError("a bug") from error

    monkeypatch.setattr(pipelines.training, "load_source", bug)
    result = invoke(cli_runner, ["train", "--resume", killed])
    assert isinstance(result.exception, RuntimeError)  # a traceback, not one line
    assert isinstance(result.exception.__cause__, KeyError)  # "The above exception was the direct cause"


def test_choice_warnings_while_resuming_name_no_flag_resume_refuses(cli_runner, killed, monkeypatch):
    """"pass --duration 3" would be refused by --resume ("drop --duration"): the resumed run's
    warnings say to train anew instead."""
    import pipelines.training
    from pipelines.defaults import set_by

    commands = []

    def recorded(*args, command="train", **kwargs):
        commands.append(command)
        raise ConvpipeError("stop here")

    monkeypatch.setattr(pipelines.training, "build_preprocessor", recorded)
    assert_one_line_error(invoke(cli_runner, ["train", "--resume", killed]), "stop here")
    assert commands == ["train --resume"]
    assert set_by("--duration 3", "train --resume") == "a resumed run keeps its settings: train anew with --duration 3"


def test_a_run_stopped_with_ctrl_c_is_finished_and_says_so(cli_runner, data, tmp_path, monkeypatch):
    import keras

    import pipelines.training

    class InterruptAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    monkeypatch.setattr(pipelines.training, "extra_callbacks", lambda: [InterruptAfterFirstEpoch()])
    out = tmp_path / "run"
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", data, "--out", out, *OPTIONS])
    assert result.exit_code == 130, describe_result(result)
    assert json.loads((out / "config.json").read_text())["interrupted"] is True
    assert_one_line_error(
        invoke(cli_runner, ["train", "--resume", out]), "stopped with Ctrl-C", "finished with its best epoch", "--epochs"
    )


@pytest.mark.parametrize("saved", [None, '{"2": [[1, 2, 3]]}', '{"2": '])
def test_a_run_without_saved_random_states_resumes_with_a_warning(cli_runner, killed, caplog, saved):
    # e.g. a run interrupted under an older convpipe, or a damaged file: training goes on, with
    # fresh dropout masks
    random_json = killed / "train_state" / "random.json"
    if saved is None:
        random_json.unlink()
    else:
        random_json.write_text(saved)
    result = invoke(cli_runner, ["train", "--resume", killed])
    assert result.exit_code == 0, describe_result(result)
    assert "No random-number state saved after epoch 2" in caplog.text
    assert epochs_in(killed) == EPOCHS


def test_a_fresh_train_refuses_an_interrupted_run_and_resume_needs_one(cli_runner, data, killed, tmp_path):
    out = killed
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", data, "--out", out, *OPTIONS])
    assert result.exit_code == 1 and "train --resume" in result.output
    (tmp_path / "elsewhere").mkdir()
    result = invoke(cli_runner, ["train", "--resume", tmp_path / "elsewhere"])
    assert result.exit_code == 1 and "Nothing to resume" in result.output


def test_resume_of_a_path_that_is_no_folder_says_so_as_evaluate_does(cli_runner, tmp_path):
    # Not "Nothing to resume ... (the run finished, or training never started there)": a mistyped
    # run directory is named as missing, as evaluate, predict and inspect name it.
    result = invoke(cli_runner, ["train", "--resume", tmp_path / "typo"])
    assert_one_line_error(result, f"Run directory not found: {tmp_path / 'typo'}")
    assert result.stdout == ""  # not "Resuming ..." above the error
    (tmp_path / "config.json").write_text("{}")
    assert_one_line_error(invoke(cli_runner, ["train", "--resume", tmp_path / "config.json"]), "is a file, not a run directory")


# Holds request.json locked as a running `train` does, until its stdin closes.
HOLDER = """
import fcntl, sys
handle = open(sys.argv[1], "r+")
fcntl.lockf(handle, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def test_a_run_another_command_is_training_is_refused_by_train_and_resume(cli_runner, data, killed):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(killed / "train_state" / "request.json")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        result = invoke(cli_runner, ["train", "--resume", killed])
        assert_one_line_error(result, "is being trained by another running convpipe command")
        result = invoke(cli_runner, ["train", "--modality", "image", "--data", data, "--out", killed, *OPTIONS])
        assert_one_line_error(result, "is being trained by another running convpipe command")
    finally:
        holder.communicate("")
    assert (killed / "train_state" / "backup").is_dir()  # left as it was, for the resume


def test_of_two_trains_with_one_out_only_the_first_to_start_trains(tmp_path):
    from pipelines.config import RunConfig
    from pipelines.modality import Modality
    from pipelines.resume import TrainState

    config = RunConfig(modality=Modality("image"))
    first, second = TrainState(tmp_path / "run"), TrainState(tmp_path / "run")
    first.start(config)  # both read their data, then both start training
    with pytest.raises(FileExistsError):
        second.start(config)
    first.finish()
    assert not (tmp_path / "run" / "train_state").exists()


def test_trains_started_in_the_same_second_without_out_claim_different_run_directories(tmp_path, monkeypatch):
    # A sweep started in parallel (`for s in 1 2 3; do convpipe train --seed $s & done`) chose one
    # default run directory for all, and all but the first stopped with "being trained by another".
    from pipelines import training
    from pipelines.config import resolve_config
    from pipelines.resume import TrainState
    from preprocess import ConvpipeError

    monkeypatch.chdir(tmp_path)
    config = resolve_config("image")
    chosen = training.default_run_dir(config.modality)
    first = TrainState(chosen)
    first.start(config)  # the first train got there
    try:
        run_dir, state = training.claim_run_dir(chosen, TrainState(chosen), config, True, default_out=True)
        assert run_dir != chosen and run_dir.parent == chosen.parent and state.request.is_file()
        state.finish()
        # --out given: an error (here "holds an interrupted run": this process holds the lock)
        with pytest.raises(ConvpipeError, match=str(chosen)):
            training.claim_run_dir(chosen, TrainState(chosen), config, True, default_out=False)
    finally:
        first.finish()


def test_resume_refuses_data_whose_classes_changed(cli_runner, killed, data, tmp_path):
    assert json.loads((killed / "train_state" / "classes.json").read_text()) == ["alpha", "beta", "gamma"]
    moved = tmp_path / "data"
    shutil.copytree(data, moved)
    (moved / "gamma").rename(moved / "delta")  # now sorts before the others: outputs would swap
    point_at(killed, moved)
    line = assert_one_line_error(invoke(cli_runner, ["train", "--resume", killed]), "The data's classes changed since")
    assert "it was training alpha, beta, gamma, the data now gives alpha, beta, delta" in line


def point_at(run: Path, data: Path) -> None:
    """Make the interrupted run's request read `data`, as if its data had been edited in place."""
    request = run / "train_state" / "request.json"
    config = json.loads(request.read_text())
    config["data"] = str(data)
    request.write_text(json.dumps(config))


def test_resume_of_a_run_whose_data_moved_says_how_to_get_it_back(cli_runner, killed, tmp_path):
    point_at(killed, tmp_path / "gone")
    line = assert_one_line_error(invoke(cli_runner, ["train", "--resume", killed]), f"Cannot resume {killed}")
    assert f"its data is no longer at {tmp_path / 'gone'}" in line and "make that path a link to its new place" in line


def test_resume_refuses_data_that_now_splits_otherwise(cli_runner, killed, data, tmp_path):
    # "Fix the data, then resume": one image more reshuffles the seeded split, and inputs the
    # first epochs trained on would be scored as unseen test inputs.
    moved = tmp_path / "data"
    shutil.copytree(data, moved)
    shutil.copy(next((moved / "alpha").iterdir()), moved / "alpha" / "added.png")
    point_at(killed, moved)
    line = assert_one_line_error(invoke(cli_runner, ["train", "--resume", killed]), "The data changed since")
    assert "split(s) now differ" in line and "train anew" in line
    assert not (killed / "model.keras").exists()


def test_resume_refuses_a_preprocessor_fitted_otherwise(cli_runner, killed):
    # The same split, fitted otherwise (e.g. text files edited without changing their size): the
    # learned weights would read another vocabulary.
    recorded_path = killed / "train_state" / "data.json"
    recorded = json.loads(recorded_path.read_text())
    assert set(recorded["fingerprints"]) == {"train", "validation"}
    recorded["fitted"] = "0" * len(recorded["fitted"])
    recorded_path.write_text(json.dumps(recorded))
    line = assert_one_line_error(invoke(cli_runner, ["train", "--resume", killed]), "The data changed since")
    assert "the preprocessor fitted on it now differs" in line


def test_resume_refuses_when_convpipe_now_reads_the_inputs_another_way(cli_runner, killed, monkeypatch):
    # A raised reading version gives other arrays for the same files: the weights learned so far
    # must not go on training on them as if nothing changed.
    from preprocess import ImagePreprocessor

    monkeypatch.setattr(ImagePreprocessor, "reading_version", ImagePreprocessor.reading_version + 1)
    line = assert_one_line_error(invoke(cli_runner, ["train", "--resume", killed]), "The data changed since")
    assert "convpipe's reading of the inputs" in line


@pytest.mark.parametrize(
    "name, edit, fragment",
    [
        ("request.json", lambda d: {**d, "train": {**d["train"], "epochs": "8"}}, "[train] epochs must be"),
        ("request.json", lambda d: {**d, "modality": 3}, "modality must be a string"),
        ("data.json", lambda d: {**d, "fingerprints": "x"}, "is damaged"),
        ("random.json", lambda d: {"x": [1]}, "is damaged"),
        ("classes.json", lambda d: "ab", "is damaged"),
    ],
)
def test_resume_refuses_state_files_of_the_wrong_types_in_one_line(cli_runner, killed, name, edit, fragment):
    path = killed / "train_state" / name
    path.write_text(json.dumps(edit(json.loads(path.read_text()) if path.is_file() else {})))
    assert_one_line_error(invoke(cli_runner, ["train", "--resume", killed]), name, fragment)


def test_a_run_interrupted_before_choices_were_versioned_resumes_by_the_older_rules(cli_runner, killed, monkeypatch):
    import pipelines.training
    from pipelines.defaults import CHOICES_VERSION
    from pipelines.resume import TrainState

    state = TrainState(killed)
    assert state.choices_version() == CHOICES_VERSION  # recorded by this version
    recorded = json.loads(state.data_json.read_text())
    del recorded["choices_version"]  # as the version before wrote it
    state.data_json.write_text(json.dumps(recorded))
    assert state.choices_version() == 1
    build, used = pipelines.training.build_preprocessor, []
    monkeypatch.setattr(pipelines.training, "build_preprocessor", lambda *a, **k: used.append(k["choices_version"]) or build(*a, **k))
    result = invoke(cli_runner, ["train", "--resume", killed])
    assert result.exit_code == 0, describe_result(result)
    assert used == [1]  # chosen by the rules it started under


def test_a_run_interrupted_by_a_convpipe_that_recorded_no_data_json_is_refused(cli_runner, killed):
    # such a run may have read its inputs otherwise (a text run by tokenizer version 1): resumed
    # unchecked, a text run crashed in Keras or trained on with other token ids
    (killed / "train_state" / "data.json").write_text("{")  # damaged: said so, not blamed on a version
    assert_one_line_error(invoke(cli_runner, ["train", "--resume", killed]), "data.json is damaged")
    (killed / "train_state" / "data.json").unlink()
    assert_one_line_error(invoke(cli_runner, ["train", "--resume", killed]), "interrupted by an older convpipe", "data.json")


def test_resume_refuses_data_whose_validation_split_alone_changed(tmp_path):
    # e.g. an image added to val/ beside train/: the best epoch so far was chosen on other inputs
    from pipelines.resume import TrainState
    from preprocess import ConvpipeError

    state = TrainState(tmp_path / "run")
    state.dir.mkdir(parents=True)
    state.record_data(["a", "b"], {"train": "same", "validation": "before"}, "fit")
    state.check_same_splits({"train": "same", "validation": "before"})
    with pytest.raises(ConvpipeError, match="its validation split\\(s\\) now differ"):
        state.check_same_splits({"train": "same", "validation": "after"})


def test_a_backup_of_epochs_whose_history_csv_is_gone_is_damage_naming_the_file(tmp_path):
    from pipelines.resume import TrainState
    from preprocess import ConvpipeError

    state = TrainState(tmp_path / "run")
    state.dir.mkdir(parents=True)
    assert state.history(0, backed_up=True) == {}  # nothing trained yet: nothing to miss
    with pytest.raises(ConvpipeError, match=r"history.csv is damaged \(missing\)"):
        state.history(2, backed_up=True)  # resumed, the finished run's history would lack epochs 1 and 2


# ---- runs killed with other options: last, so that their children ran beside the tests above ----


def test_a_run_killed_after_early_stopping_ended_it_resumes_to_the_same_run(cli_runner, data, killed_after_early_stopping, tmp_path):
    # no patience and a high learning rate: early stopping ends it well before the epoch cap
    options = KILLS["killed_after_early_stopping"]["options"]
    uninterrupted = tmp_path / "uninterrupted"
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", data, "--out", uninterrupted, *options])
    assert result.exit_code == 0, describe_result(result)
    stopped_after = json.loads((uninterrupted / "config.json").read_text())["epochs_run"]
    assert 1 < stopped_after < 30
    killed = killed_after_early_stopping  # the same options, killed once training ended (at_end)
    assert (killed / "train_state").is_dir() and not (killed / "model.keras").exists()
    result = invoke(cli_runner, ["train", "--resume", killed])
    assert result.exit_code == 0, describe_result(result)
    # Keras checks patience only after an epoch: fit again would have trained at least one more
    assert (killed / "history.csv").read_text() == (uninterrupted / "history.csv").read_text()
    first, second = (json.loads((run / "config.json").read_text()) for run in (uninterrupted, killed))
    assert (first["best_epoch"], first["val_accuracy"]) == (second["best_epoch"], second["val_accuracy"])
    import keras
    import numpy as np

    weights = [keras.saving.load_model(run / "model.keras", safe_mode=True).get_weights() for run in (uninterrupted, killed)]
    assert all(np.array_equal(a, b) for a, b in zip(*weights))


def test_a_run_killed_after_it_diverged_and_stopped_resumes_to_the_same_run(cli_runner, data, killed_after_diverging, tmp_path, monkeypatch):
    import keras
    import numpy as np

    import pipelines.training

    class PoisonWeights(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                for variable in self.model.trainable_variables:
                    variable.assign(variable * float("nan"))

    monkeypatch.setattr(pipelines.training, "extra_callbacks", lambda: [PoisonWeights()])
    uninterrupted = tmp_path / "uninterrupted"
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", data, "--out", uninterrupted, *OPTIONS])
    assert result.exit_code == 0, describe_result(result)
    assert json.loads((uninterrupted / "config.json").read_text())["epochs_run"] == 3  # TerminateOnNaN
    monkeypatch.undo()
    killed = killed_after_diverging  # poisoned at epoch 2 as above, killed once training ended (at_end)
    result = invoke(cli_runner, ["train", "--resume", killed])
    assert result.exit_code == 0, describe_result(result)
    # not one more NaN epoch: fit would start again from the backup's NaN weights
    assert (killed / "history.csv").read_text() == (uninterrupted / "history.csv").read_text()


def test_without_patience_a_run_killed_after_an_improving_epoch_trains_on(cli_runner, data, killed_without_patience, tmp_path):
    # --patience 0 stops at the first epoch that does not improve, never at one that does
    options = KILLS["killed_without_patience"]["options"]
    uninterrupted = tmp_path / "uninterrupted"
    result = invoke(cli_runner, ["train", "--modality", "image", "--data", data, "--out", uninterrupted, *options])
    assert result.exit_code == 0, describe_result(result)
    assert json.loads((uninterrupted / "config.json").read_text())["epochs_run"] >= 3  # epochs 1 and 2 improved
    killed = killed_without_patience  # the same options, killed in the third epoch, after the second's backup
    result = invoke(cli_runner, ["train", "--resume", killed])
    assert result.exit_code == 0, describe_result(result)
    assert (killed / "history.csv").read_text() == (uninterrupted / "history.csv").read_text()
