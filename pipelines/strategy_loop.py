"""The epoch loop for strategies under which Keras' `model.fit` fails, run through `strategy.run`.

Keras 3's `model.fit` under MultiWorkerMirroredStrategy fails (keras-team/keras issue 20585).
This loop does what `fit` does for convpipe's compiled models (sparse categorical cross-entropy,
accuracy) and calls the same callbacks with the same logs, so early stopping, best weights,
backups and history.csv behave exactly as on the `fit` path. It uses public APIs only:
`strategy.run`, `strategy.reduce`, the optimizer's `scale_loss` and `apply_gradients` (which
all-reduce the gradients across replicas and, under mixed_float16, unscale them).
"""

from __future__ import annotations


def fit_with_strategy_run(
    model,
    strategy,
    train_data,
    validation_data=None,
    *,
    epochs: int,
    initial_epoch: int = 0,
    callbacks: list | None = None,
    verbose: int | str = 0,
) -> dict[str, float]:
    """Train the compiled `model` from `initial_epoch` to `epochs` or until a callback stops it.

    Args:
        model: a compiled Keras model built under `strategy.scope()`.
        strategy: the tf.distribute strategy.
        train_data, validation_data: batched `tf.data.Dataset`s of `(inputs, class ids)` or
            `(inputs, class ids, sample weights)`, each batch global (all replicas together);
            `strategy` splits them. Weights scale each input's loss, as in `model.fit`.
        epochs, initial_epoch: as in `model.fit`.
        callbacks: Keras callbacks, called as `model.fit` calls them at train and epoch level.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch ("auto" is 1).

    Returns:
        The last epoch's logs: loss, accuracy and, with validation data, val_loss and val_accuracy.
    """
    import keras
    import tensorflow as tf

    verbose = 1 if verbose == "auto" else verbose
    per_example_loss = keras.losses.SparseCategoricalCrossentropy(reduction=None)
    optimizer = model.optimizer
    with strategy.scope():
        if not optimizer.built:  # its slots must be mirrored variables, created in the scope
            optimizer.build(model.trainable_variables)
    total = tf.distribute.ReduceOp.SUM

    def sums(labels, probabilities, losses):
        predicted = tf.argmax(probabilities, axis=-1, output_type=labels.dtype)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
        return tf.reduce_sum(losses), correct, tf.cast(tf.size(labels), tf.float32)

    def weighted(losses, weights):
        return losses if weights is None else losses * tf.cast(weights, losses.dtype)

    def replica_train_step(inputs, labels, weights=None):
        context = tf.distribute.get_replica_context()
        # The mean over the whole global batch, so summed replica gradients equal one device's
        # gradient; the last batch may be partial or empty on some replicas.
        batch = context.all_reduce(total, tf.cast(tf.shape(labels)[0], tf.float32))
        with tf.GradientTape() as tape:
            probabilities = model(inputs, training=True)
            losses = weighted(per_example_loss(labels, probabilities), weights)
            loss = tf.reduce_sum(losses) / tf.maximum(batch, 1.0)
            if model.losses:  # regularization: once per step, not once per replica
                loss += tf.add_n(model.losses) / context.num_replicas_in_sync
            scaled = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return sums(labels, probabilities, losses)

    def replica_test_step(inputs, labels, weights=None):
        probabilities = model(inputs, training=False)
        return sums(labels, probabilities, weighted(per_example_loss(labels, probabilities), weights))

    @tf.function(reduce_retracing=True)
    def train_step(*batch):
        per_replica = strategy.run(replica_train_step, args=batch)
        return [strategy.reduce(total, value, axis=None) for value in per_replica]

    @tf.function(reduce_retracing=True)
    def test_step(*batch):
        per_replica = strategy.run(replica_test_step, args=batch)
        return [strategy.reduce(total, value, axis=None) for value in per_replica]

    def run_pass(step, dataset, callback_list=None) -> dict[str, float]:
        loss_sum = correct = count = 0.0
        for index, batch in enumerate(dataset):  # (inputs, labels) or (inputs, labels, weights)
            if callback_list is not None:
                callback_list.on_train_batch_begin(index)
            batch_loss, batch_correct, batch_count = (float(v) for v in step(*batch))
            loss_sum, correct, count = loss_sum + batch_loss, correct + batch_correct, count + batch_count
            if callback_list is not None:
                callback_list.on_train_batch_end(index, {"loss": loss_sum / count, "accuracy": correct / count})
        if not count:
            raise ValueError("The dataset produced no inputs on any replica.")
        return {"loss": loss_sum / count, "accuracy": correct / count}

    distributed_train = strategy.experimental_distribute_dataset(train_data)
    distributed_validation = (
        None if validation_data is None else strategy.experimental_distribute_dataset(validation_data)
    )
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_progbar=verbose != 0, model=model, verbose=verbose, epochs=epochs, steps=None
    )
    model.stop_training = False
    logs: dict[str, float] = {}
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        logs = run_pass(train_step, distributed_train, callback_list)
        if distributed_validation is not None:
            logs.update({f"val_{k}": v for k, v in run_pass(test_step, distributed_validation).items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return logs
