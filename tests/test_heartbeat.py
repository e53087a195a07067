"""Progress lines during long epochs when output is not a terminal."""

from __future__ import annotations

import numpy as np


def test_heartbeat_reports_where_a_long_epoch_is(capsys):
    """Output that is not a terminal got one line per epoch; an epoch of minutes was silent."""
    import keras

    from pipelines.heartbeat import heartbeat

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = np.zeros((8, 3), "float32"), np.zeros(8, "int32")
    model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[heartbeat(every=0.0)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("  epoch 1: step 1/4, loss ") and lines[-1].startswith("  epoch 2: step 4/4, loss ")
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[heartbeat(every=3600.0)])
    assert capsys.readouterr().out == ""


def test_reading_progress_is_a_line_now_and_then_when_output_is_not_a_terminal(capsys):
    from cli import ProgressBar

    with ProgressBar(every=0.0) as bar:  # pytest's stdout is not a terminal
        for done in (0, 5, 10):
            bar("reading train", done, 10)
    assert capsys.readouterr().out.splitlines() == ["  reading train: 0/10 (0 s)", "  reading train: 5/10 (0 s)"]
    with ProgressBar() as bar:  # the first line comes after a minute
        bar("reading train", 5, 10)
    assert capsys.readouterr().out == ""
