"""convpipe's command line: train, evaluate, compare, predict, preprocess, info, inspect, explain,
check-locality, cache and demo.

Parses options, calls `pipelines`, prints. TensorFlow is imported inside the commands that need
it, so `--help` is instant.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pipelines.modality import Modality, parse_modality
from preprocess import ConvpipeError, InputWarning
from preprocess.errors import one_line

if TYPE_CHECKING:
    from pipelines.training import TrainResult

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter quiet

#: Click's base class of usage errors, wherever this Typer takes Click from (it vendors its own
#: copy since 0.2x; earlier versions use the `click` package).
CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class OneLineUsageErrors(typer.core.TyperGroup):
    """A misspelt command or option, or a missing argument, as one line on stderr like every other
    error (exit code 2, as for any usage error), instead of Typer's usage, hint and boxed panel."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except CLICK_EXCEPTION as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # the help is the answer; Typer printed it
                sys.exit(error.exit_code)
            context = getattr(error, "ctx", None)
            message = error.format_message().rstrip()
            message += "" if message.endswith((".", "?", "!")) else "."
            hint = f" See '{context.command_path} --help'." if context is not None else ""
            errors.print(f"[red]Error:[/red] {shown(message)}{escape(hint)}", highlight=False)
            sys.exit(error.exit_code)
        except typer.Abort:
            errors.print("[yellow]Aborted.[/yellow]")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


# Help is Rich markup, Typer's default since 0.12.5 (0.12.0 to 0.12.4 showed "\[train]" as is).
MARKUP = "rich"
app = typer.Typer(
    cls=OneLineUsageErrors,
    help="Train, evaluate and use CNNs on images, audio spectrograms and text matrices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=MARKUP,
)
# soft_wrap: paths and messages stay on one line however narrow the terminal or pipe.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def entries(count: int) -> str:
    """"1 entry that is not an input", "4 entries that are not inputs"."""
    return f"{count:,} entry that is not an input" if count == 1 else f"{count:,} entries that are not inputs"


def shown(text: str) -> str:
    """`text` for the terminal: control characters escaped (a file named with ESC must not
    recolour or clear the screen, nor one with a newline start a line of its own), then markup."""
    return escape(one_line(text))


#: Top-level names of convpipe's own loggers ("root": a bare `logging.warning` names no one).
OWN_LOGGERS = frozenset({"pipelines", "preprocess", "models", "cli", "__main__", "root"})


class OneLineFormatter(logging.Formatter):
    """Log records as one line each, with control characters in file names escaped. Warnings and
    errors read "warning: ..." like the input warnings beside them; another library's (TensorFlow,
    JAX, absl) keep its logger's name after the prefix, so they are not taken for convpipe's;
    --verbose's notes keep the logger's name."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            source = "" if record.name.split(".")[0] in OWN_LOGGERS else f"{record.name}: "
            return one_line(f"{record.levelname.lower()}: {source}{record.getMessage()}")
        return one_line(super().format(record))


def show_warning(message, category, filename, lineno, file=None, line=None, *, default=warnings.showwarning):
    """An `InputWarning` (an input used, but not exactly as given) as one line on stderr, like
    the library's logged warnings; Python's form adds the preprocessor's file, line and source."""
    if issubclass(category, InputWarning):
        errors.print(f"[yellow]warning:[/yellow] {shown(str(message))}", highlight=False)
    else:
        default(message, category, filename, lineno, file, line)


#: Characters of a literal text shown in predict's table (--json has it whole).
SHOWN_TEXT = 60

ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def one_line_errors(command):
    """Known failures end as one line on stderr and exit code 1; anything else is a bug.
    Input warnings are one line each too."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from pipelines.environment import keras_backend_problem

        try:
            problem = keras_backend_problem()
            if problem:
                raise ConvpipeError(problem)
            with warnings.catch_warnings():  # restores the hook after the command (tests run many)
                warnings.showwarning = show_warning
                return command(*args, **kwargs)
        except ConvpipeError as error:
            errors.print(f"[red]Error:[/red] {shown(str(error))}", highlight=False)
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            errors.print("[yellow]Interrupted.[/yellow]")
            raise typer.Exit(code=130) from None
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as error:
            # e.g. --out naming a file: the user's paths, not a bug
            needed = "a file" if isinstance(error, IsADirectoryError) else "a folder"
            message = f"Cannot write {error.filename}: {error.strerror} ({needed} is needed there)."
            errors.print(f"[red]Error:[/red] {shown(message)}", highlight=False)
            raise typer.Exit(code=1) from None
        except OSError as error:
            # The machine's state, not a bug: a read-only or full disk, a folder without access.
            if error.errno not in ENVIRONMENT_ERRNOS or not (error.filename or error.errno in DISK_FULL):
                raise
            if error.filename:
                message = f"Cannot use {error.filename}: {error.strerror}."
            else:  # e.g. inside Keras' own writes, which do not say which file
                message = f"Cannot write: {error.strerror}; free some space, or write elsewhere (--out, --cache-dir)."
            errors.print(f"[red]Error:[/red] {shown(message)}", highlight=False)
            raise typer.Exit(code=1) from None
        except Exception as error:
            message = out_of_memory(error, command.__name__)
            if message is None:
                raise
            errors.print(f"[red]Error:[/red] {shown(message)}", highlight=False)
            raise typer.Exit(code=1) from None

    return wrapper


def starts_tensorflow(command):
    """Import TensorFlow before the command runs, with its native start-up lines filtered out
    (`pipelines.quiet_start`), so that the command's own output and errors come first."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from pipelines.quiet_start import start_tensorflow

        start_tensorflow()
        return command(*args, **kwargs)

    return wrapper


#: Commands that use a trained run (its sizes fixed) on the device they are given (--device).
DEVICE_COMMANDS = frozenset({"evaluate", "predict", "compare"})


