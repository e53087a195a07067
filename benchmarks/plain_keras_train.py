"""A hand-written Keras training script: the yardstick for convpipe's training-loop overhead.

The model is convpipe's default image model written out by hand (Conv 32 -> ReLU -> MaxPool,
Conv 64 -> ReLU -> MaxPool, Flatten, Dropout, Dense 128 ReLU, Dropout, softmax), trained with
Adam on arrays held in memory, the way a Keras tutorial does it. Prints one JSON line.

    python benchmarks/plain_keras_train.py arrays.npz --epochs 5 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arrays", help=".npz with x_train, y_train, x_val, y_val")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import keras
    import numpy as np

    with np.load(args.arrays) as arrays:
        x_train, y_train = arrays["x_train"], arrays["y_train"]
        x_val, y_val = arrays["x_val"], arrays["y_val"]
    num_classes = int(max(y_train.max(), y_val.max())) + 1
    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential(
        [
            keras.Input(shape=x_train.shape[1:]),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2, strides=2, padding="same"),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2, strides=2, padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    seconds: list[float] = []
    history = model.fit(
        x_train, y_train, validation_data=(x_val, y_val), batch_size=args.batch_size, epochs=args.epochs,
        callbacks=[Timer()], verbose=0,
    )
    steps = -(-len(x_train) // args.batch_size)
    timed = seconds[1:] or seconds  # the first epoch traces the graph
    print(json.dumps({
        "epoch_seconds": seconds,
        "steps_per_second": steps * len(timed) / sum(timed),
        "parameters": int(model.count_params()),
        "val_accuracy": float(history.history["val_accuracy"][-1]),
    }))


if __name__ == "__main__":
    main()
