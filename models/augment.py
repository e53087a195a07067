"""Random changes to the inputs while training (data augmentation), as the model's first layers.

Inside the model they run on every backend and device, inside `fit` and the multi-worker loop
alike, draw from seed generators that resumed runs restore with dropout's, and do nothing at
inference: a saved model predicts as it would without them.
"""

from __future__ import annotations

import keras

from models.layers import SpectrogramMasks


def add_augmentation(x, strength: float, kind: str):
    """`x` through the augmentation layers for `kind` at `strength` (0: none).

    image: shift up and down and sideways by up to `strength` of the side, zoom in or out by up
    to `strength`, and rotate by up to `strength` x 90 degrees; uncovered pixels repeat the
    nearest edge; height and width are zoomed separately. spectrogram: two stretches of time
    and of frequency, each up to `strength` of the axis, set to the input's mean (0 after
    per-band normalization), as in SpecAugment (Park et al., 2019).
    """
    if not strength:
        return x
    if kind == "image":
        x = keras.layers.RandomTranslation(strength, strength, fill_mode="nearest", name="augment_shift")(x)
        x = keras.layers.RandomZoom(strength, strength, fill_mode="nearest", name="augment_zoom")(x)
        return keras.layers.RandomRotation(strength / 4, fill_mode="nearest", name="augment_rotate")(x)
    return SpectrogramMasks(strength, masks=2, name="augment_masks")(x)  # SpecAugment's policies use 1-2
