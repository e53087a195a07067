"""Text -> token ids over a fitted vocabulary: the compact form of a position x vocabulary matrix."""

from __future__ import annotations

import codecs
import functools
import itertools
import os
import re
import sys
import unicodedata
import zlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from preprocess.base import Preprocessor, check_int, describe_input, is_int, read_bytes
from preprocess.errors import FitError, InputError, one_line, warn_input

TEXT_EXTENSIONS = (".txt",)
LEVELS = ("word", "char")
#: Caps on learned positions, per level. Characters run about 6 to a word, so 2,048 characters
#: hold about as much text as 512 words. A 512-character cap cut off what TF-IDF still read on
#: long docstrings: 0.75 test accuracy at 512 positions against 0.79 at 1,024 (benchmarks/).
MAX_LEARNED_POSITIONS = {"word": 512, "char": 2048}
#: Fewest positions learned from the training lengths.
MIN_LEARNED_POSITIONS = 16
LATIN1_NOTE = "not valid UTF-8, decoded as Windows-1252 (Latin-1)"
#: More control characters than this share of a file's start (tabs and line ends aside): binary.
MAX_CONTROL_SHARE = 0.01
#: Bytes looked at for NUL bytes, which text files practically never hold (git and `file` judge so too).
BINARY_PROBE_BYTES = 8192
PADDING_ID = 0
OOV_ID = 1
RESERVED = ("<pad>", "<oov>")
#: Tokenizers, by `tokenizer_version`. Version 1's words (`\w+|[^\w\s]`) cut words at combining
#: marks (Hindi, Thai, decomposed accents) and made zero-width and other invisible characters
#: tokens of their own; a preprocessor saved without a version used it and keeps it.
TOKENIZER_VERSIONS = (1, 2)
_WORD_V1 = re.compile(r"\w+|[^\w\s]")
#: Zero-width non-joiner and joiner: they change how the letters around them are written, inside a word.
JOINERS = "\u200c\u200d"
#: A zero-width space marks a word boundary (Thai, Khmer, Burmese text) without showing one.
ZERO_WIDTH_SPACE = "\u200b"


def _char_class(codes: list[int]) -> str:
    """A regex character class body for these code points, as ranges of consecutive ones."""
    parts = []
    for _, run in itertools.groupby(enumerate(codes), key=lambda pair: pair[1] - pair[0]):
        run = [code for _, code in run]
        parts.append(re.escape(chr(run[0])) + ("-" + re.escape(chr(run[-1])) if len(run) > 1 else ""))
    return "".join(parts)


@functools.cache  # scanning every code point takes a few tenths of a second: only on first use
def _tokenizer_v2() -> tuple[dict[int, str | None], re.Pattern[str]]:
    """Version 2: (the `str.translate` table applied first, the word-level token pattern).

    Texts are NFC-normalized (a decomposed "e" + accent is the same text as "é"). Invisible
    format characters (soft hyphen, byte-order mark, direction marks, word joiner) are deleted,
    so they neither split a word nor become tokens; a zero-width space becomes a space. At word
    level, a word is a run of word characters, combining marks and joiners, and any other visible
    character is a token of its own.
    """
    marks, invisible = [], []
    for code in range(sys.maxunicode + 1):
        category = unicodedata.category(chr(code))
        if category in ("Mn", "Mc", "Me"):
            marks.append(code)
        elif category == "Cf" and chr(code) not in JOINERS + ZERO_WIDTH_SPACE:
            invisible.append(code)
    table: dict[int, str | None] = {code: None for code in invisible}
    table[ord(ZERO_WIDTH_SPACE)] = " "
    inside = f"\\w{_char_class(marks)}{JOINERS}"
    return table, re.compile(f"[{inside}]+|[^{inside}\\s]")


def normalize_text(text: str) -> str:
    """`text` as the tokenizer (version 2) reads it: NFC-normalized, invisible format characters
    dropped, zero-width spaces made spaces."""
    table, _ = _tokenizer_v2()
    return unicodedata.normalize("NFC", text).translate(table)