def memory_advice(command: str, on_host: bool) -> str:
    """What to change when `command` (its function's name) runs out of memory: training sets the
    sizes; another command can only free memory or, where TensorFlow's accelerator ran out and
    --device is taken, move to the CPU (JAX's devices are set by JAX_PLATFORMS)."""
    if command == "train":
        return ("Lower --batch-size, or the model's or inputs' size: "
                "--filters, --dense, --embedding-dim, --image-size, --positions, --duration.")
    free = "Free memory (other programs" + ("" if on_host else ", or a GPU another process holds") + ")"
    if command not in DEVICE_COMMANDS or on_host:
        return f"{free} and run it again."
    from pipelines.environment import keras_backend

    backend = keras_backend()
    if backend == "tensorflow":
        return f"{free}, or use --device cpu: the run's model and input size were set when it was trained."
    if backend == "jax":
        return f"{free}, or run JAX on the CPU: JAX_PLATFORMS=cpu (--device moves only TensorFlow)."
    return f"{free}; --device moves only TensorFlow."


def out_of_memory(error: BaseException, command: str = "train") -> str | None:
    """A one-line message when `error` is the host or accelerator running out of memory while
    `command` runs (advice by `memory_advice`), else None. Matched by name and status text:
    TensorFlow is not imported here, and JAX words it differently."""
    text = str(error)
    if isinstance(error, MemoryError):
        detail, on_host = "the process ran out of memory", True
    elif type(error).__name__ == "ResourceExhaustedError" or "RESOURCE_EXHAUSTED" in text:
        line = next((line for line in text.splitlines() if "OOM " in line or "RESOURCE_EXHAUSTED" in line), "")
        start = max(line.find("OOM "), line.find("RESOURCE_EXHAUSTED"))  # after "{{function_node ...}}"
        detail = line[start:].split(" [[")[0].split(" on /job:")[0].strip() or "the device ran out of memory"
        on_host = "/device:CPU:" in line  # TensorFlow's "on /job:.../device:CPU:0 by allocator cpu"
    else:
        return None
    return f"Out of memory ({detail}). {memory_advice(command, on_host)}"


def int_list(value: Optional[str], name: str) -> Optional[tuple[int, ...]]:
    """'32,64' -> (32, 64); '' -> () (e.g. no hidden dense layer)."""
    if value is None:
        return None
    if not value.strip():
        return ()
    try:
        # int() allows spaces around a number, not inside ("8 16" is not 816), and no empty part
        # ("16,,32" or "," is a typo, not a shorter list)
        return tuple(int(part) for part in value.split(","))
    except ValueError:
        raise ConvpipeError(f"--{name} takes comma-separated integers like 32,64; got {value!r}.") from None


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])


# A plain string checked by `parse_modality`, so a bad value is convpipe's one-line error
# (exit code 1) listing the choices, like every other bad option.
ModalityOption = Annotated[
    Optional[str], typer.Option(help=f"Kind of input: {' | '.join(m.value for m in Modality)}.")
]
DeviceOption = Annotated[
    str, typer.Option(help="auto (the GPUs TensorFlow sees, else the CPU) | cpu | gpu.")
]
DataOption = Annotated[
    Optional[str],
    typer.Option(help="Folder with one subfolder per class (optionally train/, val/ and test/), or a CSV manifest."),
]


TextOption = Annotated[
    bool, typer.Option("--text", help="Text runs: read every INPUT as the text to classify, never as a file or folder name.")
]
WorkersOption = Annotated[
    Optional[int], typer.Option(help="Processes that decode inputs (default: one per CPU core; 1: no extra process).")
]
CacheDirOption = Annotated[  # a string: Path("") would be the current folder
    Optional[str], typer.Option(help="Preprocessing cache folder (default: $XDG_CACHE_HOME/convpipe or ~/.cache/convpipe).")
]
UseCacheOption = Annotated[
    Optional[bool], typer.Option("--cache/--no-cache", help="Reuse and keep preprocessed inputs (--no-cache: a temporary folder).")
]
CacheVerifyOption = Annotated[
    Optional[bool], typer.Option("--cache-verify/--no-cache-verify", help="Also match cached files by a hash of their content.")
]


class ProgressBar:
    """Draws the library's (stage, done, total) progress reports as a rich bar with files/s and
    ETA on a terminal; elsewhere (a log file, CI) prints a line a minute while a stage runs. A
    context manager so the bar is closed on errors too."""

    def __init__(self, every: float | None = None, stderr: bool = False):
        from pipelines.heartbeat import EVERY

        # on stderr where stdout is the command's output (predict's table or JSON)
        self.console, self.stream = (errors, sys.stderr) if stderr else (console, sys.stdout)
        self.progress = None
        self.tasks: dict[str, int] = {}
        self.every = EVERY if every is None else every
        self.started: dict[str, float] = {}
        self.last = time.monotonic()

    def __enter__(self):
        if self.stream.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                TextColumn("[progress.data.speed]{task.fields[rate]}"),
                TimeRemainingColumn(), console=self.console, transient=True,
            )
            self.progress.start()
        return self

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.progress is None:
            now = time.monotonic()
            started = self.started.setdefault(stage, now)
            if now - self.last >= self.every and done < total:
                self.last = now
                print(f"  {stage}: {done:,}/{total:,} ({now - started:.0f} s)", file=self.stream, flush=True)
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, rate="")
        task_id = self.tasks[stage]
        self.progress.update(task_id, completed=done, total=total)
        speed = next(task.speed for task in self.progress.tasks if task.id == task_id)
        self.progress.update(task_id, rate=f"{speed:,.0f} files/s" if speed else "")

    def __exit__(self, *exc_info) -> None:
        if self.progress is not None:
            self.progress.stop()


def cache_folder(value: str) -> Path:
    if not value.strip():  # "$CACHE" unset: not the current folder
        raise ConvpipeError("--cache-dir is empty: name a folder, or leave it out for the default cache.")
    return Path(value).expanduser()


