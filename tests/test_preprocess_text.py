"""TextPreprocessor: tokens, fitted vocabulary, fixed positions and the exact one-hot matrix."""

from __future__ import annotations

import codecs
import json
import os
import unicodedata

import numpy as np
import pytest

from preprocess import FitError, InputError, InputWarning, NotFittedError, Preprocessor, TextPreprocessor, decode_text
from preprocess.text import _tokenizer_v2

CORPUS = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog",
    "the end",
]


# ---- vocabulary and ids ----------------------------------------------------------------------


def test_known_ids_most_frequent_first_with_padding_and_oov():
    pre = TextPreprocessor(level="word", positions=4).fit(["a b", "b c"])
    assert pre.vocabulary_ == ["b", "a", "c"]  # b twice; ties in token order
    assert pre.num_ids == 5  # + padding (0) and out-of-vocabulary (1)
    ids = pre.transform_one("b a z")
    assert ids.tolist() == [2, 3, 1, 0]
    assert ids.dtype == np.int32


def test_vocabulary_ranks_by_count():
    pre = TextPreprocessor(positions=8).fit(CORPUS)
    # the: 5, a: 2, cat: 2, dog: 2, on: 2, sat: 2, then the singletons in token order
    assert pre.vocabulary_[:6] == ["the", "a", "cat", "dog", "on", "sat"]
    assert pre.vocabulary_[6:] == ["and", "end", "log", "mat"]
    assert pre.transform_one("the cat").tolist() == [2, 4, 0, 0, 0, 0, 0, 0]


def test_vocabulary_size_caps_ids_including_reserved_ones():
    pre = TextPreprocessor(positions=8, vocabulary_size=4).fit(CORPUS)
    assert pre.vocabulary_ == ["the", "a"]
    assert pre.num_ids == 4
    assert pre.transform_one("the cat a").tolist() == [2, 1, 3, 0, 0, 0, 0, 0]


def test_vocabulary_counts_only_tokens_within_positions():
    # Tokens past `positions` are never encoded, so they are not counted either.
    pre = TextPreprocessor(positions=2).fit(["x y z z z", "y"])
    assert pre.vocabulary_ == ["y", "x"]


def test_min_count_sends_rare_tokens_to_oov():
    pre = TextPreprocessor(positions=3, min_count=2).fit(CORPUS)
    assert "mat" not in pre.vocabulary_ and "cat" in pre.vocabulary_
    assert pre.transform_one("mat cat").tolist()[0] == 1


def test_word_tokens_are_lowercased_words_and_punctuation():
    pre = TextPreprocessor(level="word")
    assert pre.tokenize("Hello, World!  It's") == ["hello", ",", "world", "!", "it", "'", "s"]
    assert TextPreprocessor(lowercase=False).tokenize("Hello World") == ["Hello", "World"]


HINDI = "\u0928\u092e\u0938\u094d\u0924\u0947"  # "namaste": letters, a virama and a vowel sign (marks)


def test_words_keep_their_combining_marks_and_drop_invisible_characters():
    # Version 1 cut "namaste" into 4 tokens (marks are not \w) and made each invisible character a token.
    text = f"{HINDI}! e\u0301t\u00e9 co\u00adoperate \u0e20\u0e32\u0e29\u0e32\u200b\u0e44\u0e17\u0e22 \ufeffok \u0632\u0646\u200c\u0647\u0627"
    assert TextPreprocessor(level="word").tokenize(text) == [
        HINDI, "!", "\u00e9t\u00e9", "cooperate", "\u0e20\u0e32\u0e29\u0e32", "\u0e44\u0e17\u0e22", "ok",
        "\u0632\u0646\u200c\u0647\u0627",  # the zero-width non-joiner stays inside the Persian word
    ]
    old = TextPreprocessor(level="word", tokenizer_version=1).tokenize(text)
    assert old[:5] == ["\u0928\u092e\u0938", "\u094d", "\u0924", "\u0947", "!"] and "\u00ad" in old and "\ufeff" in old
    # Characters: a decomposed accent is one character, as its precomposed twin.
    assert TextPreprocessor(level="char").tokenize("e\u0301\u200bx\ufeffy") == ["\u00e9", " ", "x", "y"]


