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
import math
import os
import secrets
import stat
import threading
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from preprocess import atomic
from preprocess.errors import InputError, NotFittedError, warn_input

#: The class a method is called on, so that `TextPreprocessor(...).fit(texts)` and
#: `TextPreprocessor.load(path)` are typed as a TextPreprocessor, not a Preprocessor.
P = TypeVar("P", bound="Preprocessor")

FORMAT_VERSION = 1
#: Name of the random token that a JSON file and its .npz both hold when saved together.
SAVE_TOKEN = "save_token"
#: What `load` expects of each field of the JSON document: a JSON type, and its name in messages.
DOCUMENT_FIELDS = {
    "class": (str, "string"),
    "format_version": (int, "integer"),
    "config": (dict, "object"),
    "fitted": (dict, "object"),
    "arrays": (list, "array"),
}


#: Python's warning filters and Pillow's decompression-bomb limit are process-wide. A read that
#: changes them for a moment holds this lock (never while decoding, unless Pillow's limit is
#: raised): threads sharing a preprocessor otherwise restored each other's saved values and left
#: them changed for the caller's whole process.
GLOBAL_STATE = threading.RLock()
# A process forked while another thread held it (multiprocessing's default start on Linux) would
# wait for that thread forever: the child starts with the lock free, as the standard library's
# own locks do.
if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=GLOBAL_STATE._at_fork_reinit)


def describe_input(x: Any) -> str:
    """A short name for an input, used as the first part of every `InputError` message."""
    if isinstance(x, (str, os.PathLike)):
        return str(x)
    if isinstance(x, (bytes, bytearray)):
        return f"<{len(x):,} bytes>"
    return f"<{type(x).__name__}>"


def is_int(value: Any) -> bool:
    """A Python or numpy integer; not a bool, which would silently mean 0 or 1."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """A Python or numpy int or float, not a bool (and not a str that looks like a number)."""
    return is_int(value) or isinstance(value, (float, np.floating))


def native_byte_order(array: np.ndarray) -> np.ndarray:
    """`array` in this machine's byte order: a big-endian `>i2` from `np.frombuffer`, an AIFF or
    a FITS file means what its native twin means (no copy when it already is native)."""
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def check_int(name: str, value: Any, minimum: int = 1, none_ok: bool = False, why: str = "") -> None:
    """Raise ValueError naming parameter `name` unless `value` is an int >= `minimum`."""
    if (none_ok and value is None) or (is_int(value) and value >= minimum):
        return
    kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    raise ValueError(f"`{name}` must be {kind}{' or None' if none_ok else ''}{why}. Received: {name}={value!r}")


def check_number(name: str, value: Any, zero_ok: bool = False, none_ok: bool = False) -> None:
    """Raise ValueError naming parameter `name` unless `value` is a finite number > 0 (>= 0)."""
    if none_ok and value is None:
        return
    if is_number(value) and math.isfinite(value) and (value > 0 or (zero_ok and value == 0)):
        return
    kind = "a finite number >= 0" if zero_ok else "a positive, finite number"
    raise ValueError(f"`{name}` must be {kind}{' or None' if none_ok else ''}. Received: {name}={value!r}")


def plain(value: Any) -> Any:
    """numpy scalars as Python numbers and tuples as lists: the values JSON can hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


