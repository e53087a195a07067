"""The strategy.run loop (used under MultiWorkerMirroredStrategy) computes what model.fit does."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def tiny_data():
    rng = np.random.default_rng(0)
    x = rng.random((20, 8, 8, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype("int32")

    def dataset(class_weights=None):
        import tensorflow as tf

        if class_weights is not None:  # as training.to_tf_dataset adds them
            return tf.data.Dataset.from_tensor_slices((x, y, np.asarray(class_weights, "float32")[y])).batch(8)
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # 8 + 8 + a partial 4

    return dataset


def compiled_model(policy: str = "float32"):
    import keras

    from models import ModelSpec, build_conv_model

    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = build_conv_model((8, 8, 1), 2, ModelSpec(filters=(4,), dense=(8,), dropout=0.0))
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


@pytest.mark.parametrize("class_weights", [None, (0.25, 3.0)], ids=["unweighted", "class-weighted"])
def test_the_loop_matches_model_fit_logs_and_weights(tiny_data, class_weights):
    import keras
    import tensorflow as tf

    from pipelines.strategy_loop import fit_with_strategy_run

    train, validation = tiny_data(class_weights), tiny_data(class_weights)
    reference = compiled_model()
    expected = reference.fit(train, validation_data=validation, epochs=2, verbose=0, shuffle=False).history
    model, history = compiled_model(), keras.callbacks.History()
    fit_with_strategy_run(model, tf.distribute.get_strategy(), train, validation, epochs=2, callbacks=[history])
    assert history.history.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(history.history[key], expected[key], rtol=1e-6, err_msg=key)
    for a, b in zip(reference.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_the_loop_stops_early_and_restores_the_best_weights(tiny_data):
    import keras
    import tensorflow as tf

    from pipelines.strategy_loop import fit_with_strategy_run

    model = compiled_model()
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", mode="max", patience=1, restore_best_weights=True)
    history = keras.callbacks.History()
    fit_with_strategy_run(
        model, tf.distribute.get_strategy(), tiny_data(), tiny_data(), epochs=20, callbacks=[stopper, history]
    )
    # Monitoring "max" of a falling loss: epoch 1 stays best, training stops after patience + 1 epochs.
    assert len(history.history["val_loss"]) == 2 and stopper.best_epoch == 0
    np.testing.assert_allclose(model.get_weights()[0], stopper.best_weights[0])


def test_the_loop_scales_the_loss_under_mixed_float16(tiny_data):
    import tensorflow as tf

    from pipelines.strategy_loop import fit_with_strategy_run

    model = compiled_model("mixed_float16")
    assert type(model.optimizer).__name__ == "LossScaleOptimizer"
    before = [w.copy() for w in model.get_weights()]
    logs = fit_with_strategy_run(model, tf.distribute.get_strategy(), tiny_data(), None, epochs=2)
    assert np.isfinite(logs["loss"]) and 0.0 <= logs["accuracy"] <= 1.0
    assert all(w.dtype == np.float32 for w in model.get_weights())
    assert max(np.abs(a - b).max() for a, b in zip(before, model.get_weights())) > 1e-3