@pytest.mark.parametrize("level", ["word", "char"])
def test_only_the_start_of_a_long_text_is_normalized_with_the_same_tokens(level):
    rng = np.random.default_rng(0)
    alphabet = list("ab e\u0301\u0301  \u200b\ufeff\u00ad,.\u0915\u094d\u0937\n")
    table, word = _tokenizer_v2()
    for _ in range(200):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 3000))))
        for positions in (1, 7, 100):  # texts longer than the first piece read (8 x positions + 1024)
            pre = TextPreprocessor(level=level, positions=positions)
            whole = pre._tokens(unicodedata.normalize("NFC", text).translate(table), word, positions)
            assert pre.tokenize(text) == [token.lower() for token in whole]


def test_a_preprocessor_saved_before_tokenizer_versions_keeps_the_first_tokenizer(tmp_path):
    pre = TextPreprocessor(level="word", positions=4, tokenizer_version=1).fit([HINDI])
    pre.save(tmp_path / "old.json")
    document = json.loads((tmp_path / "old.json").read_text(encoding="utf-8"))
    del document["config"]["tokenizer_version"]  # as written before the key existed
    (tmp_path / "old.json").write_text(json.dumps(document), encoding="utf-8")
    loaded = TextPreprocessor.load(tmp_path / "old.json")
    assert loaded.tokenizer_version == 1 and loaded.vocabulary_ == pre.vocabulary_
    np.testing.assert_array_equal(loaded.transform([HINDI]), pre.transform([HINDI]))
    assert TextPreprocessor().tokenizer_version == 2


def test_refitting_replaces_the_vocabulary():
    pre = TextPreprocessor(positions=2).fit(["x y"])
    pre.fit(["p q"])
    assert pre.vocabulary_ == ["p", "q"]
    assert pre.transform_one("x p").tolist() == [1, 2]


# ---- positions -------------------------------------------------------------------------------


def test_long_texts_are_truncated_and_short_ones_padded():
    pre = TextPreprocessor(positions=3).fit(CORPUS)
    out = pre.transform(["the cat sat on the mat", "dog", ""])
    assert out.shape == (3, 3) and pre.output_shape == (3,)
    assert out.tolist() == [
        pre.transform_one("the cat sat").tolist(),
        [pre.vocabulary_.index("dog") + 2, 0, 0],
        [0, 0, 0],
    ]


def test_positions_are_learned_from_training_lengths_when_unset():
    texts = [" ".join(["w"] * n) for n in range(20, 61)]  # 20..60 tokens
    pre = TextPreprocessor().fit(texts)
    expected = int(np.percentile(np.arange(20, 61), 90))
    assert pre.learned_positions_ == expected == 56
    assert pre.output_shape == (56,)
    assert pre.transform_one(texts[-1]).shape == (56,)


def test_learned_positions_are_capped_per_level():
    # Long texts: 512 words, but 2,048 characters (512 characters cut long docstrings short).
    texts = ["ab " * 1500] * 3
    assert TextPreprocessor(level="word").fit(texts).output_shape == (512,)
    char = TextPreprocessor(level="char").fit(texts)
    assert char.output_shape == (2048,)
    assert (char.transform_one(texts[0])[1500:] != 0).all()  # read, not padded, past 512


def test_learned_positions_are_at_least_16():
    pre = TextPreprocessor().fit(["a b", "c"])
    assert pre.output_shape == (16,)


# ---- character level -------------------------------------------------------------------------


def test_char_level_collapses_whitespace_and_lowercases():
    pre = TextPreprocessor(level="char", positions=6)
    assert pre.tokenize("Ab \n\t c ") == ["a", "b", " ", "c"]
    pre.fit(["ab c", "bb"])
    assert pre.vocabulary_ == ["b", " ", "a", "c"]
    assert pre.transform_one("AB  Cz").tolist() == [4, 2, 3, 5, 1, 0]


def test_char_level_whitespace_runs_count_as_one_position():
    pre = TextPreprocessor(level="char", positions=3).fit(["a b"])
    assert pre.transform_one("a" + " " * 10 + "b").tolist() == pre.transform_one("a b").tolist()
    assert pre.transform_one("\n\n\n    a b").tolist() == pre.transform_one("a b").tolist()


