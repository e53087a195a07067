"""Figures a reader can read: ticks that do not collide, round steps on continuous axes, colour
scales that say what they mean. Each test draws one figure from fixed arrays (no training)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from pipelines import figures
from pipelines.modality import Modality
from tests.conftest import capture_figures, overlapping_texts


def test_ticks_are_thinned_in_round_steps():
    assert figures.tick_positions(5, 16) == [0, 1, 2, 3, 4]
    # 101 frames of 10 ms: every 10th, so every 0.1 s, not positions 0, 7, 13, 20, ... of a linspace
    assert figures.tick_positions(101, 16) == list(range(0, 101, 10))
    assert figures.tick_positions(64, 16) == list(range(0, 64, 5))
    assert figures.tick_positions(101, 100) == list(range(0, 101, 2))


def one_second_audio_run() -> SimpleNamespace:
    from preprocess import AudioPreprocessor

    return SimpleNamespace(
        config=SimpleNamespace(modality=Modality.audio),
        preprocessor=AudioPreprocessor(sample_rate=16000, duration=1.0, num_mels=64),
    )


def assert_readable_ticks(figure, most: int) -> list[str]:
    axes = figure.axes[0]
    for ticks in (axes.get_xticklabels(), axes.get_yticklabels()):
        assert 5 <= len(ticks) <= most
        assert overlapping_texts(figure, ticks) == []
    return [tick.get_text() for tick in axes.get_xticklabels()]


def test_a_one_second_spectrogram_is_labelled_every_tenth_of_a_second(tmp_path, monkeypatch):
    from pipelines.inspection import input_figure
    from pipelines.saliency import overlay_figure

    drawn = capture_figures(monkeypatch)
    run = one_second_audio_run()
    x = np.random.default_rng(0).normal(size=(101, 64, 1)).astype(np.float32)
    input_figure(run, x, tmp_path)
    overlay_figure(run, x, np.ones((101, 64), dtype=np.float32), tmp_path, "Grad-CAM")
    # The input was 17 x 13 inches with all 101 frames and 64 bands labelled; the overlay's 40
    # frequency labels ran into each other.
    assert drawn["input.png"].get_size_inches()[0] <= 12
    for name in ("input.png", "saliency.png"):
        times = assert_readable_ticks(drawn[name], most=16)
        assert times[:3] == ["0.00", "0.10", "0.20"], name
    assert drawn["input.png"].axes[1].get_ylabel() == "standard deviations from the band's training mean"


def test_single_character_columns_stay_upright(tmp_path, monkeypatch):
    drawn = capture_figures(monkeypatch)
    figures.heatmap(tmp_path / "chars.png", np.eye(19), "t", row_labels=list("abcdefghijklmnopqrs"),
                    column_labels=list("abcdefghijklmnopqrs"))
    figures.heatmap(tmp_path / "words.png", np.eye(19), "t", row_labels=list("abcdefghijklmnopqrs"),
                    column_labels=[f"a_long_word_{i}" for i in range(19)])
    assert {t.get_rotation() for t in drawn["chars.png"].axes[0].get_xticklabels()} == {0}
    assert {t.get_rotation() for t in drawn["words.png"].axes[0].get_xticklabels()} == {90}
    for figure in drawn.values():
        assert overlapping_texts(figure, figure.axes[0].get_xticklabels()) == []


def test_text_filter_panels_keep_their_titles_clear_of_the_tick_labels_above(tmp_path, monkeypatch):
    from pipelines.text_inspection import filter_grid

    drawn = capture_figures(monkeypatch)
    kernel = np.random.default_rng(0).normal(size=(3, 12, 8))
    filter_grid(tmp_path / "chars.png", kernel, list("abcdefghijkl"), 3)
    filter_grid(tmp_path / "words.png", kernel, [f"tokenized_word_{i}" for i in range(12)], 3)
    for name, figure in drawn.items():
        texts = [text for axes in figure.axes for text in (axes.title, *axes.get_xticklabels())]
        # "filter #4" was drawn over the upright labels of filter #0's columns.
        assert overlapping_texts(figure, texts) == [], name


def test_the_xo_figures_centre_signed_scales_and_write_values_in_a_contrasting_colour(tmp_path, monkeypatch):
    from matplotlib.colors import to_rgb

    from pipelines.xo_demo import TrainedXO, walkthrough, write_figures

    drawn = capture_figures(monkeypatch)
    filters = np.linspace(0.1, 0.5, 3 * 3 * 4).reshape(3, 3, 1, 4)  # all positive: none should look blue
    trained = TrainedXO(1.0, 2, -np.ones((2, 9, 9, 1)), ["X", "O"], [("X", 0.9), ("O", 0.8)], filters)
    write_figures(tmp_path, walkthrough(), trained)
    for axes in drawn["learned_filters.png"].axes:
        norm = axes.images[0].norm
        assert norm.vmin == -norm.vmax  # was each filter's own min..max: the smallest weight drawn blue
    filtered = drawn["filtered_maps.png"].axes[0].images[0]
    assert filtered.norm.vmin == -1 and filtered.cmap.name != "viridis"  # signed values, diverging scale
    for name in ("filtered_maps.png", "relu_maps.png", "pooled_maps.png"):
        for axes in drawn[name].axes:
            image = axes.images[0]
            cells = image.cmap(image.norm(image.get_array()))[..., :3] @ np.array([0.299, 0.587, 0.114])
            for text in axes.texts:
                c, r = (round(v) for v in text.get_position())
                ink = np.array(to_rgb(text.get_color())) @ np.array([0.299, 0.587, 0.114])
                assert abs(ink - cells[r, c]) > 0.4, (name, text.get_text())  # white on yellow was 0.1


def test_inspect_pages_describe_each_figure_in_its_text_alternative(tmp_path):
    from html.parser import HTMLParser

    from pipelines.report_page import Section, write_page

    figure = tmp_path / "input.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n")
    write_page(tmp_path / "index.html", "Inside run: <x> & 'y'", "s", [Section("Input as the network sees it", image=figure)])

    class Page(HTMLParser):
        alts, language = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.alts.append(dict(attrs)["alt"])
            if tag == "html":
                self.language = dict(attrs).get("lang")

    page = Page()
    page.feed((tmp_path / "index.html").read_text(encoding="utf-8"))
    assert page.alts == ["Input as the network sees it"] and page.language == "en"  # alt was "input.png"


def test_text_labels_show_spaces_and_no_negative_zero():
    from pipelines.saliency import signed
    from pipelines.text_inspection import window_label

    assert window_label(10, " ev", "") == "10: ␣ev" and window_label(3, "n t", "") == "3: n␣t"
    assert window_label(3, "the cat", " ") == "3: the cat"  # words: the space is the separator
    assert [signed(v) for v in (-0.001, 0.0, 0.254, -0.256)] == ["+0.00", "+0.00", "+0.25", "-0.26"]


def test_bar_values_are_written_inside_the_frame(tmp_path, monkeypatch):
    drawn = capture_figures(monkeypatch)
    figures.bar_chart(tmp_path / "bars.png", ["a", "b", "c"], [0.001, 0.999, 0.0], "class probabilities", "probability")
    figure = drawn["bars.png"]
    figure.draw_without_rendering()
    frame = figure.axes[0].get_window_extent()
    assert all(frame.x0 <= text.get_window_extent().x1 <= frame.x1 for text in figure.axes[0].texts)


def test_characters_dejavu_lacks_are_drawn_from_an_installed_fallback_font(monkeypatch):
    """Japanese and Chinese class names were boxes in every figure, CJK fonts installed or not.
    Here STIX (shipped with matplotlib) stands in for a CJK font: it has "⌚", DejaVu Sans has not."""
    from matplotlib.font_manager import FontProperties, findfont
    from matplotlib.ft2font import FT2Font

    assert not FT2Font(findfont(FontProperties(family="DejaVu Sans"))).get_char_index(ord("⌚"))
    assert figures.font_families()[0] == "DejaVu Sans"

    def render(families: list[str]) -> bytes:
        monkeypatch.setattr(figures, "font_families", lambda: families)
        figure = figures.new_figure(2, 1)
        figure.add_subplot().set_title("⌚ class")
        return figures.render_png(figure)

    assert render(["DejaVu Sans"]) != render(["DejaVu Sans", "STIXGeneral"])
