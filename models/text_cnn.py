"""The text factory: full-height windows of several widths over token ids, side by side."""

from __future__ import annotations

import keras

from models.layers import FullHeightConv, TokenEmbedding
from models.spec import TEXT_DEFAULTS, ModelSpec, check_positive_int, given_spec
from models.votes import add_votes, global_pool


def build_text_model(
    positions: int,
    num_ids: int,
    num_classes: int,
    spec: ModelSpec | None = None,
    ids_per_position: int = 1,
) -> keras.Model:
    """Build a text CNN that reads the position x vocabulary matrix through its token ids.

    For each width in `spec.window_sizes`, `spec.filters[0]` full-height windows slide along
    the positions (ReLU), and each filter keeps its best match (`spec.head` "global_max") and/or
    its mean response over the positions ("global_average"). The widths are concatenated, then
    dropout and `spec.dense` hidden layers, then a softmax.

    `spec.text_kernel` picks one of two exact forms of the same window: `"full"` keeps one
    (window x vocabulary) kernel per filter (`FullHeightConv`); `"factorized"` constrains it to
    rank `spec.embedding_dim` (`TokenEmbedding`, shared by all widths, then `Conv1D`).

    Args:
        positions: number of token positions per input (>= the largest window).
        num_ids: vocabulary width including the reserved padding and out-of-vocabulary ids.
        num_classes: number of output classes (>= 2).
        spec: hyperparameters; `TEXT_DEFAULTS` (convpipe's text default) when omitted.
        ids_per_position: 1 for plain token ids `(batch, positions)`; k for `(batch, positions,
            k)` (a character and its hashed n-grams, a multi-hot row).

    Returns:
        An uncompiled `keras.Model`: `(batch, positions)` int32 ids (`(batch, positions,
        ids_per_position)` with `ids_per_position` > 1) -> `(batch, num_classes)` probabilities.
    """
    spec = given_spec(spec, TEXT_DEFAULTS).validate(text=True)
    spec.warn_of_ignored(text=True)
    num_classes = check_positive_int("num_classes", num_classes, minimum=2)
    positions = check_positive_int("positions", positions)
    num_ids = check_positive_int("num_ids", num_ids, minimum=2)  # the padding id and at least one other
    ids_per_position = check_positive_int("ids_per_position", ids_per_position)
    if positions < max(spec.window_sizes):
        raise ValueError(
            f"Every window must fit in the text: positions={positions} is shorter than the "
            f"largest window ({max(spec.window_sizes)}). Use smaller `window_sizes` or more positions."
        )
    filters = spec.filters[0]
    shape = (positions,) if ids_per_position == 1 else (positions, ids_per_position)
    ids = keras.Input(shape=shape, dtype="int32", name="token_ids")
    embedded = None
    if spec.text_kernel == "factorized":
        embedded = TokenEmbedding(num_ids, spec.embedding_dim, name="embedding")(ids)
    branches = []
    for width in spec.window_sizes:
        if embedded is None:
            x = FullHeightConv(num_ids, width, filters, name=f"window{width}")(ids)
        else:
            x = keras.layers.Conv1D(filters, width, name=f"window{width}")(embedded)
        x = keras.layers.ReLU(name=f"relu{width}")(x)
        branches.append(
            global_pool(x, spec.head or "global_max", keras.layers.GlobalMaxPooling1D, keras.layers.GlobalAveragePooling1D, str(width))
        )
    x = branches[0] if len(branches) == 1 else keras.layers.Concatenate(name="windows")(branches)
    outputs = add_votes(x, num_classes, spec)
    return keras.Model(ids, outputs, name="text_cnn")