# ---- the dense one-hot matrix ----------------------------------------------------------------


def test_one_hot_equals_the_compact_form_exactly():
    pre = TextPreprocessor(positions=7).fit(CORPUS)
    texts = ["the cat sat on the mat", "zebra dog", "", "a a a a a a a a a"]
    ids = pre.transform(texts)
    dense = pre.to_one_hot(ids)
    assert dense.shape == (4, 7, pre.num_ids) and dense.dtype == np.float32
    np.testing.assert_array_equal(pre.transform_dense(texts), dense)
    assert set(np.unique(dense)) <= {0.0, 1.0}
    sums = dense.sum(axis=-1)
    np.testing.assert_array_equal(sums, (ids != 0).astype(np.float32))  # one 1 per token row
    np.testing.assert_array_equal(dense[ids == 0], 0.0)  # padding rows are all zero
    np.testing.assert_array_equal(dense.argmax(axis=-1)[ids != 0], ids[ids != 0])
    assert (ids == 1).any() and (ids == 0).any()  # the example covers OOV and padding


@pytest.mark.parametrize("bad", [-1, 12, 999])  # 12: num_ids itself, one past the last column
def test_one_hot_refuses_ids_outside_the_vocabulary(bad):
    pre = TextPreprocessor(positions=8).fit(CORPUS)
    assert pre.num_ids == 12  # 2 reserved ids + 10 words
    # -1 silently marked the last column; 999 was a bare IndexError
    with pytest.raises(ValueError) as caught:
        pre.to_one_hot(np.array([[2, bad, 0]]))
    assert str(caught.value).startswith("`ids` must lie in [0, 12) for this vocabulary (num_ids=12).")
    assert pre.to_one_hot(np.array([[2, 11, 0]])).shape == (1, 3, 12)


def test_decode_ids_inverts_encoding():
    pre = TextPreprocessor(positions=6).fit(CORPUS)
    assert pre.decode_ids(pre.transform_one("the dog ate")) == ["the", "dog", "<oov>"]


# ---- inputs and decoding ---------------------------------------------------------------------


