"""Make a digit-image dataset with a font-disjoint train/test split, for choosing image defaults.

Renders the digits 0-9 as 32x32 grayscale PNGs ("scanned" dark ink on light paper) in every
usable font that ships with installed software: matplotlib's bundled TrueType fonts, plus any
under /usr/share/fonts. Each sample gets a random size, rotation (+-15 degrees), shift and stroke
width, then mild Gaussian blur and pixel noise. Fonts play the part of writers: test fonts are
never seen in training, so test accuracy measures generalization to new "handwriting".

    python benchmarks/make_glyphs.py --out /tmp/glyphs --per-font-per-class 12 --seed 0

writes out/train/<digit>/*.png, out/test/<digit>/*.png (the layout `--data` reads as a predefined
split) and out/fonts.json, which lists the train and test fonts. With `--split-by family`, all
styles of a family (e.g. DejaVu Sans Bold and Condensed) go to the same side. Output is
deterministic given the seed and the set of installed fonts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.ft2font import FT2Font
from PIL import Image, ImageDraw, ImageFilter, ImageFont

CLASSES = tuple("0123456789")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SIZE = 32  # output side, pixels
SUPERSAMPLE = 4  # render at 4x, then box-downsample for clean antialiasing
FONT_DIRS = (Path(matplotlib.get_data_path()) / "fonts" / "ttf", Path("/usr/share/fonts"))


@dataclass(frozen=True)
class Font:
    path: Path
    family: str  # e.g. "DejaVu Sans"
    style: str  # e.g. "Bold Oblique"
    ink_height: float  # ink height of "0123456789" at 100 px font size, for size normalization

    @property
    def name(self) -> str:
        return f"{self.family} {self.style}"


@dataclass
class GlyphDataset:
    """What `make_glyphs` wrote."""

    out_dir: Path
    train_fonts: list[str]
    test_fonts: list[str]
    counts: dict[str, int] = field(default_factory=dict)  # PNG files per part
    rejected: dict[str, str] = field(default_factory=dict)  # font file -> reason


def find_font_files(dirs: tuple[Path, ...] = FONT_DIRS) -> list[Path]:
    """TrueType/OpenType files under `dirs`, in a fixed order (directory order, then sorted)."""
    files = []
    for folder in dirs:
        if folder.is_dir():
            files += sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".ttf", ".otf"))
    return files


def _render_mask(font: ImageFont.FreeTypeFont, char: str, stroke: int = 0) -> np.ndarray:
    """Ink coverage of `char`, cropped to its bounding box (empty array when there is no ink)."""
    left, top, right, bottom = font.getbbox(char, stroke_width=stroke)
    canvas = Image.new("L", (max(right - left, 1), max(bottom - top, 1)), 0)
    ImageDraw.Draw(canvas).text((-left, -top), char, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    mask = np.asarray(canvas)
    return mask if mask.any() else np.zeros((0, 0), np.uint8)


def check_font(path: Path) -> Font | str:
    """The font if it draws all ten digits as digits, otherwise the reason it cannot."""
    try:
        font = ImageFont.truetype(str(path), 100)
        face = FT2Font(str(path))
    except (OSError, RuntimeError, ValueError) as error:
        return f"cannot load ({error})"
    for char, digit_name in zip(CLASSES, DIGIT_NAMES):
        index = face.get_char_index(ord(char))
        if not index:
            return f"no glyph for {char!r}"
        # Symbol fonts (cmsy10, cmex10) map digit code points to other symbols: trust glyph names
        # where the font has them ("zero", "zerooldstyle", "uni0030", ...).
        glyph = face.get_glyph_name(index)
        unicode_names = (f"uni{ord(char):04x}", f"u{ord(char):04x}")
        if glyph and not (glyph.startswith(digit_name) or glyph.lower() in unicode_names):
            return f"{char!r} is drawn as {glyph!r}"
    masks = [_render_mask(font, char) for char in CLASSES]
    notdef = _render_mask(font, "\U0010fffd")  # unassigned code point: the "tofu" box, if any
    if any(m.size == 0 for m in masks):
        return "renders an empty digit"
    if len({(m.shape, m.tobytes()) for m in masks}) < len(CLASSES):
        return "renders identical digits"
    if any(m.shape == notdef.shape and np.array_equal(m, notdef) for m in masks):
        return "renders a missing-glyph box"
    family, style = font.getname()
    ink_top, ink_bottom = font.getbbox("".join(CLASSES))[1::2]
    return Font(path, family or path.stem, style or "Regular", float(ink_bottom - ink_top))


def usable_fonts(files: list[Path]) -> tuple[list[Font], dict[str, str]]:
    """Fonts that render the digits, one per family+style name (system copies of matplotlib's
    DejaVu fonts would otherwise land on both sides of the split), sorted by name."""
    fonts: dict[str, Font] = {}
    rejected: dict[str, str] = {}
    for path in files:
        result = check_font(path)
        if isinstance(result, str):
            rejected[str(path)] = result
        elif result.name in fonts:
            rejected[str(path)] = f"duplicate of {fonts[result.name].path}"
        else:
            fonts[result.name] = result
    return sorted(fonts.values(), key=lambda f: f.name), rejected


def render_glyph(font: Font, char: str, rng: np.random.Generator) -> Image.Image:
    """One 32x32 grayscale sample of `char`: dark ink on light paper, randomly distorted."""
    side = SIZE * SUPERSAMPLE
    # Size: the font's digit ink height becomes 50-80% of the canvas.
    target = rng.uniform(0.5, 0.8) * side
    pil_font = ImageFont.truetype(str(font.path), max(int(round(100 * target / font.ink_height)), 4))
    stroke = int(rng.integers(0, SUPERSAMPLE + 1))  # 0-1 output pixels of extra stroke
    ink = _render_mask(pil_font, char, stroke)
    # Rotate about the ink's centre, then paste it at a random offset from the canvas centre.
    glyph = Image.fromarray(ink).rotate(rng.uniform(-15, 15), resample=Image.BICUBIC, expand=True)
    shift = rng.uniform(-0.1, 0.1, size=2) * side
    x = int(round((side - glyph.width) / 2 + shift[0]))
    y = int(round((side - glyph.height) / 2 + shift[1]))
    mask = Image.new("L", (side, side), 0)
    mask.paste(glyph, (x, y), glyph)
    coverage = np.asarray(mask.resize((SIZE, SIZE), Image.BOX), dtype=np.float32) / 255.0
    # Compose ink on paper, blur a little, add sensor noise.
    paper, ink_level = rng.uniform(190, 245), rng.uniform(0, 80)
    image = paper + (ink_level - paper) * coverage
    image = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.8)))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(2, 10), (SIZE, SIZE))
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def split_fonts(
    fonts: list[Font], seed: int, test_fraction: float, split_by: str = "font"
) -> tuple[list[Font], list[Font]]:
    """Shuffle fonts (or whole families) with the seed and send ~test_fraction of them to test."""
    groups = sorted({f.name if split_by == "font" else f.family for f in fonts})
    order = np.random.default_rng(seed).permutation(len(groups))
    n_test = min(max(int(round(test_fraction * len(groups))), 1), len(groups) - 1)
    test_groups = {groups[i] for i in order[:n_test]}
    is_test = [(f.name if split_by == "font" else f.family) in test_groups for f in fonts]
    return [f for f, t in zip(fonts, is_test) if not t], [f for f, t in zip(fonts, is_test) if t]


def make_glyphs(
    out_dir: str | Path,
    per_font_per_class: int,
    seed: int,
    test_fraction: float = 0.3,
    split_by: str = "font",
    overwrite: bool = False,
) -> GlyphDataset:
    """Write out_dir/{train,test}/<digit>/*.png with a font-disjoint split, and out_dir/fonts.json.

    Args:
        out_dir: Output folder; must be empty or missing unless `overwrite` is set.
        per_font_per_class: Samples rendered for each (font, digit) pair.
        seed: Seeds the split and every sample (a sample's randomness depends only on the seed,
            its font, its digit and its index, not on which other fonts are installed).
        test_fraction: Share of fonts (or families) held out for test.
        split_by: "font" (each family+style is a unit) or "family" (all styles of a family together).
        overwrite: Delete out_dir's train/, test/ and fonts.json first.
    """
    if split_by not in ("font", "family"):
        raise ValueError(f"split_by must be 'font' or 'family', got {split_by!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} is not empty; pass overwrite=True (--overwrite) to replace it")
        for part in ("train", "test"):
            shutil.rmtree(out_dir / part, ignore_errors=True)
        (out_dir / "fonts.json").unlink(missing_ok=True)

    fonts, rejected = usable_fonts(find_font_files())
    if len({f.name if split_by == "font" else f.family for f in fonts}) < 2:
        raise RuntimeError(f"Need at least two usable fonts (or families) to split; found {len(fonts)}")
    train_fonts, test_fonts = split_fonts(fonts, seed, test_fraction, split_by)

    counts = {}
    for part, part_fonts in (("train", train_fonts), ("test", test_fonts)):
        for label in CLASSES:
            (out_dir / part / label).mkdir(parents=True, exist_ok=True)
        for font in part_fonts:
            font_key = zlib.crc32(font.name.encode())
            for label_index, label in enumerate(CLASSES):
                for k in range(per_font_per_class):
                    rng = np.random.default_rng([seed, font_key, label_index, k])
                    image = render_glyph(font, label, rng)
                    image.save(out_dir / part / label / f"{font.path.stem}_{k:03d}.png")
        counts[part] = len(part_fonts) * len(CLASSES) * per_font_per_class

    summary = GlyphDataset(out_dir, [f.name for f in train_fonts], [f.name for f in test_fonts], counts, rejected)
    manifest = {
        "seed": seed,
        "per_font_per_class": per_font_per_class,
        "split_by": split_by,
        "train": {f.name: str(f.path) for f in train_fonts},
        "test": {f.name: str(f.path) for f in test_fonts},
        "rejected": rejected,
    }
    (out_dir / "fonts.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--per-font-per-class", type=int, default=12, help="samples per (font, digit)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.3, help="share of fonts held out for test")
    parser.add_argument("--split-by", choices=("font", "family"), default="font")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    args = parser.parse_args(argv)

    result = make_glyphs(
        args.out, args.per_font_per_class, args.seed, args.test_fraction, args.split_by, args.overwrite
    )
    n_fonts = len(result.train_fonts) + len(result.test_fonts)
    print(f"{n_fonts} usable fonts ({len(result.rejected)} font files skipped, see fonts.json)")
    print(f"train fonts ({len(result.train_fonts)}): {', '.join(result.train_fonts)}")
    print(f"test fonts ({len(result.test_fonts)}): {', '.join(result.test_fonts)}")
    print(f"wrote {result.counts['train']} train + {result.counts['test']} test PNGs to {result.out_dir}")


if __name__ == "__main__":
    main()