def json_path(path: str | os.PathLike) -> Path:
    """`path` as a Path, refused unless it ends in .json: the arrays go beside it as `<stem>.npz`,
    so another suffix could be that very file, or share it with a second save ("a.v1", "a.v2")."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise ValueError(
            "`path` must end in .json (fitted arrays are written beside it with the same stem and "
            f".npz). Received: path={str(path)!r}"
        )
    return path


def not_a_file(path: str | os.PathLike) -> bool:
    """Whether `path` exists and is neither a regular file nor a folder: a named pipe, a socket or
    a device, whose opening or reading waits for a writer that may never come."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # missing, unreadable or a NUL byte in the name: opening it says why
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def read_bytes(x: str | os.PathLike | bytes, limit: int | None = None) -> bytes:
    """Read a path's bytes (at most `limit`), turning every OS failure into an `InputError`."""
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    path = Path(x)
    if "\0" in os.fspath(path):  # no file system takes one: open() raises ValueError
        raise InputError(str(x), "the path holds a NUL byte")
    try:
        if not_a_file(path):
            raise InputError(str(x), "not a regular file (a named pipe, socket or device)")
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
    #: whether a `str` input is the data itself (text) rather than a path to a file to read.
    str_is_data: ClassVar[bool] = False
    #: file name extensions (lower case, with the dot) this preprocessor reads.
    extensions: ClassVar[tuple[str, ...]] = ()
    #: modules `read` imports on first use; worker processes import them up front.
    worker_imports: ClassVar[tuple[str, ...]] = ()
    #: parameters added after files were already saved, with the value such a file was made
    #: with: `load` fills them in where the saved config lacks them.
    saved_before: ClassVar[dict[str, Any]] = {}
    #: how this class turns an input into its array. Raise it when a change gives other arrays
    #: for the same input and settings: `save` records it, `load` warns that a file saved under
    #: another reading sees its inputs differently now, and the cache and `train --resume` key
    #: by it (from 2 on). Files saved before it was recorded (2026-11) carry none and load
    #: without a warning.
    reading_version: ClassVar[int] = 1

    # ---- parameters --------------------------------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [name for name in signature.parameters if name != "self"]

    def get_config(self) -> dict[str, Any]:
        """Every constructor argument, as plain JSON-compatible values."""
        return {name: plain(getattr(self, name)) for name in self._param_names()}

    @classmethod
    def as_saved(cls, config: dict[str, Any]) -> dict[str, Any]:
        """`config` as it was saved (a file, a run's record), with the parameters added since
        at the value it was made with (`saved_before`)."""
        return {**cls.saved_before, **config}

    @classmethod
    def from_config(cls: type[P], config: dict[str, Any]) -> P:
        """A preprocessor with these parameters, as `get_config` returns them. Unknown names
        raise ValueError; values are checked when the preprocessor is first used."""
        if not isinstance(config, dict) or not all(isinstance(key, str) for key in config):
            raise TypeError(f"{cls.__name__}.from_config takes a dict of parameters, as get_config() returns. Received: {config!r:.60}")
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

    def _is_one_input(self, inputs: Any) -> bool:
        """Whether `inputs`, given where a batch is expected, is one decoded input (overridden)."""
        return False

    def _as_list(self, inputs: Any, method: str) -> list[Any]:
        """A batch as a list. A str, bytes, path or single decoded input is refused: iterated, it
        would silently become characters, bytes or rows."""
        if (
            isinstance(inputs, (str, bytes, bytearray, os.PathLike))
            or not isinstance(inputs, Iterable)
            or self._is_one_input(inputs)
        ):
            shape = f" of shape {inputs.shape}" if isinstance(inputs, np.ndarray) else ""
            hint = "use transform_one" if method == "transform" else f"pass a list of one: {method}([x])"
            raise TypeError(
                f"`inputs` must be a list of inputs; got {type(inputs).__name__}{shape}. For one input, {hint}."
            )
        return inputs if isinstance(inputs, list) else list(inputs)

    @property
    def is_fitted(self) -> bool:
        return not self.needs_fit or bool(self._fitted_state()[0])

    def check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet. Call `fit` with training "
                "inputs first, or load a fitted one with `load`."
            )

    def fit(self: P, inputs: Iterable[Any], labels: Any = None) -> P:
        """Learn what must be learned from training inputs only; returns self.

        `inputs` is a list (any iterable, a generator included, is read once into a list); a
        single input such as a str is refused with a TypeError. `labels` is ignored: it is
        there for scikit-learn's `fit(X, y)`, and no preprocessor learns from labels.
        """
        self.validate_params()
        inputs = self._as_list(inputs, "fit")
        # a preprocessor that learns nothing reads nothing: decoding every input would be wasted
        self.fit_read([self.read(x) for x in inputs] if self.needs_fit else [])
        return self

    def transform_one(self, x: Any) -> np.ndarray:
        """Transform one input into an array of shape `output_shape` and dtype `output_dtype`.
        An input that cannot be used raises `InputError`; an unfitted one `NotFittedError`."""
        self.validate_params()
        self.check_fitted()
        return self.encode(self.read(x))

    def transform(self, inputs: Iterable[Any]) -> np.ndarray:
        """Transform a batch into one array of shape `(len(inputs), *output_shape)`.

        `inputs` is a list (any iterable, a generator included, is read once into a list); a
        single input such as a str is refused with a TypeError: use `transform_one` for it.
        """
        self.validate_params()
        self.check_fitted()
        return self._stacked([self.encode(self.read(x)) for x in self._as_list(inputs, "transform")])

    def fit_transform(self, inputs: Iterable[Any], labels: Any = None) -> np.ndarray:
        """`fit(inputs)` then `transform(inputs)`, reading each input once (`labels` is ignored)."""
        self.validate_params()
        items = [self.read(x) for x in self._as_list(inputs, "fit_transform")]
        self.fit_read(items)
        return self._stacked([self.encode(item) for item in items])

    def _stacked(self, arrays: list[np.ndarray]) -> np.ndarray:
        if not arrays:  # np.stack needs one array to know the shape
            return np.zeros((0, *self.output_shape), dtype=self.output_dtype)
        return np.stack(arrays)

    # ---- persistence -------------------------------------------------------------------------

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Learned attributes as (JSON-compatible values, arrays); both empty when unfitted."""
        return {}, {}

    def _restore_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Inverse of `_fitted_state`."""

    def save(self, path: str | os.PathLike) -> None:
        """Write `path` (JSON: class, config, learned values) and, if the fit has arrays, the
        .npz beside it with the same stem (`audio.json` -> `audio.npz`).

        `path` must end in .json. The JSON is serialized before anything is written, so a value
        it cannot hold leaves no file behind; both files are written atomically and hold the
        same random token, so `load` notices a .json and .npz that were not saved together.
        Arrays never go through pickle.
        """
        path = json_path(path)
        self.validate_params()  # `load` refuses what does not validate: refuse it now, not then
        values, arrays = self._fitted_state()
        document = {
            "class": type(self).__name__,
            "format_version": FORMAT_VERSION,
            "reading_version": self.reading_version,
            "config": self.get_config(),
            "fitted": values,
            "arrays": sorted(arrays),
        }
        if arrays:
            document[SAVE_TOKEN] = secrets.token_hex(8)
            arrays = {**arrays, SAVE_TOKEN: np.array(document[SAVE_TOKEN])}
        text = atomic.json_text(document)
        if arrays:
            atomic.write_npz(path.with_suffix(".npz"), arrays)
        atomic.write_text(path, text)

    @classmethod
    def load(cls: type[P], path: str | os.PathLike) -> P:
        """Load a preprocessor saved by `save`. On the base class, the saved class is used.

        A file that is damaged, hand-edited into invalid parameters or paired with another
        save's .npz raises an `InputError` naming it.
        """
        from preprocess import PREPROCESSORS  # the registry lives in the package root

        path = json_path(path)
        document = _read_document(path)
        name = document["class"]
        target = PREPROCESSORS.get(name)
        if target is None or target is Preprocessor:  # the base class reads nothing
            raise InputError(str(path), f"names no preprocessor class ({name!r:.40}); expected one of {', '.join(n for n in PREPROCESSORS if n != 'Preprocessor')}")
        if not issubclass(target, cls):
            raise InputError(str(path), f"holds {with_article(name)}, expected {with_article(cls.__name__)}")
        try:
            preprocessor = target.from_config(target.as_saved(document["config"]))
            preprocessor.validate_params()  # a bad value fails here, not at the first transform
        except (ValueError, TypeError) as error:
            raise InputError(str(path), f"invalid config: {error}") from None
        npz_path = path.with_suffix(".npz")
        arrays = _read_arrays(path, npz_path, document) if document["arrays"] else {}
        try:
            preprocessor._restore_state(document["fitted"], arrays)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            reason = f"missing {error}" if isinstance(error, KeyError) else str(error)
            where = f" with the arrays in {npz_path.name}" if arrays else ""
            raise InputError(str(path), f"cannot restore the fitted state{where} ({reason})") from None
        saved = document.get("reading_version")  # absent: saved before readings were recorded
        if saved is not None and saved != target.reading_version:
            warn_input(
                f"{path}: saved under reading version {saved}, read now by version "
                f"{target.reading_version}: an input can give other arrays than those it was fitted "
                "or trained on; fit or train again to match"
            )
        return preprocessor