def is_blank(text: str) -> bool:
    """Whether `text` shows nothing: only whitespace and invisible format characters (zero-width
    spaces, soft hyphens, byte-order marks, which `normalize_text` drops or makes spaces; and the
    zero-width joiners it keeps inside words, meaningless alone). Stops at the first visible
    character, so long texts cost nothing."""
    table, _ = _tokenizer_v2()
    for char in text:
        kept = table.get(ord(char), char)
        if kept is not None and not kept.isspace() and kept not in JOINERS:
            return False
    return True


def decode_text(data: bytes) -> tuple[str, bool]:
    """Decode bytes as UTF-8 (a leading BOM is dropped), or UTF-16 or UTF-32 when a BOM says so; fall back
    to Windows-1252, else Latin-1.

    Windows-1252 is what text that is not UTF-8 usually is (Excel, Notepad): its curly quotes
    and euro sign are the bytes Latin-1 reads as invisible control characters. Latin-1 maps every
    byte to a character, so the fallback never fails; the flag says it was used, so callers can
    count such inputs.
    """
    # UTF-32's little-endian mark starts with UTF-16's: look for it first
    for boms, encoding in (((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE), "utf-32"), ((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE), "utf-16")):
        if data.startswith(boms):
            try:
                return data.decode(encoding), False
            except UnicodeDecodeError:
                pass
    try:
        return data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), True
    except UnicodeDecodeError:  # five bytes Windows-1252 leaves undefined
        return data.decode("latin-1"), True


def _control_share(text: str) -> float:
    """Share of control characters other than whitespace: text has next to none, binary data
    (a PDF's compressed streams, an image) many."""
    sample = text[:BINARY_PROBE_BYTES]
    return len(_CONTROL.findall(sample)) / max(len(sample), 1)


#: Unicode's control characters (category Cc) but the whitespace ones, \t \n \v \f \r: a regex
#: scans a file's start in C, where a per-character category lookup cost more than decoding it.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")


def _escaped(text: str) -> bool:
    """Whether every lone surrogate in `text` stands for a byte (Python's surrogateescape)."""
    return all(not 0xD800 <= ord(char) <= 0xDFFF or 0xDC80 <= ord(char) <= 0xDCFF for char in text)


def _spaced_chars(text: str):
    """Characters with leading/trailing whitespace dropped and inner runs collapsed to one space."""
    pending_space = False
    started = False
    for char in text:
        if char.isspace():
            pending_space = started
            continue
        if pending_space:
            yield " "
            pending_space = False
        started = True
        yield char


