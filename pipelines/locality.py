"""`check-locality`: does the order of rows and columns carry information a CNN can use?

The rule of thumb behind convolutions: if data is just as useful after its columns are shuffled,
a CNN has nothing local to exploit. This module measures it. The same small CNN, with the same
seed, is trained three times on the same split: on the arrays as preprocessed, with one fixed
random permutation of the columns applied to every input, and with one of the rows. A fixed
permutation keeps every value; it only destroys which values are neighbours.

Axes: image rows/columns are pixel rows/columns; audio rows are time steps and columns frequency
bands; text rows are token positions and columns vocabulary ids. A full-height window sees the
whole vocabulary at once, so permuting text columns is a control that should change nothing;
the text verdict rests on the positions. Text is read without the default hashed character
n-grams here: each position would carry its neighbours in its n-gram ids, and permuting
positions would keep that local order.

Accuracies are on the held-out test split, each with a Wilson 95% score interval for a
proportion (n = test inputs); "clearly above/below" means the two intervals do not overlap.
The text verdict rests on the positions alone; its vocabulary permutation is the control.
Verdict rule, first match wins:

- "inconclusive" when the CNN does not beat the majority class as given (the lower end of its
  interval is at or below the majority share), or, for text, when the control moved clearly
  (training noise is then larger than the intervals show);
- "helps" (local structure helps: a CNN fits) when as given is clearly above rows or columns
  permuted;
- "permuting helped" (inconclusive) when a permuted version is clearly above as given: the probe
  pools globally, so it cannot use where a value is, and a fixed permutation can turn position
  into a local pattern it can use. The classes probably depend on absolute position;
- "no information" (order carries no information: prefer a model without convolutions) when
  every permuted accuracy is at or above the lower end of the as-given interval and all three
  intervals are at most MAX_INTERVAL_WIDTH wide: permuting then cost less than that width;
- "inconclusive" otherwise: a permuted version scored below the as-given interval within the
  noise, or the intervals are too wide to call the accuracies the same.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from models import ModelSpec
from pipelines.config import RunConfig, check_seed
from pipelines.datasets import Dataset, load_source, split_dataset
from pipelines.defaults import build_preprocessor
from pipelines.featurize import Skipped, check_skip_share, encode_items, read_inputs
from pipelines.modality import Modality
from preprocess import ConvpipeError, Preprocessor

logger = logging.getLogger(__name__)

#: The small CNN trained three times: two [Conv -> ReLU -> MaxPool] blocks (text: one window
#: width). Global max + average pooling makes it translation invariant: it can use local patterns
#: and overall value statistics, but not fixed pixel positions. A permutation keeps the statistics
#: and destroys the local patterns, so the comparison isolates what local structure adds.
GRID_SPEC = ModelSpec(filters=(16, 32), kernel_size=3, head="global_max_average", dense=(32,), dropout=0.2)
TEXT_SPEC = ModelSpec(filters=(32,), window_sizes=(3,), head="global_max", dense=(), dropout=0.2, embedding_dim=16)
AXIS_NAMES = {
    Modality.image: ("pixel rows", "pixel columns"),
    Modality.audio: ("time steps", "frequency bands"),
    Modality.text: ("token positions", "vocabulary ids"),
}
QUICK_INPUTS = 400
#: The share of the inputs held out as the test set, unless the data has a test/ folder.
DEFAULT_TEST_SPLIT = 0.25
#: "No information" is only claimed from intervals at most this wide: a permuted accuracy at or
#: above the as-given lower end is then less than this (at middling accuracies about half of it)
#: below as given. 400 test inputs reach it at any accuracy; the 100 that --quick keeps from a
#: single folder, only from about 0.94 (or up to 0.06).
MAX_INTERVAL_WIDTH = 0.10
QUICK_EPOCHS = 8
FULL_EPOCHS = 20
VERDICTS = {
    "helps": "local structure helps: a CNN fits",
    "no information": "order carries no information: prefer a model without convolutions",
    "permuting helped": "inconclusive: permuting helped",
    "inconclusive": "inconclusive",
}


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% for the default z)."""
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Accuracy:
    correct: int
    total: int

    @property
    def value(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.total)

    def describe(self) -> str:
        low, high = self.interval
        return f"{self.value:.3f} [{low:.3f}, {high:.3f}]"


@dataclass
class LocalityResult:
    modality: Modality
    data: str
    classes: list[str]
    train_count: int
    test_count: int
    majority_share: float
    accuracies: dict[str, Accuracy]  # "as given", "rows permuted", "columns permuted"
    verdict: str
    reason: str
    seconds: float

    @property
    def verdict_text(self) -> str:
        return VERDICTS[self.verdict]


def variant_name(variant: str, modality: Modality) -> str:
    """The name the table and the reasons use: "rows permuted" is "token positions permuted" for text."""
    rows, columns = AXIS_NAMES[modality]
    return {"rows permuted": f"{rows} permuted", "columns permuted": f"{columns} permuted"}.get(variant, variant)


