"""A progress line now and then during long epochs when output is not a terminal.

With a terminal, Keras draws a progress bar. Written to a file or a pipe (nohup, CI, `| tee`),
Keras prints one line per epoch, so an epoch of several minutes left the log silent for all of
them. `Heartbeat` prints where the epoch is every `every` seconds instead.
"""

from __future__ import annotations

import time

#: Seconds between progress lines when output is not a terminal.
EVERY = 60.0


def heartbeat(every: float = EVERY):
    """A Keras callback printing `epoch E: step S/N, loss L (T s)` every `every` seconds."""
    import keras

    class Heartbeat(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1
            self.started = self.last = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            now = time.monotonic()
            if now - self.last < every:
                return
            self.last = now
            steps = (self.params or {}).get("steps")
            loss = (logs or {}).get("loss")
            print(
                f"  epoch {self.epoch}: step {batch + 1}{'' if steps is None else f'/{steps}'}"
                + ("" if loss is None else f", loss {float(loss):.4f}")
                + f" ({now - self.started:.0f} s)",
                flush=True,
            )

    return Heartbeat()