class TextPreprocessor(Preprocessor):
    """Tokenize text and map it to `positions` token ids over a vocabulary fitted on training text.

    The mathematical object is the one-hot matrix with one row per position and one column per
    vocabulary id; it is stored compactly as the ids themselves. `to_one_hot` rebuilds the dense
    matrix exactly (padding rows are all zero), for inspection, export or small vocabularies.

    Args:
        level: `"word"` (lower-cased words and punctuation) or `"char"` (characters, runs of
            whitespace collapsed to one space).
        vocabulary_size: cap on the number of ids, including the two reserved ones
            (0 = padding, 1 = out-of-vocabulary). The most frequent training tokens are kept.
        positions: number of token positions; longer texts are truncated, shorter ones padded.
            `None` learns it at fit time: the 90th percentile of training lengths, clipped to
            [16, 512] words or [16, 2048] characters.
        lowercase: lower-case before tokenizing (a bool).
        min_count: tokens seen fewer times in the training text map to out-of-vocabulary.
        ngram_sizes: character level only: also mark, at each position, the character n-grams
            of these distinct sizes that end there (e.g. `(2, 3, 4)`), hashed into
            `hash_buckets` extra columns of the matrix. Each row then has `1 + len(ngram_sizes)`
            ones; an n-gram needs no vocabulary, so unseen words still share pieces with
            training words.
        hash_buckets: number of columns the n-grams are hashed into (CRC-32, stable across
            processes and machines).
        tokenizer_version: 2 (the default) NFC-normalizes, drops invisible format characters,
            reads a zero-width space as a space and, at word level, keeps combining marks and
            joiners inside words; 1 is the tokenizer of preprocessors saved before version 2
            (words `\\w+|[^\\w\\s]`, cut at combining marks). `load` gives 1 to a file saved
            without it, so an old run tokenizes as it was trained.

    Example:
        >>> pre = TextPreprocessor(level="word", positions=4).fit(["a b", "b c"])
        >>> pre.transform_one("b a z").tolist()
        [2, 3, 1, 0]

    Input: a `str` (the text itself), `bytes`, or a path (`pathlib.Path`) to a text file;
    `transform` takes a list of them (a single str is refused, not read letter by letter). A
    str is data: an empty one (or one of only spaces or invisible characters) reads as all
    padding, as scikit-learn and Keras vectorizers read it; an empty file or bytes is an
    `InputError`, and the CLI refuses empty texts.
    Output shape: `(positions,)` int32 token ids; `(positions, 1 + len(ngram_sizes))` with
    n-grams.
    """

    needs_fit = True
    output_dtype = "int32"
    str_is_data = True
    extensions = TEXT_EXTENSIONS
    saved_before = {"tokenizer_version": 1}

    def __init__(
        self,
        level: str = "word",
        vocabulary_size: int = 20000,
        positions: int | None = None,
        lowercase: bool = True,
        min_count: int = 1,
        ngram_sizes: Sequence[int] = (),
        hash_buckets: int = 16384,
        tokenizer_version: int = 2,
    ):
        self.level = level
        self.vocabulary_size = vocabulary_size
        self.positions = positions
        self.lowercase = lowercase
        self.min_count = min_count
        self.ngram_sizes = ngram_sizes
        self.hash_buckets = hash_buckets
        self.tokenizer_version = tokenizer_version

    def validate_params(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"`level` must be one of {LEVELS}. Received: level={self.level!r}")
        sizes = self.ngram_sizes
        if (
            not isinstance(sizes, (list, tuple))
            or not all(is_int(n) and n >= 2 for n in sizes)
            or len(set(sizes)) != len(sizes)  # a repeated size would count its n-grams twice
        ):
            raise ValueError(
                f"`ngram_sizes` must be a list of distinct ints >= 2, e.g. (2, 3). Received: ngram_sizes={sizes!r}"
            )
        if sizes and self.level != "char":
            raise ValueError(f"`ngram_sizes` needs level='char'. Received: level={self.level!r}")
        check_int("hash_buckets", self.hash_buckets)
        check_int("vocabulary_size", self.vocabulary_size, minimum=3, why=" (two ids are reserved)")
        check_int("positions", self.positions, none_ok=True)
        check_int("min_count", self.min_count)
        if len(RESERVED) + self.vocabulary_size + self.hash_buckets > np.iinfo(np.int32).max:
            raise ValueError(
                "`vocabulary_size` + `hash_buckets` must stay under 2**31 (token ids are int32). "
                f"Received: vocabulary_size={self.vocabulary_size}, hash_buckets={self.hash_buckets}"
            )
        if not is_int(self.tokenizer_version) or self.tokenizer_version not in TOKENIZER_VERSIONS:
            raise ValueError(
                f"`tokenizer_version` must be one of {TOKENIZER_VERSIONS}. Received: tokenizer_version={self.tokenizer_version!r}"
            )
        if not isinstance(self.lowercase, (bool, np.bool_)):  # "no" would read as True
            raise ValueError(f"`lowercase` must be True or False. Received: lowercase={self.lowercase!r}")

    @property
    def positions_(self) -> int:
        return self.positions if self.positions is not None else self.learned_positions_

    @property
    def num_ids(self) -> int:
        """Width of the one-hot matrix: reserved ids, fitted vocabulary, n-gram hash buckets."""
        self.check_fitted()
        return len(RESERVED) + len(self.vocabulary_) + (self.hash_buckets if self.ngram_sizes else 0)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """`(positions,)`, or `(positions, 1 + len(ngram_sizes))`. Known before `fit` when
        `positions` is given; learned, it raises `NotFittedError` until then. Bad parameters raise
        ValueError, as `fit` does."""
        self.validate_params()
        if self.positions is None:  # learned from the training texts
            self.check_fitted()
        return self._shape()

    def _shape(self) -> tuple[int, ...]:
        """`output_shape` without checking the parameters again (once per text in `encode`)."""
        if self.ngram_sizes:
            return (self.positions_, 1 + len(self.ngram_sizes))
        return (self.positions_,)

    # ---- read: text -> tokens (stateless) ----------------------------------------------------

    def read_text(self, x: Any) -> str:
        if isinstance(x, str):
            try:
                x.encode("utf-8")
                return x
            except UnicodeEncodeError:
                # Bytes a command line could not decode arrive as lone surrogates: decode them
                # as a file's bytes would be (any other lone surrogate becomes "?").
                text, fallback = decode_text(x.encode("utf-8", "surrogateescape" if _escaped(x) else "replace"))
                if fallback:  # named by what it now reads as: its escaped bytes print as \udce9
                    shown = text if len(text) <= 40 else text[:39] + "…"
                    warn_input(f"{one_line(shown)}: {LATIN1_NOTE}")
                return text
        if isinstance(x, (bytes, bytearray, os.PathLike)):
            data = read_bytes(x)
            wide = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE))  # UTF-32 LE's too
            if b"\0" in data[:BINARY_PROBE_BYTES] and not wide:
                # Latin-1 would decode it anyway: an image named .txt must not become "text".
                raise InputError(describe_input(x), "not a text file (holds NUL bytes: binary data, or UTF-16 without a BOM)")
            text, fallback = decode_text(data)
            if _control_share(text) > MAX_CONTROL_SHARE:
                raise InputError(describe_input(x), "not a text file (control characters: binary data such as a PDF?)")
            if is_blank(text):  # as good as empty: nothing to learn from or classify
                raise InputError(describe_input(x), "empty file (only whitespace or invisible characters)")
            if fallback:
                warn_input(f"{describe_input(x)}: {LATIN1_NOTE}")
            return text
        raise InputError(describe_input(x), "expected a str, bytes or a pathlib.Path")

    def read(self, x: Any) -> list[str]:
        return self.tokenize(self.read_text(x))

    def tokenize(self, text: str) -> list[str]:
        """The first `positions` tokens (the level's `MAX_LEARNED_POSITIONS` while `positions` is
        learned).

        Only the start of a long text is read, so a 1 MB text costs no more than a short one.
        """
        limit = self.positions if self.positions is not None else MAX_LEARNED_POSITIONS[self.level]
        if self.tokenizer_version == 1:
            tokens = self._tokens(text, _WORD_V1, limit)
        else:
            _, word = _tokenizer_v2()
            # Normalize a growing start of the text until it holds more than `limit` tokens: the
            # first `limit` then end before the cut, which can only change the last one.
            size = 8 * limit + 1024
            while True:
                tokens = self._tokens(normalize_text(text[:size]), word, limit + 1)
                if len(tokens) > limit or size >= len(text):
                    break
                size *= 4
            tokens = tokens[:limit]
        return [token.lower() for token in tokens] if self.lowercase else tokens

    def _tokens(self, text: str, word: re.Pattern[str], limit: int) -> list[str]:
        if self.level == "char":
            return list(itertools.islice(_spaced_chars(text), limit))
        return [m.group() for m in itertools.islice(word.finditer(text), limit)]

    # ---- fit/encode ------------------------------------------------------------------------

    def fit_read(self, items: list[list[str]]) -> "TextPreprocessor":
        self.validate_params()
        if not items:
            raise FitError("TextPreprocessor.fit needs at least one training text.")
        counts = Counter(token for tokens in items for token in tokens)
        ranked = sorted(
            (item for item in counts.items() if item[1] >= self.min_count),
            key=lambda item: (-item[1], item[0]),
        )
        if not ranked:  # every token would read as out-of-vocabulary: nothing to tell texts apart
            if not counts:
                raise FitError("TextPreprocessor.fit: the training texts hold no tokens (all empty).")
            raise FitError(
                f"min_count={self.min_count} leaves an empty vocabulary: no token occurs more than "
                f"{max(counts.values())} time(s) in the training texts."
            )
        self.vocabulary_ = [token for token, _ in ranked[: self.vocabulary_size - len(RESERVED)]]
        self._index = {token: i + len(RESERVED) for i, token in enumerate(self.vocabulary_)}
        lengths = [len(tokens) for tokens in items]
        self.learned_positions_ = int(np.clip(np.percentile(lengths, 90), MIN_LEARNED_POSITIONS, MAX_LEARNED_POSITIONS[self.level]))
        return self

    def encode(self, item: list[str]) -> np.ndarray:
        tokens = item[: self.positions_]
        ids = np.full(self._shape(), PADDING_ID, dtype=np.int32)
        token_ids = [self._index.get(token, OOV_ID) for token in tokens]
        if not self.ngram_sizes:
            ids[: len(tokens)] = token_ids
            return ids
        ids[: len(tokens), 0] = token_ids
        offset = len(RESERVED) + len(self.vocabulary_)
        for column, n in enumerate(self.ngram_sizes, start=1):
            for end in range(n - 1, len(tokens)):  # an n-gram needs n characters: none before
                gram = "".join(tokens[end - n + 1 : end + 1]).encode("utf-8")
                ids[end, column] = offset + zlib.crc32(gram) % self.hash_buckets
        return ids

    def to_one_hot(self, ids: np.ndarray) -> np.ndarray:
        """Dense `(..., positions, num_ids)` float32 matrix of token ids; padding adds nothing.

        `num_ids` is the vocabulary plus the reserved ids (and the n-gram hash buckets); an id
        outside `[0, num_ids)` is a ValueError.

        With n-grams, a row counts every id at its position (a hash collision counts twice),
        which is exactly what a window summing looked-up kernel rows computes.
        """
        ids = np.asarray(ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"`ids` must be integer token ids. Received an array of {ids.dtype}")
        # Out of range, -1 would silently mark the last column and 999 fail with a bare IndexError.
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_ids):
            raise ValueError(
                f"`ids` must lie in [0, {self.num_ids}) for this vocabulary (num_ids={self.num_ids}). "
                f"Received ids from {ids.min()} to {ids.max()}"
            )
        if not self.ngram_sizes:
            ids = ids[..., None]
        dense = np.zeros((*ids.shape[:-1], self.num_ids), dtype=np.float32)
        for column in range(ids.shape[-1]):
            np.add.at(dense, (*np.indices(ids.shape[:-1]), ids[..., column]), 1.0)
        dense[..., PADDING_ID] = 0.0
        return dense

    def transform_dense(self, inputs: list[Any]) -> np.ndarray:
        return self.to_one_hot(self.transform(inputs))

    def decode_ids(self, ids: np.ndarray) -> list[str]:
        """Token strings for ids (inspection); padding is dropped. Ids are those of the token
        column: `[0, len(RESERVED) + len(vocabulary_))`."""
        self.check_fitted()
        vocabulary = list(RESERVED) + self.vocabulary_
        ids = np.asarray(ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"`ids` must be integer token ids. Received an array of {ids.dtype}")
        if self.ngram_sizes:
            ids = ids[..., 0]
        if ids.size and (ids.min() < 0 or ids.max() >= len(vocabulary)):  # -1 read the last token
            raise ValueError(f"token ids must lie in [0, {len(vocabulary)}). Received ids from {ids.min()} to {ids.max()}")
        return [vocabulary[i] for i in ids.ravel().tolist() if i != PADDING_ID]

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if not hasattr(self, "vocabulary_"):
            return {}, {}
        return {"vocabulary_": self.vocabulary_, "learned_positions_": self.learned_positions_}, {}

    def _restore_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if not values:
            return  # saved unfitted
        vocabulary, positions = values["vocabulary_"], values["learned_positions_"]
        if not isinstance(vocabulary, list) or not all(isinstance(token, str) for token in vocabulary):
            raise ValueError("vocabulary_ must be a list of strings")
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("vocabulary_ holds a token twice")
        if not is_int(positions) or not 1 <= positions <= MAX_LEARNED_POSITIONS[self.level]:  # fit never learns more
            raise ValueError(f"learned_positions_ must be an int from 1 to {MAX_LEARNED_POSITIONS[self.level]}, found {positions!r}")
        self.vocabulary_ = vocabulary
        self._index = {token: i + len(RESERVED) for i, token in enumerate(vocabulary)}
        self.learned_positions_ = int(positions)