def decide(
    accuracies: dict[str, Accuracy], majority_share: float, *, modality: Modality, quick: bool
) -> tuple[str, str]:
    """Apply the verdict rule of this module's docstring; return (verdict, one-line reason)."""
    given = accuracies["as given"]
    low, high = given.interval
    more_data = "drop --quick" if quick else "use more data"  # quick: --quick left inputs or epochs out

    def names(variants: list[str]) -> str:
        return " and ".join(variant_name(variant, modality) for variant in variants)

    if low <= majority_share:
        return "inconclusive", (
            f"the CNN did not beat the majority class ({majority_share:.3f}) as given, so there is nothing to compare"
        )
    tested = ["rows permuted", "columns permuted"]
    if modality is Modality.text:
        # Relabelling vocabulary ids keeps all information from a full-height window, so the
        # control moving beyond the intervals means training noise, not order, moved it.
        tested = ["rows permuted"]
        control = accuracies["columns permuted"]
        if control.interval[0] > high or control.interval[1] < low:
            return "inconclusive", (
                f"the control, {names(['columns permuted'])}, which keeps all information, scored {control.value:.3f} "
                f"against {given.value:.3f} as given: training varies more than the intervals show; {more_data}"
            )
    below = [variant for variant in tested if accuracies[variant].interval[1] < low]
    above = [variant for variant in tested if accuracies[variant].interval[0] > high]
    # Global pooling ignores where a feature is; text models have no other head.
    position_advice = (
        "convpipe's text CNNs all pool over positions, so none can use it"
        if modality is Modality.text
        else "compare `train --head flatten`, which keeps where a feature was"
    )
    if below:
        return "helps", f"the as-given interval lies above the {names(below)} interval" + (
            f"; {names(above)} scored clearly above as given, so absolute position may matter too: {position_advice}"
            if above else ""
        )
    if above:
        return "permuting helped", (
            f"{names(above)} scored clearly above as given: the classes probably depend on absolute position, "
            f"which this CNN's global pooling ignores; {position_advice}"
        )
    dropped = [variant for variant in tested if accuracies[variant].value < low]
    if dropped:
        return "inconclusive", (
            f"{names(dropped)} scored below the as-given interval, but the intervals overlap; {more_data}"
        )
    widest = max(accuracy.interval[1] - accuracy.interval[0] for accuracy in accuracies.values())
    if widest > MAX_INTERVAL_WIDTH:
        return "inconclusive", (
            f"permuting cost nothing measurable, but an interval is {widest:.2f} wide and calling the accuracies "
            f"the same needs at most {MAX_INTERVAL_WIDTH:.2f} (about 400 test inputs); {more_data}"
        )
    return "no information", (
        f"every permuted accuracy is at or above the lower end of the as-given interval, "
        f"and every interval is at most {MAX_INTERVAL_WIDTH:.2f} wide"
    )


def permute_rows(x: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    return x[:, permutation]


def permute_columns(x: np.ndarray, permutation: np.ndarray, modality: Modality) -> np.ndarray:
    """Image/audio: reorder axis 2. Text: relabel vocabulary ids (padding 0 stays 0)."""
    if modality is Modality.text:
        return permutation[x]
    return x[:, :, permutation]


def column_permutation(rng: np.random.Generator, x: np.ndarray, modality: Modality, preprocessor: Preprocessor) -> np.ndarray:
    if modality is Modality.text:
        table = np.arange(preprocessor.num_ids)
        table[1:] = 1 + rng.permutation(preprocessor.num_ids - 1)
        return table.astype(x.dtype)
    return rng.permutation(x.shape[2])


def subsample(dataset: Dataset, limit: int, seed: int) -> Dataset:
    """At most `limit` inputs, a seeded random selection (classes keep about their shares)."""
    if len(dataset) <= limit:
        return dataset
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(dataset), size=limit, replace=False))
    return dataset.subset(keep.tolist())


def featurize(
    modality: Modality, train: Dataset, test: Dataset
) -> tuple[Preprocessor, tuple[np.ndarray, list[str]], tuple[np.ndarray, list[str]], Skipped]:
    """Fit the modality's default preprocessor on `train` (text: one token per position, no
    n-grams); encode both sets, skipping bad inputs."""
    preprocessor, _ = build_preprocessor(modality, {"ngram_sizes": []} if modality is Modality.text else {}, train, command="check-locality")
    skipped = Skipped()
    train_items, train_kept = read_inputs(preprocessor, train, "train", skipped, strict=False)
    test_items, test_kept = read_inputs(preprocessor, test, "test", skipped, strict=False)
    check_skip_share(skipped, 0.1)
    if not train_items or not test_items:
        raise ConvpipeError("Need readable training and test inputs to compare accuracies.")
    preprocessor.fit_read(train_items)
    return (
        preprocessor,
        (encode_items(preprocessor, train_items), train.subset(train_kept).labels),
        (encode_items(preprocessor, test_items), test.subset(test_kept).labels),
        skipped,
    )


