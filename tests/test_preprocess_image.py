"""ImagePreprocessor: decoding real files of many kinds into fixed-size float32 arrays."""

from __future__ import annotations

import io
import os
import json

import numpy as np
import pytest
from PIL import Image

from preprocess import ImagePreprocessor, InputError, Preprocessor
from tests.conftest import write_png


def gradient_rgb(height: int = 12, width: int = 16) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 128)], axis=-1
    ).astype(np.uint8)


# ---- shape, dtype, range ---------------------------------------------------------------------


@pytest.mark.parametrize("color_mode, channels", [("grayscale", 1), ("rgb", 3)])
def test_output_shape_dtype_and_range(tmp_path, color_mode, channels):
    path = write_png(tmp_path / "g.png", gradient_rgb())
    pre = ImagePreprocessor(image_size=(6, 9), color_mode=color_mode)
    out = pre.transform([path, path])
    assert out.shape == (2, 6, 9, channels)
    assert pre.output_shape == (6, 9, channels)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.max() > 0.5 and out.min() < 0.2  # the gradient's range survives, not a constant


def test_known_pixels_map_to_known_values(tmp_path):
    array = np.array([[0, 255], [51, 204]], dtype=np.uint8)
    path = write_png(tmp_path / "k.png", array)
    out = ImagePreprocessor(image_size=(2, 2)).transform_one(path)
    np.testing.assert_allclose(out[:, :, 0], array / 255.0, atol=1e-6)


def test_rgb_channels_keep_their_order(tmp_path):
    red = np.zeros((4, 4, 3), dtype=np.uint8)
    red[..., 0] = 255
    out = ImagePreprocessor(image_size=(4, 4), color_mode="rgb").transform_one(write_png(tmp_path / "r.png", red))
    np.testing.assert_allclose(out.mean(axis=(0, 1)), [1.0, 0.0, 0.0], atol=1e-6)


def test_transform_is_deterministic(tmp_path):
    path = write_png(tmp_path / "g.png", gradient_rgb())
    pre = ImagePreprocessor(image_size=(7, 5), color_mode="rgb")
    np.testing.assert_array_equal(pre.transform_one(path), pre.transform_one(path))


def test_fit_transform_is_fit_then_transform_and_an_empty_list_gives_no_rows(tmp_path):
    path = write_png(tmp_path / "g.png", gradient_rgb())
    pre = ImagePreprocessor(image_size=(7, 5), color_mode="rgb")
    np.testing.assert_array_equal(pre.fit_transform([path, path]), pre.fit([path, path]).transform([path, path]))
    empty = ImagePreprocessor(image_size=(7, 5)).fit_transform([])
    assert empty.shape == (0, 7, 5, 1) and empty.dtype == np.float32


def test_path_bytes_and_array_inputs_agree(tmp_path):
    array = gradient_rgb()
    path = write_png(tmp_path / "g.png", array)
    pre = ImagePreprocessor(image_size=(12, 16), color_mode="rgb")
    from_path = pre.transform_one(path)
    np.testing.assert_array_equal(from_path, pre.transform_one(path.read_bytes()))
    np.testing.assert_array_equal(from_path, pre.transform_one(array))
    np.testing.assert_allclose(from_path, pre.transform_one(array / 255.0), atol=1 / 255 + 1e-6)


# ---- resizing --------------------------------------------------------------------------------


def test_pad_keeps_aspect_ratio_with_zero_rows_top_and_bottom(tmp_path):
    bar = np.full((4, 16), 255, dtype=np.uint8)  # a wide white bar, aspect 4:1
    out = ImagePreprocessor(image_size=(16, 16), resize_mode="pad").transform_one(write_png(tmp_path / "bar.png", bar))
    rows = out[:, :, 0].mean(axis=1)
    # scaled to 16 x 4 and centred: rows 6..9 hold the bar, everything else is zero padding
    np.testing.assert_array_equal(rows[:6], 0.0)
    np.testing.assert_array_equal(rows[10:], 0.0)
    np.testing.assert_allclose(rows[6:10], 1.0, atol=1e-6)


def test_pad_keeps_aspect_ratio_with_zero_columns_left_and_right(tmp_path):
    # the tall counterpart of the wide bar above: a 16 x 4 bar keeps its size and is centred
    # sideways, so columns 6..9 hold it and the rest is zero padding on both sides
    bar = np.full((16, 4), 255, dtype=np.uint8)
    out = ImagePreprocessor(image_size=(16, 16), resize_mode="pad").transform_one(write_png(tmp_path / "tall.png", bar))
    columns = out[:, :, 0].mean(axis=0)
    np.testing.assert_array_equal(columns[:6], 0.0)
    np.testing.assert_array_equal(columns[10:], 0.0)
    np.testing.assert_allclose(columns[6:10], 1.0, atol=1e-6)


