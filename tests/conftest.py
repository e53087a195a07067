"""Shared generators of small, real data files and one tiny trained run per modality.

Everything is written into pytest's temporary folders: PNG images made with numpy and Pillow,
WAV clips made with soundfile, .txt files and CSV manifests. Training runs go through the real
CLI (`typer.testing.CliRunner` on `cli.app`) once per session and are shared by the tests that
evaluate, predict or export.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tiny models gain nothing from many threads; stay light on a shared 2-core machine.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import csv  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile  # noqa: E402
from PIL import Image  # noqa: E402

CLASSES = ("alpha", "beta", "gamma")
PER_CLASS = 12
SAMPLE_RATE = 16000
#: One tone frequency per audio class, far apart so that classes differ clearly.
TONES = {"alpha": 500.0, "beta": 1500.0, "gamma": 4000.0}
#: Words typical of each text class; every text mixes a few of its class' words with filler.
WORDS = {
    "alpha": ["apple", "apricot", "avocado", "almond", "anise"],
    "beta": ["banana", "blueberry", "basil", "bean", "beet"],
    "gamma": ["grape", "guava", "garlic", "ginger", "gourd"],
}
FILLER = ["the", "a", "of", "and", "with", "fresh"]

# Options that keep every CLI training run tiny.
TINY_TRAIN = ["--epochs", "2", "--filters", "4", "--dense", "8", "--seed", "0", "--test-split", "0.25"]
TINY_IMAGE = [*TINY_TRAIN, "--image-size", "8,8"]
TINY_AUDIO = [*TINY_TRAIN, "--duration", "0.25", "--num-mels", "16", "--no-batch-norm"]
TINY_TEXT = [*TINY_TRAIN, "--level", "word", "--positions", "16", "--embedding-dim", "4", "--window-sizes", "2,3"]


# ---- writers (plain functions, so session fixtures and tests can both use them) --------------


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def class_image(label_index: int, rng: np.random.Generator, size=(10, 12)) -> np.ndarray:
    """A uint8 grayscale image: a bright band whose position depends on the class, plus noise."""
    image = rng.integers(0, 40, size=size, dtype=np.uint8)
    rows = size[0] // 3
    image[label_index * rows : (label_index + 1) * rows, :] = 220
    return image


def write_image_folder(root: Path, classes=CLASSES, per_class: int = PER_CLASS, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for index, label in enumerate(classes):
        for i in range(per_class):
            write_png(root / label / f"{label}_{i:02d}.png", class_image(index, rng))
    return root


def tone(frequency: float, duration: float = 0.25, sample_rate: int = SAMPLE_RATE, amplitude=0.5):
    t = np.arange(int(round(duration * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE, subtype=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, sample_rate, subtype=subtype)
    return path


def write_audio_folder(root: Path, classes=CLASSES, per_class: int = PER_CLASS, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for label in classes:
        for i in range(per_class):
            frequency = TONES.get(label, 1000.0) * (1 + 0.02 * i)
            samples = tone(frequency) + 0.01 * rng.standard_normal(int(0.25 * SAMPLE_RATE)).astype(np.float32)
            write_wav(root / label / f"{label}_{i:02d}.wav", samples)
    return root


def class_text(label: str, rng: np.random.Generator, words: int = 12) -> str:
    vocabulary = WORDS.get(label, FILLER)
    picks = [vocabulary[j] if rng.random() < 0.5 else FILLER[j % len(FILLER)] for j in rng.integers(0, 5, words)]
    return " ".join(picks) + "."


def write_text_folder(root: Path, classes=CLASSES, per_class: int = PER_CLASS, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for label in classes:
        for i in range(per_class):
            path = root / label / f"{label}_{i:02d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(class_text(label, rng), encoding="utf-8")
    return root


def write_text_csv(path: Path, classes=CLASSES, per_class: int = PER_CLASS, seed: int = 0) -> Path:
    """A `text,label` manifest with an extra column and texts holding commas, quotes, newlines."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        for label in classes:
            for i in range(per_class):
                text = class_text(label, rng)
                if i == 0:
                    text = f'{text}, with "quotes", commas\nand a second line'
                writer.writerow([f"{label}-{i}", text, label])
    return path


# ---- function-scoped fixtures ----------------------------------------------------------------


