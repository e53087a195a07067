"""The one table that maps a modality to its preprocessor, file types and model defaults."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from typing import TYPE_CHECKING

from models import TEXT_DEFAULTS, ModelSpec

if TYPE_CHECKING:
    from preprocess import Preprocessor


class Modality(str, Enum):
    image = "image"
    audio = "audio"
    text = "text"


@dataclass(frozen=True)
class ModalityInfo:
    #: name of the preprocessor class in `preprocess`, imported on first use (fast `--help`)
    preprocessor_name: str
    #: Column of a CSV manifest that holds the input: a path (relative to the CSV) or the text.
    csv_column: str
    model_defaults: ModelSpec
    #: Training defaults that differ from `TrainSettings`' own.
    train_defaults: dict

    @property
    def preprocessor(self) -> type[Preprocessor]:
        import preprocess

        return getattr(preprocess, self.preprocessor_name)

    @property
    def extensions(self) -> tuple[str, ...]:
        return self.preprocessor.extensions


MODALITIES: dict[Modality, ModalityInfo] = {
    Modality.image: ModalityInfo(
        preprocessor_name="ImagePreprocessor",
        csv_column="path",
        model_defaults=ModelSpec(filters=(32, 64), head="flatten", dense=(128,), dropout=0.3),
        train_defaults={},
    ),
    Modality.audio: ModalityInfo(
        preprocessor_name="AudioPreprocessor",
        csv_column="path",
        # Chosen on speaker-disjoint, noisy, time-shifted espeak-ng words (benchmarks/README.md):
        # global max pooling finds a word wherever it starts; batch norm hurt there.
        model_defaults=ModelSpec(
            filters=(16, 32, 64, 64), head="global_max", dense=(128,), dropout=0.3, augment_kind="spectrogram"
        ),
        train_defaults={"epochs": 40, "patience": 8},
    ),
    Modality.text: ModalityInfo(
        preprocessor_name="TextPreprocessor",
        csv_column="text",
        model_defaults=TEXT_DEFAULTS,
        # Large, sparse embedding tables converge in a third of the epochs at 3e-3.
        train_defaults={"learning_rate": 3e-3},
    ),
}


def parse_modality(value: str) -> Modality:
    try:
        return Modality(value.strip().lower())
    except ValueError:
        from preprocess import ConvpipeError

        choices = ", ".join(m.value for m in Modality)
        raise ConvpipeError(f"Unknown modality {value!r}. Choose one of: {choices}.") from None
