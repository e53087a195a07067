"""`inspect`: what a trained network does with one input, written as PNG figures and index.html.

For image and audio runs: the input as the network reads it, the first layer's filters, every
[Conv -> ReLU -> MaxPool] block's maps after ReLU and after pooling, and the class probabilities
("votes"). Text runs are handled by `pipelines.text_inspection`.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import figures
from pipelines.modality import Modality
from pipelines.prediction import encode_input, input_source
from pipelines.report_page import Section, write_page
from pipelines.run_dir import Run, check_output_folder
from preprocess import ConvpipeError

#: Labelled ticks on each axis of a spectrogram: every 0.1 s and every 5th mel band of 64.
AUDIO_TICKS = 16

@dataclass
class Inspection:
    out: Path
    files: list[Path]
    probabilities: dict[str, float]
    #: text runs: one row per inspected filter, with its best input window and vocabulary n-gram
    ngrams: list[dict[str, Any]] = field(default_factory=list)

    @property
    def predicted(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)


def output_name(value: str, literal_text: bool = False) -> str:
    """A folder name for one input: the file's stem and a checksum of its full path (so a/16.png
    and b/16.webp do not share a folder), or `text-<crc32>` for literal text (`--text`: even
    text that names a file)."""
    path = Path(value)
    try:
        is_file = not literal_text and path.is_file()
    except (OSError, ValueError):
        is_file = False
    if is_file:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:60] or "input"
        return f"{stem}-{_checksum(str(path.resolve()))}"
    return f"text-{_checksum(value)}"


def _checksum(value: str) -> str:
    return f"{zlib.crc32(value.encode('utf-8', 'surrogatepass')):08x}"


def check_channels(channels: int) -> int:
    if channels < 1:
        raise ConvpipeError(f"--channels must be at least 1, got {channels}.")
    return channels


def probability_section(out: Path, run: Run, probabilities: np.ndarray) -> Section:
    path = figures.bar_chart(
        out / "probabilities.png", run.labels, [float(p) for p in probabilities], "class probabilities", "probability"
    )
    best = int(np.argmax(probabilities))
    return Section(
        "Votes: class probabilities",
        f"The fully connected layers vote; the softmax turns the votes into probabilities. "
        f"Predicted: {run.labels[best]} ({probabilities[best]:.3f}).",
        path,
    )


def inspect(run_path: Path, value: str, out: Path | None = None, channels: int = 8, literal_text: bool = False) -> Inspection:
    """Write the figures and index.html for `value` (a file, or text for a text run; with
    `literal_text`, text whatever it looks like) to `out`."""
    check_channels(channels)
    run = Run.open(run_path)
    chosen = out is not None
    out = Path(out) if chosen else run.path / "inspect" / output_name(value, literal_text)
    check_output_folder(out, chosen)
    if run.config.modality is Modality.text:
        from pipelines.text_inspection import inspect_text

        sections, probabilities, ngrams = inspect_text(run, input_source(run, value, literal_text), out, channels)
    else:
        sections, probabilities = inspect_grid(run, encode_input(run, value, literal_text), out, channels)
        ngrams = []
    sections.append(probability_section(out, run, probabilities))
    page = write_page(
        out / "index.html",
        f"Inside {run.path.name}: {value if len(value) < 80 else value[:77] + '...'}",
        f"{run.config.modality.value} run {run.path}; the sections follow the network from input to output.",
        sections,
    )
    files = [s.image for s in sections if s.image is not None] + [page]
    if ngrams:
        files.append(out / "ngrams.csv")
    return Inspection(out, files, dict(zip(run.labels, map(float, probabilities))), ngrams)


# ---- image and audio: 2-D conv blocks -------------------------------------------------------


@dataclass
class Block:
    conv: Any
    relu: Any = None
    pool: Any = None


def conv_blocks(model) -> list[Block]:
    """The [Conv2D -> (BatchNorm) -> ReLU -> MaxPool2D] blocks of a convpipe model, in order."""
    import keras

    blocks: list[Block] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            blocks.append(Block(layer))
        elif blocks and isinstance(layer, keras.layers.ReLU) and blocks[-1].relu is None:
            blocks[-1].relu = layer
        elif blocks and isinstance(layer, keras.layers.MaxPooling2D) and blocks[-1].pool is None:
            blocks[-1].pool = layer
    if not blocks:
        raise ConvpipeError(f"{model.name} has no Conv2D layer to inspect.")
    return blocks


def audio_axes(run: Run, frames: int, bands: int) -> tuple[list[str], list[str]]:
    """Tick labels: seconds for the time frames, centre frequency (Hz) for the mel bands."""
    import librosa

    pre = run.preprocessor
    fmax = pre.fmax if pre.fmax is not None else pre.sample_rate / 2
    centres = librosa.mel_frequencies(n_mels=bands + 2, fmin=pre.fmin, fmax=fmax)[1:-1]
    times = [f"{i * pre.hop_length / pre.sample_rate:.2f}" for i in range(frames)]
    return times, [f"{hz:.0f}" for hz in centres]


def input_figure(run: Run, x: np.ndarray, out: Path) -> Section:
    if run.config.modality is Modality.audio:
        times, hertz = audio_axes(run, x.shape[0], x.shape[1])
        normalized = getattr(run.preprocessor, "normalization", "per_band") == "per_band"
        path = figures.heatmap(
            out / "input.png", x[..., 0].T,
            "log-mel spectrogram" + (" (normalized per band)" if normalized else ""),
            row_labels=hertz, column_labels=times, row_title="frequency (Hz, mel band centre)",
            column_title="time (s)", origin="lower", size=(10, 5), most=AUDIO_TICKS,
            value_title="standard deviations from the band's training mean" if normalized else "dB",
        )
        note = f"{x.shape[0]} time steps x {x.shape[1]} mel bands; low frequencies at the bottom."
    else:
        figure = figures.new_figure(4, 4)
        axes = figure.add_subplot()
        low, high = (-1.0, 1.0) if getattr(run.preprocessor, "value_range", "0..1") == "-1..1" else (0.0, 1.0)
        figures.show_input(axes, x, (low, high))
        axes.set_title(f"{x.shape[0]} x {x.shape[1]} x {x.shape[2]} pixels, scaled to {low:g}..{high:g}", fontsize=8)
        path = figures.save_figure(figure, out / "input.png")
        note = "The picture after decoding, resizing and scaling: exactly what the first layer reads."
    return Section("Input as the network sees it", note, path)


def filter_figure(kernel: np.ndarray, out: Path, channels: int, audio: bool = False) -> Path:
    """First-layer kernels `(k, k, in, out)`: colour for RGB inputs, otherwise one plane each
    (for audio with time along x and frequency up, as in the input figure)."""
    count = min(channels, kernel.shape[-1])
    columns = min(count, 8)
    rows = -(-count // columns)
    figure = figures.new_figure(1.5 * columns, 1.5 * rows + 0.4)
    figure.suptitle(f"first-layer filters ({kernel.shape[0]}x{kernel.shape[1]}), first {count} of {kernel.shape[-1]}")
    for index in range(count):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.set_axis_off()
        weights = kernel[..., index]
        if weights.shape[-1] == 3:
            low, high = weights.min(), weights.max()
            axes.imshow((weights - low) / max(high - low, 1e-12), interpolation="nearest")
        else:
            plane = weights.mean(axis=-1)
            if audio:
                plane = np.flip(plane.T, axis=0)
            limit = float(np.abs(plane).max()) or 1.0
            axes.imshow(plane, cmap="coolwarm", vmin=-limit, vmax=limit, interpolation="nearest")
        axes.set_title(f"#{index}", fontsize=7)
    return figures.save_figure(figure, out / "filters.png")


def inspect_grid(run: Run, x: np.ndarray, out: Path, channels: int) -> tuple[list[Section], np.ndarray]:
    import keras

    model = run.model
    blocks = conv_blocks(model)
    probes = [layer for block in blocks for layer in (block.relu, block.pool) if layer is not None]
    probe = keras.Model(model.input, [layer.output for layer in probes] + [model.output])
    results = probe(x[None], training=False)
    # float32: under mixed precision the layers give bfloat16, which matplotlib cannot plot
    outputs = {layer.name: np.asarray(value, dtype=np.float32)[0] for layer, value in zip(probes, results[:-1])}
    probabilities = np.asarray(results[-1])[0]
    audio = run.config.modality is Modality.audio

    sections = [input_figure(run, x, out)]
    sections.append(
        Section(
            "First layer's filters",
            "Each filter is a small pattern; its feature map is high where the input looks like it "
            "(blue: negative weights, red: positive).",
            filter_figure(np.asarray(blocks[0].conv.get_weights()[0]), out, channels, audio),
        )
    )
    for depth, block in enumerate(blocks, start=1):
        for stage, layer in (("relu", block.relu), ("pool", block.pool)):
            if layer is None:
                continue
            maps = outputs[layer.name]
            shown = min(channels, maps.shape[-1])
            size = f"{maps.shape[0]}x{maps.shape[1]}" + (" (time x frequency)" if audio else "")
            if audio:  # time along x, frequency up, as in the input figure
                maps = np.flip(np.swapaxes(maps, 0, 1), axis=0)
            path = figures.map_grid(
                out / f"block{depth}_{stage}.png", maps[..., :shown],
                f"block {depth} ({block.conv.name}) after {'ReLU' if stage == 'relu' else 'max pooling'}: "
                f"{size}, first {shown} of {maps.shape[-1]} channels",
            )
            note = (
                "Convolution then ReLU: where each filter matched (negative responses set to 0)."
                if stage == "relu"
                else f"Max pooling ({layer.name}) keeps each window's best match: a smaller map."
            )
            sections.append(Section(f"Block {depth}: {'feature maps after ReLU' if stage == 'relu' else 'after pooling'}", note, path))
    return sections, probabilities