def train_and_score(
    modality: Modality, preprocessor: Preprocessor, train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray], num_classes: int, epochs: int, seed: int,
) -> Accuracy:
    import keras

    from pipelines.training import build_model

    keras.utils.set_random_seed(seed)  # same initialization and batch order for all three
    spec = TEXT_SPEC if modality is Modality.text else GRID_SPEC
    model = build_model(RunConfig(modality=modality, model=spec), preprocessor, num_classes)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(*train, batch_size=16, epochs=epochs, verbose=0, shuffle=True)
    # A direct call: predict() would retrace its function for each of the three fresh models.
    predicted = np.concatenate(
        [np.asarray(model(test[0][i : i + 256], training=False)) for i in range(0, len(test[0]), 256)]
    ).argmax(axis=1)
    return Accuracy(int((predicted == test[1]).sum()), len(test[1]))


def check_locality(
    modality: Modality, data: str | None = None, *, quick: bool = False, epochs: int | None = None,
    seed: int = 0, test_split: float = DEFAULT_TEST_SPLIT,
) -> LocalityResult:
    """Train the small CNN on the data as given, with rows permuted and with columns permuted."""
    if not 0.05 <= test_split <= 0.5:
        raise ConvpipeError(f"--test-split must be between 0.05 and 0.5, got {test_split}.")
    if epochs is not None and epochs < 1:
        raise ConvpipeError(f"--epochs must be at least 1, got {epochs}.")
    check_seed(seed)
    started = time.perf_counter()
    source = load_source(data, modality)
    if source.predefined_split:  # said, not silently ignored, as train says it
        if source.validation is not None:
            logger.warning(
                "%s/ is not read: check-locality trains without a validation set.", source.folder_of(source.validation)
            )
        if source.test is not None and test_split != DEFAULT_TEST_SPLIT:
            source.warn_of_unused_share("test", "--test-split", test_split)
    # whether --quick left anything out (inputs or epochs), so that dropping it is advice
    trimmed = quick and epochs is None
    if source.predefined_split and source.test is not None:
        train, test = source.train, source.test
    else:
        full = source.full if source.full is not None else source.train
        trimmed = trimmed or (quick and len(full) > QUICK_INPUTS)
        full = subsample(full, QUICK_INPUTS, seed) if quick else full
        parts = split_dataset(full, 0.0, test_split, seed)
        train, test = parts["train"], parts["test"]
    if quick:
        trimmed = trimmed or len(train) > QUICK_INPUTS or len(test) > QUICK_INPUTS // 2
        train, test = subsample(train, QUICK_INPUTS, seed), subsample(test, QUICK_INPUTS // 2, seed)
    classes = sorted(set(train.labels))
    if len(classes) < 2:
        raise ConvpipeError(f"Need at least 2 classes; {source.location} has {len(classes)}.")
    preprocessor, (x_train, train_labels), (x_test, test_labels), skipped = featurize(modality, train, test)
    index = {label: i for i, label in enumerate(classes)}
    known = [i for i, label in enumerate(test_labels) if label in index]
    if not known:
        raise ConvpipeError("No test input belongs to a class seen in training.")
    x_test = x_test[known]
    y_train = np.array([index[label] for label in train_labels], dtype=np.int32)
    y_test = np.array([index[test_labels[i]] for i in known], dtype=np.int32)
    if skipped.entries:
        logger.warning("%s", skipped.summary())

    rng = np.random.default_rng(seed)
    rows = rng.permutation(x_train.shape[1])
    columns = column_permutation(rng, x_train, modality, preprocessor)
    variants = {
        "as given": lambda x: x,
        "rows permuted": lambda x: permute_rows(x, rows),
        "columns permuted": lambda x: permute_columns(x, columns, modality),
    }
    epochs = epochs or (QUICK_EPOCHS if quick else FULL_EPOCHS)
    accuracies = {}
    for name, transform in variants.items():
        accuracies[name] = train_and_score(
            modality, preprocessor, (transform(x_train), y_train), (transform(x_test), y_test),
            len(classes), epochs, seed,
        )
        logger.info("%s: %s", name, accuracies[name].describe())
    majority = float(np.bincount(y_test, minlength=len(classes)).max() / len(y_test))
    verdict, reason = decide(accuracies, majority, modality=modality, quick=trimmed)
    return LocalityResult(
        modality=modality, data=source.location, classes=classes, train_count=len(y_train),
        test_count=len(y_test), majority_share=majority, accuracies=accuracies, verdict=verdict,
        reason=reason, seconds=time.perf_counter() - started,
    )
