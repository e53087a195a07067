"""Do convpipe's defaults beat a linear model on the same inputs and the same split?

For each dataset: train convpipe with default settings (only --modality and --data), evaluate
on the run's held-out test split, then train two baselines on the same train + validation
inputs and score them on the same test inputs: the tutorial CNN of keras-io / TensorFlow for the
modality (see `tutorial_model`), and the logistic regression of `evaluate --baseline`
(pipelines/baseline.py: pixels, MFCC statistics, TF-IDF word and character n-grams).

    python benchmarks/baselines.py --modality audio [--data PATH] [--out benchmarks/baselines.json]

Results are merged into the JSON file under a key naming the modality and data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from pipelines.config import resolve_config  # noqa: E402
from pipelines.datasets import load_source  # noqa: E402
from pipelines.baseline import fit_predict, linear_features  # noqa: E402
from pipelines.evaluation import evaluate  # noqa: E402
from pipelines.modality import Modality  # noqa: E402
from pipelines.run_dir import Run  # noqa: E402
from pipelines.training import train  # noqa: E402
from preprocess import InputError  # noqa: E402


def tutorial_model(modality: Modality, input_shape: tuple, num_classes: int, num_ids: int):
    """The tutorial CNN for the modality, as published (layer for layer), with its training recipe.

    image: keras-io "Simple MNIST convnet"; audio: TensorFlow's "Simple audio recognition"
    (spectrogram resized to 32x32, normalized); text: keras-io "Text classification from scratch"
    (word embedding, two strided Conv1D). Returns (model, epochs, batch_size, early-stopping patience).
    """
    import keras
    from keras import layers

    if modality is Modality.image:
        model = keras.Sequential([
            keras.Input(shape=input_shape),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu", padding="same"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu", padding="same"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(num_classes, activation="softmax"),
        ])
        return model, 15, 128, None
    if modality is Modality.audio:
        model = keras.Sequential([
            keras.Input(shape=input_shape),
            layers.Resizing(32, 32),
            layers.Normalization(),  # the per-band standardized input is already normalized
            layers.Conv2D(32, 3, activation="relu"),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(num_classes, activation="softmax"),
        ])
        return model, 10, 64, 2
    model = keras.Sequential([
        keras.Input(shape=input_shape, dtype="int32"),
        layers.Embedding(num_ids, 128),
        layers.Dropout(0.5),
        layers.Conv1D(128, 7, padding="valid", activation="relu", strides=3),
        layers.Conv1D(128, 7, padding="valid", activation="relu", strides=3),
        layers.GlobalMaxPooling1D(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ])
    return model, 3, 32, None


def tutorial_baseline(modality: Modality, run: Run, fit_part, test_part) -> float:
    """Train the tutorial CNN on the same split, on word ids for text (as the tutorial does)."""
    import keras

    from preprocess import TextPreprocessor

    if modality is Modality.text:
        preprocessor = TextPreprocessor(level="word", vocabulary_size=20000, positions=500)
        preprocessor.fit([preprocessor.read_text(x) for x in fit_part.inputs])
    else:
        preprocessor = run.preprocessor
    index = {label: i for i, label in enumerate(run.labels)}

    def arrays(part):
        rows, labels = [], []
        for x, label in zip(part.inputs, part.labels):
            try:
                rows.append(preprocessor.transform_one(x))
            except InputError:
                continue
            labels.append(index[label])
        return np.stack(rows), np.array(labels)

    x_fit, y_fit = arrays(fit_part)
    x_test, y_test = arrays(test_part)
    keras.utils.set_random_seed(0)
    num_ids = preprocessor.num_ids if modality is Modality.text else 0
    model, epochs, batch_size, patience = tutorial_model(modality, x_fit.shape[1:], len(run.labels), num_ids)
    if modality is Modality.audio:
        model.layers[1].adapt(keras.ops.image.resize(x_fit, (32, 32)))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = [keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)] if patience else []
    model.fit(x_fit, y_fit, epochs=epochs, batch_size=batch_size, validation_split=0.1, verbose=0, callbacks=callbacks)
    return float(np.mean(model.predict(x_test, verbose=0).argmax(axis=1) == y_test))


def compare(modality: Modality, data: str | None, workdir: Path, epochs: int | None) -> dict:
    config = resolve_config(modality.value, data=data, train={"epochs": epochs})
    started = time.perf_counter()
    result = train(config, out=workdir / f"{modality.value}-{int(time.time())}", verbose=0)
    train_seconds = time.perf_counter() - started
    cnn = evaluate(result.run_dir).report
    run = Run.open(result.run_dir)
    everything = load_source(data, modality).everything()
    fit_ids = run.split["train"] + run.split["validation"]
    fit_part, test_part = everything.select_ids(fit_ids), everything.select_ids(run.split["test"])
    x_fit, kept_fit = linear_features(modality, run.preprocessor, fit_part.inputs)
    x_test, kept_test = linear_features(modality, run.preprocessor, test_part.inputs)
    predicted = fit_predict(modality, x_fit, [fit_part.labels[i] for i in kept_fit], x_test)
    linear = float(np.mean(predicted == np.asarray([test_part.labels[i] for i in kept_test])))
    tutorial = tutorial_baseline(modality, run, fit_part, test_part)
    return {
        "modality": modality.value,
        "data": data or "built-in",
        "test_inputs": cnn["n_samples"],
        "convpipe_accuracy": round(cnn["accuracy"], 4),
        "convpipe_macro_f1": round(cnn["macro_f1"], 4),
        "linear_accuracy": round(linear, 4),
        "tutorial_cnn_accuracy": round(tutorial, 4),
        "train_seconds": round(train_seconds, 1),
        "epochs_run": run.document["epochs_run"],
        "data_choices": run.document["data_choices"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", choices=[m.value for m in Modality], required=True)
    parser.add_argument("--data", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/convpipe-baselines"))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("baselines.json"))
    args = parser.parse_args()
    row = compare(Modality(args.modality), args.data, args.workdir, args.epochs)
    print(json.dumps(row, indent=2))
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[f"{row['modality']}:{row['data']}"] = row
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
