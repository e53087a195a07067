"""`inspect` for text runs: the position x vocabulary matrix, full-height filters and the n-grams
that excite them.

A full-height window of width w over the one-hot matrix is w kernel rows per filter, one per
offset, each as long as the vocabulary. For the factorized model the kernel is the product of
the token embedding and the Conv1D kernel; for the full model it is the per-offset tables of
`FullHeightConv`. Because a window's response is a sum over offsets, the vocabulary n-gram
that excites a filter most is found exactly by taking the best token at each offset.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import figures
from pipelines.prediction import warn_of_unknown_texts
from pipelines.report_page import Section
from pipelines.run_dir import Run
from preprocess import ConvpipeError, InputError, atomic
from preprocess.text import RESERVED

#: Positions drawn in the input figure; longer texts show their beginning.
SHOWN_POSITIONS = 64


@dataclass
class Branch:
    """One window width: its convolution, ReLU and pooling layers."""

    width: int
    conv: Any
    relu: Any
    pools: list[Any] = field(default_factory=list)


def text_branches(model) -> list[Branch]:
    import keras

    from models.layers import FullHeightConv

    branches = []
    names = {layer.name for layer in model.layers}
    for layer in model.layers:
        if isinstance(layer, FullHeightConv):
            width = layer.window_size
        elif isinstance(layer, keras.layers.Conv1D):
            width = layer.kernel_size[0]
        else:
            continue
        pools = [model.get_layer(f"{kind}_pool{width}") for kind in ("max", "average") if f"{kind}_pool{width}" in names]
        relu = model.get_layer(f"relu{width}") if f"relu{width}" in names else None
        if relu is None:
            raise ConvpipeError(f"{model.name}: no ReLU after window layer {layer.name}; not a convpipe text model.")
        branches.append(Branch(width, layer, relu, pools))
    if not branches:
        raise ConvpipeError(f"{model.name} has no full-height window layer to inspect.")
    return branches


def effective_kernel(model, branch: Branch, filters: int) -> tuple[np.ndarray, np.ndarray]:
    """`(width, num_ids, filters)` full-height kernel of the first `filters` filters, and biases."""
    from models.layers import FullHeightConv

    weights = [np.asarray(w) for w in branch.conv.get_weights()]
    if isinstance(branch.conv, FullHeightConv):  # one table per offset, then the bias
        return np.stack([table[:, :filters] for table in weights[:-1]]), weights[-1][:filters]
    kernel, bias = weights  # Conv1D (width, dim, filters) after TokenEmbedding (num_ids, dim)
    embedding = np.asarray(model.get_layer("embedding").get_weights()[0])
    return np.einsum("vd,wdf->wvf", embedding, kernel[..., :filters]), bias[:filters]


def token_label(token: str) -> str:
    """A token as a figure labels it: a space (character level) as a visible ␣."""
    return "␣" if token == " " else token


def window_label(position: int, text: str, joiner: str) -> str:
    """A window of the input as a figure labels it: characters with each space as a visible ␣
    ("10: ␣ev", not "10:  ev"); words joined by spaces as they are."""
    return f"{position}: {text.replace(' ', '␣') if joiner == '' else text}"


def read_tokens(run: Run, source: Any, action: str) -> tuple[list, np.ndarray, int]:
    """The tokens the model reads (cut to its positions), their encoded ids and their count."""
    pre = run.preprocessor
    try:
        tokens = pre.read(source)
    except InputError as error:
        raise ConvpipeError(f"Cannot use input {error.source}: {error.reason}") from None
    used = min(len(tokens), pre.positions_)
    if used == 0:
        raise ConvpipeError(f"Nothing to {action}: the text has no tokens.")
    ids = pre.encode(tokens)
    warn_of_unknown_texts(run, [str(source)], ids[None])  # as predict does
    return tokens[:used], ids, used


def token_vocabulary(pre: Any) -> list[str]:
    """Every token of a fitted text preprocessor, by id: the reserved ones, then its vocabulary."""
    return list(RESERVED) + list(pre.vocabulary_)


def tokens_present(pre: Any, ids: np.ndarray, count: int) -> tuple[np.ndarray, list[int], list[str]]:
    """The one-hot matrix of the first `count` positions of encoded `ids`, drawn over the
    distinct tokens present only (in order of first appearance): a (count, tokens) bool array,
    the token ids of its columns and their labels."""
    token_ids = (ids[:, 0] if ids.ndim == 2 else ids)[:count]
    vocabulary = token_vocabulary(pre)
    columns = list(dict.fromkeys(int(i) for i in token_ids))
    return token_ids[:, None] == np.array(columns)[None, :], columns, [token_label(vocabulary[i]) for i in columns]


def inspect_text(run: Run, source: Any, out: Path, channels: int) -> tuple[list[Section], np.ndarray, list[dict]]:
    import keras

    pre = run.preprocessor
    tokens, ids, used = read_tokens(run, source, "inspect")
    joiner = " " if pre.level == "word" else ""
    vocabulary = token_vocabulary(pre)
    model = run.model
    branches = text_branches(model)
    probes = [layer for b in branches for layer in (b.relu, *b.pools)]
    results = keras.Model(model.input, [layer.output for layer in probes] + [model.output])(ids[None], training=False)
    # float32: under mixed precision the layers give bfloat16, which matplotlib cannot plot
    outputs = {layer.name: np.asarray(value, dtype=np.float32)[0] for layer, value in zip(probes, results[:-1])}
    probabilities = np.asarray(results[-1])[0]

    # Columns of the matrix: the distinct tokens present, in order of first appearance.
    shown = min(used, SHOWN_POSITIONS)
    present, columns, column_labels = tokens_present(pre, ids, shown)
    matrix = present.astype(np.float32)
    ngram_note = " (hashed character n-gram columns not drawn)" if pre.ngram_sizes else ""
    sections = [
        Section(
            "Input as the network sees it: position x vocabulary matrix",
            f"{used} tokens over {pre.positions_} positions; of the {pre.num_ids:,} vocabulary columns, only "
            f"the {len(columns)} tokens present are drawn{ngram_note}. '<oov>' marks a token the training "
            "text never had.",
            figures.heatmap(
                out / "input.png", matrix,
                f"one-hot matrix, first {shown} positions x {len(columns)} tokens present{ngram_note}",
                row_labels=[f"{p}: {token_label(t)}" for p, t in enumerate(tokens[:shown])],
                column_labels=column_labels, row_title="position", column_title="vocabulary (tokens present)",
                colormap="Greys",
            ),
        )
    ]
    rows: list[dict[str, Any]] = []
    for branch in branches:
        width = branch.width
        relu = outputs[branch.relu.name]
        count = min(channels, relu.shape[-1])
        kernel, bias = effective_kernel(model, branch, count)
        sections.append(
            Section(
                f"Width {width}: learned full-height filters (first {count})",
                f"Each filter has {width} rows (one per offset in the window) spanning the whole vocabulary; "
                "drawn here for the tokens present only (blue: negative weights, red: positive; one scale for all).",
                filter_grid(out / f"window{width}_filters.png", kernel[:, columns, :], column_labels, width),
            )
        )
        starts = max(1, used - width + 1)  # windows that begin on a real token
        window_texts = [joiner.join(tokens[p : p + width]) for p in range(starts)]
        sections.append(
            Section(
                f"Width {width}: feature maps after ReLU",
                "One row per window position, one column per filter: how strongly each window matches.",
                figures.heatmap(
                    out / f"window{width}_relu.png", relu[:starts, :count],
                    f"windows of {width} x first {count} of {relu.shape[-1]} filters, after ReLU",
                    row_labels=[window_label(p, t, joiner) for p, t in enumerate(window_texts)],
                    column_labels=[f"#{f}" for f in range(count)], row_title="window", column_title="filter",
                ),
            )
        )
        if branch.pools:
            pooled = np.stack([outputs[layer.name][:count] for layer in branch.pools])
            sections.append(
                Section(
                    f"Width {width}: after pooling over positions",
                    "Max pooling keeps each filter's best match anywhere in the text; average pooling how much "
                    "of the text matched.",
                    figures.heatmap(
                        out / f"window{width}_pool.png", pooled, f"pooled responses, first {count} filters",
                        row_labels=[layer.name for layer in branch.pools],
                        column_labels=[f"#{f}" for f in range(count)], column_title="filter",
                    ),
                )
            )
        branch_rows = ngram_rows(relu[:starts], window_texts, kernel, bias, vocabulary, width, joiner)
        rows += branch_rows
        sections.append(
            Section(
                f"Width {width}: n-grams that most activate each filter",
                "Input: the window of this text with the highest response (none where the filter did not fire). Vocabulary: the n-gram of "
                "training tokens with the highest possible response (best token at each offset), with its "
                f"response before ReLU{'; hashed n-gram columns are not searched' if pre.ngram_sizes else ''}.",
                table=branch_rows,
            )
        )
    write_ngram_csv(out / "ngrams.csv", rows)
    return sections, probabilities, rows


def ngram_rows(
    relu: np.ndarray, window_texts: list[str], kernel: np.ndarray, bias: np.ndarray,
    vocabulary: list[str], width: int, joiner: str,
) -> list[dict[str, Any]]:
    """One row per filter: its best window of the input and its best n-gram of the vocabulary."""
    first, last = len(RESERVED), len(vocabulary)  # ordinary tokens only: no padding, no <oov>
    rows = []
    for f in range(kernel.shape[-1]):
        position = int(np.argmax(relu[:, f]))
        fired = relu[position, f] > 0  # a silent filter's argmax is position 0, not a match
        best = [first + int(np.argmax(kernel[k, first:last, f])) for k in range(width)] if last > first else []
        score = float(sum(kernel[k, i, f] for k, i in enumerate(best)) + bias[f])
        rows.append(
            {
                "window": width,
                "filter": f,
                "input n-gram": window_texts[position] if fired else "",
                "position": position if fired else None,
                "activation": round(float(relu[position, f]), 4),
                "vocabulary n-gram": joiner.join(vocabulary[i] for i in best),
                "vocabulary score": round(score, 4),
            }
        )
    return rows


def write_ngram_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(path, buffer.getvalue())


def filter_grid(path: Path, kernel: np.ndarray, column_labels: list[str], width: int) -> Path:
    """One small heatmap per filter: offsets x tokens present."""
    count = kernel.shape[-1]
    columns = min(count, 4)
    rows = -(-count // columns)
    shown = [column_labels[i] for i in figures.tick_positions(len(column_labels))]
    rotation = 90 if figures.crowded(shown, 2.6) else 0  # about 2.6 of a panel's 3.5 inches
    # Below each row of panels: its tick labels (upright words are as tall as they are long) and
    # the next row's titles; the rows were a fixed distance apart, and long labels ran into them.
    labels = max((len(label) for label in shown), default=1) * 7 * 0.6 / 72 if rotation else 0.15
    panel, gap = 0.3 + 0.25 * width, labels + 0.45
    height = rows * panel + (rows - 1) * gap + 0.6
    figure = figures.new_figure(min(3.5 * columns, 24), height)
    figure.subplots_adjust(top=1 - 0.3 / height, bottom=0.3 / height, hspace=gap / panel)
    limit = float(np.abs(kernel).max()) or 1.0
    for f in range(count):
        axes = figure.add_subplot(rows, columns, f + 1)
        axes.imshow(kernel[..., f], cmap="coolwarm", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
        axes.set_title(f"filter #{f}", fontsize=7)
        axes.set_yticks(range(width), [f"+{k}" for k in range(width)], fontsize=6)
        figures.set_ticks(axes.set_xticks, column_labels, rotation=rotation)
    return figures.save_figure(figure, path)