def test_stretch_fills_the_whole_output(tmp_path):
    bar = np.full((4, 16), 255, dtype=np.uint8)
    out = ImagePreprocessor(image_size=(16, 16), resize_mode="stretch").transform_one(write_png(tmp_path / "b.png", bar))
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_crop_keeps_the_centre(tmp_path):
    image = np.zeros((8, 24), dtype=np.uint8)
    image[:, 8:16] = 255  # black | white | black thirds
    out = ImagePreprocessor(image_size=(8, 8), resize_mode="crop").transform_one(write_png(tmp_path / "c.png", image))
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_value_range_minus_one_to_one(tmp_path):
    image = np.zeros((4, 4), dtype=np.uint8)
    image[:, 2:] = 255
    path = write_png(tmp_path / "xo.png", image)
    out = ImagePreprocessor(image_size=(4, 4), value_range="-1..1").transform_one(path)
    np.testing.assert_allclose(out[:, :2, 0], -1.0, atol=1e-6)
    np.testing.assert_allclose(out[:, 2:, 0], 1.0, atol=1e-6)
    unit = ImagePreprocessor(image_size=(4, 4)).transform_one(path)
    np.testing.assert_allclose(out, unit * 2 - 1, atol=1e-6)


# ---- the kinds of files real folders hold -----------------------------------------------------