def cache_settings(
    workers: Optional[int], cache_dir: Optional[str], use_cache: Optional[bool], cache_verify: Optional[bool]
) -> dict:
    """The cache and worker flags as TrainSettings fields (None: not given, the run's or the default)."""
    return {
        "workers": workers,
        "cache_dir": None if cache_dir is None else str(cache_folder(cache_dir).resolve()),
        "cache": use_cache,
        "cache_verify": cache_verify,
    }


@app.command()
@one_line_errors
def train(
    context: typer.Context,
    modality: ModalityOption = None,
    data: DataOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory to write (default runs/<modality>-<time>).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file with \\[preprocess], \\[model], \\[train] tables, or a run's config.json to train it again; flags override it.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs (early stopping may end sooner).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Inputs per gradient step on each replica; the global batch is this times the replicas.")] = None,
    global_batch_size: Annotated[Optional[int], typer.Option(help="Inputs per gradient step over all replicas (instead of --batch-size).")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Adam learning rate.")] = None,
    val_split: Annotated[Optional[float], typer.Option(help="Share held out for validation.")] = None,
    test_split: Annotated[Optional[float], typer.Option(help="Share held out for testing (no train/test folders).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for the split, initialization and shuffling; given explicitly, also turns on --deterministic.")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Epochs without validation improvement before stopping.")] = None,
    class_weight: Annotated[Optional[str], typer.Option(help="none | balanced (each class weighs as much in the loss as the others, for imbalanced data).")] = None,
    deterministic: Annotated[Optional[bool], typer.Option("--deterministic/--fast", help="Deterministic TensorFlow ops: identical results for the same seed, possibly slower (default: on when --seed is given).")] = None,
    strict: Annotated[Optional[bool], typer.Option("--strict/--skip-bad", help="Fail on the first unreadable input instead of skipping it.")] = None,
    filters: Annotated[Optional[str], typer.Option(help="Filters per conv block, e.g. 32,64 (text: filters per window width).")] = None,
    kernel_size: Annotated[Optional[int], typer.Option(help="Image/audio: side of the square conv filters.")] = None,
    pool_size: Annotated[Optional[int], typer.Option(help="Image/audio: max-pooling window side.")] = None,
    pool_stride: Annotated[Optional[int], typer.Option(help="Image/audio: max-pooling stride.")] = None,
    head: Annotated[Optional[str], typer.Option(help="flatten | global_max | global_average | global_max_average (text: pooling over positions).")] = None,
    batch_norm: Annotated[Optional[bool], typer.Option("--batch-norm/--no-batch-norm", help="Image/audio: batch-normalize conv outputs.")] = None,
    dense: Annotated[Optional[str], typer.Option(help="Hidden fully connected widths, e.g. 128 or 256,64 ('' for none).")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout rate before each dense layer.")] = None,
    augment: Annotated[Optional[float], typer.Option(help="Image/audio: strength of random changes to training inputs, 0-0.5 (image: shift, zoom, rotate; audio: time and frequency masks; 0: none).")] = None,
    window_sizes: Annotated[Optional[str], typer.Option(help="Text: full-height window widths, e.g. 3,4,5.")] = None,
    text_kernel: Annotated[Optional[str], typer.Option(help="Text: factorized | full.")] = None,
    embedding_dim: Annotated[Optional[int], typer.Option(help="Text: rank of the factorized kernel.")] = None,
    level: Annotated[Optional[str], typer.Option(help="Text: word | char (default: chosen from the texts' length and spacing).")] = None,
    vocabulary_size: Annotated[Optional[int], typer.Option(help="Text: vocabulary cap including reserved ids.")] = None,
    positions: Annotated[Optional[int], typer.Option(help="Text: token positions per input (default: from the data).")] = None,
    ngram_sizes: Annotated[Optional[str], typer.Option(help="Text, char level: hashed character n-grams, e.g. 2,3,4 ('' for none; default 2,3,4,5 at char level).")] = None,
    hash_buckets: Annotated[Optional[int], typer.Option(help="Text, char level: columns the n-grams are hashed into (default 32768).")] = None,
    image_size: Annotated[Optional[str], typer.Option(help="Image: HEIGHT,WIDTH (default: from the data).")] = None,
    color_mode: Annotated[Optional[str], typer.Option(help="Image: grayscale | rgb (default: from the data).")] = None,
    bit_depth: Annotated[Optional[int], typer.Option(help="Image: bits that 16-bit grayscale pixels use, 8-16, e.g. 12 for 0-4095 camera data (default 16; train says when fewer would do).")] = None,
    sample_rate: Annotated[Optional[int], typer.Option(help="Audio: resample to this rate (Hz).")] = None,
    duration: Annotated[Optional[float], typer.Option(help="Audio: seconds per clip (pad or crop).")] = None,
    num_mels: Annotated[Optional[int], typer.Option(help="Audio: mel bands.")] = None,
    n_fft: Annotated[Optional[int], typer.Option(help="Audio: FFT window length in samples (default 512).")] = None,
    hop_length: Annotated[Optional[int], typer.Option(help="Audio: samples between time steps (default 160).")] = None,
    fmin: Annotated[Optional[float], typer.Option(help="Audio: lowest mel band edge in Hz (default 20).")] = None,
    fmax: Annotated[Optional[float], typer.Option(help="Audio: highest mel band edge in Hz (default: half the sample rate).")] = None,
    workers: WorkersOption = None,
    cache_dir: CacheDirOption = None,
    use_cache: UseCacheOption = None,
    cache_verify: CacheVerifyOption = None,
    device: Annotated[Optional[str], typer.Option(help="auto (the GPUs TensorFlow sees, else the CPU) | cpu | gpu.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="float32 | mixed (float16 on GPU; bfloat16 on CPUs with bfloat16 instructions, refused on others).")] = None,
    jit: Annotated[Optional[bool], typer.Option("--jit/--no-jit", help="XLA compilation (default under TensorFlow: off on CPU, auto on GPU; auto under other Keras backends).")] = None,
    strategy: Annotated[Optional[str], typer.Option(help="none | mirrored (all local GPUs or --cpu-replicas) | multiworker (machines from TF_CONFIG).")] = None,
    cpu_replicas: Annotated[Optional[int], typer.Option(help="Split the CPU into this many devices for --strategy mirrored.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this interrupted run with the settings it started with (other options: only -v, --workers and the cache's).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every skipped input.")] = False,
) -> None:
    """Train a CNN and write a run directory. Without --data, uses the built-in demo data."""
    from pipelines.config import resolve_config
    from pipelines.quiet_start import start_tensorflow
    from pipelines.training import train as run_training

    setup_logging(verbose)
    progress = 2 if not sys.stdout.isatty() else "auto"
    if resume is not None:
        # A resumed run must repeat the interrupted one, so it keeps every setting it started
        # with, but for where and how inputs are read and cached, which change no result.
        given = given_flags(context, allowed={"resume", *RESUME_PARAMETERS})
        if given:
            raise ConvpipeError(
                f"--resume continues {resume} with the settings it started with; drop {', '.join(given)}."
            )
        settings = {k: v for k, v in cache_settings(workers, cache_dir, use_cache, cache_verify).items() if v is not None}
        from pipelines.run_dir import check_run_folder

        check_run_folder(resume)  # a mistyped path: the error alone, no "Resuming" line above it
        console.print(f"Resuming {shown(str(resume))}")
        start_tensorflow()
        try:
            with ProgressBar() as bar:
                result = run_training(None, verbose=progress, resume=resume, progress=bar, resume_settings=settings)
        except Exception as error:
            advised = resumed_error(error, resume)
            if advised is error:
                raise  # as it was, cause and context included (a bug's traceback keeps them)
            raise advised from None
        report_training(result)
        return
    resolved = resolve_config(
        modality,
        config_file=config,
        data=data,
        preprocess={
            "level": level,
            "vocabulary_size": vocabulary_size,
            "positions": positions,
            "ngram_sizes": int_list(ngram_sizes, "ngram-sizes"),
            "hash_buckets": hash_buckets,
            "image_size": int_list(image_size, "image-size"),
            "color_mode": color_mode,
            "bit_depth": bit_depth,
            "sample_rate": sample_rate,
            "duration": duration,
            "num_mels": num_mels,
            "n_fft": n_fft,
            "hop_length": hop_length,
            "fmin": fmin,
            "fmax": fmax,
        },
        model={
            "filters": int_list(filters, "filters"),
            "kernel_size": kernel_size,
            "pool_size": pool_size,
            "pool_stride": pool_stride,
            "head": head,
            "batch_norm": batch_norm,
            "dense": int_list(dense, "dense"),
            "dropout": dropout,
            "augment": augment,
            "window_sizes": int_list(window_sizes, "window-sizes"),
            "text_kernel": text_kernel,
            "embedding_dim": embedding_dim,
        },
        train={
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "val_split": val_split,
            "test_split": test_split,
            "seed": seed,
            "patience": patience,
            "deterministic": deterministic,
            "strict": strict,
            **cache_settings(workers, cache_dir, use_cache, cache_verify),
            "global_batch_size": global_batch_size,
            "class_weight": class_weight,
            "device": device,
            "precision": precision,
            "jit": jit,
            "strategy": strategy,
            "cpu_replicas": cpu_replicas,
        },
    )
    start_workers_early(resolved.train.workers, resolved.modality)
    start_tensorflow()  # after the workers' fork server: children must not inherit the filter
    source = resolved.data or "built-in demo data"
    console.print(f"Training a CNN on {shown(source)} ({resolved.modality.value})")
    with ProgressBar() as bar:
        result = run_training(resolved, out=out, verbose=progress, progress=bar)
    report_training(result)


#: The parameters `train --resume` takes besides itself (they change no result: -v and the
#: READING_SETTINGS flags), and the same as typed.
RESUME_PARAMETERS = frozenset({"verbose", "workers", "cache_dir", "use_cache", "cache_verify"})
RESUME_TAKES = frozenset({"--verbose", "--workers", "--cache", "--no-cache", "--cache-dir", "--cache-verify", "--no-cache-verify"})


def resumed_error(error: Exception, resume: Path) -> Exception:
    """`error` raised while resuming `resume`: where its advice names a flag to change (--batch-size,
    --device, --image-size, ...), which --resume refuses, it also says how to change one."""
    import re

    message = str(error) if isinstance(error, ConvpipeError) else out_of_memory(error)
    if message is None:
        return error
    # flags as advice, not dashes inside a path (a run folder named "lr--fast")
    named = set(re.findall(r"(?<![^\s(`'\"])--[a-z][a-z-]*", message)) - {"--resume"}
    # the flags a resume takes need no detour; advice naming --out already says to train anew
    # (a run stopped with Ctrl-C, or trained by another command: never "delete it")
    if not named - RESUME_TAKES or "--out" in named:
        return error
    return ConvpipeError(
        f"{message} (--resume keeps the settings {resume} started with, but for --workers and the cache's: "
        f"to change another, train it anew with another --out, or delete {resume} first.)"
    )


def given_flags(context: typer.Context, allowed: set[str]) -> list[str]:
    """The flags of the running command typed on the command line, as typed (`--no-cache`, not
    `use_cache`), except the parameters named in `allowed`."""
    flags = []
    for param in context.command.params:
        source = context.get_parameter_source(param.name)
        if param.name in allowed or source is None or source.name != "COMMANDLINE":
            continue
        off = getattr(param, "secondary_opts", None)
        flags.append(off[0] if off and context.params[param.name] is False else param.opts[0])
    return flags


def start_workers_early(workers: Optional[int], modality: Modality) -> None:
    """Let worker processes import the decoders while this process imports TensorFlow."""
    from pipelines.modality import MODALITIES
    from pipelines.workers import prestart

    prestart(workers, MODALITIES[modality].preprocessor)


def report_training(result: TrainResult) -> None:
    """What train prints when it ends: where the run went, its validation accuracy, what was skipped."""
    if not result.chief:
        console.print(
            f"Worker finished {result.epochs} epoch(s); the chief wrote the run. "
            f"This worker's final weights: [bold]{shown(str(result.run_dir / 'final.weights.h5'))}[/bold]"
        )
        return
    # The test split is read (and its skipped inputs counted) by evaluate.
    console.print(shown(f"training and validation: {result.skipped.summary()}"))
    if result.ignored:
        console.print(
            f"ignored {entries(result.ignored)}: other file types, files outside class "
            "folders, linked folders, empty or malformed manifest rows (listed in skipped.json)"
        )
    accuracy = "n/a (no validation split)" if result.val_accuracy is None else f"{result.val_accuracy:.3f}"
    console.print(
        f"Validation accuracy {accuracy} (best epoch {result.best_epoch} of {result.epochs}; "
        f"{result.seconds:.0f} s in all, {result.train_seconds:.0f} s of them training)"
    )
    console.print(f"Run written to [bold]{shown(str(result.run_dir))}[/bold]")
    if result.interrupted:
        errors.print("[yellow]Interrupted:[/yellow] kept the best model of the completed epochs.")
        raise typer.Exit(code=130)


@app.command()
@one_line_errors
@starts_tensorflow
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory written by train.")],
    data: DataOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Report folder (default RUN/report).")] = None,
    workers: WorkersOption = None,
    cache_dir: CacheDirOption = None,
    use_cache: UseCacheOption = None,
    cache_verify: CacheVerifyOption = None,
    device: DeviceOption = "auto",
    baseline: Annotated[bool, typer.Option(
        "--baseline", help="Also fit a logistic regression on the run's training and validation inputs (pixels, MFCC statistics or "
        "TF-IDF n-grams) and score it on the same inputs: does the CNN beat a linear model?",
    )] = False,
) -> None:
    """Score a run on its held-out test split, or on --data; write report.html, report.json and figures.

    Cache options left out are the ones the run was trained with."""
    from pipelines.evaluation import evaluate as run_evaluation
    from pipelines.report_html import scored_location

    setup_logging(False)  # the library's warnings (data folders, copies) read "warning: ...", as in train

    with ProgressBar() as bar:
        result = run_evaluation(
            run, data=data, out=out, workers=workers, cache_dir=None if cache_dir is None else str(cache_folder(cache_dir)),
            use_cache=use_cache, cache_verify=cache_verify, progress=bar, device=device, baseline=baseline,
        )
    report = result.report
    console.print(
        f"[bold]accuracy {report['accuracy']:.3f}   macro-F1 {report['macro_f1']:.3f}[/bold]   "
        f"weighted-F1 {report['weighted_f1']:.3f}   ECE {report['calibration']['ece']:.3f}   "
        f"n={report['n_samples']}   mistakes {len(report['misclassified'])}"
    )
    print_per_class(report, title=f"{report['modality']} run on {scored_location(report['data'])}")
    if report["top_confusions"]:
        confusions = ", ".join(f"{c['true']} -> {c['predicted']} ({c['count']})" for c in report["top_confusions"][:5])
        console.print(f"most confused: {shown(confusions)}")
    console.print(shown(report["skipped"]["summary"]))
    linear = report.get("linear_baseline")
    if linear and "error" in linear:
        errors.print(f"[yellow]warning:[/yellow] no linear baseline: {shown(linear['error'])}")
    elif linear:
        console.print(baseline_line(linear))
        if linear.get("scored_copies_of_fitted_inputs"):
            errors.print(
                f"[yellow]warning:[/yellow] {linear['scored_copies_of_fitted_inputs']} of the scored inputs are exact "
                "copies of inputs the baseline was fitted on (training and validation); its score counts them."
            )
    copies = report["data"].get("test_copies_of_training_inputs")
    if copies:
        errors.print(
            f"[yellow]warning:[/yellow] {copies} of the {report['n_samples']} scored inputs are exact copies of "
            "training inputs; these scores count them."
        )
    console.print(f"Report written to [bold]{shown(str(result.html_path))}[/bold]")
    console.print(f"  with {shown(str(result.report_path))} and confusion_matrix.png, training_curves.png, reliability.png")


def baseline_line(baseline: dict) -> str:
    from pipelines.baseline import cnn_against_baseline

    gap, verdict = cnn_against_baseline(baseline)
    verdict = f"[yellow]{verdict} it[/yellow]" if gap < 0 else f"{verdict} it"
    return (
        f"linear baseline ({baseline['model']}, fitted on {baseline['fitted_on']:,} training and validation inputs): "
        f"accuracy {baseline['accuracy']:.3f}, macro-F1 {baseline['macro_f1']:.3f}; the CNN {verdict} "
        f"({baseline['cnn_accuracy']:.3f}, {gap:+.3f} on the same {baseline['n_samples']:,} inputs)"
    )


def print_per_class(report: dict, title: str) -> None:
    table = Table(title=shown(title))
    for column in ("class", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for label, scores in report["per_class"].items():
        counted = scores.get("in_averages", True)  # reports before the field: every class counted
        values = (f"{scores[k]:.3f}" if counted else "-" for k in ("precision", "recall", "f1"))
        table.add_row(shown(label), *values, str(scores["support"]))
    if not all(scores.get("in_averages", True) for scores in report["per_class"].values()):
        table.caption = "-: no test inputs of this class and none predicted as it; not in macro-F1"
    console.print(table)


@app.command()
@one_line_errors
@starts_tensorflow
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run directories written by train, or folders that hold them.")],
    out: Annotated[Optional[Path], typer.Option(help="Folder for compare.json and compare.html.")] = None,
    device: DeviceOption = "auto",
) -> None:
    """Compare runs by test accuracy and macro-F1, best first; runs of any modality.

    Each run's RUN/report/report.json is used. A run without one is first evaluated on its own held-out test split (on --device), as `evaluate RUN` would, and the report is written into the run.

    Runs scored on different data (another location or other inputs) are flagged.

    A folder that is not a run stands for the runs directly inside it (hidden folders passed over), in name order. Unfinished runs (still training, or interrupted) are left out with a warning.
    """
    from pipelines.compare import compare as run_comparison, unfinished_note

    setup_logging(False)

    comparison = run_comparison(runs, out=out, device=device)
    for folder, found in comparison.found_in.items():
        names = ", ".join(Path(run).name for run in found)
        console.print(shown(f"Runs in {folder} (its folders that hold a run, by name): {names}"), highlight=False)
    if comparison.left_out:
        console.print("[yellow]Warning:[/yellow] " + shown(unfinished_note([Path(run) for run in comparison.left_out])), highlight=False)
    # gaps of two spaces, not three, so that nine columns fit 80 characters with room for names
    table = Table(title="Runs, best first", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    baselines = comparison.has_baselines  # a column for evaluate --baseline's linear model
    columns = ("#", "run", "modality", "params", "train s", "accuracy", "macro-F1", *(("linear",) if baselines else ()), "data")
    rows = []
    for rank, row in enumerate(comparison.runs, start=1):
        linear = () if not baselines else ("n/a" if row.baseline_accuracy is None else f"{row.baseline_accuracy:.3f}",)
        rows.append((
            str(rank), shown(Path(row.run).name), row.modality,
            "n/a" if row.parameters is None else f"{row.parameters:,}",
            "n/a" if row.train_seconds is None else f"{row.train_seconds:.1f}",
            f"{row.accuracy:.3f}", f"{row.macro_f1:.3f}", *linear,
            row.data_group + (" [red](≠A)[/red]" if row.different_data else ""),
        ))
    for i, column in enumerate(columns):
        if column == "run":  # cut where the terminal is narrow; listed whole below the table
            table.add_column(column, overflow="ellipsis", min_width=min(8, max(len(cells[i]) for cells in rows)))
        else:  # never folded: a number split over two lines reads as two numbers
            widest = max([len(column), *(len(Text.from_markup(cells[i]).plain) for cells in rows)])
            table.add_column(column, justify="left" if column in ("modality", "data") else "right", min_width=widest, no_wrap=True)
    for cells in rows:
        table.add_row(*cells)
    console.print(table)
    for rank, row in enumerate(comparison.runs, start=1):
        console.print(shown(f"{rank}. {row.run}: {row.hyperparameter_text()}"), highlight=False)
    differ = ", ".join(comparison.settings_that_differ) or "none (the same settings)"
    console.print(shown(f"settings that differ: {differ}"), highlight=False)
    for letter, group in comparison.data_groups.items():
        console.print(shown(f"data {letter}: {group['data']} ({group['n_samples']} inputs)"), highlight=False)
    if not comparison.same_data:
        console.print("[yellow]Warning:[/yellow] these runs were scored on different data; compare with care.")
    evaluated = [row.run for row in comparison.runs if row.evaluated_now]
    if evaluated:
        console.print(shown(f"Evaluated now on their own test split (they had no report): {', '.join(evaluated)}"))
    if baselines:
        console.print("linear: the accuracy of evaluate --baseline's logistic regression on the same inputs (n/a: not asked for, or it failed)")
    if comparison.html_path is not None:
        console.print(f"Comparison written to [bold]{shown(str(comparison.html_path))}[/bold] and compare.json")


@app.command()
@one_line_errors
@starts_tensorflow
def predict(
    run: Annotated[Path, typer.Argument(help="Run directory written by train.")],
    inputs: Annotated[list[str], typer.Argument(help="Files or folders (their files, in path order) to classify; text runs also take literal text; - reads one input per line from standard input.")],
    top_k: Annotated[int, typer.Option(help="Labels to show per input.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    device: DeviceOption = "auto",
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Predict the inputs that can be read and list the others on stderr, instead of failing.")] = False,
    workers: WorkersOption = None,
    literal_text: TextOption = False,
) -> None:
    """Print the top-k labels and probabilities for each input."""
    from pipelines.prediction import predict as run_prediction, with_stdin_lines

    setup_logging(False)

    skipped: list = []
    with ProgressBar(stderr=True) as bar:
        results = run_prediction(
            run, with_stdin_lines(inputs, sys.stdin), top_k=top_k, device=device, skip_bad=skip_bad, skipped=skipped,
            workers=workers, progress=bar, literal_text=literal_text,
        )
    for name, reason in skipped:  # every one: with --skip-bad this is the only record of them
        errors.print(f"[yellow]left out:[/yellow] {shown(name)} ({shown(reason)})", soft_wrap=True)
    if skipped:
        errors.print(f"[yellow]warning:[/yellow] {len(skipped)} of {len(results) + len(skipped)} inputs cannot be used; left out.")
    if as_json:
        typer.echo(json.dumps(results, indent=2, ensure_ascii=False))
        return
    for result in results:
        ranked = "   ".join(f"{p['label']} {p['probability']:.3f}" for p in result["top"])
        name = result["input"]
        if result["kind"] == "text" and len(name) > SHOWN_TEXT:  # a paragraph would bury the answer
            name = name[: SHOWN_TEXT - 3] + "..."
        console.print(shown(f"{name}: {ranked}"), highlight=False)


@app.command("preprocess")
@one_line_errors
def preprocess_command(
    out: Annotated[Path, typer.Option(help="Output .npz file.")],
    modality: ModalityOption = None,
    data: DataOption = None,
    run: Annotated[Optional[Path], typer.Option(help="Use this run's fitted preprocessor and label order (and its data, without --data).")] = None,
    workers: WorkersOption = None,
    cache_dir: CacheDirOption = None,
    use_cache: UseCacheOption = None,
    cache_verify: CacheVerifyOption = None,
    strict: Annotated[bool, typer.Option("--strict/--skip-bad", help="Fail on the first unreadable input instead of skipping it.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every skipped input.")] = False,
) -> None:
    """Export preprocessed arrays (x, y, label_names, ids) to an .npz file.

    Unreadable inputs are skipped and counted (listed with -v); `ids` names the inputs kept."""
    from pipelines.cache import PreprocessCache
    from pipelines.config import TrainSettings
    from pipelines.export import export_arrays

    setup_logging(verbose)
    if modality is None and run is None:  # a run records its modality
        raise ConvpipeError("No modality given: pass --modality image|audio|text, or --run RUN.")
    settings = TrainSettings(**{k: v for k, v in cache_settings(workers, cache_dir, use_cache, cache_verify).items() if v is not None}).validate()
    cache = PreprocessCache.open(settings.cache_dir, enabled=settings.cache, verify=settings.cache_verify)
    with ProgressBar() as bar:
        chosen = None if modality is None else parse_modality(modality)
        summary = export_arrays(
            chosen, data, out, run_path=run, strict=strict, cache=cache, workers=settings.workers, progress=bar
        )
    console.print(
        shown(f"Wrote {summary['path']}: x {tuple(summary['shape'])}, {summary['classes']} classes; {summary['skipped']}")
    )
    if summary["ignored"]:
        console.print(f"ignored {entries(summary['ignored'])} (listed with -v)")


cache_app = typer.Typer(help="Inspect or empty the preprocessing cache.", no_args_is_help=True, rich_markup_mode=MARKUP)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
@one_line_errors
def cache_info_command(cache_dir: CacheDirOption = None) -> None:
    """Show where the cache is and how much it holds."""
    from pipelines.cache import cache_info, default_cache_dir

    details = cache_info(default_cache_dir() if cache_dir is None else cache_folder(cache_dir))
    console.print(f"{'path':<12}{shown(details['path'])}" + ("" if details["exists"] else " (not created yet)"))
    entries = details["entries"]
    console.print(f"{'entries':<12}" + ("unreadable: the database is damaged; the next command that uses it starts it afresh"
                                          if entries is None else f"{entries:,} preprocessed inputs"))
    console.print(f"{'shard sets':<12}{details['shard_sets']:,}")
    console.print(f"{'fits':<12}{details['fits']:,} fitted preprocessors")
    console.print(f"{'size':<12}{details['bytes'] / 1e6:,.1f} MB")


@cache_app.command("clear")
@one_line_errors
def cache_clear_command(cache_dir: CacheDirOption = None) -> None:
    """Delete every cached entry and shard (the next run decodes its inputs again)."""
    from pipelines.cache import clear_cache, default_cache_dir

    details = clear_cache(default_cache_dir() if cache_dir is None else cache_folder(cache_dir))
    console.print(
        f"Removed {'a damaged database of' if details['entries'] is None else format(details['entries'], ',')} entries "
        f"and {details['shard_sets']:,} shard sets "
        f"({details['bytes'] / 1e6:,.1f} MB) from {shown(details['path'])}"
    )


@app.command()
@one_line_errors
@starts_tensorflow
def info() -> None:
    """Show versions, the Keras backend and the devices it sees."""
    from pipelines import environment

    for name, version in environment.versions().items():
        console.print(f"{name:<14}{version or 'not installed'}")
    details = environment.devices()
    console.print(f"{'backend':<14}{details['backend']}")
    console.print(f"{'devices':<14}{', '.join(details.get('devices', [])) or 'none'}")
    if details.get("gpus"):
        console.print(f"{'gpus':<14}{shown(', '.join(details['gpus']))}")
    for key, name in (("cuda", "cuda (built)"), ("cudnn", "cudnn (built)"), ("mixed_precision", "mixed")):
        if details.get(key):
            console.print(f"{name:<14}{shown(str(details[key]))}")
    for name, support in details.get("strategies", {}).items():
        console.print(f"{'strategy ' + name:<22}{shown(support)}")


@app.command("inspect")
@one_line_errors
@starts_tensorflow
def inspect_command(
    run: Annotated[Path, typer.Argument(help="Run directory written by train.")],
    input_value: Annotated[str, typer.Argument(metavar="INPUT", help="File to look at (text runs also take literal text); - reads it from standard input.")],
    out: Annotated[Optional[Path], typer.Option(help="Folder for the figures (default RUN/inspect/<file stem>-<checksum of its path>, or text-<checksum of the text>).")] = None,
    channels: Annotated[int, typer.Option(help="Feature maps / filters shown per layer.")] = 8,
    literal_text: TextOption = False,
) -> None:
    """Write PNG figures of what each layer does with INPUT, and index.html in network order."""
    from pipelines.inspection import inspect
    from pipelines.prediction import with_stdin_line

    setup_logging(False)

    input_value = with_stdin_line(input_value, sys.stdin, "inspect")
    result = inspect(run, input_value, out=out, channels=channels, literal_text=literal_text)
    ranked = "   ".join(f"{label} {p:.3f}" for label, p in sorted(result.probabilities.items(), key=lambda kv: -kv[1]))
    console.print(shown(f"{input_value}: {ranked}"), highlight=False)
    for row in result.ngrams:
        console.print(
            shown(f"  width {row['window']} filter {row['filter']}: "
                  + (f"input '{row['input n-gram']}' {row['activation']:.3f}" if row["position"] is not None else "silent on this input")
                  + f", vocabulary '{row['vocabulary n-gram']}'"),
            highlight=False,
        )
    console.print(f"Wrote {len(result.files)} files; open [bold]{shown(str(result.out / 'index.html'))}[/bold]")


@app.command()
@one_line_errors
@starts_tensorflow
def explain(
    run: Annotated[Path, typer.Argument(help="Run directory written by train.")],
    input_value: Annotated[str, typer.Argument(metavar="INPUT", help="File to explain (text runs also take literal text); - reads it from standard input.")],
    out: Annotated[Optional[Path], typer.Option(help="Folder for the overlay (default RUN/explain/<file stem>-<checksum of its path>, or text-<checksum of the text>).")] = None,
    literal_text: TextOption = False,
) -> None:
    """Show which parts of INPUT decided the prediction: Grad-CAM (image, audio) or per-position contribution (text)."""
    from pipelines.prediction import with_stdin_line
    from pipelines.saliency import explain as run_explain

    setup_logging(False)

    input_value = with_stdin_line(input_value, sys.stdin, "explain")
    result = run_explain(run, input_value, out=out, literal_text=literal_text)
    console.print(shown(f"{input_value}: {result.label} {result.probability:.3f} ({result.method})"), highlight=False)
    for position, token, contribution in result.top_positions[:5]:
        console.print(shown(f"  position {position} '{token}': {contribution:+.3f}"), highlight=False)
    console.print(f"Overlay written to [bold]{shown(str(result.out / 'saliency.png'))}[/bold]")


@app.command("check-locality")
@one_line_errors
@starts_tensorflow
def check_locality_command(
    modality: ModalityOption = None,
    data: DataOption = None,
    quick: Annotated[bool, typer.Option("--quick", help="At most a few hundred inputs and a few epochs: seconds on small data.")] = False,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs per training (default 8 with --quick, else 20).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the split, the permutations and the three trainings.")] = 0,
    test_split: Annotated[float, typer.Option(help="Share of the data held out to measure accuracy.")] = 0.25,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
) -> None:
    """Train one small CNN on the data as given, with its columns permuted and with its rows permuted; say whether order matters."""
    from pipelines.locality import check_locality, variant_name

    setup_logging(verbose)
    if modality is None:
        raise ConvpipeError("No modality given: pass --modality image|audio|text.")
    result = check_locality(parse_modality(modality), data, quick=quick, epochs=epochs, seed=seed, test_split=test_split)
    table = Table(title=shown(f"{result.modality.value} data {result.data}: {result.train_count} train, {result.test_count} test inputs"))
    table.add_column("arrays")
    table.add_column("test accuracy", justify="right")
    table.add_column("Wilson 95% interval", justify="right")
    for name, accuracy in result.accuracies.items():
        low, high = accuracy.interval
        table.add_row(shown(variant_name(name, result.modality)), f"{accuracy.value:.3f}", f"{low:.3f} - {high:.3f}")
    console.print(table)
    console.print(f"majority class share {result.majority_share:.3f}; {result.seconds:.0f} s")
    console.print(f"Verdict: [bold]{shown(result.verdict_text)}[/bold] ({shown(result.reason)})")


demo_app = typer.Typer(help="Runnable walkthroughs of how a CNN works.", no_args_is_help=True, rich_markup_mode=MARKUP)
app.add_typer(demo_app, name="demo")


@demo_app.command("xo")
@one_line_errors
@starts_tensorflow
def demo_xo(
    out: Annotated[Path, typer.Option(help="Folder for the figures.")] = Path("xo-demo"),
    train_cnn: Annotated[bool, typer.Option("--train/--no-train", help="Also train the tiny CNN on generated X's and O's.")] = True,
    epochs: Annotated[int, typer.Option(help="Epochs for the tiny CNN.")] = 15,
    seed: Annotated[int, typer.Option(help="Seed for the generated pictures and the CNN.")] = 0,
) -> None:
    """X versus O in +-1 pixels: filtering, ReLU and max pooling as numbers, then a tiny CNN."""
    from pipelines.xo_demo import format_grid, run_demo

    result = run_demo(out, train=train_cnn, epochs=epochs, seed=seed)
    steps = result.steps

    def show(title: str, values, decimals: int = 2) -> None:
        console.print(f"[bold]{shown(title)}[/bold]")
        for line in format_grid(values, decimals):
            console.print("  " + line, highlight=False)

    for name, image in steps.images.items():
        show(f"{name}: 9x9 pixels, +1 ink, -1 background", image, 0)
    for name, feature in steps.features.items():
        show(f"feature '{name}' (3x3)", feature, 0)
    console.print(
        "Filtering: multiply each pixel of a 3x3 window by the feature's pixel, add the 9 products, divide "
        "by 9. A full match gives 9/9 = 1.00; two mismatching pixels give (7 - 2)/9 = 0.555..., printed "
        "0.55: values are truncated, not rounded, to two decimals."
    )
    for name in steps.features:
        key = ("X", name)
        show(f"X filtered with '{name}' (7x7)", steps.filtered[key])
        show("after ReLU (negatives set to 0)", steps.rectified[key])
        show("after 2x2 max pooling, stride 2, edges kept (4x4)", steps.pooled[key])
    for name in steps.features:
        show(f"O filtered with '{name}', ReLU, pooled (4x4)", steps.pooled[("O", name)])
    trained = result.trained
    if trained is not None:
        console.print(
            f"[bold]Tiny CNN[/bold] (two \\[conv 3x3 -> ReLU -> max pool 2x2] blocks, one hidden layer) trained "
            f"on shifted, scaled, rotated and thickened X's and O's in {trained.seconds:.0f} s: accuracy "
            f"{trained.accuracy:.3f} on {trained.test_count} new pictures."
        )
        for index, (truth, (said, probability)) in enumerate(zip(trained.example_labels, trained.example_predictions), 1):
            console.print(f"  new picture {index}: is {truth}, the CNN says {said} ({probability:.2f})", highlight=False)
    console.print(f"Figures written to [bold]{shown(str(out))}[/bold] ({len(result.files)} PNG files)")


if __name__ == "__main__":
    app()
