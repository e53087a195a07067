"""Model factories and the full-height window layers."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from models import FullHeightConv, ModelSpec, TokenEmbedding, build_conv_model, build_text_model  # noqa: E402

TINY = ModelSpec(filters=(4,), kernel_size=3, pool_size=2, pool_stride=2, dense=(8,), dropout=0.0)
TINY_TEXT = ModelSpec(filters=(4,), dense=(), dropout=0.0, window_sizes=(2, 3), embedding_dim=5)


def random_ids(rng, batch: int, positions: int, num_ids: int) -> np.ndarray:
    ids = rng.integers(0, num_ids, size=(batch, positions)).astype(np.int32)
    ids[:, -2:] = 0  # trailing padding, as the preprocessor writes it
    ids[0, 1] = 0  # and padding inside a window
    return ids


# ---- the image/audio factory -----------------------------------------------------------------


@pytest.mark.parametrize("input_shape, num_classes", [((8, 8, 1), 3), ((9, 7, 3), 2)])
def test_conv_model_shape_and_forward_pass(input_shape, num_classes):
    model = build_conv_model(input_shape, num_classes, TINY)
    assert model.input_shape == (None, *input_shape)
    assert model.output_shape == (None, num_classes)
    x = np.random.default_rng(0).random((5, *input_shape), dtype=np.float32)
    probabilities = np.asarray(model(x))
    assert probabilities.shape == (5, num_classes)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(probabilities >= 0)


@pytest.mark.parametrize(
    "changes, expected",
    [
        # conv 3*3*1*4+4 = 40; pool -> 4x4x4 = 64; dense 64*8+8 = 520; votes 8*3+3 = 27
        ({}, 40 + 520 + 27),
        # second block: 3*3*4*6+6 = 222; pool -> 2x2x6 = 24; dense 24*8+8 = 200
        ({"filters": (4, 6)}, 40 + 222 + 200 + 27),
        # stride 1 keeps 8x8x4 = 256 features: dense 256*8+8 = 2056
        ({"pool_stride": 1}, 40 + 2056 + 27),
        # global max pooling keeps 4 features: dense 4*8+8 = 40
        ({"head": "global_max"}, 40 + 40 + 27),
        # batch norm: conv without bias (36) + 4 x (gamma, beta, mean, variance)
        ({"batch_norm": True}, 36 + 16 + 520 + 27),
        # no hidden layer: votes straight from the 64 features
        ({"dense": ()}, 40 + 64 * 3 + 3),
    ],
)
def test_conv_model_parameter_count_matches_hand_count(changes, expected):
    spec = ModelSpec(**{**TINY.to_dict(), **changes})
    assert build_conv_model((8, 8, 1), 3, spec).count_params() == expected


def test_default_conv_model_fits_a_parameter_budget():
    assert build_conv_model((32, 32, 1), 10).count_params() < 700_000


@pytest.mark.parametrize(
    "changes, name",
    [
        ({"filters": ()}, "filters"),
        ({"filters": (4, 0)}, "filters"),
        ({"dense": (-1,)}, "dense"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"pool_stride": True}, "pool_stride"),
        ({"dropout": 1.0}, "dropout"),
        ({"head": "average"}, "head"),
        ({"filters": "sixteen"}, "filters"),
        ({"batch_norm": "yes"}, "batch_norm"),
        ({"augment": 0.6}, "augment"),
        ({"augment": -0.1}, "augment"),
        ({"augment": True}, "augment"),
        ({"augment_kind": "audio"}, "augment_kind"),
    ],
)
def test_invalid_spec_raises_value_error_naming_the_field(changes, name):
    spec = ModelSpec(**{**TINY.to_dict(), **changes})
    with pytest.raises(ValueError, match=f"`{name}`"):
        build_conv_model((8, 8, 1), 3, spec)


@pytest.mark.parametrize(
    "build, changes, name",
    [
        ("text", {"pool_size": 0}, "pool_size"),  # unused by the text model, still a bad value
        ("text", {"augment": 0.9}, "augment"),
        ("conv", {"window_sizes": (0,)}, "window_sizes"),  # was accepted: checked for text only
        ("conv", {"window_sizes": (3, 3)}, "window_sizes"),
        ("conv", {"text_kernel": "sparse"}, "text_kernel"),
        ("conv", {"embedding_dim": 0}, "embedding_dim"),
    ],
)
def test_every_field_is_checked_whichever_model_reads_it(build, changes, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        if build == "text":
            build_text_model(10, 20, 3, ModelSpec(**{**TINY_TEXT.to_dict(), **changes}))
        else:
            build_conv_model((8, 8, 1), 3, ModelSpec(**{**TINY.to_dict(), **changes}))


@pytest.mark.parametrize(
    "build, changes, message",
    [
        ("conv", {"window_sizes": (2,)}, "The image/audio model ignores window_sizes=(2,) (text only)."),
        ("text", {"pool_size": 3, "batch_norm": True},
         "The text model ignores pool_size=3 (image/audio only), batch_norm=True (image/audio only)."),
        ("text", {"text_kernel": "full"},  # TINY_TEXT's embedding_dim=5
         "The text model ignores embedding_dim=5 (the full text kernel has no embedding)."),
        ("conv", {"pool_stride": 3}, "pool_stride=3 is larger than pool_size=2: each pooling skips 1 of every 3"),
        ("conv", {}, None),  # settings left at their defaults say nothing
        ("text", {}, None),
        ("conv", {"pool_size": 3, "pool_stride": 2}, None),  # overlapping windows read everything
    ],
)
def test_settings_that_change_nothing_are_logged(caplog, build, changes, message):
    with caplog.at_level("WARNING", logger="models"):
        if build == "text":
            model = build_text_model(10, 20, 3, ModelSpec(**{**TINY_TEXT.to_dict(), **changes}))
        else:
            model = build_conv_model((8, 8, 1), 3, ModelSpec(**{**TINY.to_dict(), **changes}))
    assert model.output_shape == (None, 3)  # built all the same
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    if message is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warnings[0].startswith(message), warnings


def test_a_string_of_filters_is_named_whole_not_split_into_letters():
    with pytest.raises(ValueError, match="Received: filters='sixteen'"):
        ModelSpec(filters="sixteen").validate()


@pytest.mark.parametrize(
    "input_shape, changes, message",
    [
        # 8 -> 4 -> 2 -> 1: the fourth block's 2x2 window would pool a 1x1 map
        ((8, 8, 1), {"filters": (4,) * 4}, "after 3 blocks the 8x8 input is 1x1: a 2x2 pooling window does not fit"),
        ((8, 8, 1), {"filters": (4,) * 5}, "after 3 blocks the 8x8 input is 1x1"),
        ((8, 8, 1), {"pool_size": 16}, "the 8x8 input is smaller than a 16x16 pooling window"),
        ((1, 1, 1), {}, "the 1x1 input is smaller than a 2x2 pooling window"),
        ((32, 4, 1), {"filters": (4, 4, 4)}, None),  # 32x4 -> 16x2 -> 8x1: still pools along the 8
        ((32, 4, 1), {"filters": (4,) * 6}, "after 5 blocks the 32x4 input is 1x1"),
        ((4, 1, 1), {"pool_size": 3, "filters": (4,)}, None),  # one side shorter than the window
        ((9, 9, 1), {"filters": (4, 4), "pool_size": 3, "pool_stride": 1}, None),  # 9 -> 9 -> 9 fits
        ((8, 8, 1), {"filters": (4, 4, 4)}, None),  # 8 -> 4 -> 2 -> 1: the last window fits exactly
    ],
)
def test_pooling_windows_must_fit_the_feature_maps(input_shape, changes, message):
    spec = ModelSpec(**{**TINY.to_dict(), **changes})
    if message is None:
        assert build_conv_model(input_shape, 3, spec).output_shape == (None, 3)
        return
    with pytest.raises(ValueError, match=message):
        build_conv_model(input_shape, 3, spec)


@pytest.mark.parametrize("input_shape", [(8, 8), (0, 8, 1), (8, 8, 1.5), (None, 8, 1), "8,8,1"])
def test_invalid_shapes_are_refused_naming_the_input_shape(input_shape):
    with pytest.raises(ValueError, match=r"`input_shape` must be \(height, width, channels\)"):
        build_conv_model(input_shape, 3, TINY)  # None: flattening needs the size


@pytest.mark.parametrize("num_classes", [1, 0, True, 2.0, "3"])
def test_invalid_class_counts_are_refused(num_classes):
    with pytest.raises(ValueError, match=r"`num_classes` must be an int >= 2"):
        build_conv_model((8, 8, 1), num_classes, TINY)
    with pytest.raises(ValueError, match=r"`num_classes` must be an int >= 2"):
        build_text_model(10, 20, num_classes, TINY_TEXT)


def test_numpy_integers_are_sizes_like_python_ints():
    spec = ModelSpec(filters=[np.int64(4)], dense=np.int32(8), kernel_size=np.int64(3))
    assert spec.to_dict()["filters"] == [4] and type(spec.kernel_size) is int
    json.dumps(spec.to_dict())  # saves as a run's config.json
    model = build_conv_model((np.int64(8), 8, 1), np.int64(3), spec)
    assert model.output_shape == (None, 3)
    assert build_text_model(np.int64(10), np.int64(20), np.int64(3), TINY_TEXT).output_shape == (None, 3)


def test_a_global_head_takes_inputs_of_any_size():
    model = build_conv_model((None, None, 1), 3, ModelSpec(filters=(4,), head="global_max", dense=()))
    assert model.output_shape == (None, 3)
    assert np.asarray(model(np.zeros((2, 12, 20, 1), "float32"))).shape == (2, 3)


def test_model_spec_accepts_lists_and_round_trips():
    spec = ModelSpec(filters=[4, 8], dense=16, window_sizes=[2])
    assert spec.filters == (4, 8) and spec.dense == (16,) and spec.window_sizes == (2,)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="Unknown model setting.*filtres"):
        ModelSpec.from_dict({"filtres": [4]})


# ---- the text factory ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kernel, expected",
    [
        # embedding 20*5; window 2: 2*5*4+4; window 3: 3*5*4+4; votes (4+4)*3+3
        ("factorized", 100 + 44 + 64 + 27),
        # window 2: 2*20*4+4; window 3: 3*20*4+4; votes 27
        ("full", 164 + 244 + 27),
    ],
)
def test_text_model_shape_forward_pass_and_parameter_count(kernel, expected):
    spec = ModelSpec(**{**TINY_TEXT.to_dict(), "text_kernel": kernel})
    model = build_text_model(positions=10, num_ids=20, num_classes=3, spec=spec)
    assert model.output_shape == (None, 3)
    assert model.count_params() == expected
    ids = random_ids(np.random.default_rng(1), 4, 10, 20)
    probabilities = np.asarray(model(ids))
    assert probabilities.shape == (4, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "changes, name",
    [
        ({"filters": (4, 8)}, "filters"),
        ({"window_sizes": (0, 2)}, "window_sizes"),
        ({"window_sizes": (3, 3)}, "window_sizes` must be distinct"),
        ({"text_kernel": "dense"}, "text_kernel"),
        ({"embedding_dim": 0}, "embedding_dim"),
    ],
)
def test_invalid_text_spec_raises_value_error_naming_the_field(changes, name):
    spec = ModelSpec(**{**TINY_TEXT.to_dict(), **changes})
    with pytest.raises(ValueError, match=f"`?{name}`?"):
        build_text_model(10, 20, 3, spec)


def test_text_windows_must_fit_in_the_positions():
    with pytest.raises(ValueError, match="positions=2 is shorter than the largest window"):
        build_text_model(2, 20, 3, TINY_TEXT)


@pytest.mark.parametrize("arguments, name", [((0, 20, 3), "positions"), ((10, 1, 3), "num_ids"), ((10, 20, 3, None, 0), "ids_per_position")])
def test_invalid_text_sizes_are_refused_naming_them(arguments, name):
    with pytest.raises(ValueError, match=f"`{name}` must be"):
        build_text_model(*arguments)


def test_the_text_factory_without_a_spec_builds_convpipes_text_default():
    from models import TEXT_DEFAULTS

    model = build_text_model(16, 100, 3)  # the conv stack's default filters (32, 64) are not a text spec
    assert model.output_shape == (None, 3)
    assert model.get_layer("window3").filters == TEXT_DEFAULTS.filters[0] == 128


# ---- full-height windows are exact convolutions ----------------------------------------------


@pytest.mark.parametrize("window_size", [1, 3])
def test_full_height_conv_equals_dense_conv2d_on_the_one_hot_matrix(window_size):
    rng = np.random.default_rng(window_size)
    num_ids, positions, filters = 11, 9, 5
    layer = FullHeightConv(num_ids, window_size, filters)
    layer.build((None, positions))
    tables = [rng.standard_normal((num_ids, filters)).astype(np.float32) for _ in range(window_size)]
    bias = rng.standard_normal(filters).astype(np.float32)
    layer.set_weights([*tables, bias])

    conv = keras.layers.Conv2D(filters, (window_size, num_ids), padding="valid")
    conv.build((None, positions, num_ids, 1))
    conv.set_weights([np.stack(tables)[:, :, None, :], bias])  # kernel (w, V, 1, F)

    ids = random_ids(rng, 6, positions, num_ids)
    one_hot = np.eye(num_ids, dtype=np.float32)[ids]
    one_hot[ids == 0] = 0.0  # padding rows of the one-hot matrix are all zero
    expected = np.asarray(conv(one_hot[..., None]))[:, :, 0, :]
    actual = np.asarray(layer(ids))
    assert actual.shape == (6, positions - window_size + 1, filters)
    assert np.max(np.abs(actual - expected)) <= 1e-5


def test_padding_contributes_nothing_to_a_window():
    layer = FullHeightConv(num_ids=4, window_size=2, filters=1)
    layer.build((None, 3))
    layer.set_weights([np.ones((4, 1), np.float32), np.full((4, 1), 10.0, np.float32), np.zeros(1, np.float32)])
    out = np.asarray(layer(np.array([[2, 0, 0]], dtype=np.int32)))[0, :, 0]
    np.testing.assert_allclose(out, [1.0, 0.0])  # the padding rows' table entries are ignored


@pytest.mark.parametrize("kernel", ["factorized", "full"])
def test_an_unseen_token_starts_as_padding_not_as_untrained_noise(kernel):
    """A vocabulary fitted on every training token never gives the out-of-vocabulary id (1) in
    training, so its row gets no gradient: it must start at zero, or every unseen token at
    inference adds the random values it was initialized with (with the full kernel, as large
    as a trained row's)."""
    from preprocess.text import OOV_ID

    keras.utils.set_random_seed(0)
    model = build_text_model(10, 13, 3, ModelSpec(**{**TINY_TEXT.to_dict(), "text_kernel": kernel}))
    ids = random_ids(np.random.default_rng(5), 4, 10, 13)
    ids[:, 2:5] = OOV_ID
    as_padding = np.where(ids == OOV_ID, 0, ids)
    np.testing.assert_allclose(np.asarray(model(ids)), np.asarray(model(as_padding)), atol=1e-6)


def test_factorized_form_equals_full_height_conv_with_product_tables():
    rng = np.random.default_rng(7)
    num_ids, dim, window_size, filters, positions = 13, 4, 3, 6, 10
    embedding = TokenEmbedding(num_ids, dim)
    embedding.build((None, positions))
    conv1d = keras.layers.Conv1D(filters, window_size)
    conv1d.build((None, positions, dim))
    full = FullHeightConv(num_ids, window_size, filters)
    full.build((None, positions))

    E = rng.standard_normal((num_ids, dim)).astype(np.float32)  # row 0 deliberately non-zero
    W = rng.standard_normal((window_size, dim, filters)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    embedding.set_weights([E])
    conv1d.set_weights([W, b])
    full.set_weights([*(E @ W[k] for k in range(window_size)), b])

    ids = random_ids(rng, 5, positions, num_ids)
    factorized = np.asarray(conv1d(embedding(ids)))
    np.testing.assert_array_equal(np.asarray(embedding(ids))[ids == 0], 0.0)
    assert np.max(np.abs(factorized - np.asarray(full(ids)))) <= 1e-5


def test_character_n_gram_rows_equal_conv2d_on_the_multi_hot_matrix():
    """With n-grams each row holds several ids; the window sums their kernel rows, which is
    Conv2D on the multi-hot matrix the preprocessor builds (hash collisions count twice)."""
    from preprocess import TextPreprocessor

    pre = TextPreprocessor(level="char", positions=12, ngram_sizes=(2, 3), hash_buckets=5)
    pre.fit(["abcabc", "xyz ab"])
    ids = pre.transform(["abcxyz", "zz a", "b"])
    assert ids.shape == (3, 12, 3)
    rng = np.random.default_rng(3)
    window_size, filters = 3, 4
    layer = FullHeightConv(pre.num_ids, window_size, filters)
    layer.build((None, 12, 3))
    tables = [rng.standard_normal((pre.num_ids, filters)).astype(np.float32) for _ in range(window_size)]
    bias = rng.standard_normal(filters).astype(np.float32)
    layer.set_weights([*tables, bias])
    conv = keras.layers.Conv2D(filters, (window_size, pre.num_ids), padding="valid")
    conv.build((None, 12, pre.num_ids, 1))
    conv.set_weights([np.stack(tables)[:, :, None, :], bias])
    expected = np.asarray(conv(pre.to_one_hot(ids)[..., None]))[:, :, 0, :]
    assert np.max(np.abs(np.asarray(layer(ids)) - expected)) <= 1e-5
    model = build_text_model(12, pre.num_ids, 2, TINY_TEXT, ids_per_position=3)
    assert model.input_shape == (None, 12, 3)
    assert np.asarray(model(ids)).shape == (3, 2)


# ---- persistence -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["conv", "conv-image-augment", "conv-spectrogram-augment", "text-factorized", "text-full"])
def test_keras_round_trip_in_safe_mode_gives_identical_predictions(tmp_path, kind):
    rng = np.random.default_rng(3)
    if kind.startswith("conv"):
        augment = {"augment": 0.2, "augment_kind": kind.split("-")[1]} if "augment" in kind else {}
        model = build_conv_model((8, 8, 1), 3, ModelSpec(**{**TINY.to_dict(), "batch_norm": True, **augment}))
        x = rng.random((4, 8, 8, 1), dtype=np.float32)
    else:
        spec = ModelSpec(**{**TINY_TEXT.to_dict(), "text_kernel": kind.split("-")[1]})
        model = build_text_model(10, 20, 3, spec)
        x = random_ids(rng, 4, 10, 20)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in model.layers]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


# ---- augmentation ----------------------------------------------------------------------------


def test_spectrogram_masks_blank_whole_time_steps_and_bands_while_training_only():
    from models.layers import SpectrogramMasks

    layer = SpectrogramMasks(0.2, seed=1)
    rng = np.random.default_rng(0)
    # decibels as with normalization "none": 0 would be the loudest, so masks take the mean
    x = rng.uniform(-80.0, 0.0, size=(64, 50, 40, 2)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)  # inference: unchanged
    masked = np.asarray(layer(x, training=True))
    assert masked.shape == x.shape
    means = x.mean(axis=(1, 2), keepdims=True)
    changed = masked != x
    np.testing.assert_allclose(masked[changed], np.broadcast_to(means, x.shape)[changed], rtol=1e-5)
    zero = changed[..., 0]
    np.testing.assert_array_equal(changed[..., 0], changed[..., 1])  # channels masked alike
    for example in zero:
        steps, bands = example.all(axis=1), example.all(axis=0)
        # every blanked cell lies in a blanked time step or a blanked band: stripes, not dots
        np.testing.assert_array_equal(example, steps[:, None] | bands[None, :])
        # two masks per axis, each under a fifth of the axis
        assert steps.sum() <= 2 * 0.2 * 50 and bands.sum() <= 2 * 0.2 * 40
    widths = [example.all(axis=1).sum() for example in zero]
    assert np.mean(widths) > 2 and len(set(widths)) > 3  # they vary, and are not all empty
    again = np.asarray(layer(x, training=True))
    assert not np.array_equal(again, masked)  # a new draw on each call


def test_image_augmentation_moves_training_inputs_and_leaves_inference_alone():
    spec = ModelSpec(**{**TINY.to_dict(), "augment": 0.2})
    model = build_conv_model((16, 16, 1), 3, spec)
    names = [layer.name for layer in model.layers]
    assert names[1:4] == ["augment_shift", "augment_zoom", "augment_rotate"]
    augmented = keras.Model(model.input, model.get_layer("augment_rotate").output)
    x = np.zeros((8, 16, 16, 1), dtype=np.float32)
    x[:, 6:10, 6:10] = 1.0
    np.testing.assert_array_equal(np.asarray(augmented(x, training=False)), x)
    moved = np.asarray(augmented(x, training=True))
    assert moved.shape == x.shape and not np.allclose(moved, x)
    # no augmentation, no extra layers: the default model is as before
    assert build_conv_model((16, 16, 1), 3, TINY).count_params() == model.count_params()
    assert not any(layer.name.startswith("augment") for layer in build_conv_model((16, 16, 1), 3, TINY).layers)


def test_custom_layer_configs_hold_every_argument():
    layer = FullHeightConv(num_ids=7, window_size=2, filters=3, name="w")
    clone = FullHeightConv.from_config(layer.get_config())
    assert (clone.num_ids, clone.window_size, clone.filters, clone.name) == (7, 2, 3, "w")
    embedding = TokenEmbedding.from_config(TokenEmbedding(num_ids=7, dim=2).get_config())
    assert (embedding.num_ids, embedding.dim) == (7, 2)


def test_safe_mode_refuses_a_model_with_a_lambda_layer(tmp_path):
    inputs = keras.Input(shape=(3,))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        keras.models.load_model(path, safe_mode=True)


def test_max_and_average_pooling_side_by_side_doubles_the_pooled_features():
    spec = ModelSpec(**{**TINY_TEXT.to_dict(), "head": "global_max_average"})
    model = build_text_model(10, 13, 3, spec)
    # 2 widths x 4 filters x (max, average) = 16 features -> votes 16*3+3
    assert model.get_layer("votes").count_params() == 16 * 3 + 3
    ids = random_ids(np.random.default_rng(0), 2, 10, 13)
    assert np.asarray(model(ids)).shape == (2, 3)
    conv = build_conv_model((8, 8, 1), 3, ModelSpec(**{**TINY.to_dict(), "head": "global_max_average"}))
    assert conv.get_layer("dense1").count_params() == 8 * 8 + 8  # 4 max + 4 average features


def test_text_models_refuse_to_flatten():
    with pytest.raises(ValueError, match="Text models pool over positions"):
        build_text_model(10, 13, 3, ModelSpec(**{**TINY_TEXT.to_dict(), "head": "flatten"}))


def test_a_text_spec_without_a_head_pools_each_window_by_its_maximum():
    """ModelSpec documents head=None as "global_max for text": one max per filter and width,
    no average pooling."""
    spec = ModelSpec(filters=(4,), window_sizes=(2, 3), head=None, dense=(), dropout=0.0, text_kernel="full")
    model = build_text_model(10, 13, 3, spec)
    names = {layer.name for layer in model.layers}
    assert {"max_pool2", "max_pool3"} <= names and not any(name.startswith("average_pool") for name in names)
    assert model.get_layer("votes").count_params() == 2 * 4 * 3 + 3  # 2 widths x 4 filters, one pooling
    # and it is the maximum: a window that fires at one position only is read at full strength
    ids = np.zeros((1, 10), np.int32)
    ids[0, 4] = 5
    pooled = model.get_layer("windows").output
    import keras

    features = np.asarray(keras.Model(model.input, pooled)(ids))
    relu = np.asarray(keras.Model(model.input, [model.get_layer("relu2").output, model.get_layer("relu3").output])(ids)[0])
    np.testing.assert_allclose(features[0, :4], relu[0].max(axis=0), rtol=1e-6)


def test_dropout_reaches_the_softmax_even_without_hidden_layers():
    """The text default has no hidden layers (dense=()): its only dropout is the one before the
    softmax. Training calls must then differ from call to call, inference calls not."""
    spec = ModelSpec(filters=(8,), window_sizes=(2,), head="global_max", dense=(), dropout=0.5, text_kernel="full")
    model = build_text_model(10, 13, 3, spec)
    assert model.get_layer("dropout_out").rate == 0.5
    ids = np.random.default_rng(0).integers(1, 13, size=(4, 10)).astype(np.int32)
    trained = [np.asarray(model(ids, training=True)) for _ in range(3)]
    assert any(not np.allclose(trained[0], other) for other in trained[1:])
    np.testing.assert_array_equal(np.asarray(model(ids, training=False)), np.asarray(model(ids, training=False)))


def test_dropout_comes_before_every_hidden_layer_and_the_softmax_at_the_spec_rate():
    """README: `--dropout` is "dropout before each fully connected layer". With two hidden
    layers that is three Dropout layers, each feeding the Dense layer after it."""
    spec = ModelSpec(filters=(4,), dense=(16, 8), dropout=0.25)
    model = build_conv_model((8, 8, 1), 3, spec)
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [layer.name for layer in dropouts] == ["dropout1", "dropout2", "dropout_out"]
    assert all(layer.rate == 0.25 for layer in dropouts)
    for dropout, dense in zip(dropouts, ["dense1", "dense2", "votes"]):
        assert model.get_layer(dense).input is dropout.output
    assert model.get_layer("dense1").units == 16 and model.get_layer("dense2").units == 8


def test_a_bare_model_spec_has_the_image_defaults_the_readme_table_states():
    # the library's ModelSpec() is the CLI's image model: 32,64 filters of 3, 2x2 pooling, one
    # hidden layer of 128, dropout 0.3, no batch norm nor augmentation
    spec = ModelSpec()
    assert (spec.filters, spec.kernel_size, spec.pool_size, spec.pool_stride) == ((32, 64), 3, 2, 2)
    assert (spec.dense, spec.dropout, spec.batch_norm, spec.augment) == ((128,), 0.3, False, 0.0)
    assert (spec.window_sizes, spec.text_kernel, spec.embedding_dim) == ((3, 4, 5), "factorized", 64)


def test_spectrogram_masks_blank_frequency_bands_as_well_as_time_steps():
    """SpecAugment masks both axes; the existing test measures only the time stripes' widths,
    so a layer that never masked a band would pass it."""
    from models.layers import SpectrogramMasks

    layer = SpectrogramMasks(0.2, seed=1)
    x = np.random.default_rng(0).uniform(-80.0, 0.0, size=(64, 50, 40, 1)).astype(np.float32)
    changed = (np.asarray(layer(x, training=True)) != x)[..., 0]
    band_widths = [int(example.all(axis=0).sum()) for example in changed]  # bands blanked over every time step
    step_widths = [int(example.all(axis=1).sum()) for example in changed]
    assert np.mean(band_widths) > 2 and len(set(band_widths)) > 3
    assert np.mean(step_widths) > 2
    assert max(band_widths) <= 2 * 0.2 * 40


def test_numpy_rates_in_a_spec_become_plain_floats_so_it_saves_as_json():
    spec = ModelSpec(dropout=np.float32(0.1), augment=np.float64(0.1)).validate()
    assert json.loads(json.dumps(spec.to_dict()))["dropout"] == 0.1 and type(spec.augment) is float  # not 0.10000000149


@pytest.mark.parametrize(
    "layer, arguments, name",
    [
        (FullHeightConv, {"num_ids": 10, "window_size": 0, "filters": 4}, "window_size"),  # was ZeroDivisionError in build
        (FullHeightConv, {"num_ids": 10, "window_size": 2, "filters": 0}, "filters"),  # was a (batch, positions, 0) output
        (FullHeightConv, {"num_ids": 1, "window_size": 2, "filters": 4}, "num_ids"),
        (FullHeightConv, {"num_ids": 10, "window_size": 2.0, "filters": 4}, "window_size"),
        (TokenEmbedding, {"num_ids": 10, "dim": 0}, "dim"),
        (TokenEmbedding, {"num_ids": -1, "dim": 3}, "num_ids"),
    ],
)
def test_the_text_layers_refuse_bad_sizes_naming_them(layer, arguments, name):
    """The layers are public (`from models import FullHeightConv`): a bad size is one ValueError
    naming it, as `SpectrogramMasks` and the factories give, not an error deep in `build`."""
    with pytest.raises(ValueError, match=f"`{name}` must be"):
        layer(**arguments)


def test_a_full_height_window_longer_than_the_text_is_refused_not_an_empty_output():
    with pytest.raises(ValueError, match="positions=2 is shorter than window_size=4"):
        FullHeightConv(num_ids=10, window_size=4, filters=3)(np.ones((2, 2), np.int32))
    assert FullHeightConv(10, 2, 3)(np.ones((2, 2), np.int32)).shape == (2, 1, 3)  # exactly fits


def test_spectrogram_masks_take_numpy_ints_as_the_spec_does():
    from models.layers import SpectrogramMasks

    assert SpectrogramMasks(0.2, masks=np.int64(1)).get_config()["masks"] == 1
    json.dumps(SpectrogramMasks(0.2, masks=np.int64(1)).get_config())  # saved in a .keras file's JSON


@pytest.mark.parametrize(
    "changes, received",
    [({"filters": ["4"]}, "filters='4'"), ({"filters": [4, "8"]}, "filters=4,'8'"), ({"dense": [8, 2.5]}, "dense=8,2.5")],
)
def test_a_refused_list_shows_which_value_is_not_an_int(changes, received):
    """`filters=["4"]` used to be refused as "Received: filters=4", which reads as valid."""
    with pytest.raises(ValueError, match=f"Received: {received}$"):
        ModelSpec(**changes).validate()


@pytest.mark.parametrize("spec", [{"filters": [4]}, "small"])
def test_a_spec_that_is_not_a_model_spec_is_a_type_error_saying_what_is_wanted(spec):
    # A dict of fields failed with "'dict' object has no attribute 'validate'".
    from models import build_conv_model, build_text_model

    hint = "ModelSpec.from_dict" if isinstance(spec, dict) else "Received: str"
    with pytest.raises(TypeError, match=f"`spec` must be a ModelSpec.*{hint}"):
        build_conv_model((8, 8, 1), 2, spec)
    with pytest.raises(TypeError, match=f"`spec` must be a ModelSpec.*{hint}"):
        build_text_model(8, 10, 2, spec)
