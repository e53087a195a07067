"""The report's figures as PNG bytes: confusion matrix, training curves, reliability diagram.

matplotlib is imported inside the functions (never when the CLI starts) and used through its
object API with the Agg canvas: no pyplot state, no window, no display needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.figures import render_png

LABEL_CHARACTERS = 18  # longer class names are shortened on axes
ANNOTATE_UP_TO = 50  # classes; beyond that the cells are too small for numbers


def _figure(width: float, height: float, layout: str | None = None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    # No "Software" metadata: the PNG carries nothing but the picture.
    return render_png(figure, dpi=100, metadata={"Software": None})


def short_labels(labels: list[str], limit: int = LABEL_CHARACTERS) -> list[str]:
    """Class names for an axis: longer ones keep their start and end around an ellipsis
    ("very_long…umber_07"), since names often differ only at the end; names that still
    coincide are told apart by their class index."""
    tail = (limit - 1) // 2
    shortened = [label if len(label) <= limit else label[: limit - 1 - tail] + "…" + label[-tail:] for label in labels]
    if len(set(shortened)) < len(set(labels)):
        shortened = [f"{index}: {name}" if shortened.count(name) > 1 else name for index, name in enumerate(shortened)]
    return shortened


def confusion_matrix_png(matrix: list[list[int]], labels: list[str]) -> bytes:
    """Raw counts and row-normalized shares (each true class sums to 1) side by side.

    Axes are placed by hand, in inches, rather than by a layout engine: that draws the figure
    once instead of twice, which matters with a thousand cell labels (40 classes).
    """
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(labels)
    names = short_labels(labels)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=np.float64), where=rows > 0)
    side = float(np.clip(0.3 * n + 1.5, 2.5, 12.0))  # inches per square panel
    tick_size = float(np.clip(side * 72 / max(n, 1) * 0.55, 6, 10))
    cell_size = float(np.clip(side * 72 / max(n, 1) * 0.3, 4.5, 11))
    label_inches = max(len(name) for name in names) * tick_size * 0.6 / 72
    rotate = label_inches * n > side * 0.9  # x labels that would overlap are turned upright
    left = label_inches + 0.55
    bottom = (label_inches if rotate else tick_size / 72) + 0.6
    colorbar = 0.9
    width, height = 2 * (left + side + colorbar), bottom + side + 0.45
    figure = _figure(width, height)
    for number, (values, title, text, annotate) in enumerate(
        (
            (counts, "Counts", lambda v: f"{v:d}", n <= ANNOTATE_UP_TO),
            # shares repeat the counts' story; on large matrices they stay colours only
            (shares, "Share of each true class", lambda v: "1" if v >= 1 else f"{v:.2f}".lstrip("0"), n <= 25),
        )
    ):
        x0 = number * (left + side + colorbar) + left
        ax = figure.add_axes([x0 / width, bottom / height, side / width, side / height])
        top = values.max() if values.size and values.max() > 0 else 1
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=top, interpolation="nearest", aspect="auto")
        bar = figure.add_axes([(x0 + side + 0.12) / width, bottom / height, 0.15 / width, side / height])
        figure.colorbar(image, cax=bar)
        ax.set_title(title)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_xticks(range(n), names, rotation=90 if rotate else 0, fontsize=tick_size)
        ax.set_yticks(range(n), names, fontsize=tick_size)
        if annotate:
            for t, p in zip(*np.nonzero(counts) if n > 10 else np.indices((n, n)).reshape(2, -1)):
                # zeros stay blank on larger matrices, so the mistakes stand out
                ax.text(p, t, text(values[t, p]), ha="center", va="center", fontsize=cell_size,
                        color="white" if values[t, p] > 0.6 * top else "black")
    return _png(figure)


def training_curves_png(history: dict[str, list[float]], best_epoch: int | None = None) -> bytes:
    """Loss and accuracy per epoch, training against validation; one epoch shows as points."""
    from matplotlib.ticker import MaxNLocator

    figure = _figure(10, 4, layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, metric, title in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        plotted = False
        epochs_run = max((len(v) for v in history.values()), default=1)
        for key, name, style in ((metric, "training", "-o"), (f"val_{metric}", "validation", "--s")):
            values = history.get(key)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, label=name, markersize=4)
                plotted = True
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1, label=f"best epoch ({best_epoch})")
        if not plotted:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, epochs_run + 0.5)  # one epoch still gets a sensible axis
        if epochs_run <= 20:
            ax.set_xticks(range(1, epochs_run + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    return _png(figure)


def reliability_png(calibration: dict[str, Any]) -> bytes:
    """Accuracy against confidence per bin (a calibrated model follows the diagonal), and how
    many predictions fall in each bin."""
    bins = calibration["bins"]
    lowers = np.array([b["lower"] for b in bins])
    widths = np.array([b["upper"] - b["lower"] for b in bins])
    centres = lowers + widths / 2
    accuracy = np.array([np.nan if b["accuracy"] is None else b["accuracy"] for b in bins])
    confidence = np.array([np.nan if b["confidence"] is None else b["confidence"] for b in bins])
    counts = np.array([b["count"] for b in bins])
    figure = _figure(5.5, 6.5, layout="constrained")
    top, bottom = figure.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    filled = counts > 0
    top.bar(lowers[filled], accuracy[filled], width=widths[filled], align="edge", color="#4c72b0",
            edgecolor="white", label="accuracy")
    # the gap of each bin, from its accuracy to its mean confidence
    top.vlines(centres[filled], accuracy[filled], confidence[filled], color="#c44e52", linewidth=2)
    top.plot(centres[filled], confidence[filled], "o", color="#c44e52", markersize=4, label="mean confidence")
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability (ECE {calibration['ece']:.3f}, {calibration['num_bins']} bins)")
    top.legend(fontsize=8, loc="upper left")
    bars = bottom.bar(centres, counts, width=widths * 0.9, color="#55a868")
    # The number over each bar: next to a bin of 160 inputs, a bin of 1 is no visible bar, yet its
    # accuracy bar above is drawn full height.
    bottom.bar_label(bars, labels=[f"{c:,}" if c else "" for c in counts], fontsize=7, padding=1)
    bottom.set_ylim(0, max(counts.max(initial=0), 1) * 1.25)
    bottom.set_xlabel("confidence of the predicted class")
    bottom.set_ylabel("inputs")
    return _png(figure)