@pytest.mark.parametrize("background", [255, 0])
def test_rgba_is_composited_on_the_background(tmp_path, background):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red everywhere ...
    rgba[:, :2, 3] = 255  # ... opaque on the left half, fully transparent on the right
    path = write_png(tmp_path / "a.png", rgba)
    out = ImagePreprocessor(image_size=(4, 4), color_mode="rgb", background=background).transform_one(path)
    np.testing.assert_allclose(out[:, :2], np.broadcast_to([1.0, 0.0, 0.0], (4, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(out[:, 2:], background / 255.0, atol=1e-6)


def test_palette_png_is_converted_to_its_colours(tmp_path):
    image = Image.new("P", (4, 2))
    image.putpalette([0, 0, 255, 0, 255, 0] + [0] * (256 * 3 - 6))  # index 0 blue, 1 green
    image.putdata([0, 0, 1, 1] * 2)
    path = tmp_path / "p.png"
    image.save(path)
    assert Image.open(path).mode == "P"
    out = ImagePreprocessor(image_size=(2, 4), color_mode="rgb").transform_one(path)
    np.testing.assert_allclose(out[:, :2], np.broadcast_to([0.0, 0.0, 1.0], (2, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(out[:, 2:], np.broadcast_to([0.0, 1.0, 0.0], (2, 2, 3)), atol=1e-6)


def test_palette_transparency_is_composited(tmp_path):
    image = Image.new("P", (4, 2))
    image.putpalette([255, 0, 0, 0, 0, 0] + [0] * (256 * 3 - 6))  # index 0 red, 1 black
    image.putdata([0, 0, 1, 1] * 2)
    path = tmp_path / "pt.png"
    image.save(path, transparency=1)  # index 1 is transparent
    out = ImagePreprocessor(image_size=(2, 4), color_mode="rgb", background=255).transform_one(path)
    np.testing.assert_allclose(out[:, 2:], 1.0, atol=1e-6)  # transparent black -> white background
    np.testing.assert_allclose(out[:, :2, 0], 1.0, atol=1e-6)


def test_a_transparent_colour_and_an_rgba_palette_are_composited(tmp_path):
    # a PNG's tRNS chunk marks one colour transparent in gray and RGB files, without an alpha band
    gray = np.full((2, 4), 100, np.uint8)
    gray[:, :2] = 7
    Image.fromarray(gray).save(tmp_path / "gray.png", transparency=7)
    rgb = np.full((2, 4, 3), 100, np.uint8)
    rgb[:, :2] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "rgb.png", transparency=(1, 2, 3))
    for name, mode in (("gray.png", "grayscale"), ("rgb.png", "rgb")):
        out = ImagePreprocessor(image_size=(2, 4), color_mode=mode, background=255).transform_one(tmp_path / name)
        np.testing.assert_allclose(out[:, :2], 1.0, atol=1e-6)  # on the background, not the stored colour
        np.testing.assert_allclose(out[:, 2:], 100 / 255, atol=1e-6)
    # an in-memory palette image whose palette holds alpha reads as its RGBA pixels do
    rgba = np.zeros((2, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 2:, 3] = 255
    palette = Image.fromarray(rgba).quantize(4)
    assert palette.mode == "P" and palette.palette.mode == "RGBA"
    pre = ImagePreprocessor(image_size=(2, 4), color_mode="rgb", background=255)
    np.testing.assert_array_equal(pre.transform_one(palette), pre.transform_one(rgba))


def gray_png(width: int, bit_depth: int, row: bytes, transparent: int) -> bytes:
    """A one-row gray PNG of `bit_depth` bits whose tRNS chunk marks the gray `transparent`."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, 1, bit_depth, 0, 0, 0, 0)
    trns = chunk(b"tRNS", struct.pack(">H", transparent))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + trns + chunk(b"IDAT", zlib.compress(b"\0" + row)) + chunk(b"IEND", b"")


B = 128 / 255  # the background the transparent pixels show


@pytest.mark.parametrize(
    "bit_depth, row, transparent, expected",
    [
        # 1 bit: white (1) is transparent, black stays
        (1, bytes([0b10100000]), 1, [B, 0, B, 0]),
        # 2 bits: Pillow scales the pixels (1 -> 85) but not the tRNS gray (1)
        (2, bytes([0b00011011]), 1, [0, B, 170 / 255, 1]),
        # 4 bits
        (4, bytes([0x0F, 0x52]), 5, [0, 1, B, 34 / 255]),
        # 16 bits: matched on the 16-bit values, before they are scaled to 8 bits
        (16, np.array([1000, 1001, 60000, 0], ">u2").tobytes(), 1000, [B, 1001 / 65535, 60000 / 65535, 0]),
    ],
    ids=["1-bit", "2-bit", "4-bit", "16-bit"],
)
def test_the_transparent_gray_of_low_and_high_bit_depth_pngs_is_composited(bit_depth, row, transparent, expected):
    pre = ImagePreprocessor(image_size=(1, 4), background=128)
    data = gray_png(4, bit_depth, row, transparent)
    out = pre.transform_one(data)
    np.testing.assert_allclose(out[0, :, 0], expected, atol=0.6 / 255)
    opened = Image.open(io.BytesIO(data))  # the caller's PIL image: read alike, and left as it was
    info = dict(opened.info)
    np.testing.assert_array_equal(pre.transform_one(opened), out)
    assert opened.info == info


def test_cmyk_tiff_is_converted_to_rgb(tmp_path):
    path = tmp_path / "cyan.tif"
    Image.new("CMYK", (4, 4), (255, 0, 0, 0)).save(path)  # pure cyan ink
    out = ImagePreprocessor(image_size=(4, 4), color_mode="rgb").transform_one(path)
    np.testing.assert_allclose(out.mean(axis=(0, 1)), [0.0, 1.0, 1.0], atol=1e-6)


def test_gray_with_alpha_is_composited(tmp_path):
    la = np.zeros((2, 4, 2), dtype=np.uint8)  # black ...
    la[:, :2, 1] = 255  # ... opaque on the left, transparent on the right
    path = tmp_path / "la.png"
    Image.frombytes("LA", (4, 2), la.tobytes()).save(path)
    out = ImagePreprocessor(image_size=(2, 4), background=255).transform_one(path)[:, :, 0]
    np.testing.assert_allclose(out[:, :2], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[:, 2:], 1.0, atol=1e-6)


def test_16_bit_grayscale_png_uses_the_full_16_bit_range(tmp_path):
    array = np.array([[0, 16384, 32768, 65535]] * 2, dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    assert Image.open(path).mode.startswith("I")
    out = ImagePreprocessor(image_size=(2, 4)).transform_one(path)
    np.testing.assert_allclose(out[0, :, 0], array[0] / 65535.0, atol=1 / 255 + 1e-6)


def test_a_dark_16_bit_grayscale_png_stays_on_the_16_bit_scale(tmp_path):
    # Pillow before 10.3 opens it as 32-bit "I" pixels, whose largest value (here 255) said 8-bit
    array = np.array([[0, 128, 255, 255]] * 2, dtype=np.uint16)
    path = tmp_path / "dark.png"
    Image.fromarray(array).save(path)
    out = ImagePreprocessor(image_size=(2, 4)).transform_one(path)
    assert out.max() == 1 / np.float32(255)  # 255 of 65,535 is the darkest gray above black, not white


def test_a_16_bit_array_reads_exactly_like_the_16_bit_file_it_came_from(tmp_path):
    array = np.array([[0, 255, 256, 16384, 32896, 40000, 65534, 65535]] * 2, dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    from_file = np.asarray(Image.open(path))
    np.testing.assert_array_equal(from_file, array)
    from_file = from_file.astype(np.uint16)  # int32 before Pillow 10.3 (mode "I"), uint16 since
    pre = ImagePreprocessor(image_size=(2, 8))
    # was cast to uint8 (256 -> 0, 40000 -> 64): 0.251 where the path gives 0.608
    np.testing.assert_array_equal(pre.transform_one(from_file), pre.transform_one(path))
    assert pre.transform_one(from_file)[0, 5, 0] == pytest.approx(40000 / 65535, abs=1 / 255)
    # (a colour array reads like a 16-bit colour file: the next test)


def test_12_bit_pixels_in_a_16_bit_file_fill_the_output_range_at_bit_depth_12(tmp_path):
    # A 12-bit camera stores 0-4095: on the 16-bit scale that is the bottom 16 of 256 levels.
    array = np.array([[0, 1024, 2048, 4095]] * 2, dtype=np.uint16)
    path = write_png(tmp_path / "camera.png", array)
    twelve = ImagePreprocessor(image_size=(2, 4), bit_depth=12)
    np.testing.assert_allclose(twelve.transform_one(path)[0, :, 0], array[0] / 4095.0, atol=1 / 255 + 1e-6)
    assert len(np.unique(twelve.transform_one(path))) == 4
    # 8-bit levels stored on the 12-bit scale read back as themselves: rounded, not truncated
    levels = np.arange(256)
    stored = write_png(tmp_path / "levels.png", np.round(levels * 4095 / 255).astype(np.uint16)[None, :])
    read = ImagePreprocessor(image_size=(1, 256), bit_depth=12).transform_one(stored)[0, :, 0]
    np.testing.assert_array_equal(np.round(read * 255).astype(int), levels)
    sixteen = ImagePreprocessor(image_size=(2, 4))  # the default scale, as before
    np.testing.assert_allclose(sixteen.transform_one(path)[0, :, 0], array[0] / 65535.0, atol=1 / 255 + 1e-6)
    # a gray array of the same pixels reads like the file; colour stays on the 16-bit scale, as
    # Pillow reads a 16-bit colour file (its high bytes)
    np.testing.assert_array_equal(twelve.transform_one(array), twelve.transform_one(path))
    rgb = ImagePreprocessor(image_size=(2, 4), color_mode="rgb", bit_depth=12)
    colour = np.stack([array] * 3, axis=-1)
    np.testing.assert_array_equal(rgb.transform_one(colour), ImagePreprocessor(image_size=(2, 4), color_mode="rgb").transform_one(colour))
    assert ImagePreprocessor.from_config(twelve.get_config()).bit_depth == 12


def png_16_bit_rgb(pixels: np.ndarray, transparent: tuple[int, int, int] | None = None) -> bytes:
    """A 16-bit RGB PNG, which Pillow cannot write (with a tRNS colour, `transparent`)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    height, width, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    trns = chunk(b"tRNS", struct.pack(">HHH", *transparent)) if transparent is not None else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + trns + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_a_16_bit_colour_png_with_a_transparent_colour_stays_opaque():
    # Pillow reads the pixels as 8 bits (25700 -> 100) but keeps the 16-bit tRNS colour (100):
    # compositing on it turned opaque gray white
    pixels = np.full((2, 4, 3), 25700, np.uint16)
    pre = ImagePreprocessor(image_size=(2, 4), color_mode="rgb", background=255)
    np.testing.assert_allclose(pre.transform_one(png_16_bit_rgb(pixels, transparent=(100, 100, 100))), 100 / 255, atol=1e-6)


def test_a_16_bit_colour_array_reads_exactly_like_the_16_bit_colour_file_it_came_from():
    # Pillow keeps a 16-bit colour file's high bytes; the array was divided by 257 instead,
    # one level off for about half of the values (32768: 128 from the file, 127 from the array)
    pixels = np.random.default_rng(0).integers(0, 65536, (6, 5, 3)).astype(np.uint16)
    pixels[0, 0] = [32768, 32767, 256]
    pre = ImagePreprocessor(image_size=(6, 5), color_mode="rgb")
    from_file = pre.transform_one(png_16_bit_rgb(pixels))
    np.testing.assert_allclose(from_file[0, 0] * 255, [128, 127, 1], atol=1e-4)
    np.testing.assert_array_equal(pre.transform_one(pixels), from_file)


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 3)])
def test_big_endian_arrays_read_like_their_native_twins(shape):
    # `np.frombuffer(data, ">u2")`, FITS images: the same numbers, the other byte order
    pixels = np.random.default_rng(0).integers(0, 65536, shape).astype(np.uint16)
    pre = ImagePreprocessor(image_size=(6, 5), color_mode="rgb" if len(shape) == 3 else "grayscale")
    np.testing.assert_array_equal(pre.transform_one(pixels.astype(">u2")), pre.transform_one(pixels))
    small = (pixels // 257).astype(np.int16)
    np.testing.assert_array_equal(pre.transform_one(small.astype(">i2")), pre.transform_one(small))


def test_16_bit_pixels_above_the_bit_depth_are_refused_not_clipped(tmp_path):
    array = np.array([[0, 5000]], dtype=np.uint16)
    path = write_png(tmp_path / "bright.png", array)
    pre = ImagePreprocessor(image_size=(1, 2), bit_depth=12)
    for x in (path, array):
        with pytest.raises(InputError, match=r"pixels above bit_depth=12 \(up to 5000: train with --bit-depth 14\)") as caught:
            pre.transform_one(x)
        assert caught.value.reason.startswith("pixels above")  # what a summary groups such images by
    # 8-bit files know nothing of it
    assert ImagePreprocessor(image_size=(1, 2), bit_depth=8).transform_one(np.array([[0, 255]], dtype=np.uint8)).max() == 1.0


@pytest.mark.parametrize("bad", [7, 17, "12", 12.0, None])
def test_a_bit_depth_outside_8_to_16_is_refused(bad):
    with pytest.raises(ValueError, match=r"`bit_depth` must be an int 8-16"):
        ImagePreprocessor(bit_depth=bad).validate_params()


def test_the_bit_depth_is_probed_from_16_bit_images_only(tmp_path):
    from preprocess.image import probe_images

    eight = [write_png(tmp_path / f"e{i}.png", np.full((4, 4), 200, dtype=np.uint8)) for i in range(3)]
    twelve = [write_png(tmp_path / f"t{i}.png", np.full((4, 4), v, dtype=np.uint16)) for i, v in enumerate((100, 3000, 2100))]
    assert "bit_depth" not in probe_images(eight)
    assert probe_images(twelve)["bit_depth"] == 12  # 3000 needs 12 bits
    assert probe_images([*eight, *twelve])["bit_depth"] == 12
    # a sensor's depths only, so that a brighter image than the sample's still fits
    for brightest, bits in ((40, 8), (255, 8), (256, 10), (1700, 12), (4095, 12), (4096, 14), (16384, 16), (65535, 16)):
        assert probe_images([np.full((4, 4), brightest, dtype=np.uint16)])["bit_depth"] == bits, brightest
    assert "bit_depth" not in probe_images([np.full((4, 4, 3), 100, dtype=np.uint16)])  # colour: always 16-bit scale
    assert "bit_depth" not in probe_images(twelve, max_pixels=15)  # 16 pixels each: not decoded
    assert "bit_depth" not in probe_images(twelve, depth=False)  # --bit-depth given: nothing decoded


def test_the_bit_depth_is_probed_from_32_bit_integer_tiffs_read_on_the_16_bit_scale(tmp_path):
    from preprocess.image import probe_images

    def tiff(name, value):
        path = tmp_path / name
        Image.fromarray(np.full((4, 4), value, dtype=np.int32), mode="I").save(path)  # Pillow's "I" TIFF
        return path

    twelve = tiff("twelve.tif", 4000)  # a 12-bit camera's pixels in 32-bit integers
    assert Image.open(twelve).mode == "I"
    assert probe_images([twelve])["bit_depth"] == 12
    assert "bit_depth" not in probe_images([tiff("dark.tif", 200)])  # at most 255: read as 8-bit values
    assert "bit_depth" not in probe_images([tiff("huge.tif", 70000)])  # refused when read


def test_array_dtypes_mean_what_files_mean():
    pre = ImagePreprocessor(image_size=(1, 4))
    expected = np.array([0, 51, 204, 255]) / 255
    for dtype in (np.uint8, np.int16, np.int32, np.int64, np.uint32):
        out = pre.transform_one(np.array([[0, 51, 204, 255]], dtype))
        np.testing.assert_allclose(out[0, :, 0], expected, atol=1e-6)
    # bool is black and white, not 0 and 1/255
    np.testing.assert_array_equal(pre.transform_one(np.array([[False, True, True, False]]))[0, :, 0], [0, 1, 1, 0])
    np.testing.assert_allclose(pre.transform_one(np.array([[0.0, 0.2, 0.8, 1.0]]))[0, :, 0], expected, atol=1e-6)


@pytest.mark.parametrize(
    "array, reason",
    [
        # these wrapped around silently: 300 -> 0.173, -1 -> 1.0
        (np.array([[300, -1]], np.int16), "int16 image array values must lie in 0-255, found -1..300"),
        (np.array([[0, 256]], np.int32), "int32 image array values must lie in 0-255, found 0..256"),
        (np.array([[0.0, 255.0]]), "float image array values must lie in [0, 1], found 0..255 (divide 0-255 pixels by"),
        (np.array([[-0.5, 0.5]], np.float32), "float image array values must lie in [0, 1], found -0.5..0.5"),
        (np.array([["a", "b"]]), "image array must hold numbers, got dtype <U1"),
    ],
)
def test_arrays_outside_their_range_are_refused_saying_the_range_found(array, reason):
    with pytest.raises(InputError) as caught:
        ImagePreprocessor(image_size=(1, 2)).transform_one(array)
    assert caught.value.reason.startswith(reason), caught.value.reason


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((10, 20, 3), dtype=np.uint8)  # 20 wide, 10 tall ...
    stored[:, :10] = 255  # ... white on the left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)
    # Displayed upright, the image is 10 wide and 20 tall, and the white half is on top.
    array = ImagePreprocessor(image_size=(20, 10)).transform_one(path)[:, :, 0]
    assert array[:9].mean() > 0.9
    assert array[11:].mean() < 0.1


def test_animated_gif_uses_the_first_frame(tmp_path):
    white = Image.fromarray(np.full((6, 6), 255, dtype=np.uint8))
    black = Image.fromarray(np.zeros((6, 6), dtype=np.uint8))
    path = tmp_path / "anim.gif"
    gray = Image.fromarray(np.full((6, 6), 128, dtype=np.uint8))
    white.save(path, save_all=True, append_images=[black, gray], duration=100, loop=0)
    assert Image.open(path).n_frames == 3
    out = ImagePreprocessor(image_size=(6, 6)).transform_one(path)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


# ---- broken inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"this is not an image at all", "not a readable image"),
        (b"", "empty file"),
    ],
)
def test_undecodable_file_raises_input_error_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        ImagePreprocessor(image_size=(4, 4)).transform_one(path)
    message = str(caught.value)
    assert str(path) in message and reason in message
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)


def test_truncated_png_raises_input_error(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(gradient_rgb(64, 64)).save(buffer, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(InputError, match="cut.png"):
        ImagePreprocessor(image_size=(4, 4)).transform_one(path)


def test_missing_file_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        ImagePreprocessor().transform_one(tmp_path / "absent.png")


def test_image_above_max_pixels_is_refused(tmp_path):
    path = write_png(tmp_path / "big.png", np.zeros((20, 30), dtype=np.uint8))
    with pytest.raises(InputError, match=r"big\.png: image too large \(30x20 pixels"):
        ImagePreprocessor(image_size=(4, 4), max_pixels=599).transform_one(path)
    # the limit is inclusive: exactly max_pixels is fine
    assert ImagePreprocessor(image_size=(4, 4), max_pixels=600).transform_one(path).shape == (4, 4, 1)


# ---- parameters and persistence --------------------------------------------------------------


@pytest.mark.parametrize(
    "params, name",
    [
        ({"image_size": (0, 8)}, "image_size"),
        ({"image_size": (8,)}, "image_size"),
        ({"image_size": (8.5, 8)}, "image_size"),
        ({"color_mode": "cmyk"}, "color_mode"),
        ({"resize_mode": "squash"}, "resize_mode"),
        ({"value_range": "0..255"}, "value_range"),
        ({"background": "white"}, "background"),  # failed only at transform of an alpha image
        ({"background": 300}, "background"),
        ({"background": -5}, "background"),
        ({"background": True}, "background"),
        ({"max_pixels": "big"}, "max_pixels"),  # a raw TypeError
        ({"max_pixels": 0}, "max_pixels"),
    ],
)
def test_bad_parameters_raise_value_error_naming_the_parameter(params, name):
    pre = ImagePreprocessor(**params)  # __init__ only stores
    with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}="):
        pre.transform_one(np.zeros((4, 4), dtype=np.uint8))


@pytest.mark.parametrize(
    "params, name",
    [
        ({"image_size": "32"}, "image_size"),  # read as (3, 2)
        ({"image_size": 32}, "image_size"),  # a raw TypeError
        ({"image_size": (-4, 8)}, "image_size"),  # (-4, 8, 1)
        ({"color_mode": "RGB"}, "color_mode"),  # (32, 32, 3), yet transform refused it
    ],
)
def test_output_shape_of_bad_parameters_raises_value_error_naming_the_parameter(params, name):
    # known before any input, e.g. to build a model: a shape transform would never give was returned
    with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}="):
        ImagePreprocessor(**params).output_shape


def test_scalar_image_size_raises_value_error_naming_the_parameter():
    with pytest.raises(ValueError, match="image_size"):
        ImagePreprocessor(image_size=32).transform_one(np.zeros((4, 4), dtype=np.uint8))


def test_an_image_size_above_max_pixels_is_refused_before_any_memory_is_used():
    exactly = ImagePreprocessor(image_size=(20, 30), max_pixels=600)  # the limit is inclusive
    assert exactly.transform_one(np.zeros((4, 4), np.uint8)).shape == (20, 30, 1)
    with pytest.raises(ValueError, match="`image_size` holds 651 pixels, more than max_pixels=650"):
        ImagePreprocessor(image_size=(21, 31), max_pixels=650).transform_one(np.zeros((4, 4), np.uint8))
    # (100000, 100000) was killed by the kernel when the first canvas was allocated
    with pytest.raises(ValueError) as caught:
        ImagePreprocessor(image_size=(100_000, 100_000)).transform_one(np.zeros((4, 4), dtype=np.uint8))
    assert str(caught.value) == (
        "`image_size` holds 10,000,000,000 pixels, more than max_pixels=64,000,000. "
        "Received: image_size=(100000, 100000)"
    )


def test_one_array_given_as_a_batch_is_refused_and_a_4_d_array_is_a_batch():
    pre = ImagePreprocessor(image_size=(5, 6), color_mode="rgb")
    with pytest.raises(TypeError) as caught:
        pre.transform(np.zeros((5, 6, 3), dtype=np.uint8))  # its rows used to become 5 images
    assert str(caught.value) == (
        "`inputs` must be a list of inputs; got ndarray of shape (5, 6, 3). For one input, use transform_one."
    )
    batch = np.random.default_rng(0).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(pre.transform(batch), pre.transform(list(batch)))
    assert pre.transform(batch).shape == (2, 5, 6, 3)


def test_numpy_image_size_saves_and_loads(tmp_path):
    pre = ImagePreprocessor(image_size=(np.int64(8), np.int64(6)), background=np.uint8(0))
    pre.save(tmp_path / "pre.json")  # was "Object of type int64 is not JSON serializable"
    assert pre.get_config()["image_size"] == [8, 6] and type(pre.get_config()["background"]) is int
    assert ImagePreprocessor.load(tmp_path / "pre.json").output_shape == (8, 6, 1)


def test_save_load_round_trip(tmp_path):
    pre = ImagePreprocessor(image_size=(5, 7), color_mode="rgb", resize_mode="crop", value_range="-1..1", background=0)
    pre.save(tmp_path / "pre.json")
    assert not (tmp_path / "pre.npz").exists()  # stateless: nothing but JSON
    loaded = ImagePreprocessor.load(tmp_path / "pre.json")
    assert loaded.get_config() == pre.get_config()
    assert type(Preprocessor.load(tmp_path / "pre.json")) is ImagePreprocessor
    image = write_png(tmp_path / "g.png", gradient_rgb())
    np.testing.assert_array_equal(loaded.transform_one(image), pre.transform_one(image))


def test_get_config_holds_every_constructor_argument():
    config = ImagePreprocessor(image_size=(3, 4), max_pixels=10).get_config()
    assert config == {
        "image_size": [3, 4],
        "color_mode": "grayscale",
        "resize_mode": "pad",
        "value_range": "0..1",
        "background": 255,
        "max_pixels": 10,
        "bit_depth": 16,
    }
    assert ImagePreprocessor.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="Unknown ImagePreprocessor parameter.*colour"):
        ImagePreprocessor.from_config({**config, "colour": "rgb"})


