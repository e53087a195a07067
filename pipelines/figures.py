"""Small matplotlib figures for looking inside a network: map grids, heatmaps, bar charts.

Figures are built with `matplotlib.figure.Figure`, never pyplot, so no global figure state is
kept and no display is needed; they are written through `preprocess.atomic`.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from preprocess import atomic

#: Most labelled ticks an axis gets; beyond that, an even selection is labelled.
MAX_TICKS = 40
#: A heatmap grows 0.22 inch per row or column up to 24 inches, room for a 7-point label each
#: up to this many.
HEATMAP_TICKS = 100


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    # No layout engine: constrained layout tripled the rendering time; `save_figure` trims instead.
    return Figure(figsize=(max(width, 2.0), max(height, 1.5)))


#: Fonts with the scripts DejaVu Sans lacks (CJK above all), used glyph by glyph after it where
#: installed (matplotlib 3.6+ falls back along a list of families).
FALLBACK_FONTS = (
    "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans",
    "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "Noto Sans Arabic", "Noto Sans Hebrew",
    "Noto Sans Devanagari", "Noto Sans Thai", "Arial Unicode MS", "Microsoft YaHei", "Yu Gothic",
    "Hiragino Sans", "Apple SD Gothic Neo", "Malgun Gothic",
)


@functools.cache
def font_families() -> list[str]:
    """DejaVu Sans (matplotlib's own), then the installed `FALLBACK_FONTS`."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", *(name for name in FALLBACK_FONTS if name in installed)]


def render_png(figure, **options) -> bytes:
    """`figure` as PNG bytes, every text drawn literally.

    Labels, texts and file names are the user's: matplotlib would read "$5-$9" as maths and fail
    on "$a^$". Texts made so far are switched off one by one; tick labels made while drawing take
    the setting from the context. Characters DejaVu Sans lacks are drawn from an installed
    fallback font (`FALLBACK_FONTS`); those no installed font has (emoji, CJK on a machine without
    CJK fonts) are drawn as boxes, silently.
    """
    import warnings

    import matplotlib
    from matplotlib.text import Text

    # Only texts beyond ASCII get the fallback fonts: a font list makes each text's layout slower
    # (a 24-class confusion matrix took 2.9 s instead of 1.5 s to draw).
    families, wide = font_families(), False
    for text in figure.findobj(Text):
        text.set_parse_math(False)
        # Text from a command line that is not UTF-8 holds lone surrogates, which the renderer
        # refuses: shown as \udcNN escapes, as file names are.
        value = text.get_text()
        if not value.isascii():
            text.set_text(value.encode("utf-8", "backslashreplace").decode("utf-8"))
            text.set_fontfamily(families)
            wide = True
    buffer = io.BytesIO()
    # matplotlib logs "Failed to find font weight normal" for fallback fonts that only come in
    # other weights (WenQuanYi: 500), and uses them anyway.
    font_log = logging.getLogger("matplotlib.font_manager")
    level = font_log.level
    font_log.setLevel(logging.ERROR)
    try:
        settings = {"text.parse_math": False, **({"font.family": families} if wide else {})}
        with matplotlib.rc_context(settings), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Glyph .* missing from font")
            figure.savefig(buffer, format="png", **options)
    finally:
        font_log.setLevel(level)
    return buffer.getvalue()


def save_figure(figure, path: Path, dpi: int = 100, trim: bool = True) -> Path:
    """Render `figure` as PNG and write it atomically.

    `trim` fits the canvas to what was drawn (long tick labels stay visible); it costs a second
    rendering pass, so grids of plain panels skip it.
    """
    atomic.write_bytes(path, render_png(figure, dpi=dpi, bbox_inches="tight" if trim else None))
    return path


def show_input(axes, image: np.ndarray, value_range: tuple[float, float] | None = None) -> None:
    """An (H, W, C) array as a picture: grayscale for one channel, colour for three."""
    if image.ndim == 3 and image.shape[-1] == 3:
        low, high = value_range or (float(image.min()), float(image.max()))
        axes.imshow(np.clip((image - low) / max(high - low, 1e-12), 0, 1), interpolation="nearest")
    else:
        plane = image[..., 0] if image.ndim == 3 else image
        low, high = value_range or (None, None)
        axes.imshow(plane, cmap="gray", vmin=low, vmax=high, interpolation="nearest")


def map_grid(path: Path, maps: np.ndarray, title: str, *, columns: int = 8) -> Path:
    """One panel per channel of an `(H, W, channels)` stack, each with its own colour scale."""
    count = maps.shape[-1]
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    figure = new_figure(1.6 * columns, 1.6 * rows + 0.4)
    figure.suptitle(title)
    for index in range(rows * columns):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.set_axis_off()
        if index < count:
            axes.imshow(maps[..., index], cmap="viridis", interpolation="nearest")
            axes.set_title(f"#{index}\nmax {maps[..., index].max():.2f}", fontsize=7)
    return save_figure(figure, path, trim=False)


def heatmap(
    path: Path,
    matrix: np.ndarray,
    title: str,
    *,
    row_labels: Sequence[str] | None = None,
    column_labels: Sequence[str] | None = None,
    row_title: str = "",
    column_title: str = "",
    colormap: str = "viridis",
    centered: bool = False,
    origin: str = "upper",
    size: tuple[float, float] | None = None,
    most: int = HEATMAP_TICKS,
    value_title: str = "",
) -> Path:
    """A labelled 2-D matrix with a colour bar; `centered` puts 0 in the middle of the scale.

    `origin="lower"` puts row 0 at the bottom (frequency axes). By default the figure grows with
    the matrix, room for a label per row and column; `size` (inches) fixes it, for continuous
    axes such as time and frequency, with at most `most` labelled ticks on each.
    `value_title` names the colour bar's unit.
    """
    rows, columns = matrix.shape
    width, height = size or (min(2.5 + 0.22 * columns, 24), min(1.8 + 0.22 * rows, 24))
    figure = new_figure(width, height)
    axes = figure.add_subplot()
    limit = float(np.abs(matrix).max()) or 1.0
    image = axes.imshow(
        matrix,
        cmap="coolwarm" if centered else colormap,
        vmin=-limit if centered else None,
        vmax=limit if centered else None,
        aspect="auto",
        interpolation="nearest",
        origin=origin,
    )
    figure.colorbar(image, ax=axes, shrink=0.8, label=value_title)
    axes.set_title(title, fontsize=9)
    axes.set_xlabel(column_title)
    axes.set_ylabel(row_title)
    if column_labels is not None:
        shown = [column_labels[i] for i in tick_positions(len(column_labels), most)]
        rotation = 90 if crowded(shown, width - 2.0) else 0  # about 2 inches go to the labels and colour bar
        set_ticks(axes.set_xticks, column_labels, rotation=rotation, most=most)
    if row_labels is not None:
        set_ticks(axes.set_yticks, row_labels, most=most)
    return save_figure(figure, path)


def tick_positions(count: int, most: int = MAX_TICKS) -> list[int]:
    """Every position when there are at most `most`; else every 2nd, 5th, 10th, 20th, ...
    (the smallest such step that labels at most `most`), so the labels are evenly spaced."""
    if count <= most:
        return list(range(count))
    step = 1
    while -(-count // step) > most:
        step = _next_step(step)
    return list(range(0, count, step))


def _next_step(step: int) -> int:
    """1, 2, 5, 10, 20, 50, 100, ..."""
    digits = str(step)
    return step * 5 // 2 if digits[0] == "2" else step * 2


def crowded(labels: Sequence[str], inches: float, fontsize: float = 7) -> bool:
    """Whether `labels` written side by side at `fontsize` points need more than `inches`: then
    they are turned upright."""
    longest = max((len(label) for label in labels), default=0)
    return len(labels) * (longest + 1) * fontsize * 0.6 / 72 > inches


def set_ticks(setter, labels: Sequence[str], rotation: int = 0, most: int = MAX_TICKS) -> None:
    """Label at most `most` evenly spaced positions (every one when there are few)."""
    positions = tick_positions(len(labels), most)
    setter(positions, [labels[i] for i in positions], fontsize=7, rotation=rotation)


def bar_chart(path: Path, labels: Sequence[str], values: Sequence[float], title: str, value_label: str) -> Path:
    """Horizontal bars, one per label, in the given order; the largest is highlighted."""
    figure = new_figure(5.5, 0.8 + 0.3 * len(labels))
    axes = figure.add_subplot()
    best = int(np.argmax(values)) if len(values) else -1
    colors = ["tab:orange" if i == best else "tab:blue" for i in range(len(values))]
    axes.barh(range(len(values)), values, color=colors)
    axes.set_yticks(range(len(values)), list(labels), fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel(value_label)
    axes.set_title(title, fontsize=9)
    for position, value in enumerate(values):
        axes.text(value, position, f" {value:.3f}", va="center", fontsize=7)
    # Room right of the longest bar for its value, which was written across the frame.
    axes.set_xlim(0, 1.15 * max(max(values, default=0.0), 1e-12))
    return save_figure(figure, path)
