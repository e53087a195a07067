"""Copies of training inputs in the validation or test split are found and reported."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import pipelines.leakage
from pipelines.datasets import Dataset
from pipelines.leakage import _keys, copies_of_earlier, find_copies
from tests.conftest import TINY_IMAGE, describe_result, invoke, write_image_folder


def files(paths: list[Path]) -> Dataset:
    return Dataset(list(paths), ["a"] * len(paths), [p.name for p in paths])


def test_file_copies_under_other_names_are_found_and_same_size_strangers_are_not(tmp_path, caplog):
    originals = []
    for i in range(4):
        originals.append(tmp_path / f"train{i}.bin")
        originals[-1].write_bytes(bytes([i]) * 100)  # all the same size
    copy = tmp_path / "copy.bin"
    shutil.copy(originals[2], copy)
    strangers = [tmp_path / "other1.bin", tmp_path / "other2.bin"]
    for stranger, byte in zip(strangers, b"\xfe\xff"):
        stranger.write_bytes(bytes([byte]) * 100)
    with caplog.at_level(logging.WARNING):
        found = find_copies({"train": files(originals), "validation": files([strangers[0]]), "test": files([copy, strangers[1]])})
    assert found == {"test_in_train": 1, "test_in_train_or_validation": 1, "examples": {"test_in_train": [["copy.bin", "train2.bin"]]}}
    assert "1 of 2 test inputs are exact copies of train inputs (copy.bin = train2.bin)" in caplog.text
    assert "validation" not in caplog.text


def test_copies_under_another_label_are_counted_and_named_as_a_contradiction(caplog):
    train = Dataset(["Open a file", "Close the loop"], ["io", "loops"], ["0", "1"])
    validation = Dataset(["open a  FILE", "close the loop", "new"], ["io", "io", "io"], ["2", "3", "4"])
    with caplog.at_level(logging.WARNING):
        found = find_copies({"train": train, "validation": validation})
    assert found["validation_in_train"] == 2 and found["validation_in_train_labelled_differently"] == 1
    assert "1 of them have another label there (3 = 1): the data gives one input two classes." in caplog.text
    # several: named as the copies are, up to three
    caplog.clear()
    relabelled = Dataset(["open a file", "close the loop", "OPEN A FILE", "Close the loop", "open a file"], ["x"] * 5, list("56789"))
    with caplog.at_level(logging.WARNING):
        find_copies({"train": train, "validation": relabelled})
    assert "5 of them have another label there (5 = 0, 6 = 1, 7 = 0, ...): the data gives" in caplog.text


def test_texts_match_up_to_case_and_whitespace_and_arrays_exactly():
    train = Dataset(["Return the loop.", "Open a file"], ["x", "y"], ["0", "1"])
    test = Dataset(["  return   THE loop. ", "Open a file!"], ["x", "y"], ["2", "3"])
    assert find_copies({"train": train, "test": test})["test_in_train"] == 1
    # and as the tokenizer reads them: a decomposed accent (macOS), a soft hyphen (web text)
    train = Dataset(["Le café est très bon", "Open a file"], ["x", "y"], ["0", "1"])
    test = Dataset(["Le cafe\u0301 est très bon", "Le café est tr\u00adès bon"], ["x", "x"], ["2", "3"])
    assert find_copies({"train": train, "test": test})["test_in_train"] == 2
    grid = np.arange(12, dtype=np.uint8).reshape(3, 4)
    arrays = {"train": Dataset([grid], ["x"], ["0"]), "test": Dataset([grid.copy(), grid.reshape(4, 3)], ["x", "x"], ["1", "2"])}
    assert find_copies(arrays)["test_in_train"] == 1  # the same bytes in another shape are another input


def test_text_files_match_as_their_texts_do(tmp_path):
    def text_file(name, data: bytes) -> Path:
        (tmp_path / name).write_bytes(data)
        return tmp_path / name

    train = files([text_file("a.txt", b"Le caf\xc3\xa9 est bon\n"), text_file("b.txt", b"Open a file")])
    test = files([
        text_file("c.txt", b"le cafe\xcc\x81 est bon"),  # no newline, lower case, a decomposed accent
        text_file("d.txt", b"\xef\xbb\xbfOpen a file\r\n"),  # a byte-order mark and a Windows line end
        text_file("e.txt", b"Open a file!"),
    ])
    assert find_copies({"train": train, "test": test})["test_in_train"] == 2
    assert copies_of_earlier(Dataset(["OPEN A FILE"], ["a"], ["row"]), {"train": train})["train"] == 1  # a CSV row's text


def test_text_files_over_their_cap_leave_the_other_files_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(pipelines.leakage, "MAX_HASHED_BYTES", 100)
    (tmp_path / "a.bin").write_bytes(b"x" * 50)
    (tmp_path / "b.bin").write_bytes(b"x" * 50)
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("the same text " * 10)  # 280 bytes of text: over the cap
    train, test = files([tmp_path / "a.bin", tmp_path / "a.txt"]), files([tmp_path / "b.bin", tmp_path / "b.txt"])
    assert find_copies({"train": train, "test": test})["test_in_train"] == 1  # the .bin copy; the texts unread


def test_copies_of_several_earlier_parts_are_counted_in_one_pass(tmp_path, monkeypatch):
    paths = []
    for name, byte in (("t0", 0), ("t1", 1), ("v0", 2), ("v1", 3), ("lone", 4)):
        paths.append(tmp_path / f"{name}.bin")
        paths[-1].write_bytes(bytes([byte]) * (50 if name != "lone" else 60))
    train, validation = files(paths[:2]), files(paths[2:4])
    scored = [tmp_path / "s0.bin", tmp_path / "s1.bin", tmp_path / "s2.bin", paths[4]]
    shutil.copy(paths[0], scored[0])  # a copy of a training file
    shutil.copy(paths[2], scored[1])  # of a validation file
    scored[2].write_bytes(bytes([9]) * 50)  # the same size, other bytes
    hashed = []
    digest = pipelines.leakage._file_digest
    monkeypatch.setattr(pipelines.leakage, "_file_digest", lambda path: hashed.append(path.name) or digest(path))
    counts = copies_of_earlier(files(scored), {"train": train, "validation": validation})
    assert counts == {"train": 1, "validation": 1, "any": 2}
    # each file once; none whose size no scored file has (lone.bin is scored, but alone in its size)
    assert sorted(hashed) == sorted(["t0.bin", "t1.bin", "v0.bin", "v1.bin", "s0.bin", "s1.bin", "s2.bin"])
    assert copies_of_earlier(files(scored[2:]), {"train": train, "validation": train}) == {"train": 0, "validation": 0, "any": 0}


def test_no_copies_no_report_and_a_huge_read_is_skipped(tmp_path, monkeypatch):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"1" * 10)
    b.write_bytes(b"1" * 10)
    assert find_copies({"train": files([a]), "test": files([tmp_path / "gone.bin"])}) == {}
    (tmp_path / "empty1.txt").touch()
    (tmp_path / "empty2.txt").touch()  # both skipped when read: not a copy that counts
    assert find_copies({"train": files([tmp_path / "empty1.txt"]), "test": files([tmp_path / "empty2.txt"])}) == {}
    monkeypatch.setattr(pipelines.leakage, "MAX_HASHED_BYTES", 15)
    assert find_copies({"train": files([a]), "test": files([b])}) == {}  # 20 bytes to hash: not checked


def test_train_records_copies_and_evaluate_warns(cli_runner, tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=8)
    for label in ("alpha", "beta", "gamma"):
        for i in range(4):
            shutil.copy(root / label / f"{label}_{i:02d}.png", root / label / f"copy_{i}.png")
    run_dir = tmp_path / "run"
    train = invoke(cli_runner, ["train", "--modality", "image", "--data", root, "--out", run_dir, *TINY_IMAGE, "--epochs", "1"])
    assert train.exit_code == 0, describe_result(train)
    recorded = json.loads((run_dir / "config.json").read_text())["copies_across_splits"]
    split = json.loads((run_dir / "split.json").read_text())
    train_bytes = {(root / id_).read_bytes() for id_ in split["train"]}
    test_copies = sum((root / id_).read_bytes() in train_bytes for id_ in split["test"])
    assert recorded.get("test_in_train", 0) == test_copies > 0
    evaluate = invoke(cli_runner, ["evaluate", run_dir])
    assert evaluate.exit_code == 0, describe_result(evaluate)
    assert f"warning: {test_copies} of the {len(split['test'])} scored inputs are exact copies of training inputs" in evaluate.output
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert report["data"]["test_copies_of_training_inputs"] == test_copies

    # A test folder given with --data holding training files under other names.
    other = tmp_path / "other"
    for index, id_ in enumerate(split["train"][:5]):
        label = id_.split("/")[0]
        (other / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(root / id_, other / label / f"renamed{index}.png")
    shutil.copy(root / split["train"][0], other / "alpha" / "x.png")
    (other / "alpha" / "new.png").write_bytes((root / split["test"][0]).read_bytes()[:-1] + b"\0")  # not a copy
    scored = invoke(cli_runner, ["evaluate", run_dir, "--data", other, "--out", tmp_path / "other_report"])
    report = json.loads((tmp_path / "other_report" / "report.json").read_text())
    assert report["data"]["test_copies_of_training_inputs"] == 6, describe_result(scored)
    assert "6 of the " in scored.output


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_the_built_in_demo_data_holds_no_copies(modality):
    """10 standard-library docstrings repeated earlier ones ("Send a handle over a local
    connection." twice in multiprocessing), and with seed 0 one copy landed in the text demo's
    test split: the first `train --modality text` a new user ran warned about its own demo."""
    from pipelines.datasets import load_source
    from pipelines.modality import parse_modality

    full = load_source(None, parse_modality(modality)).everything()
    keys = _keys({"all": full})["all"]
    if modality == "audio":  # file paths are hashed only where sizes collide across splits
        import hashlib

        keys = [hashlib.sha256(path.read_bytes()).hexdigest() for path in full.inputs]
    assert len(set(keys)) == len(keys) == len(full)


def test_training_inputs_copied_under_another_label_are_named(tmp_path, caplog):
    paths = [tmp_path / f"{name}.bin" for name in ("a", "b", "c", "d")]
    for path, byte in zip(paths, (1, 2, 1, 3)):  # a and c: the same bytes; no test file of their size
        path.write_bytes(bytes([byte]) * (64 if byte != 3 else 65))
    train = Dataset(paths[:3], ["cat", "dog", "dog"], ["cat/a", "dog/b", "dog/c"])
    test = Dataset([paths[3]], ["cat"], ["cat/d"])
    texts = Dataset(["Open a file", "open a FILE", "Close it"], ["io", "io", "loops"], ["0", "1", "2"])  # same label: fine
    with caplog.at_level(logging.WARNING):
        found = find_copies({"train": train, "test": test})
        assert find_copies({"train": texts}) == {}
    assert found["train_labelled_differently"] == 1 and found["examples"]["train_labelled_differently"] == [["dog/c", "cat/a"]]
    assert "1 training input(s) are exact copies of other training inputs with another label (dog/c = cat/a)" in caplog.text


def test_inputs_that_cannot_be_read_are_copies_of_nothing(cli_runner, tmp_path):
    """Two files of the same junk bytes in two classes were named as one input taught under two
    labels, and then both were skipped: the model is taught neither."""
    root = write_image_folder(tmp_path / "images", per_class=8)
    for label in ("alpha", "beta"):
        (root / label / "junk.png").write_bytes(b"not an image at all")
    train = invoke(cli_runner, ["train", "--modality", "image", "--data", root, "--out", tmp_path / "run", *TINY_IMAGE,
                                "--epochs", "1", "--test-split", "0", "--val-split", "0.2"])
    assert train.exit_code == 0, describe_result(train)
    assert "exact copies" not in train.output and "not a readable image" in json.dumps(
        json.loads((tmp_path / "run" / "skipped.json").read_text()))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["copies_across_splits"] == {}
    # the same from a CSV manifest, whose skipped entries name the file beside the row
    rows = [f"{path.relative_to(root)},{path.parent.name}" for path in sorted(root.rglob("*.png"))]
    (root / "data.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    train = invoke(cli_runner, ["train", "--modality", "image", "--data", root / "data.csv", "--out", tmp_path / "csv", *TINY_IMAGE,
                                "--epochs", "1", "--test-split", "0", "--val-split", "0.2"])
    assert train.exit_code == 0, describe_result(train)
    assert "exact copies" not in train.output
    assert json.loads((tmp_path / "csv" / "config.json").read_text())["copies_across_splits"] == {}
    # the same check on the splits themselves still finds them, when they are not known unused
    splits = {"train": Dataset([root / "alpha" / "junk.png", root / "beta" / "junk.png"], ["alpha", "beta"], ["alpha/junk.png", "beta/junk.png"])}
    assert find_copies(splits, warn=False)["train_labelled_differently"] == 1
    assert find_copies(splits, warn=False, unused=frozenset({("train", "alpha/junk.png")})) == {}


def test_a_test_input_copying_a_training_and_a_validation_input_is_one_copy_of_the_fitted_inputs():
    def texts(values, prefix):
        return Dataset(values, ["a"] * len(values), [f"{prefix}{i}" for i in range(len(values))])

    splits = {"train": texts(["same text", "other"], "tr"), "validation": texts(["same text", "more"], "va"),
              "test": texts(["same text", "new one"], "te")}
    found = find_copies(splits, warn=False)
    assert found["test_in_train"] == found["test_in_validation"] == 1
    assert found["test_in_train_or_validation"] == 1
    assert copies_of_earlier(splits["test"], {"train": splits["train"], "validation": splits["validation"]})["any"] == 1


def test_a_test_input_copying_only_a_validation_input_is_a_copy_of_the_fitted_inputs():
    splits = {"train": Dataset(["train text"], ["a"], ["tr0"]), "validation": Dataset(["seen in validation"], ["a"], ["va0"]),
              "test": Dataset(["seen in validation", "new text"], ["a", "a"], ["te0", "te1"])}
    found = find_copies(splits, warn=False)
    assert found["test_in_validation"] == 1 and "test_in_train" not in found
    assert found["test_in_train_or_validation"] == 1  # the baseline was fitted on it


def test_empty_files_in_two_splits_are_no_copies(tmp_path):
    # skipped as empty by every modality: neither is taught nor scored
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"")
    assert find_copies({"train": files([tmp_path / "a.png"]), "test": files([tmp_path / "b.png"])}, warn=False) == {}
