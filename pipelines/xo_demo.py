"""The X-versus-O walkthrough as numbers: filtering, ReLU, max pooling, then a tiny trained CNN.

Pixels are +1 (ink) and -1 (background). A 3x3 feature is compared with every 3x3 window of
the picture: multiply pixel by pixel, add, divide by 9. A perfect match gives 9/9 = 1.00; each
mismatching pixel turns a +1 product into -1, so a window with two mismatches gives
(7 - 2) / 9 = 0.555..., shown truncated as 0.55 (the classic example's figure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SIZE = 9
CLASSES = ("O", "X")


def classic_x() -> np.ndarray:
    """The 9x9 X: two diagonals from (1, 1) to (7, 7), a one-pixel background border."""
    image = -np.ones((SIZE, SIZE), dtype=np.float32)
    for i in range(1, SIZE - 1):
        image[i, i] = image[i, SIZE - 1 - i] = 1.0
    return image


def classic_o() -> np.ndarray:
    """The 9x9 O: a ring of 16 ink pixels inside the same border."""
    image = -np.ones((SIZE, SIZE), dtype=np.float32)
    for c in (3, 4, 5):
        image[1, c] = image[7, c] = image[c, 1] = image[c, 7] = 1.0
    for r, c in ((2, 2), (2, 6), (6, 2), (6, 6)):
        image[r, c] = 1.0
    return image


def classic_features() -> dict[str, np.ndarray]:
    """Three 3x3 features: the two diagonal strokes of an X and its crossing."""
    falling = np.where(np.eye(3, dtype=bool), 1.0, -1.0).astype(np.float32)
    rising = falling[:, ::-1].copy()
    crossing = np.maximum(falling, rising)
    return {"diagonal \\": falling, "diagonal /": rising, "crossing X": crossing}


def filter_map(image: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Mean of the elementwise products of `feature` with every window of `image` (valid).

    `image` (H, W) and `feature` (h, w) -> (H - h + 1, W - w + 1).
    """
    windows = np.lib.stride_tricks.sliding_window_view(image, feature.shape)
    return (windows * feature).sum(axis=(-2, -1)) / feature.size


def relu(values: np.ndarray) -> np.ndarray:
    return np.maximum(values, 0.0)


def max_pool(values: np.ndarray, window: int = 2, stride: int = 2) -> np.ndarray:
    """Max over `window` x `window` squares every `stride` pixels, keeping the edges.

    A window that hangs over the edge takes the maximum of the pixels it covers, so a 7x7 map
    becomes 4x4 with window 2 and stride 2 (nothing at the border is dropped).
    """
    def starts(length: int) -> list[int]:
        count = math.ceil(max(length - window, 0) / stride) + 1
        return [i * stride for i in range(count)]

    rows, cols = starts(values.shape[0]), starts(values.shape[1])
    return np.array(
        [[values[r : r + window, c : c + window].max() for c in cols] for r in rows], dtype=values.dtype
    )


def truncate(value: float, decimals: int = 2) -> str:
    """`value` cut (not rounded) to `decimals` places: 5/9 -> '0.55', 7/9 -> '0.77', -1/9 -> '-0.11'.

    A tiny tolerance keeps exact values such as 1.00 from falling to 0.99 through float error.
    """
    scale = 10**decimals
    value = float(value)
    cut = math.trunc(value * scale + math.copysign(1e-6, value)) / scale
    return f"{cut:.{decimals}f}" if cut != 0 else f"{0:.{decimals}f}"


def format_grid(values: np.ndarray, decimals: int = 2) -> list[str]:
    """Rows of truncated numbers, right-aligned in columns."""
    cells = [[truncate(float(v), decimals) for v in row] for row in values]
    width = max(len(cell) for row in cells for cell in row)
    return [" ".join(cell.rjust(width) for cell in row) for row in cells]


@dataclass
class Walkthrough:
    """Every intermediate array of the classic example, per picture and feature."""

    images: dict[str, np.ndarray]
    features: dict[str, np.ndarray]
    filtered: dict[tuple[str, str], np.ndarray]
    rectified: dict[tuple[str, str], np.ndarray]
    pooled: dict[tuple[str, str], np.ndarray]


