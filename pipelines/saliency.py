"""`explain`: which parts of one input made the network choose its class.

Image and audio: Grad-CAM on the last convolution block. The gradient of the chosen class'
score (the logit before the softmax, which does not saturate the way a probability near 1 does)
with respect to the last ReLU maps is averaged per channel; the maps weighted by those averages,
summed and passed through a ReLU, say where evidence for the class was found. The coarse map is
resized to the input.

Text: per-position contribution by occlusion: the class score with the whole text minus the score
with that one position blanked to padding (an all-zero row of the one-hot matrix). Positive:
the token spoke for the class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines import figures
from pipelines.datasets import printable_name
from pipelines.inspection import audio_axes, conv_blocks, output_name
from pipelines.modality import Modality
from pipelines.prediction import encode_input, input_source
from pipelines.run_dir import Run, check_output_folder
from pipelines.text_inspection import read_tokens, token_label, tokens_present
from preprocess import ConvpipeError, atomic
from preprocess.text import PADDING_ID

#: Labelled ticks on each axis of an audio overlay (a 4-inch plot): every 0.1 s, every 10th band.
OVERLAY_TICKS = 12


@dataclass
class Explanation:
    out: Path
    files: list[Path]
    label: str
    probability: float
    method: str
    #: image/audio: (height, width) in [0, 1], same grid as the input; text: (tokens,) contributions
    saliency: np.ndarray
    #: text: (position, token, contribution), strongest first
    top_positions: list[tuple[int, str, float]] = field(default_factory=list)


def score_model(model):
    """(the output layer, its kernel, its bias): class scores are the logits it computes
    before its softmax."""
    import keras

    votes = model.layers[-1]
    if not isinstance(votes, keras.layers.Dense):
        raise ConvpipeError(f"{model.name} does not end in a Dense softmax layer; cannot compute class scores.")
    kernel, bias = (np.asarray(w) for w in votes.get_weights())
    return votes, kernel, bias


def grad_cam(model, x: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM of `class_index` for one `(H, W, C)` input: `(H, W)` in [0, 1]."""
    import keras
    from PIL import Image

    last = conv_blocks(model)[-1]
    target = last.relu if last.relu is not None else last.conv
    votes, kernel, bias = score_model(model)
    maps = keras.ops.convert_to_numpy(keras.Model(model.input, target.output)(x[None], training=False))
    # The rest of the network, from those maps to the class score, differentiated by the backend.
    head = keras.Model(target.output, votes.input)
    column = keras.ops.convert_to_tensor(kernel[:, class_index:class_index + 1])

    def score(tensor):
        features = keras.ops.cast(head(tensor, training=False), column.dtype)
        return keras.ops.sum(keras.ops.matmul(features, column)) + float(bias[class_index])

    gradients = backend_gradient(score, maps)
    weights = gradients.mean(axis=(0, 1, 2))
    cam = np.maximum((maps[0] * weights).sum(axis=-1), 0.0).astype(np.float32)
    resized = np.asarray(Image.fromarray(cam, mode="F").resize((x.shape[1], x.shape[0]), Image.BILINEAR))
    peak = float(resized.max())
    return resized / peak if peak > 0 else resized