def with_article(name: str) -> str:
    """"an ImagePreprocessor", "a TextPreprocessor"."""
    return f"{'an' if name[:1] in 'AEIOUaeiou' else 'a'} {name}"


def _read_document(path: Path) -> dict[str, Any]:
    """The JSON document of a saved preprocessor with defaults filled in and every field's type
    checked; any fault is an `InputError` naming `path`."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(str(path), "no such preprocessor file") from None
    except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8
        raise InputError(str(path), f"not a convpipe preprocessor file ({error})") from None
    if not isinstance(document, dict) or not {"class", "config"} <= document.keys():
        raise InputError(str(path), 'not a convpipe preprocessor file (no "class" and "config")')
    document = {"format_version": 0, "fitted": {}, "arrays": [], **document}
    version = document["format_version"]
    if type(version) is int and version > FORMAT_VERSION:  # first: a newer layout may change any other field
        raise InputError(str(path), "written by a newer convpipe; upgrade to load it")
    for key, (kind, kind_name) in DOCUMENT_FIELDS.items():
        if type(document[key]) is not kind:  # exact: JSON true is a bool, not an integer
            found = json.dumps(document[key], ensure_ascii=False)
            raise InputError(str(path), f'"{key}" must be a JSON {kind_name}, found {found[:40]}')
    reading = document.get("reading_version")
    if reading is not None and (type(reading) is not int or reading < 1):
        raise InputError(str(path), f'"reading_version" must be a positive JSON integer, found {json.dumps(reading)[:40]}')
    if not all(isinstance(name, str) for name in document["arrays"]):
        raise InputError(str(path), '"arrays" must list array names (strings)')
    return document


def _read_arrays(path: Path, npz_path: Path, document: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays `document` lists, from the .npz saved with it."""
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            token = str(npz[SAVE_TOKEN]) if SAVE_TOKEN in npz.files else None
            # Files saved before the token existed have none on either side, and still load.
            if token != document.get(SAVE_TOKEN):
                raise InputError(str(path), f"{path.name} and {npz_path.name} were not saved together")
            return {key: npz[key] for key in document["arrays"]}
    except InputError:
        raise
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:  # e.g. cut off
        raise InputError(str(npz_path), f"missing or unreadable arrays ({error})") from None
