"""The contract every preprocessor follows.

A preprocessor turns one raw input (a file path, bytes or an already-decoded object) into a
float32 or int32 array in three steps, so that the slow, stateless part can be done once, in
parallel or from a cache, and only the cheap fitted part depends on the training data:

    read(x)          stateless and possibly slow: decode, resample, spectrogram, tokenize
    fit_read(items)  learn from the read form of the training inputs (vocabulary, statistics)
    encode(item)     apply what was learned: normalize, map tokens to ids

`fit`, `transform_one` and `transform` compose these steps for callers that do not care.
"""

from __future__ import annotations

import inspect
import json
import os
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from preprocess import atomic
from preprocess.errors import InputError, NotFittedError

FORMAT_VERSION = 1


def describe_input(x: Any) -> str:
    """A short name for an input, used as the first part of every `InputError` message."""
    if isinstance(x, (str, os.PathLike)):
        return str(x)
    if isinstance(x, (bytes, bytearray)):
        return f"<{len(x)} bytes>"
    return f"<{type(x).__name__}>"


def read_bytes(x: str | os.PathLike | bytes, limit: int | None = None) -> bytes:
    """Read a path's bytes (at most `limit`), turning every OS failure into an `InputError`."""
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    path = Path(x)
    try:
        with open(path, "rb") as handle:
            data = handle.read(-1 if limit is None else limit)
    except IsADirectoryError:
        raise InputError(str(x), "is a folder, expected a file") from None
    except FileNotFoundError:
        raise InputError(str(x), "no such file") from None
    except PermissionError:
        raise InputError(str(x), "permission denied") from None
    except OSError as error:
        raise InputError(str(x), f"cannot be read ({error.strerror or error})") from None
    if not data:
        raise InputError(str(x), "empty file")
    return data


class Preprocessor:
    """Base class: parameter storage, config round trip, save/load and the fit/transform flow.

    Subclasses store every constructor argument under the same attribute name, implement
    `read`, `encode` and `output_shape`, and, when they learn from data, `fit_read`,
    `_fitted_state` and `_restore_state`. Learned attributes end in an underscore.
    """

    #: Whether `fit` learns anything; stateless preprocessors can transform right away.
    needs_fit: ClassVar[bool] = False
    #: dtype of `transform`'s output.
    output_dtype: ClassVar[str] = "float32"
    #: file name extensions (lower case, with the dot) this preprocessor reads.
    extensions: ClassVar[tuple[str, ...]] = ()
    #: modules `read` imports on first use; worker processes import them up front.
    worker_imports: ClassVar[tuple[str, ...]] = ()

    # ---- parameters --------------------------------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [name for name in signature.parameters if name != "self"]

    def get_config(self) -> dict[str, Any]:
        """Every constructor argument, as plain JSON-compatible values."""
        config = {}
        for name in self._param_names():
            value = getattr(self, name)
            config[name] = list(value) if isinstance(value, tuple) else value
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        unknown = sorted(set(config) - set(cls._param_names()))
        if unknown:
            raise ValueError(
                f"Unknown {cls.__name__} parameter(s): {', '.join(unknown)}. "
                f"Expected some of: {', '.join(cls._param_names())}."
            )
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # ---- the three steps ---------------------------------------------------------------------

    def read(self, x: Any) -> Any:
        """Turn one raw input into its stateless intermediate form. Raises `InputError`."""
        raise NotImplementedError

    def fit_read(self, items: list[Any]) -> "Preprocessor":
        """Learn from already-read training inputs. Refitting replaces the previous fit."""
        self.validate_params()
        return self

    def encode(self, item: Any) -> np.ndarray:
        """Apply the fitted state to one read input."""
        raise NotImplementedError

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one transformed input, without the batch axis."""
        raise NotImplementedError

    def validate_params(self) -> None:
        """Raise ValueError naming the first bad parameter. `__init__` only stores them."""

    # ---- composed API ------------------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        return not self.needs_fit or bool(self._fitted_state()[0])

    def check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet. Call `fit` with training "
                "inputs first, or load a fitted one with `load`."
            )

    def fit(self, inputs: list[Any], labels: Any = None) -> "Preprocessor":
        """Learn what must be learned from training inputs only; returns self."""
        self.validate_params()
        return self.fit_read([self.read(x) for x in inputs])

    def transform_one(self, x: Any) -> np.ndarray:
        self.validate_params()
        self.check_fitted()
        return self.encode(self.read(x))

    def transform(self, inputs: list[Any]) -> np.ndarray:
        """Transform a batch into one array of shape `(len(inputs), *output_shape)`."""
        self.validate_params()
        self.check_fitted()
        if len(inputs) == 0:
            return np.zeros((0, *self.output_shape), dtype=self.output_dtype)
        return np.stack([self.encode(self.read(x)) for x in inputs])

    def fit_transform(self, inputs: list[Any], labels: Any = None) -> np.ndarray:
        self.validate_params()
        items = [self.read(x) for x in inputs]
        self.fit_read(items)
        return np.stack([self.encode(item) for item in items])

    # ---- persistence -------------------------------------------------------------------------

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Learned attributes as (JSON-compatible values, arrays); both empty when unfitted."""
        return {}, {}

    def _restore_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Inverse of `_fitted_state`."""

    def save(self, path: str | os.PathLike) -> None:
        """Write `path` (JSON: class, config, learned values) and, if needed, `path`.npz.

        Both files are written atomically; arrays never go through pickle.
        """
        path = Path(path)
        values, arrays = self._fitted_state()
        document = {
            "class": type(self).__name__,
            "format_version": FORMAT_VERSION,
            "config": self.get_config(),
            "fitted": values,
            "arrays": sorted(arrays),
        }
        if arrays:
            atomic.write_npz(path.with_suffix(".npz"), arrays)
        atomic.write_json(path, document)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Preprocessor":
        """Load a preprocessor saved by `save`. On the base class, the saved class is used."""
        from preprocess import PREPROCESSORS  # the registry lives in the package root

        path = Path(path)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            name = document["class"]
            config = document["config"]
        except FileNotFoundError:
            raise InputError(str(path), "no such preprocessor file") from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(str(path), f"not a convpipe preprocessor file ({error})") from None
        if document.get("format_version", 0) > FORMAT_VERSION:
            raise InputError(str(path), "written by a newer convpipe; upgrade to load it")
        target = PREPROCESSORS.get(name)
        if target is None or not issubclass(target, cls):
            raise InputError(str(path), f"holds a {name}, expected a {cls.__name__}")
        preprocessor = target.from_config(config)
        arrays: dict[str, np.ndarray] = {}
        if document.get("arrays"):
            npz_path = path.with_suffix(".npz")
            try:
                with np.load(npz_path, allow_pickle=False) as npz:
                    arrays = {key: npz[key] for key in document["arrays"]}
            except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:  # e.g. cut off
                raise InputError(str(npz_path), f"missing or unreadable arrays ({error})") from None
        preprocessor._restore_state(document.get("fitted", {}), arrays)
        return preprocessor