def test_float_tiffs_read_on_the_unit_scale_and_others_are_refused(tmp_path):
    ramp = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    pre = ImagePreprocessor(image_size=(4, 4), color_mode="grayscale")
    Image.fromarray(ramp, mode="F").save(tmp_path / "unit.tif")
    np.testing.assert_allclose(pre.transform_one(tmp_path / "unit.tif")[:, :, 0], ramp, atol=1 / 255)
    Image.fromarray(ramp * 255, mode="F").save(tmp_path / "bytes.tif")  # was read as all but one pixel white
    with pytest.raises(InputError, match=r"float pixels must lie in \[0, 1\], found 0\.\.255 \(save the image with 8- or 16-bit"):
        pre.transform_one(tmp_path / "bytes.tif")
    Image.fromarray(np.where(ramp > 0.5, np.nan, ramp).astype(np.float32), mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(InputError, match="float pixels include NaN"):
        pre.transform_one(tmp_path / "nan.tif")


def test_32_bit_integer_pixels_beyond_16_bits_are_refused(tmp_path):
    pixels = np.arange(16, dtype=np.int32).reshape(4, 4) * 10_000  # up to 150,000
    Image.fromarray(pixels, mode="I").save(tmp_path / "wide.tif")
    with pytest.raises(InputError, match=r"32-bit integer pixels must lie in 0-65535, found 0\.\.150000"):
        ImagePreprocessor(image_size=(4, 4)).transform_one(tmp_path / "wide.tif")


def test_a_max_pixels_above_pillows_own_limit_takes_effect(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's default is 89 million
    path = write_png(tmp_path / "big.png", np.zeros((40, 40), np.uint8))  # 1,600 pixels
    assert ImagePreprocessor(image_size=(8, 8), max_pixels=5000).transform_one(path).shape == (8, 8, 1)
    assert Image.MAX_IMAGE_PIXELS == 1000  # put back
    with pytest.raises(InputError, match=r"image too large .*limit max_pixels=1,500"):
        ImagePreprocessor(image_size=(8, 8), max_pixels=1500).transform_one(path)


def test_probe_reads_sizes_upright_and_gray_palettes_as_grayscale(tmp_path):
    from preprocess.image import probe_images

    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated a quarter turn: a portrait photo
    landscape = Image.fromarray(np.zeros((40, 80, 3), np.uint8))
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"portrait{i}.jpg")
        landscape.save(paths[-1], exif=exif)
    assert probe_images(paths)["image_size"] == [80, 40]
    gray_gif = tmp_path / "gray.gif"
    Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))).convert("P").save(gray_gif)
    assert Image.open(gray_gif).mode == "P"
    assert probe_images([gray_gif])["color_mode"] == "grayscale"
    red_gif = tmp_path / "red.gif"
    Image.fromarray(np.full((16, 16, 3), (255, 0, 0), np.uint8)).convert("P").save(red_gif)
    assert probe_images([gray_gif, red_gif])["color_mode"] == "rgb"