def test_str_is_text_and_path_is_a_file(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("the dog", encoding="utf-8")
    pre = TextPreprocessor(positions=3).fit(CORPUS)
    assert pre.transform_one(path).tolist() == pre.transform_one("the dog").tolist()
    assert pre.transform_one(path.read_bytes()).tolist() == pre.transform_one("the dog").tolist()


def test_non_utf8_bytes_fall_back_to_latin1(tmp_path):
    assert decode_text("café".encode("latin-1")) == ("café", True)
    assert decode_text("\ufeffcafé".encode("utf-8")) == ("café", False)  # BOM dropped
    path = tmp_path / "latin.txt"
    path.write_bytes("Café crème".encode("latin-1"))
    pre = TextPreprocessor(positions=2)
    with pytest.warns(InputWarning, match=r"latin\.txt: not valid UTF-8, decoded as Windows-1252 \(Latin-1\)"):
        assert pre.read(path) == ["café", "crème"]
    with pytest.warns(InputWarning):
        pre.fit([path])
    assert pre.vocabulary_ == ["café", "crème"]


def test_input_warnings_point_at_the_callers_line_not_the_librarys(tmp_path):
    # Python shows a warning's file and line: they named preprocess/text.py's internals, where a
    # library user wants the call of theirs that read the file.
    path = tmp_path / "latin.txt"
    path.write_bytes("Café crème".encode("latin-1"))
    pre = TextPreprocessor(positions=2)
    for call in (lambda: pre.fit([path]), lambda: pre.transform_one(path), lambda: pre.read_text("caf\udce9")):
        with pytest.warns(InputWarning) as caught:
            call()
        assert [record.filename for record in caught] == [__file__]


@pytest.mark.parametrize("filename", ["preprocess_tools/user.py", "<string>"])
def test_input_warnings_skip_only_the_packages_own_files(filename, monkeypatch):
    # A folder that only starts like the package's ("preprocess_tools/" beside "preprocess/"), or
    # "<string>" code run with the package folder as working directory (abspath put it there),
    # was skipped as the library's, and the warning named its caller's caller.
    from preprocess import errors

    folder = os.path.dirname(errors.PACKAGE_FOLDER)
    name = os.path.join(folder, filename) if not filename.startswith("<") else filename
    namespace: dict = {"warn_input": errors.warn_input}
    exec(compile("def call():\n    warn_input('note')\n", name, "exec"), namespace)
    monkeypatch.chdir(errors.PACKAGE_FOLDER)
    with pytest.warns(InputWarning) as caught:
        namespace["call"]()
    assert [record.filename for record in caught] == [name]


def test_unsupported_or_missing_inputs_raise_input_error(tmp_path):
    pre = TextPreprocessor(positions=2).fit(CORPUS)
    with pytest.raises(InputError, match="expected a str, bytes or a pathlib.Path"):
        pre.transform_one(42)
    with pytest.raises(InputError, match="missing.txt: no such file"):
        pre.transform_one(tmp_path / "missing.txt")


@pytest.mark.parametrize("content", [" \n\t\r\n  ", "\u200b\u200c \u00ad\n\u2060", "\ufeff\u200b"], ids=["whitespace", "zero-width", "bom"])
def test_whitespace_only_file_is_an_empty_file(tmp_path, content):
    path = tmp_path / "blank.txt"
    path.write_bytes(content.encode("utf-8"))  # invisible characters read as all padding
    pre = TextPreprocessor(positions=2).fit(CORPUS)
    with pytest.raises(InputError) as caught:
        pre.transform_one(path)
    assert (caught.value.source, caught.value.reason) == (str(path), "empty file (only whitespace or invisible characters)")
    assert pre.transform_one("").tolist() == [0, 0]  # a str is the text itself, as before


def test_is_blank_stops_at_the_first_visible_character():
    from preprocess.text import is_blank

    assert is_blank("") and is_blank(" \u200b\u2060\u00ad\ufeff\t")
    assert not is_blank("\u200ba") and not is_blank("\u0301") and not is_blank("\u200b!")  # a mark or a sign is read


def test_binary_file_is_not_a_text_file(tmp_path):
    path = tmp_path / "picture.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    pre = TextPreprocessor(positions=2).fit(CORPUS)
    with pytest.raises(InputError, match=r"picture\.txt: not a text file"):
        pre.transform_one(path)
    with pytest.raises(InputError, match="not a text file"):
        pre.transform_one("hi".encode("utf-16-le"))  # UTF-16 without a BOM cannot be told from binary


def test_encodings_a_text_file_may_come_in(tmp_path):
    pre = TextPreprocessor(level="char", positions=8, lowercase=False).fit(["hi there"])
    assert pre.read_text("“hé” €5".encode("utf-16")) == "“hé” €5"  # Notepad's "Unicode": BOM and all
    assert pre.read_text("oven flour".encode("utf-32")) == "oven flour"  # its mark starts like UTF-16's
    assert pre.read_text(codecs.BOM_UTF32_BE + "oven".encode("utf-32-be")) == "oven"
    with pytest.warns(InputWarning, match="decoded as Windows-1252"):
        # Excel's CSV text: curly quotes and the euro sign, which Latin-1 reads as control characters
        assert pre.read_text("“hé” €5".encode("cp1252")) == "“hé” €5"
    with pytest.warns(InputWarning, match=r"^café menu: not valid UTF-8, decoded as Windows-1252"):
        assert pre.read_text("caf\udce9 menu") == "café menu"  # a Latin-1 argument on a UTF-8 command line
    pdf = tmp_path / "paper.txt"
    pdf.write_bytes(b"%PDF-1.4\n" + bytes(range(1, 32)) * 50 + b"stream endobj\n")
    with pytest.raises(InputError, match=r"paper\.txt: not a text file \(control characters"):
        pre.read_text(pdf)


# ---- fitting, parameters, persistence --------------------------------------------------------


def test_use_before_fit_raises_not_fitted():
    pre = TextPreprocessor(positions=4)
    assert pre.output_shape == (4,)  # given, not learned: known before fit, as audio's is
    assert TextPreprocessor(level="char", positions=4, ngram_sizes=(2, 3)).output_shape == (4, 3)
    for use in (lambda: pre.transform_one("a"), lambda: pre.transform(["a"]), lambda: TextPreprocessor().output_shape):
        with pytest.raises(NotFittedError, match="TextPreprocessor is not fitted"):
            use()


def test_fit_needs_training_text():
    with pytest.raises(ValueError, match="at least one training text"):
        TextPreprocessor().fit([])


@pytest.mark.parametrize(
    "params, name",
    [
        ({"level": "sentence"}, "level"),
        ({"vocabulary_size": 2}, "vocabulary_size"),
        ({"positions": 0}, "positions"),
        ({"positions": "10"}, "positions"),
        ({"positions": True}, "positions"),  # raw TypeErrors before
        ({"min_count": "2"}, "min_count"),
        ({"min_count": None}, "min_count"),
        ({"min_count": -1}, "min_count"),  # accepted before
        ({"lowercase": "no"}, "lowercase"),  # was truthy: lower-cased
        ({"level": "char", "ngram_sizes": None}, "ngram_sizes"),  # "'NoneType' object is not iterable"
        ({"level": "char", "ngram_sizes": 3}, "ngram_sizes"),
        ({"level": "char", "ngram_sizes": (2, 2)}, "ngram_sizes"),  # counted every 2-gram twice
        ({"tokenizer_version": 3}, "tokenizer_version"),
        ({"tokenizer_version": "2"}, "tokenizer_version"),
    ],
)
def test_bad_parameters_raise_value_error_naming_the_parameter(params, name):
    pre = TextPreprocessor(**params)
    with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}="):
        pre.fit(CORPUS)


