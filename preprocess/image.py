"""Images -> (height, width, channels) float32 arrays."""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from preprocess.base import GLOBAL_STATE, Preprocessor, check_int, describe_input, is_int, native_byte_order, not_a_file, read_bytes
from preprocess.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
COLOR_MODES = ("grayscale", "rgb")
RESIZE_MODES = ("pad", "stretch", "crop")
#: Images above this many pixels are refused before they are decoded (`max_pixels`' default).
MAX_PIXELS = 64_000_000
VALUE_RANGES = ("0..1", "-1..1")


class ImagePreprocessor(Preprocessor):
    """Decode, orient, convert, resize and scale images to a fixed-size float32 array.

    Handles what real folders contain: EXIF orientation is applied; palette, 16-bit, CMYK and
    alpha images are converted (alpha is composited on `background`); animated images use their
    first frame; images above `max_pixels` are refused before they are decoded, so memory stays
    bounded.

    Args:
        image_size: `(height, width)` of the output.
        color_mode: `"grayscale"` (1 channel) or `"rgb"` (3 channels).
        resize_mode: `"pad"` keeps the aspect ratio and pads with zeros, `"stretch"` ignores
            it, `"crop"` crops the centre to the target aspect ratio first.
        value_range: `"0..1"`, or `"-1..1"` (the +-1 pixel convention of the classic X/O
            example).
        background: gray level, an int 0-255, on which transparent pixels are composited.
        max_pixels: larger images are rejected with an `InputError` (decompression-bomb guard).
            It bounds the output too: `image_size` may hold at most this many pixels.
        bit_depth: bits that 16-bit grayscale pixels use, 8-16: they are read on the 0 to
            `2**bit_depth - 1` scale, so 12-bit camera data stored in 16-bit files (0-4095) keeps
            all 256 output levels instead of 16. Brighter pixels are refused with an `InputError`.
            Colour images are read on the 16-bit scale whatever it is (Pillow opens 16-bit colour
            files as 8-bit), and so are uint16 colour arrays, to read like those files.

    Example:
        >>> pre = ImagePreprocessor(image_size=(32, 32), color_mode="rgb")
        >>> pre.transform_one(np.zeros((10, 20, 3), dtype=np.uint8)).shape
        (32, 32, 3)

    Input: a path, bytes, a PIL image, or an array `(H, W)` / `(H, W, C)` whose values mean
    what a file's do: uint8 0-255; uint16 on the `bit_depth` scale when gray, like a 16-bit
    grayscale file, and 0-65535 when colour;
    bool False/True as black/white; other integer dtypes must lie in 0-255 and float arrays in
    [0, 1], else an `InputError` says the range found. `transform` takes a list of these, or
    a 4-D `(N, H, W, C)` array as a batch; a single 2-D or 3-D array is one image, for
    `transform_one`.
    Output shape: `(height, width, channels)`, float32.
    """

    extensions = IMAGE_EXTENSIONS
    worker_imports = ("PIL.Image", "PIL.PngImagePlugin", "PIL.JpegImagePlugin")

    def __init__(
        self,
        image_size: Sequence[int] = (32, 32),
        color_mode: str = "grayscale",
        resize_mode: str = "pad",
        value_range: str = "0..1",
        background: int = 255,
        max_pixels: int = MAX_PIXELS,
        bit_depth: int = 16,
    ):
        self.image_size = image_size
        self.color_mode = color_mode
        self.resize_mode = resize_mode
        self.value_range = value_range
        self.background = background
        self.max_pixels = max_pixels
        self.bit_depth = bit_depth

    def validate_params(self) -> None:
        check_int("max_pixels", self.max_pixels)
        size = self.image_size
        if (
            isinstance(size, (str, bytes))
            or not isinstance(size, Sequence)
            or len(size) != 2
            or not all(is_int(v) and v > 0 for v in size)
        ):
            raise ValueError(
                "`image_size` must be two positive ints (height, width). "
                f"Received: image_size={self.image_size!r}"
            )
        # An output larger than any input we accept only costs memory (100000 x 100000 was
        # killed for it), so the decompression-bomb bound applies to it as well.
        if int(size[0]) * int(size[1]) > self.max_pixels:
            raise ValueError(
                f"`image_size` holds {int(size[0]) * int(size[1]):,} pixels, more than "
                f"max_pixels={self.max_pixels:,}. Received: image_size={self.image_size!r}"
            )
        if not is_int(self.bit_depth) or not 8 <= self.bit_depth <= 16:
            raise ValueError(
                f"`bit_depth` must be an int 8-16 (the bits 16-bit pixels use). Received: bit_depth={self.bit_depth!r}"
            )
        if not is_int(self.background) or not 0 <= self.background <= 255:
            raise ValueError(
                f"`background` must be a gray level, an int 0-255. Received: background={self.background!r}"
            )
        for name, value, choices in (
            ("color_mode", self.color_mode, COLOR_MODES),
            ("resize_mode", self.resize_mode, RESIZE_MODES),
            ("value_range", self.value_range, VALUE_RANGES),
        ):
            if value not in choices:
                raise ValueError(f"`{name}` must be one of {choices}. Received: {name}={value!r}")

    def _is_one_input(self, inputs: Any) -> bool:
        # A 4-D array is a batch of images; a 2-D or 3-D one is a single image.
        return isinstance(inputs, Image.Image) or (isinstance(inputs, np.ndarray) and inputs.ndim in (2, 3))

    @property
    def sixteen_bit_peak(self) -> int:
        """The 16-bit pixel value read as white."""
        return 2 ** int(self.bit_depth) - 1

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "grayscale" else 3

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """`(height, width, channels)`. Bad parameters raise ValueError, as `transform` does."""
        self.validate_params()
        height, width = (int(v) for v in self.image_size)
        return (height, width, self.channels)

    def read(self, x: Any) -> np.ndarray:
        """The decoded, converted, resized pixels: uint8 `(height, width, channels)`.

        Kept as bytes until `encode`: a cache entry is a quarter of the float32 size.
        """
        array = np.asarray(self._resize(self._decode(x)), dtype=np.uint8)
        return array[:, :, None] if array.ndim == 2 else array

    def encode(self, item: np.ndarray) -> np.ndarray:
        array = np.asarray(item, dtype=np.float32) * np.float32(1 / 255)
        if self.value_range == "-1..1":
            array = array * 2.0 - 1.0
        return array

    # ---- decoding ----------------------------------------------------------------------------

    def _decode(self, x: Any) -> Image.Image:
        """Return a PIL image in mode L or RGB, oriented, first frame only."""
        source = describe_input(x)
        if isinstance(x, Image.Image):
            image = _caller_png_transparency_fixed(x)
        elif isinstance(x, np.ndarray):
            image = _array_to_image(x, source)
        elif isinstance(x, (str, os.PathLike, bytes, bytearray)):
            image = self._open(read_bytes(x), source)
        else:
            raise InputError(source, "expected a path, bytes, a PIL image or a numpy array")
        try:
            return self._convert(image, source)
        except InputError:  # a ValueError too: its own reason, not a mode's
            raise
        except (ValueError, OSError) as error:  # a mode Pillow cannot convert ("La", "RGBa")
            raise InputError(source, f"unsupported image mode {image.mode} ({error})") from None

    def _open(self, data: bytes, source: str) -> Image.Image:
        try:
            with GLOBAL_STATE, warnings.catch_warnings(), _pixel_limit(self.max_pixels) as raised:
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
                width, height = image.size
                if width * height > self.max_pixels:
                    raise InputError(
                        source,
                        f"image too large ({width}x{height} pixels, limit max_pixels="
                        f"{self.max_pixels:,})",
                    )
                if raised:  # Pillow checks GIF frames against its limit while decoding, too
                    _decode_first_frame(image)
            if not raised:  # outside the lock: Pillow decodes without the GIL, threads side by side
                _decode_first_frame(image)
            if image.format == "PNG" and "transparency" in image.info:
                _fix_png_transparency(image, bit_depth=data[24], colour_type=data[25])
        except InputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            # Pillow refuses headers far above its own limit before we see the size.
            pixels = re.search(r"\((\d+) pixels\)", str(error))
            size = f"{int(pixels.group(1)):,} pixels" if pixels else str(error)
            raise InputError(source, f"image too large ({size}, limit max_pixels={self.max_pixels:,})") from None
        except UnidentifiedImageError:
            raise InputError(source, "not a readable image (unknown or corrupt format)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise InputError(source, f"corrupt or truncated image ({error})") from None
        return image

    def _convert(self, image: Image.Image, source: str) -> Image.Image:
        file_format = image.format  # the transposed copy below has none
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # a broken EXIF block must not lose an otherwise good image
            pass
        mode = image.mode
        if mode in ("1", "L", "RGB", "P") and _has_transparency(image):
            # a PNG's tRNS colour, a GIF's transparent index, an RGBA palette: composited below
            image = image.convert("RGBA")
        elif mode == "P":
            image = image.convert("RGB")
        elif mode in ("I;16", "I;16B", "I;16L", "I"):
            pixels = np.asarray(image)
            low, high = int(pixels.min(initial=0)), int(pixels.max(initial=0))
            if low < 0 or high > 65535:  # 32-bit integer pixels: no scale to read them on
                raise InputError(source, f"32-bit integer pixels must lie in 0-65535, found {low}..{high}")
            # a dark 16-bit file (nothing above 255) is still on the 16-bit scale
            sixteen_bit = high > 255 or _sixteen_bit_gray(mode, file_format)
            if sixteen_bit:
                _check_peak(high, self.sixteen_bit_peak, source)
            gray = _to_8_bit(pixels, self.sixteen_bit_peak if sixteen_bit else 255.0)
            transparent = image.info.get("transparency")
            if isinstance(transparent, int):  # a 16-bit PNG's tRNS gray: matched before scaling
                image = Image.fromarray(np.stack([gray, np.where(pixels == transparent, 0, 255).astype(np.uint8)], axis=-1), "LA")
            else:
                image = Image.fromarray(gray)
        elif mode == "F":  # 32-bit float pixels (TIFF): read on the [0, 1] scale float arrays use
            # (0-255 or 0-3 from a radiance map is refused: no scale can be told from the values)
            image = Image.fromarray(_unit_floats_to_8_bit(np.asarray(image), source, "float pixels", "save the image with 8- or 16-bit pixels"))
        elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("RGB" if mode != "1" else "L")
        if image.mode in ("RGBA", "LA", "PA"):
            rgba = image.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (self.background,) * 3 + (255,))
            image = Image.alpha_composite(canvas, rgba).convert("RGB")
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        target = "L" if self.color_mode == "grayscale" else "RGB"
        return image.convert(target) if image.mode != target else image

    def _resize(self, image: Image.Image) -> Image.Image:
        height, width = (int(v) for v in self.image_size)
        if image.size == (width, height):
            return image
        resample = Image.Resampling.BILINEAR
        if self.resize_mode == "stretch":
            return image.resize((width, height), resample)
        if self.resize_mode == "crop":
            return ImageOps.fit(image, (width, height), resample)
        # pad: scale to fit inside, centre on a black canvas (like tf.image.resize_with_pad)
        scale = min(width / image.width, height / image.height)
        new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        resized = image.resize(new_size, resample)
        canvas = Image.new(image.mode, (width, height), 0)
        canvas.paste(resized, ((width - new_size[0]) // 2, (height - new_size[1]) // 2))
        return canvas


@contextlib.contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[bool]:
    """Pillow's decompression-bomb limit raised to `max_pixels` while opening, where that is
    higher (yields whether it was): Pillow refuses larger images before convpipe sees their size,
    so a `max_pixels` above its limit would have no effect. Pillow keeps the limit in a global;
    it is put back after."""
    saved = Image.MAX_IMAGE_PIXELS
    raised = saved is not None and max_pixels > saved
    if raised:
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield raised
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _decode_first_frame(image: Image.Image) -> None:
    image.seek(0)  # animated GIF/WebP/TIFF: first frame
    image.load()


#: EXIF orientations that turn the stored picture a quarter turn: its width becomes its height.
QUARTER_TURNS = {5, 6, 7, 8}


def _has_transparency(image: Image.Image) -> bool:
    """Whether `image` marks some pixels transparent without an alpha band (Pillow's
    `has_transparency_data`, spelt out for Pillow 10.0)."""
    return "transparency" in image.info or (image.mode == "P" and image.palette is not None and image.palette.mode.endswith("A"))


def _fix_png_transparency(image: Image.Image, bit_depth: int, colour_type: int) -> None:
    """Make a PNG's tRNS colour match the pixels Pillow gives. Pillow scales 2- and 4-bit gray
    pixels to 0-255 but keeps their tRNS gray unscaled, so nothing was transparent; it reads
    16-bit colour as 8 bits but keeps the 16-bit tRNS colour, which then marks the wrong pixels
    (that one is dropped: the image stays opaque, as it always was read)."""
    transparent = image.info["transparency"]
    if colour_type == 0 and bit_depth in (2, 4) and isinstance(transparent, int) and transparent < 2**bit_depth:
        image.info["transparency"] = transparent * 255 // (2**bit_depth - 1)  # (a Pillow that scales it: left)
    elif colour_type == 2 and bit_depth == 16:
        image.info.pop("transparency")


#: The PNG (bit depth, colour type) of the raw modes Pillow's tRNS handling gets wrong.
_PNG_RAW_MODES = {"L;2": (2, 0), "L;4": (4, 0), "RGB;16B": (16, 2)}


def _caller_png_transparency_fixed(image: Image.Image) -> Image.Image:
    """A caller's opened (not yet loaded) PNG with its tRNS colour fixed as `_open` fixes a
    file's, on a copy: the caller's image is left as it was. A loaded one no longer says its bit
    depth, and is read as Pillow gives it."""
    raw_mode = image.tile[0].args if image.format == "PNG" and image.tile else None
    if "transparency" not in image.info or raw_mode not in _PNG_RAW_MODES:
        return image
    fixed = image.copy()  # loads the caller's image, as reading it would
    fixed.info = dict(image.info)
    _fix_png_transparency(fixed, *_PNG_RAW_MODES[raw_mode])
    return fixed


def _to_8_bit(pixels: np.ndarray, peak: float) -> np.ndarray:
    """Pixels on a 0-`peak` scale as uint8 0-255, the way 16-bit files have always been read."""
    # rounded, as float pixels are: truncation read half the levels one lower (4095 * 1/255 -> 0)
    return np.rint(np.clip(np.asarray(pixels, dtype=np.float64) / peak * 255.0, 0, 255)).astype(np.uint8)


def _check_peak(high: int, peak: int, source: str) -> None:
    """Refuse 16-bit pixels above the scale they are read on: clipped, they would turn white.
    The reason starts with what all such images share, so that a summary groups them."""
    if high > peak:
        raise InputError(
            source,
            f"pixels above bit_depth={peak.bit_length()} (up to {high}: train with --bit-depth {sensor_bit_depth(high)})",
        )


def _unit_floats_to_8_bit(pixels: np.ndarray, source: str, what: str, advice: str = "divide 0-255 pixels by 255") -> np.ndarray:
    """Float pixels on the [0, 1] scale as uint8; NaN and values off the scale are refused, since
    clipping would turn a 0-255 image white without a word."""
    if not np.all(np.isfinite(pixels)):
        raise InputError(source, f"{what} include NaN or infinite values")
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0 or high > 1:
        raise InputError(source, f"{what} must lie in [0, 1], found {low:g}..{high:g} ({advice})")
    return (np.asarray(pixels, dtype=np.float64) * 255.0).round().astype(np.uint8)


def _array_to_image(array: np.ndarray, source: str) -> Image.Image:
    """An array as the image a file with the same pixels would decode to; values that no file
    could hold (out of range, NaN) are refused rather than wrapped or clipped."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise InputError(source, f"expected an (H, W) or (H, W, 3|4) array, got {array.shape}")
    if array.size == 0:
        raise InputError(source, "empty image array")
    array = native_byte_order(array)
    dtype = array.dtype
    if dtype == np.bool_:
        return Image.fromarray(array.astype(np.uint8) * np.uint8(255))
    if dtype == np.uint16:
        # Pillow keeps a 2-D uint16 array as a 16-bit image, which `_convert` scales exactly as it
        # does a 16-bit file; colour has no 16-bit mode in Pillow, which reads a 16-bit colour
        # file as its high bytes: so are colour arrays read.
        return Image.fromarray(array if array.ndim == 2 else (array >> 8).astype(np.uint8))
    if np.issubdtype(dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise InputError(
                source,
                f"{dtype} image array values must lie in 0-255, found {low}..{high} (use uint16 for 16-bit pixels)",
            )
        return Image.fromarray(array.astype(np.uint8))
    if np.issubdtype(dtype, np.floating):
        return Image.fromarray(_unit_floats_to_8_bit(array, source, "float image array values"))
    raise InputError(source, f"image array must hold numbers, got dtype {dtype}")


ORIENTATION = 0x0112  # the EXIF tag


def _upright_header(image: Image.Image) -> tuple[int, int, str]:
    """Width, height and mode of `image` as it is read: upright, a gray palette as "L"."""
    (width, height), mode = image.size, image.mode
    if image.getexif().get(ORIENTATION) in QUARTER_TURNS:
        width, height = height, width
    if mode == "P" and _gray_palette(image):
        mode = "L"
    return width, height, mode


def _gray_palette(image: Image.Image) -> bool:
    """Whether every colour of a palette image is a gray (a grayscale GIF, say)."""
    palette = np.asarray(image.getpalette() or [], dtype=np.int16)
    rgb = palette[: len(palette) // 3 * 3].reshape(-1, 3)
    return bool(len(rgb)) and bool(np.all(rgb == rgb[:, :1]))


#: Bit depths of camera and scanner sensors, whose pixels 16-bit files often carry.
SENSOR_BIT_DEPTHS = (8, 10, 12, 14, 16)


def sensor_bit_depth(brightest: int) -> int:
    """The smallest of a sensor's usual bit depths that holds `brightest`."""
    return next((bits for bits in SENSOR_BIT_DEPTHS if brightest < 2**bits), 16)


def _sixteen_bit_gray(mode: str, file_format: str | None) -> bool:
    """Whether a Pillow image mode holds 16-bit gray pixels. Pillow before 10.3 opens a 16-bit
    grayscale PNG as 32-bit "I", and PNG has no other "I" pixels."""
    return mode.startswith("I;16") or (mode == "I" and file_format == "PNG")


def _brightest_16_bit(image: Image.Image, brightest: int | None, max_pixels: int) -> int | None:
    """The larger of `brightest` and the brightest pixel of a 16-bit grayscale `image` (other
    images, and ones above `max_pixels`, leave it as it is). A 32-bit integer "I" image (TIFF)
    counts when its pixels are read on the 16-bit scale: some above 255, none above 65535."""
    if image.mode != "I" and not _sixteen_bit_gray(image.mode, image.format) or image.width * image.height > max_pixels:
        return brightest
    high = int(np.asarray(image).max(initial=0))
    if not _sixteen_bit_gray(image.mode, image.format) and not 255 < high <= 65535:
        return brightest  # read as 8-bit values, or refused
    return max(brightest or 0, high)


def probe_sample(inputs: Sequence[Any], limit: int = 200) -> list[Any]:
    """The up to `limit` evenly spaced inputs that `probe_images` opens, from the first to near
    the last: what its result depends on, for a caller that keeps the result."""
    inputs = list(inputs)
    if len(inputs) <= limit:
        return inputs
    # Not every (len // limit)-th then the first `limit`: of 399 inputs that read the first 200,
    # and inputs come sorted by class, so the last classes went unseen.
    return [inputs[i * len(inputs) // limit] for i in range(limit)]


def probe_images(
    inputs: Sequence[Any], limit: int = 200, max_pixels: int = MAX_PIXELS, upright: bool = True, depth: bool = True
) -> dict[str, Any]:
    """Suggest `image_size`, `color_mode` and, for 16-bit grayscale images, `bit_depth` from a sample.

    Opens up to `limit` evenly spaced inputs lazily (headers only): the size is the median
    height and width, each rounded to a multiple of 4 and clipped to [8, 128]; the colour mode is
    "rgb" if any sampled image has colour channels. Only 16-bit grayscale images (within
    `max_pixels`) are decoded: the bit depth is the smallest of a sensor's usual depths
    (`SENSOR_BIT_DEPTHS`) that holds their brightest pixel, 12 for a 12-bit camera's 0-4095. It is
    a suggestion: an image outside the sample may be brighter. Unreadable inputs are ignored
    here; they are reported when they are transformed. `upright=False` skips the EXIF
    orientation, which for PNG reads the whole file, when only the bit depth is wanted;
    `depth=False` decodes nothing, when the bit depth is not.
    """
    heights, widths, color = [], [], False
    brightest: int | None = None  # of the 16-bit pixels seen
    max_pixels = max_pixels if depth else 0  # no image is small enough to decode
    for x in probe_sample(inputs, limit):
        try:
            if isinstance(x, np.ndarray):
                height, width = x.shape[:2]
                mode = "RGB" if x.ndim == 3 and x.shape[-1] in (3, 4) else "L"
                sixteen_bit = x.dtype.kind == "u" and x.dtype.itemsize == 2  # either byte order
                if depth and sixteen_bit and x.size and (x.ndim == 2 or x.shape[-1] == 1):
                    brightest = max(brightest or 0, int(x.max()))
            elif isinstance(x, Image.Image):  # the caller's image: read, never closed here
                width, height, mode = _upright_header(x)
                brightest = _brightest_16_bit(x, brightest, max_pixels)
            elif not isinstance(x, (bytes, bytearray)) and not_a_file(x):  # a pipe would wait for a writer
                continue
            else:
                with GLOBAL_STATE, warnings.catch_warnings():  # a very large image is reported when it is read
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(io.BytesIO(x) if isinstance(x, (bytes, bytearray)) else x) as image:
                        width, height, mode = _upright_header(image) if upright else (*image.size, image.mode)
                        brightest = _brightest_16_bit(image, brightest, max_pixels)
        except Exception:  # reported later, when the input is read for real
            continue
        heights.append(height)
        widths.append(width)
        color = color or mode not in ("L", "1", "I", "I;16", "I;16B", "I;16L", "F", "LA")
    if not heights:
        return {}

    def pick(values: list[int]) -> int:
        return int(np.clip(4 * round(float(np.median(values)) / 4), 8, 128))

    probed = {"image_size": [pick(heights), pick(widths)], "color_mode": "rgb" if color else "grayscale"}
    if brightest is not None:
        probed["bit_depth"] = sensor_bit_depth(brightest)
    return probed