def test_probe_reads_every_kind_of_input_transform_takes(tmp_path):
    """PIL images and bytearrays were skipped: a list of them gave no size or colour suggestion."""
    from preprocess.image import probe_images

    color = Image.fromarray(np.full((24, 40, 3), (0, 128, 255), np.uint8))
    color.save(tmp_path / "c.png")
    encoded = (tmp_path / "c.png").read_bytes()
    expected = {"image_size": [24, 40], "color_mode": "rgb"}
    for inputs in ([color], [bytearray(encoded)], [encoded], [tmp_path / "c.png"], [np.asarray(color)]):
        assert probe_images(inputs) == expected, type(inputs[0])
    probe_images([color])
    assert color.load()[0, 0] == (0, 128, 255)  # the caller's image is still open


def test_probe_samples_images_evenly_not_the_first_ones():
    """README: the image size and colour come from "up to 200 training images sampled evenly".
    Of 400 inputs, the first 200 small and gray and the last 200 larger and in colour, every
    other one is read: half of each kind, so colour is seen and the median lies between them."""
    from preprocess.image import probe_images

    gray = [np.zeros((8, 8), np.uint8)] * 200
    color = [np.zeros((32, 48, 3), np.uint8)] * 200
    assert probe_images([*gray, *color]) == {"image_size": [20, 28], "color_mode": "rgb"}