@pytest.mark.parametrize(
    "params, name",
    [
        ({"positions": "100"}, "positions"),  # ("100",)
        ({"positions": -3}, "positions"),  # (-3,)
        ({"positions": 5, "level": "char", "ngram_sizes": 3}, "ngram_sizes"),  # a raw TypeError
        ({"positions": 5, "ngram_sizes": (2,)}, "ngram_sizes"),  # (5, 2), yet fit refused word n-grams
    ],
)
def test_output_shape_of_bad_parameters_raises_value_error_naming_the_parameter(params, name):
    with pytest.raises(ValueError, match=f"`{name}`.*Received: "):
        TextPreprocessor(**params).output_shape


def test_numpy_ints_are_accepted_like_python_ints(tmp_path):
    # image and audio took np.int64; text refused it
    numbers = {"vocabulary_size": 8, "positions": 6, "min_count": 1, "hash_buckets": 50}
    plain = TextPreprocessor(level="char", ngram_sizes=(2, 3), **numbers).fit(CORPUS)
    pre = TextPreprocessor(
        level="char", ngram_sizes=(np.int64(2), np.int64(3)), **{k: np.int64(v) for k, v in numbers.items()}
    ).fit(CORPUS)
    np.testing.assert_array_equal(pre.transform(CORPUS), plain.transform(CORPUS))
    pre.save(tmp_path / "t.json")
    assert TextPreprocessor.load(tmp_path / "t.json").get_config() == pre.get_config() == plain.get_config()


@pytest.mark.parametrize(
    "call",
    [lambda pre: pre.transform("the cat"), lambda pre: pre.transform(None), lambda pre: pre.fit("hello world")],
    ids=["transform str", "transform None", "fit str"],
)
def test_a_single_text_where_a_list_belongs_is_a_type_error(call):
    pre = TextPreprocessor(positions=8).fit(CORPUS)
    # a str was iterated: 7 one-letter texts, or a vocabulary of letters
    with pytest.raises(TypeError, match=r"^`inputs` must be a list of inputs; got (str|NoneType)\. For one input, "):
        call(pre)
    assert pre.vocabulary_[0] == "the"  # the failed fit did not replace the vocabulary


def test_a_generator_of_texts_is_read_as_a_list():
    pre = TextPreprocessor(positions=4).fit(text for text in CORPUS)
    assert pre.vocabulary_ == TextPreprocessor(positions=4).fit(CORPUS).vocabulary_
    np.testing.assert_array_equal(pre.transform(iter(CORPUS)), pre.transform(CORPUS))