def walkthrough(window: int = 2, stride: int = 2) -> Walkthrough:
    images = {"X": classic_x(), "O": classic_o()}
    features = classic_features()
    filtered, rectified, pooled = {}, {}, {}
    for image_name, image in images.items():
        for feature_name, feature in features.items():
            key = (image_name, feature_name)
            filtered[key] = filter_map(image, feature)
            rectified[key] = relu(filtered[key])
            pooled[key] = max_pool(rectified[key], window, stride)
    return Walkthrough(images, features, filtered, rectified, pooled)


# ---- generated X's and O's, and a tiny CNN that learns them ---------------------------------


def draw_shape(kind: str, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A randomly shifted, scaled, rotated and thickened X or O in +-1 pixels.

    The shape is drawn in continuous coordinates (pixel centres within half the stroke width of
    the ideal strokes are ink), so rotation and thickness change which pixels light up.
    """
    centre = (size - 1) / 2 + rng.uniform(-1.0, 1.0, size=2)
    radius = rng.uniform(0.28, 0.42) * size
    angle = rng.uniform(-0.35, 0.35)
    half_width = rng.uniform(0.45, 0.9)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    y, x = rows - centre[0], cols - centre[1]
    if kind == "O":
        distance = np.abs(np.hypot(y, x) - radius)
    else:
        u = x * math.cos(angle) + y * math.sin(angle)
        v = -x * math.sin(angle) + y * math.cos(angle)
        along = np.minimum(np.abs(u + v), np.abs(u - v)) / math.sqrt(2)  # distance to either stroke
        reach = np.maximum(np.abs(u), np.abs(v)) <= radius / math.sqrt(2) * 1.15
        distance = np.where(reach, along, np.inf)
    return np.where(distance <= half_width, 1.0, -1.0).astype(np.float32)


def generated_set(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` pictures `(count, 9, 9, 1)`, half X (label 1) and half O (label 0), shuffled."""
    labels = rng.permutation(np.arange(count) % 2).astype(np.int32)
    images = np.stack([draw_shape(CLASSES[label], rng) for label in labels])[..., None]
    return images, labels


@dataclass
class TrainedXO:
    accuracy: float  # on freshly generated pictures never seen in training
    test_count: int
    examples: np.ndarray  # (k, 9, 9, 1) new pictures
    example_labels: list[str]
    example_predictions: list[tuple[str, float]]
    learned_filters: np.ndarray  # (3, 3, 1, filters) of the first convolution
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def train_xo_cnn(seed: int = 0, train_count: int = 600, test_count: int = 200, epochs: int = 15) -> TrainedXO:
    """Train [Conv 3x3 -> ReLU -> MaxPool 2/2] x 2 + votes on generated X's and O's."""
    import time

    import keras

    from models import ModelSpec, build_conv_model

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    x_train, y_train = generated_set(train_count, rng)
    x_test, y_test = generated_set(test_count, rng)
    keras.utils.set_random_seed(seed)
    model = build_conv_model(
        (SIZE, SIZE, 1), 2, ModelSpec(filters=(4, 8), kernel_size=3, head="flatten", dense=(16,), dropout=0.1)
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
    probabilities = model.predict(x_test, verbose=0)
    predicted = probabilities.argmax(axis=1)
    accuracy = float((predicted == y_test).mean())
    shown = slice(0, 8)
    return TrainedXO(
        accuracy=accuracy,
        test_count=test_count,
        examples=x_test[shown],
        example_labels=[CLASSES[i] for i in y_test[shown]],
        example_predictions=[(CLASSES[i], float(p[i])) for i, p in zip(predicted[shown], probabilities[shown])],
        learned_filters=np.asarray(model.get_layer("conv1").get_weights()[0]),
        seconds=time.perf_counter() - started,
    )


# ---- figures -------------------------------------------------------------------------------


def _annotate(axes, image, values: np.ndarray) -> None:
    """Each cell's value, black on light cells and white on dark ones (white was unreadable on
    viridis' yellow)."""
    colours = image.cmap(image.norm(values))
    luminance = colours[..., :3] @ np.array([0.299, 0.587, 0.114])
    for (r, c), value in np.ndenumerate(values):
        axes.text(c, r, truncate(float(value)), ha="center", va="center", fontsize=6,
                  color="black" if luminance[r, c] > 0.5 else "white")


def _framed(axes) -> None:
    """No ticks, but a frame: white (+1) cells at a picture's edge would otherwise melt into the
    page, and a 3x3 feature would not look square."""
    axes.set_xticks([])
    axes.set_yticks([])


def write_figures(out: Path, steps: Walkthrough, trained: TrainedXO | None) -> list[Path]:
    """One PNG per stage: pictures, features, filtered maps, ReLU, pooling, new predictions."""
    from pipelines.figures import new_figure, save_figure

    written = []
    figure = new_figure(7, 3.2)
    for index, (name, image) in enumerate(list(steps.images.items()) + list(steps.features.items()), start=1):
        axes = figure.add_subplot(1, 5, index)
        axes.imshow(image, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        axes.set_title(name, fontsize=8)
        _framed(axes)
    written.append(save_figure(figure, out / "pictures_and_features.png", trim=False))

    # Filtered maps run from -1 to 1: a diverging scale, white at 0. ReLU and pooling leave 0 to 1.
    for stage, maps, value_range, colormap in (
        ("filtered", steps.filtered, (-1, 1), "RdBu_r"),
        ("relu", steps.rectified, (0, 1), "viridis"),
        ("pooled", steps.pooled, (0, 1), "viridis"),
    ):
        figure = new_figure(10, 6.5)
        figure.suptitle(f"{stage} maps (values truncated to 2 decimals)")
        for index, ((image_name, feature_name), values) in enumerate(maps.items(), start=1):
            axes = figure.add_subplot(2, 3, index)
            image = axes.imshow(values, cmap=colormap, vmin=value_range[0], vmax=value_range[1], interpolation="nearest")
            _annotate(axes, image, values)
            axes.set_title(f"{image_name} * {feature_name}", fontsize=8)
            axes.set_axis_off()
        written.append(save_figure(figure, out / f"{stage}_maps.png", trim=False))

    if trained is not None:
        count = len(trained.examples)
        figure = new_figure(1.5 * count, 2.2)
        figure.suptitle(f"new pictures: accuracy {trained.accuracy:.3f} on {trained.test_count}")
        for index in range(count):
            axes = figure.add_subplot(1, count, index + 1)
            axes.imshow(trained.examples[index, ..., 0], cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            label, probability = trained.example_predictions[index]
            axes.set_title(f"is {trained.example_labels[index]}\nsays {label} {probability:.2f}", fontsize=7)
            _framed(axes)
        written.append(save_figure(figure, out / "new_pictures.png"))
        filters = trained.learned_filters[:, :, 0, :]
        figure = new_figure(1.5 * filters.shape[-1], 1.9)
        figure.suptitle("learned 3x3 filters of the first layer (blue: negative, red: positive)")
        # One scale, centred on 0: each filter scaled on its own put the colour of 0 anywhere.
        limit = float(np.abs(filters).max()) or 1.0
        for index in range(filters.shape[-1]):
            axes = figure.add_subplot(1, filters.shape[-1], index + 1)
            axes.imshow(filters[..., index], cmap="coolwarm", vmin=-limit, vmax=limit, interpolation="nearest")
            _framed(axes)
        written.append(save_figure(figure, out / "learned_filters.png"))
    return written


@dataclass
class DemoResult:
    steps: Walkthrough
    trained: TrainedXO | None
    files: list[Path]


def run_demo(out: Path, *, train: bool = True, epochs: int = 15, seed: int = 0) -> DemoResult:
    """The walkthrough's numbers, optionally the trained tiny CNN, and the figures in `out`."""
    from pipelines.config import check_seed
    from preprocess import ConvpipeError

    if epochs < 1:
        raise ConvpipeError(f"--epochs must be at least 1, got {epochs}.")
    check_seed(seed)
    steps = walkthrough()
    trained = train_xo_cnn(seed=seed, epochs=epochs) if train else None
    return DemoResult(steps, trained, write_figures(Path(out), steps, trained))