def test_the_probe_opens_at_most_its_limit_of_images():
    from preprocess.image import probe_sample

    assert [len(probe_sample(range(count))) for count in (150, 399, 1000)] == [150, 200, 200]
    # spread over all of them: the first, then every (count / 200)-th, to near the last
    assert probe_sample(range(399))[:3] == [0, 1, 3] and probe_sample(range(399))[-1] == 397
    assert probe_sample(range(1000)) == list(range(0, 1000, 5))


def test_float_pixels_between_levels_read_as_the_nearest_level():
    """Floats in [0, 1] become the nearest of the 256 levels (as a file saved from them would
    hold), not the level below: truncating darkens every image by half a level on average and
    turns 0.999 into 254."""
    pre = ImagePreprocessor(image_size=(1, 4))
    pixels = np.array([[0.999, 0.5, 0.002, 0.25]])
    expected = np.array([255, 128, 1, 64], dtype=np.float32) / 255  # 254.7, 127.5, 0.51, 63.75 rounded
    np.testing.assert_allclose(pre.transform_one(pixels)[0, :, 0], expected, rtol=0, atol=1e-7)
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    square = ImagePreprocessor(image_size=(16, 16))
    np.testing.assert_array_equal(square.transform_one(levels / 255.0), square.transform_one(levels))


