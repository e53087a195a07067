"""The model hyperparameters a designer chooses, as one frozen dataclass.

The CLI flags, the `[model]` table of a TOML config and the `model` entry of a run's
config.json are three views of this one object.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
from dataclasses import dataclass
from typing import Any

HEADS = ("flatten", "global_max", "global_average", "global_max_average")
TEXT_KERNELS = ("factorized", "full")
#: Fields that only one family of factories reads: the conv stack (image/audio) or the text model.
CONV_ONLY = ("kernel_size", "pool_size", "pool_stride", "batch_norm", "augment", "augment_kind")
#: What `augment_kind` may be (models/augment.py draws them).
AUGMENT_KINDS = ("image", "spectrogram")
TEXT_ONLY = ("window_sizes", "text_kernel", "embedding_dim")

logger = logging.getLogger(__name__)


def is_int(value: Any) -> bool:
    """An integer (Python's or numpy's), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """`value` as a plain int, or a ValueError naming `name`."""
    if not is_int(value) or value < minimum:
        wanted = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"`{name}` must be {wanted}. Received: {name}={value!r}")
    return int(value)


def given_spec(spec: Any, default: "ModelSpec") -> "ModelSpec":
    """`spec`, or `default` when it is None, checked to be a ModelSpec (a dict of its fields went
    as far as "'dict' object has no attribute 'validate'")."""
    if spec is None:
        return default
    if not isinstance(spec, ModelSpec):
        hint = " (for a dict of its fields, ModelSpec.from_dict(d))" if isinstance(spec, dict) else ""
        raise TypeError(f"`spec` must be a ModelSpec{hint}. Received: {type(spec).__name__}")
    return spec


