"""Inputs that occur in more than one split: a test score that counts copies of training inputs
overstates accuracy on new data, and nothing else in a report shows it.

Exact copies only: the same file bytes (under any name), the same array, or the same text up to
case and whitespace (the tokenizer sees no more), whether it came from a .txt file or a CSV row.
Other files are hashed only where their size matches a file in another split, so data without
copies costs one `stat` per file; text files, small and equal up to a trailing newline, are
all read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import warnings
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from pipelines.cache import file_sha256
from pipelines.datasets import Dataset
from preprocess import InputError, InputWarning
from preprocess.text import TEXT_EXTENSIONS, TextPreprocessor, normalize_text

logger = logging.getLogger(__name__)

#: Bytes of same-size files hashed at most; past this (a large set of equal-length WAVs whose
#: cache is warm) the check is skipped with a note rather than re-reading the data set.
MAX_HASHED_BYTES = 2 * 1024**3
#: Copies named per pair of splits in config.json and the warning.
EXAMPLES = 3


def _size(x: Any) -> int | None:
    """The file's size; None where it cannot be the copy of anything that is used: unreadable,
    or empty (skipped as such by every modality, so two empty files are no leak)."""
    try:
        status = os.stat(x)
        return status.st_size if stat.S_ISREG(status.st_mode) and status.st_size else None
    except OSError:  # unreadable inputs are reported when they are read for real
        return None


def _file_digest(path: Any) -> str | None:
    try:
        return file_sha256(path)
    except OSError:  # unreadable inputs are reported when they are read for real
        return None


def _is_text_file(x: Any) -> bool:
    return isinstance(x, os.PathLike) and os.fspath(x).lower().endswith(TEXT_EXTENSIONS)


def _text_file_key(path: Any) -> str | None:
    """The key of the text in `path`, read as training reads it; None where it cannot be read
    (reported when it is read for real)."""
    try:
        with warnings.catch_warnings():  # a decoding note is recorded when the input is read for real
            warnings.simplefilter("ignore", InputWarning)
            return _text_key(TextPreprocessor().read_text(path))
    except (InputError, OSError):
        return None


def _text_key(text: str) -> str:
    return "text:" + hashlib.sha256(same_text_key(text).encode("utf-8", "surrogatepass")).hexdigest()


def same_text_key(text: str) -> str:
    """What two texts share when one counts as a copy of the other: the same words, up to case
    and spacing, read as the tokenizer reads them (a decomposed accent, a soft hyphen)."""
    text = text if text.isascii() else normalize_text(text)  # ASCII has nothing to normalize
    return " ".join(text.split()).casefold()


def _keys(splits: dict[str, Dataset], against: str | None = None, within: str | None = None) -> dict[str, list[str | None]] | None:
    """A content key per input of every split (None: no copy of it can be in another split), or
    None when finding them would read more than `MAX_HASHED_BYTES`. With `against` (a split's
    name), only copies of or in that split are looked for: files are hashed only where their
    size occurs in it and in another split. With `within` (a split's name), copies inside that
    split are looked for too."""
    sizes = {
        name: [_size(x) if isinstance(x, os.PathLike) and not _is_text_file(x) else None for x in part.inputs]
        for name, part in splits.items()
    }
    splits_of_size = defaultdict(set)
    for name, values in sizes.items():
        for size in values:
            if size is not None:
                splits_of_size[size].add(name)
    shared = {
        size for size, names in splits_of_size.items() if len(names) > 1 and (against is None or against in names)
    }
    if within in sizes:
        counts = Counter(size for size in sizes[within] if size is not None)
        shared |= {size for size, count in counts.items() if count > 1}
    # each file once, however many parts list it (data scored with --data may be the training folder)
    to_hash = {
        os.fspath(x): size for name, part in splits.items() for x, size in zip(part.inputs, sizes[name]) if size in shared
    }
    to_read = sum(to_hash.values())
    if to_read > MAX_HASHED_BYTES:
        logger.info("not checked for inputs copied across splits: %.1f GB of same-size files", to_read / 1e9)
        return None
    texts = {os.fspath(x) for part in splits.values() for x in part.inputs if _is_text_file(x)}
    text_bytes = sum(_size(path) or 0 for path in texts)
    read_texts = text_bytes <= MAX_HASHED_BYTES  # a cap of their own: they are read whatever their size
    if not read_texts:
        logger.info("text files not checked for copies across splits: %.1f GB of them", text_bytes / 1e9)
    digests: dict[str, str | None] = {}
    keys: dict[str, list[str | None]] = {}
    for name, part in splits.items():
        keys[name] = []
        for x, size in zip(part.inputs, sizes[name]):
            if _is_text_file(x):
                if read_texts and os.fspath(x) not in digests:
                    digests[os.fspath(x)] = _text_file_key(x)
                key = digests[os.fspath(x)] if read_texts else None
            elif isinstance(x, os.PathLike):
                if size in shared and os.fspath(x) not in digests:
                    digests[os.fspath(x)] = _file_digest(x)
                key = digests[os.fspath(x)] if size in shared else None
            elif isinstance(x, str):
                key = _text_key(x)
            elif isinstance(x, np.ndarray):
                key = f"array:{x.dtype}{x.shape}:" + hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
            else:
                key = None
            keys[name].append(key)
    return keys


def find_copies(splits: dict[str, Dataset], warn: bool = True, unused: frozenset[tuple[str, str]] = frozenset()) -> dict[str, Any]:
    """`{"validation_in_train": n, "test_in_train": n, "test_in_validation": n, "examples": {...}}`
    for inputs of a later split that are exact copies of an earlier split's; `{}` when none
    (or when not checked). `unused`: (split, id) of inputs that could not be read, which are
    copies of nothing the model sees (two files of the same junk bytes are skipped, not taught).
    With `warn`, logs one warning line per pair that has copies."""
    keys = _keys(splits, within="train")
    if keys is None:
        return {}
    if unused:
        keys = {
            name: [None if (name, id_) in unused else key for key, id_ in zip(part_keys, splits[name].ids)]
            for name, part_keys in keys.items()
        }
    found: dict[str, Any] = {}
    examples: dict[str, list[list[str]]] = {}
    if "train" in splits:
        _contradictions(splits["train"], keys["train"], found, examples, warn)
    order = [name for name in ("train", "validation", "test") if name in splits]
    for later_index, later in enumerate(order):
        for earlier in order[:later_index]:
            first = {}
            for key, id_, label in zip(keys[earlier], splits[earlier].ids, splits[earlier].labels):
                if key is not None:
                    first.setdefault(key, (id_, label))
            copies = [
                (id_, *first[key], label)
                for key, id_, label in zip(keys[later], splits[later].ids, splits[later].labels) if key in first
            ]
            if not copies:
                continue
            pair = f"{later}_in_{earlier}"
            found[pair] = len(copies)
            examples[pair] = [[id_, first_id] for id_, first_id, _, _ in copies[:EXAMPLES]]
            # the same input under two labels: the data contradicts itself (e.g. a class folder
            # that links to another, or a file sorted into two classes)
            relabelled = [(id_, first_id) for id_, first_id, first_label, label in copies if label != first_label]
            if relabelled:
                found[f"{pair}_labelled_differently"] = len(relabelled)
            if not warn:
                continue
            contradictions = "" if not relabelled else (
                f" {len(relabelled)} of them have another label there ({_pairs_text(relabelled)}): "
                "the data gives one input two classes."
            )
            logger.warning(
                "%d of %d %s inputs are exact copies of %s inputs (%s); the %s score counts them.%s Remove the "
                "copies from the data for a score on inputs the model has not seen.",
                len(copies), len(splits[later]), later, earlier, _pairs_text(copies), later, contradictions,
            )
    if "test" in splits:
        # what the baseline, fitted on train + validation, has seen: a test input copying one of
        # each is one copy, not two
        fitted = {key for name in ("train", "validation") for key in keys.get(name, ()) if key is not None}
        seen = sum(key in fitted for key in keys["test"] if key is not None)
        if seen:
            found["test_in_train_or_validation"] = seen
    if found:
        found["examples"] = examples
    return found


def _contradictions(train: Dataset, keys: list[str | None], found: dict, examples: dict, warn: bool) -> None:
    """Training inputs that are copies of each other under different labels: the data gives one
    input two classes, and the model is taught both (a file sorted into two class folders)."""
    labels_of, first_id = defaultdict(set), {}
    for key, id_, label in zip(keys, train.ids, train.labels):
        if key is not None:
            labels_of[key].add(label)
            first_id.setdefault(key, id_)
    pairs = [
        (id_, first_id[key]) for key, id_ in zip(keys, train.ids)
        if key is not None and len(labels_of[key]) > 1 and id_ != first_id[key]
    ]
    if not pairs:
        return
    found["train_labelled_differently"] = len(pairs)
    examples["train_labelled_differently"] = [list(pair) for pair in pairs[:EXAMPLES]]
    if warn:
        logger.warning(
            "%d training input(s) are exact copies of other training inputs with another label (%s): the data "
            "gives one input two classes, and the model is taught both.",
            len(pairs), _pairs_text(pairs),
        )


def _pairs_text(pairs: list[tuple]) -> str:
    """The first `EXAMPLES` (copy id, original id, ...) pairs as "a = b, c = d, ..." for a warning."""
    return ", ".join(f"{a} = {b}" for a, b, *_ in pairs[:EXAMPLES]) + (", ..." if len(pairs) > EXAMPLES else "")


def copies_of_earlier(scored: Dataset, earlier: dict[str, Dataset]) -> dict[str, int] | None:
    """How many of `scored`'s inputs are exact copies of an input of each part of `earlier`
    (e.g. "train"), and of an input of any of them ("any"); None when not checked. One pass,
    however many parts: each file is hashed at most once."""
    keys = _keys({**earlier, "scored": scored}, against="scored")
    if keys is None:
        return None
    found = {name: {key for key in keys[name] if key is not None} for name in earlier}
    counts = {name: sum(key in found[name] for key in keys["scored"] if key is not None) for name in earlier}
    counts["any"] = sum(any(key in part for part in found.values()) for key in keys["scored"] if key is not None)
    return counts