@pytest.mark.parametrize("positions", [5, None])
def test_save_load_round_trip(tmp_path, positions):
    pre = TextPreprocessor(level="word", positions=positions, vocabulary_size=8, min_count=1).fit(CORPUS)
    pre.save(tmp_path / "text.json")
    assert not (tmp_path / "text.npz").exists()  # the vocabulary is plain JSON
    document = json.loads((tmp_path / "text.json").read_text(encoding="utf-8"))
    assert document["fitted"]["vocabulary_"] == pre.vocabulary_
    loaded = Preprocessor.load(tmp_path / "text.json")
    assert type(loaded) is TextPreprocessor
    assert loaded.get_config() == pre.get_config()
    assert loaded.vocabulary_ == pre.vocabulary_
    texts = ["the cat sat", "unknown words here", ""]
    np.testing.assert_array_equal(loaded.transform(texts), pre.transform(texts))


def test_a_json_suffix_in_any_case_saves_and_loads(tmp_path):
    pre = TextPreprocessor(positions=4).fit(CORPUS)
    pre.save(tmp_path / "TEXT.JSON")  # as a Windows user may type it
    assert TextPreprocessor.load(tmp_path / "TEXT.JSON").vocabulary_ == pre.vocabulary_


@pytest.mark.parametrize(
    "version, reason",
    [(2, "written by a newer convpipe; upgrade to load it"), (True, '"format_version" must be a JSON integer, found true')],
)
def test_a_file_of_a_newer_or_no_format_version_is_refused_naming_it(tmp_path, version, reason):
    TextPreprocessor(positions=4).fit(CORPUS).save(tmp_path / "text.json")
    document = json.loads((tmp_path / "text.json").read_text(encoding="utf-8"))
    (tmp_path / "text.json").write_text(json.dumps({**document, "format_version": version}), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        TextPreprocessor.load(tmp_path / "text.json")
    assert caught.value.source == str(tmp_path / "text.json") and caught.value.reason == reason


@pytest.mark.parametrize("changed", [{"reading_version": "2b"}, {"fitted": []}, {"arrays": {}}])
def test_a_newer_format_is_named_before_its_other_fields_are_judged(tmp_path, changed):
    # A newer layout may change any field: it said '"reading_version" must be a positive JSON
    # integer' where the fix is to upgrade.
    TextPreprocessor(positions=4).fit(CORPUS).save(tmp_path / "text.json")
    document = json.loads((tmp_path / "text.json").read_text(encoding="utf-8"))
    (tmp_path / "text.json").write_text(json.dumps({**document, **changed, "format_version": 99}), encoding="utf-8")
    with pytest.raises(InputError, match="written by a newer convpipe; upgrade to load it"):
        TextPreprocessor.load(tmp_path / "text.json")


def test_non_ascii_vocabulary_survives_save_and_load(tmp_path):
    pre = TextPreprocessor(level="char", positions=4).fit(["日本語", "ü"])
    pre.save(tmp_path / "t.json")
    loaded = TextPreprocessor.load(tmp_path / "t.json")
    assert loaded.transform_one("語ü").tolist() == pre.transform_one("語ü").tolist()
    assert 1 not in pre.transform_one("語ü").tolist()


def test_character_n_grams_add_hashed_ids_ending_at_each_position():
    pre = TextPreprocessor(level="char", positions=5, ngram_sizes=(2, 3), hash_buckets=100).fit(["abcd"])
    ids = pre.transform_one("abq")
    assert pre.output_shape == (5, 3) and ids.shape == (5, 3)
    offset = 2 + len(pre.vocabulary_)
    assert pre.num_ids == offset + 100
    # characters: a, b known; q out of vocabulary; then padding
    assert ids[:, 0].tolist() == [pre._index["a"], pre._index["b"], 1, 0, 0]
    # the 2-gram column starts at the second character, the 3-gram column at the third
    assert ids[0, 1] == 0 and ids[1, 1] >= offset and ids[2, 2] >= offset and ids[1, 2] == 0
    assert np.all(ids[3:] == 0)
    # the same n-gram always gets the same id (CRC-32, not Python's salted hash)
    again = TextPreprocessor(level="char", positions=5, ngram_sizes=(2, 3), hash_buckets=100).fit(["abcd"])
    np.testing.assert_array_equal(again.transform_one("xab")[2, 1], ids[1, 1])
    dense = pre.to_one_hot(ids[None])[0]
    np.testing.assert_array_equal(dense.sum(axis=-1), [1, 2, 3, 0, 0])


def test_n_gram_ids_are_crc32_buckets_after_the_reserved_and_vocabulary_ids():
    # the ids a saved model was trained on: the same in every process and on every machine
    import zlib

    pre = TextPreprocessor(level="char", positions=4, ngram_sizes=(2, 3), hash_buckets=1000).fit(["abcd"])
    offset = 2 + len(pre.vocabulary_)  # n-gram ids never share an id with a token
    ids = pre.transform_one("abcd")
    assert ids[1:, 1].tolist() == [offset + zlib.crc32(g.encode()) % 1000 for g in ("ab", "bc", "cd")]
    assert ids[2:, 2].tolist() == [offset + zlib.crc32(g.encode()) % 1000 for g in ("abc", "bcd")]


@pytest.mark.parametrize("level", ["word", "char"])
def test_tokens_after_a_long_run_of_whitespace_are_read(level):
    # the first `positions` tokens, however much whitespace lies between them: a text is
    # normalized in growing pieces until it holds them
    text = "a" + " " * 20_000 + "b c d"
    pre = TextPreprocessor(level=level, positions=4, lowercase=False)
    assert pre.tokenize(text) == (["a", "b", "c", "d"] if level == "word" else ["a", " ", "b", " "])


@pytest.mark.parametrize(
    "params, name",
    [({"ngram_sizes": (1,)}, "ngram_sizes"), ({"ngram_sizes": (2,), "level": "word"}, "ngram_sizes"),
     ({"level": "char", "ngram_sizes": (2,), "hash_buckets": 0}, "hash_buckets")],
)
def test_bad_n_gram_parameters_name_the_parameter(params, name):
    with pytest.raises(ValueError, match=name):
        TextPreprocessor(**{"level": "char", **params}).fit(["abc"])


def test_hash_buckets_that_would_overflow_the_int32_ids_are_refused():
    # was accepted, then transform failed with "Python integer ... out of bounds for int32"
    with pytest.raises(ValueError, match=r"`vocabulary_size` \+ `hash_buckets` must stay under 2\*\*31"):
        TextPreprocessor(level="char", ngram_sizes=(2,), hash_buckets=2**32).fit(["some text", "more text"])
    with pytest.raises(ValueError, match="`level`"):
        TextPreprocessor(level="bogus").save("never-written.json")



def test_fit_refuses_an_empty_vocabulary():
    with pytest.raises(FitError, match=r"min_count=3 leaves an empty vocabulary: no token occurs more than 2 time\(s\)"):
        TextPreprocessor(min_count=3).fit(["a b", "a c"])  # every token would be out-of-vocabulary
    with pytest.raises(FitError, match="hold no tokens"):  # a ValueError too, for library code
        TextPreprocessor().fit(["", " "])
    assert TextPreprocessor(min_count=2).fit(["a b", "a c"]).vocabulary_ == ["a"]


def test_decode_ids_refuses_ids_outside_the_token_column():
    pre = TextPreprocessor(level="word", positions=4).fit(["a b", "b c"])
    for bad in ([-1], [99]):  # -1 read the last token, 99 a bare IndexError
        with pytest.raises(ValueError, match=r"token ids must lie in \[0, 5\)"):
            pre.decode_ids(np.array(bad))
    assert pre.decode_ids(pre.transform_one("b a")) == ["b", "a"]


def test_load_refuses_a_learned_length_fit_never_gives(tmp_path):
    pre = TextPreprocessor(level="word").fit(["a b", "b c"])
    pre.save(tmp_path / "t.json")
    document = json.loads((tmp_path / "t.json").read_text())
    document["fitted"]["learned_positions_"] = 2 * 10**9  # predict allocated gigabytes before any check
    (tmp_path / "t.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match="learned_positions_ must be an int from 1 to"):
        Preprocessor.load(tmp_path / "t.json")


def test_fitting_on_no_texts_is_a_fit_error():
    from preprocess import FitError

    with pytest.raises(FitError, match="at least one training text"):
        TextPreprocessor().fit([])