def backend_gradient(function, x: np.ndarray) -> np.ndarray:
    """The gradient of the scalar `function(x)` with respect to `x`, by the Keras backend's own
    automatic differentiation (keras.ops has none)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensor = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            value = function(tensor)
        return np.asarray(tape.gradient(value, tensor))
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(function)(jax.numpy.asarray(x)))
    raise ConvpipeError(
        f"explain's Grad-CAM takes gradients with the tensorflow or jax backend, not {backend}: "
        "set KERAS_BACKEND=tensorflow or jax."
    )


def occlusion(model, ids: np.ndarray, used: int, class_index: int) -> np.ndarray:
    """Class score of the text minus the score with each of the first `used` positions blanked."""
    import keras

    votes, kernel, bias = score_model(model)
    features = keras.Model(model.input, votes.input)
    variants = np.repeat(ids[None], used + 1, axis=0)
    for position in range(used):
        variants[position + 1, position] = PADDING_ID
    scores = np.asarray(features.predict(variants, verbose=0), dtype=np.float64) @ kernel[:, class_index] + bias[class_index]
    return (scores[0] - scores[1:]).astype(np.float32)


def explain(run_path: Path, value: str, out: Path | None = None, literal_text: bool = False) -> Explanation:
    """Explain the predicted class of `value` (with `literal_text`, text whatever it looks like);
    write saliency.png, saliency.npz, explanation.json."""
    run = Run.open(run_path)
    chosen = out is not None
    out = Path(out) if chosen else run.path / "explain" / output_name(value, literal_text)
    check_output_folder(out, chosen)
    model = run.model
    if run.config.modality is Modality.text:
        result = explain_text(run, value, out, literal_text)
    else:
        x = encode_input(run, value, literal_text)
        probabilities = np.asarray(model.predict(x[None], verbose=0))[0]
        best = int(np.argmax(probabilities))
        cam = grad_cam(model, x, best)
        path = overlay_figure(run, x, cam, out, f"Grad-CAM for '{run.labels[best]}' ({probabilities[best]:.3f})")
        result = Explanation(out, [path], run.labels[best], float(probabilities[best]), "grad-cam", cam)
        atomic.write_npz(out / "saliency.npz", {"saliency": cam, "input": x})
    result.files.append(out / "saliency.npz")
    atomic.write_json(
        out / "explanation.json",
        {
            "input": printable_name(str(value)),
            "label": result.label,
            "probability": result.probability,
            "method": result.method,
            "top_positions": [{"position": p, "token": t, "contribution": c} for p, t, c in result.top_positions],
        },
    )
    result.files.append(out / "explanation.json")
    return result


def overlay_figure(run: Run, x: np.ndarray, cam: np.ndarray, out: Path, title: str) -> Path:
    figure = figures.new_figure(6, 4.5)
    axes = figure.add_subplot()
    if run.config.modality is Modality.audio:
        times, hertz = audio_axes(run, x.shape[0], x.shape[1])
        axes.imshow(x[..., 0].T, cmap="gray", origin="lower", aspect="auto", interpolation="nearest")
        image = axes.imshow(cam.T, cmap="jet", alpha=0.45, origin="lower", aspect="auto", vmin=0, vmax=1)
        figures.set_ticks(axes.set_xticks, times, most=OVERLAY_TICKS)
        figures.set_ticks(axes.set_yticks, hertz, most=OVERLAY_TICKS)
        axes.set_xlabel("time (s)")
        axes.set_ylabel("frequency (Hz, mel band centre)")
    else:
        low, high = (-1.0, 1.0) if getattr(run.preprocessor, "value_range", "0..1") == "-1..1" else (0.0, 1.0)
        figures.show_input(axes, x, (low, high))
        image = axes.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
        axes.set_axis_off()
    figure.colorbar(image, ax=axes, shrink=0.8, label="relative evidence")
    axes.set_title(title, fontsize=9)
    return figures.save_figure(figure, out / "saliency.png")


def signed(value: float) -> str:
    """+0.25, -0.25, and +0.00 for what rounds to zero (not -0.00, a sign the number lacks)."""
    return f"{round(float(value), 2) + 0.0:+.2f}"


def explain_text(run: Run, value: str, out: Path, literal_text: bool = False) -> Explanation:
    tokens, ids, used = read_tokens(run, input_source(run, value, literal_text), "explain")
    probabilities = np.asarray(run.model.predict(ids[None], verbose=0))[0]
    best = int(np.argmax(probabilities))
    contributions = occlusion(run.model, ids, used, best)

    present, _, column_labels = tokens_present(run.preprocessor, ids, used)
    matrix = present * contributions[:, None]
    path = figures.heatmap(
        out / "saliency.png", matrix.astype(np.float32),
        f"contribution of each position to '{run.labels[best]}' ({probabilities[best]:.3f}): "
        "class score minus score without it",
        row_labels=[f"{p}: {token_label(t)} {signed(c)}" for p, (t, c) in enumerate(zip(tokens, contributions))],
        column_labels=column_labels, row_title="position",
        column_title="vocabulary (tokens present)", centered=True,
    )
    atomic.write_npz(out / "saliency.npz", {"contribution": contributions, "token_ids": ids})
    order = np.argsort(-contributions)
    top = [(int(p), tokens[p], float(contributions[p])) for p in order[:10]]
    return Explanation(out, [path], run.labels[best], float(probabilities[best]), "occlusion", contributions, top)