def test_library_misuse_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="unsupported image mode La"):
        ImagePreprocessor().transform_one(Image.new("La", (4, 4)))  # a ValueError from Pillow before
    with pytest.raises(TypeError, match="takes a dict of parameters"):
        ImagePreprocessor.from_config(None)
    ImagePreprocessor(image_size=(4, 4)).save(tmp_path / "p.json")
    document = json.loads((tmp_path / "p.json").read_text())
    document["class"] = "Preprocessor"  # the abstract base: "holds a Preprocessor, expected a Preprocessor"
    (tmp_path / "p.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match="names no preprocessor class"):
        Preprocessor.load(tmp_path / "p.json")


def test_fit_reads_nothing_since_nothing_is_learned(tmp_path):
    pre = ImagePreprocessor(image_size=(4, 4))
    assert pre.fit([tmp_path / "missing.png", tmp_path / "also-missing.png"]) is pre  # no decode pass
    with pytest.raises(TypeError, match="must be a list of inputs"):
        pre.fit("one.png")  # a batch is still a batch


def test_threads_sharing_a_preprocessor_leave_pillow_and_the_warning_filters_as_they_were(tmp_path):
    # each read sets Pillow's bomb limit and a warning filter and puts them back: overlapping
    # threads put back each other's values, and the caller's process kept them
    import concurrent.futures
    import warnings

    path = write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    pre = ImagePreprocessor(image_size=(4, 4), max_pixels=500_000_000)  # above Pillow's limit: raised while reading
    limit, filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(pre.transform_one, [path] * 2000))
    assert Image.MAX_IMAGE_PIXELS == limit
    assert warnings.filters == filters


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_process_forked_while_another_thread_reads_can_read_images(tmp_path):
    # multiprocessing forks by default on Linux: a child forked while a thread held the reading
    # lock inherited it held, and its first read waited forever
    import threading

    from preprocess.base import GLOBAL_STATE

    path = write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    held, release = threading.Event(), threading.Event()

    def hold():
        with GLOBAL_STATE:
            held.set()
            release.wait()

    threading.Thread(target=hold, daemon=True).start()
    held.wait()
    pid = os.fork()
    if pid == 0:  # the child: read, or give up on the lock after 5 s; never back into pytest
        code = 3
        try:
            if GLOBAL_STATE.acquire(timeout=5):
                GLOBAL_STATE.release()
                ImagePreprocessor(image_size=(4, 4)).transform_one(path)
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    release.set()
    assert os.waitstatus_to_exitcode(status) == 0