@dataclass(frozen=True)
class ModelSpec:
    """Hyperparameters of a conv stack.

    One spec serves both factories; each logs a warning naming the fields set (to other than
    their defaults) that it does not read, and `validate` checks every field's value.

    Args:
        filters: image/audio: filters of each [Conv -> ReLU -> MaxPool] block, one block per
            value (so its length is the depth). Text: one value, the filters per window width.
        kernel_size: side of the square convolution filters (image/audio).
        pool_size: max-pooling window side (image/audio).
        pool_stride: max-pooling stride (image/audio); larger than `pool_size`, it leaves rows
            and columns of each map unread (the factory warns).
        head: how the last feature maps become a vector: `"flatten"` keeps where a feature was
            found (image/audio only); `"global_max"` / `"global_average"` keep only whether /
            how strongly on average; `"global_max_average"` keeps both, side by side. For text,
            the pooling runs over positions. `None`: flatten for image/audio, global_max for text.
        batch_norm: normalize each convolution's output before the ReLU (image/audio).
        dense: widths of the fully connected hidden layers ("votes") before the softmax.
        dropout: dropout rate before each fully connected layer.
        window_sizes: text: widths (in positions) of the full-height windows run side by side.
        text_kernel: text: `"factorized"` (embedding of `embedding_dim`, then a convolution
            over positions: a rank-limited full-height kernel) or `"full"` (one
            vocabulary x window kernel per filter).
        embedding_dim: text: rank D of the factorized kernel.
        augment: image/audio: strength of the random changes made to each training input
            (0: none, at most 0.5); see `augment_kind`.
        augment_kind: image/audio: `"image"` (shift and zoom by up to `augment` of the side,
            rotate by up to `augment` x 90 degrees) or `"spectrogram"` (two stretches of time and
            two of frequency, each up to `augment` of its axis, set to the input's mean).
    """

    filters: tuple[int, ...] = (32, 64)
    kernel_size: int = 3
    pool_size: int = 2
    pool_stride: int = 2
    head: str | None = None
    batch_norm: bool = False
    dense: tuple[int, ...] = (128,)
    dropout: float = 0.3
    window_sizes: tuple[int, ...] = (3, 4, 5)
    text_kernel: str = "factorized"
    embedding_dim: int = 64
    augment: float = 0.0
    augment_kind: str = "image"

    def __post_init__(self) -> None:
        # Accept lists (from JSON/TOML) but store tuples so the spec stays hashable. Anything
        # else (a string, say) is kept as given for `validate` to name, not split into letters.
        # numpy ints (from an array of sizes, say) become plain ints, so the spec saves as JSON.
        for name in ("filters", "dense", "window_sizes"):
            value = getattr(self, name)
            if is_int(value):
                value = (value,)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(int(v) if is_int(v) else v for v in value))
        for name in ("kernel_size", "pool_size", "pool_stride", "embedding_dim"):
            if is_int(getattr(self, name)):
                object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("dropout", "augment"):  # np.float32(0.25) is a Real, but not JSON
            value = getattr(self, name)
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value) is not float:
                # by its shortest spelling: float(np.float32(0.1)) is 0.10000000149011612
                object.__setattr__(self, name, float(str(value)) if type(value).__module__ == "numpy" else float(value))

    def validate(self, *, text: bool = False) -> "ModelSpec":
        """Raise ValueError naming the first bad field; return self for chaining.

        Every field's value is checked whatever the model; `text` adds what the text model
        needs of them together (one `filters` value, a pooling head)."""
        def positive_ints(name: str, allow_empty: bool = False) -> None:
            values = getattr(self, name)
            if not isinstance(values, tuple):
                raise ValueError(
                    f"`{name}` must be a list of positive ints. Received: {name}={values!r}"
                )
            if (not values and not allow_empty) or not all(is_int(v) and v > 0 for v in values):
                raise ValueError(
                    f"`{name}` must be {'' if allow_empty else 'one or more '}positive ints. "
                    # repr for what is not an int: filters=["4"] reads 4, which looks valid
                    f"Received: {name}={','.join(str(v) if is_int(v) else repr(v) for v in values) or '(empty)'}"
                )

        positive_ints("filters")
        positive_ints("dense", allow_empty=True)
        positive_ints("window_sizes")
        for name in ("kernel_size", "pool_size", "pool_stride", "embedding_dim"):
            check_positive_int(name, getattr(self, name))
        if not isinstance(self.dropout, numbers.Real) or isinstance(self.dropout, bool) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={self.dropout!r}")
        if not isinstance(self.batch_norm, bool):
            raise ValueError(f"`batch_norm` must be True or False. Received: batch_norm={self.batch_norm!r}")
        if not isinstance(self.augment, numbers.Real) or isinstance(self.augment, bool) or not 0.0 <= self.augment <= 0.5:
            raise ValueError(f"`augment` must be in [0, 0.5]. Received: augment={self.augment!r}")
        if self.augment_kind not in AUGMENT_KINDS:
            raise ValueError(f"`augment_kind` must be one of {AUGMENT_KINDS}. Received: augment_kind={self.augment_kind!r}")
        if self.head is not None and self.head not in HEADS:
            raise ValueError(f"`head` must be one of {HEADS}. Received: head={self.head!r}")
        if len(set(self.window_sizes)) != len(self.window_sizes):
            # Each width is one branch of the model, named after it.
            raise ValueError(
                "`window_sizes` must be distinct. "
                f"Received: window_sizes={','.join(map(str, self.window_sizes))}"
            )
        if self.text_kernel not in TEXT_KERNELS:
            raise ValueError(
                f"`text_kernel` must be one of {TEXT_KERNELS}. "
                f"Received: text_kernel={self.text_kernel!r}"
            )
        if text:
            if self.head == "flatten":
                raise ValueError(
                    "Text models pool over positions: `head` must be global_max, global_average "
                    "or global_max_average. Received: head='flatten'"
                )
            if len(self.filters) != 1:
                raise ValueError(
                    "Text models take one `filters` value (filters per window width). "
                    f"Received: filters={','.join(map(str, self.filters))}"
                )
        return self

    @staticmethod
    def unused_fields(*, text: bool, text_kernel: str | None = None) -> tuple[str, ...]:
        """The fields the factory for text (or for image/audio) never reads; the full text
        kernel (one weight per vocabulary id) has no embedding either."""
        if not text:
            return TEXT_ONLY
        return CONV_ONLY + (("embedding_dim",) if text_kernel == "full" else ())

    def warn_of_ignored(self, *, text: bool) -> None:
        """Log a warning naming the fields set to other than their defaults that the factory for
        text (or for image/audio) never reads: they change nothing, which should not pass
        silently. A default, set or not, says nothing."""
        def why(name: str) -> str:
            if not text:
                return "text only"
            return "the full text kernel has no embedding" if name == "embedding_dim" else "image/audio only"

        defaults = ModelSpec()
        ignored = [
            f"{name}={getattr(self, name)!r} ({why(name)})"
            for name in self.unused_fields(text=text, text_kernel=self.text_kernel)
            if getattr(self, name) != getattr(defaults, name)
        ]
        if ignored:
            logger.warning("The %s model ignores %s.", "text" if text else "image/audio", ", ".join(ignored))

    def pooling_gap(self) -> str | None:
        """Why the pooling windows leave rows and columns of each feature map unread (a stride
        larger than the window, which Keras allows), or None."""
        if self.pool_stride <= self.pool_size:
            return None
        return (
            f"pool_stride={self.pool_stride} is larger than pool_size={self.pool_size}: each pooling "
            f"skips {self.pool_stride - self.pool_size} of every {self.pool_stride} rows and columns "
            "of the feature maps, which no window reads"
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"Unknown model setting(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}."
            )
        return cls(**values)


#: What `build_text_model` uses when given no spec, and convpipe's text default (chosen on
#: docstring sets in benchmarks/README.md): 128 filters per window width, max and average
#: pooling over positions (0.86 against 0.85 for max alone), no hidden layer, dropout 0.5.
TEXT_DEFAULTS = ModelSpec(filters=(128,), head="global_max_average", dense=(), dropout=0.5)