@pytest.fixture(autouse=True, scope="session")
def private_cache_folder(tmp_path_factory):
    """Runs cache preprocessed inputs under $XDG_CACHE_HOME: keep the tests' out of the user's."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """3 class folders x 12 grayscale 10x12 PNGs."""
    return write_image_folder(tmp_path / "images")


@pytest.fixture
def audio_folder(tmp_path) -> Path:
    """3 class folders x 12 mono 16 kHz WAV tones of 0.25 s."""
    return write_audio_folder(tmp_path / "audio")


@pytest.fixture
def text_folder(tmp_path) -> Path:
    """3 class folders x 12 short .txt files."""
    return write_text_folder(tmp_path / "texts")


@pytest.fixture
def text_csv(tmp_path) -> Path:
    """`id,text,label` manifest: 3 classes x 12 rows, one multi-line quoted text per class."""
    return write_text_csv(tmp_path / "texts.csv")


# ---- CLI helpers and session-scoped trained runs -------------------------------------------


def overlapping_texts(figure, texts) -> list[tuple[str, str]]:
    """Pairs of the visible, non-empty `texts` of `figure` whose drawn boxes overlap."""
    from itertools import combinations

    figure.draw_without_rendering()
    drawn = [(t.get_text(), t.get_window_extent()) for t in texts if t.get_visible() and t.get_text()]
    return [(a, b) for (a, box_a), (b, box_b) in combinations(drawn, 2) if box_a.overlaps(box_b)]


def capture_figures(monkeypatch) -> dict:
    """Make `pipelines.figures.save_figure` also keep each figure, by file name."""
    import pipelines.figures

    captured = {}
    original = pipelines.figures.save_figure

    def save(figure, path, *args, **kwargs):
        captured[Path(path).name] = figure
        return original(figure, path, *args, **kwargs)

    monkeypatch.setattr(pipelines.figures, "save_figure", save)
    return captured


def selected_tests_use(request, fixture: str) -> bool:
    """Whether a test of the module of `request` (a module-scoped fixture's) that this session
    runs uses `fixture`, directly or through other fixtures: for a fixture that starts background
    work as the module starts. Deselected tests (-k) are not in `session.items`; items of other
    kinds (--doctest-modules' doctests) have no `.module`, so they are told apart by their parent."""
    return any(
        fixture in item.fixturenames for item in request.session.items if item.getparent(pytest.Module) is request.node
    )


def make_cli_runner():
    """A CliRunner whose results hold standard error apart (`result.stderr`) and in
    `result.output` beside standard output, as Click 8.2 and later do. Click 8.1 (the Click of
    Typer 0.12) keeps it apart only with mix_stderr=False, and then leaves it out of `output`."""
    from typer.testing import CliRunner

    try:
        CliRunner(mix_stderr=False)
    except TypeError:  # Click 8.2 removed the argument (recent Typer carries its own Click)
        return CliRunner()
    from click.testing import Result

    class BothStreams(Result):
        @property
        def output(self) -> str:
            return self.stdout + self.stderr

    class Click81Runner(CliRunner):
        def __init__(self):
            super().__init__(mix_stderr=False)

        def invoke(self, *args, **kwargs):
            result = super().invoke(*args, **kwargs)
            result.__class__ = BothStreams
            return result

    return Click81Runner()


@pytest.fixture(scope="session")
def cli_runner():
    return make_cli_runner()


def invoke(runner, args: list[str]):
    """Run the CLI in-process; return the click Result."""
    import cli

    return runner.invoke(cli.app, [str(a) for a in args])


def describe_result(result) -> str:
    """Everything needed to debug a failed CLI assertion."""
    return f"exit={result.exit_code}\noutput:\n{result.output}\nexception: {result.exception!r}"


def assert_one_line_error(result, *fragments: str, exit_code: int = 1) -> str:
    """Exit code 1 (2: a usage error), one `Error:` line on stderr naming `fragments`, and no
    traceback anywhere."""
    assert result.exit_code == exit_code, describe_result(result)
    assert isinstance(result.exception, SystemExit), describe_result(result)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@dataclass(frozen=True)
class TrainedRun:
    modality: str
    data: Path
    run_dir: Path
    output: str


def _train(runner, tmp_path_factory, modality: str, data: Path, options: list[str]) -> TrainedRun:
    run_dir = tmp_path_factory.mktemp(f"run-{modality}") / "run"
    result = invoke(runner, ["train", "--modality", modality, "--data", data, "--out", run_dir, *options])
    assert result.exit_code == 0, describe_result(result)
    return TrainedRun(modality, data, run_dir, result.output)


@pytest.fixture(scope="session")
def image_run(cli_runner, tmp_path_factory) -> TrainedRun:
    data = write_image_folder(tmp_path_factory.mktemp("image-data") / "images")
    return _train(cli_runner, tmp_path_factory, "image", data, TINY_IMAGE)


@pytest.fixture(scope="session")
def audio_run(cli_runner, tmp_path_factory) -> TrainedRun:
    data = write_audio_folder(tmp_path_factory.mktemp("audio-data") / "audio")
    return _train(cli_runner, tmp_path_factory, "audio", data, TINY_AUDIO)


@pytest.fixture(scope="session")
def text_run(cli_runner, tmp_path_factory) -> TrainedRun:
    data = write_text_csv(tmp_path_factory.mktemp("text-data") / "texts.csv")
    return _train(cli_runner, tmp_path_factory, "text", data, TINY_TEXT)
