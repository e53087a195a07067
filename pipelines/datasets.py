"""Finding labelled inputs: class folders, train/test folders, CSV manifests, built-in data."""

from __future__ import annotations

import codecs
import contextlib
import csv
import functools
import hashlib
import io
import json
import logging
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.modality import MODALITIES, Modality
from preprocess import ConvpipeError, decode_text
from preprocess.text import is_blank

logger = logging.getLogger(__name__)


@dataclass
class Dataset:
    """Parallel lists: an input (path, text or array), its class name and a stable id."""

    inputs: list[Any]
    labels: list[str]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.inputs)

    @staticmethod
    def joined(parts: list["Dataset"]) -> "Dataset":
        """The inputs of `parts`, one after the other."""
        return Dataset(
            [x for part in parts for x in part.inputs],
            [label for part in parts for label in part.labels],
            [i for part in parts for i in part.ids],
        )

    def subset(self, indices: Sequence[int]) -> "Dataset":
        return Dataset(
            [self.inputs[i] for i in indices], [self.labels[i] for i in indices], [self.ids[i] for i in indices]
        )

    def select_ids(self, ids: list[str], source: str = "The data") -> "Dataset":
        """The inputs with these ids, in this order; an id that no longer exists is an error
        that names `source`."""
        position = {id_: i for i, id_ in enumerate(self.ids)}
        missing = [id_ for id_ in ids if id_ not in position]
        if missing:
            raise ConvpipeError(
                f"{source} changed since training: {len(missing)} recorded input(s) are gone "
                f"(first: {missing[0]})."
            )
        return self.subset([position[id_] for id_ in ids])

    def class_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))

    def fingerprint(self) -> str:
        """A short digest of every (id, content, label), in order.

        Recorded at training so that evaluate notices data edited since: a manifest's ids are
        row numbers, which point at other inputs once the CSV is sorted or edited. The content is
        the text itself, or a file's name and size (a cheap check for a file replaced under the
        same name; reading every file again would cost as much as evaluating).
        """
        digest = hashlib.sha256()
        for x, label, input_id in zip(self.inputs, self.labels, self.ids):
            digest.update(json.dumps([input_id, _content(x), label]).encode("utf-8"))
            digest.update(b"\n")
        return digest.hexdigest()[:16]


def _content(x: Any) -> Any:
    """What `Dataset.fingerprint` records of one input."""
    if isinstance(x, str):
        return x
    if isinstance(x, os.PathLike):
        # The file's name, not its whole path: the built-in clips move with the installed
        # package, and a class folder's id already holds its path below the data folder.
        try:
            size = os.stat(x).st_size
        except (OSError, ValueError):  # unreadable at training too: skipped then, and its name still counts
            size = None
        return [os.path.basename(os.fsdecode(x)), size]
    array = np.ascontiguousarray(x)  # a built-in data set's decoded input
    return [str(array.dtype), list(array.shape), hashlib.sha256(array.tobytes()).hexdigest()]


@dataclass
class DataSource:
    """What `--data` pointed to: either one dataset to split, or a predefined training set with a
    validation set, a test set or both (the missing one is split from the training set)."""

    location: str  # the --data value, or "builtin:<name>"
    full: Dataset | None = None
    train: Dataset | None = None
    validation: Dataset | None = None
    test: Dataset | None = None
    #: (input, reason) for files that were not used: unsupported type, empty or malformed CSV row.
    ignored: list[tuple[str, str]] = field(default_factory=list)

    @property
    def predefined_split(self) -> bool:
        return self.full is None

    @staticmethod
    def folder_of(part: Dataset) -> str:
        """The folder a predefined split was read from ("val"): its inputs' ids start with it."""
        return part.ids[0].split("/")[0]

    def warn_of_unused_share(self, name: str, flag: str, share: float) -> None:
        """Say that `flag` (a share to split off as the `name` set) is not used: a folder is that set."""
        logger.warning("%s/ is the %s set: %s %g is not used.", self.folder_of(getattr(self, name)), name, flag, share)

    def everything(self) -> Dataset:
        if self.full is not None:
            return self.full
        return Dataset.joined([part for part in (self.train, self.validation, self.test) if part is not None])


#: Names a validation folder goes by beside train/ (the common spellings).
VALIDATION_FOLDERS = ("val", "valid", "validation", "dev")  # dev/: GLUE's and many speech sets' name


@functools.lru_cache(maxsize=64)
def _warn_once(message: str) -> None:
    """Log `message` once per process: train and evaluate list their data more than once."""
    logger.warning("%s", message)


def check_not_empty(data: str) -> None:
    """Refuse `--data ""`: an unset "$DATA" would otherwise read the current folder."""
    if not data.strip():
        raise ConvpipeError("--data is empty: name a data folder or CSV manifest, or leave it out for the demo data.")


def moved_run_data(data: str | None) -> str | None:
    """How to get back a run's recorded `data` path that is gone (the data moved, was renamed
    or deleted), for commands that need the run's own data; None when it is there (or built in)."""
    if data is None or Path(data).expanduser().exists():
        return None
    return (
        f"its data is no longer at {data} (moved, renamed or deleted): put it back there, "
        "or make that path a link to its new place"
    )


def load_source(data: str | None, modality: Modality) -> DataSource:
    """Find the labelled inputs `--data` points to; built-in demo data when it is None."""
    if data is None:
        from pipelines.demo_data import load_builtin

        return load_builtin(modality)
    check_not_empty(data)
    path = Path(data).expanduser()
    if not path.exists():
        raise ConvpipeError(f"Data path not found: {data}")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise ConvpipeError(
                f"--data {data} is a file; expected a folder with one subfolder per class, or a .csv manifest."
            )
        full, ignored = read_manifest(path, modality)
        return DataSource(location=str(data), full=full, ignored=ignored)
    subfolders = _subfolders(path)
    roles = split_folders(path, subfolders)
    others = [folder for folder in subfolders if folder not in roles.values()]
    if roles.get("train") and (len(roles) > 1 or _splits_beside_train(others)):
        # Split folders, not classes: read as classes, a train/ + val/ layout trained a model to
        # tell the two folders apart.
        parts, ignored = {}, []
        for name, folder in roles.items():
            parts[name], found = read_class_folders(folder, modality, id_prefix=f"{folder.name}/")
            ignored += found
        if others:  # e.g. eval/ or holdout/: said, since a whole split left out is easy to miss
            names = ", ".join(f"{printable_name(folder.name)}/" for folder in others)
            splits = " and ".join(f"{roles[role].name}/" for role in SPLIT_NAMES if role in roles)
            _warn_once(f"{path.resolve()}: ignoring {names} beside {splits}: not a split folder name (validation: "
                       f"{', '.join(VALIDATION_FOLDERS)}; test: {', '.join(SPLIT_NAMES['test'])}); rename it to use it.")
            ignored += [(f"{printable_name(folder.name)}/", "not a split folder beside the split folders") for folder in others]
        if len(roles) == 1:  # train/ alone (beside no other split): its classes are split as any folder's
            return DataSource(location=str(data), full=parts["train"], ignored=ignored)
        return DataSource(location=str(data), **parts, ignored=ignored)
    full, ignored = read_class_folders(path, modality)
    return DataSource(location=str(data), full=full, ignored=ignored)


#: Names (any case) of folders that hold another split, not a class, beside a lone train/ folder:
#: left out with a warning. Only the name can tell: holdout/alpha/ and a nested class layout
#: (bus/day/, train/day/) look alike on disk.
OTHER_SPLIT_NAMES = ("holdout", "hold-out", "heldout", "held-out", "eval", "evaluation", "tst", "unlabeled", "unlabelled")


def _splits_beside_train(others: list[Path]) -> bool:
    """Whether a train/ folder with no test/ or val/ beside it holds the classes: nothing else
    is beside it, or only folders named as other splits (holdout/). Beside other classes (bus/,
    car/, train/), train/ is a class."""
    return all(folder.name.lower() in OTHER_SPLIT_NAMES for folder in others)


#: Folder names (any case) that hold a split rather than a class, beside a training folder.
SPLIT_NAMES = {
    "train": ("train", "training"),
    "validation": VALIDATION_FOLDERS,
    "test": ("test", "testing"),
}


def hidden(name: str) -> bool:
    """Entries a listing of classes or splits leaves out: hidden ones, and the __MACOSX folder
    of resource forks a macOS zip unpacks beside the data."""
    return name.startswith(".") or name == "__MACOSX"


def _subfolders(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if not hidden(p.name) and p.is_dir())
    except OSError as error:
        raise ConvpipeError(f"Cannot list {path}: {error.strerror or error}") from None


def split_folders(path: Path, subfolders: list[Path]) -> dict[str, Path]:
    """The `subfolders` of `path` named like splits ("Train/", "testing/", "val/"...), by split;
    beside a training folder, two folders for one split are an error."""
    found: dict[str, list[Path]] = {}
    for folder in subfolders:
        role = next((role for role, names in SPLIT_NAMES.items() if folder.name.lower() in names), None)
        if role is not None:
            found.setdefault(role, []).append(folder)
    if "train" not in found:  # class folders that happen to be called "test" or "Test"
        return {}
    for role, folders in found.items():
        if len(folders) > 1:
            raise ConvpipeError(
                f"{path} has {' and '.join(f'{folder.name}/' for folder in folders)}: keep one "
                f"{role} folder."
            )
    return {role: folders[0] for role, folders in found.items()}


def read_class_folders(root: Path, modality: Modality, id_prefix: str = "") -> tuple[Dataset, list]:
    """One subfolder per class; files of the modality's types anywhere below it are its inputs.

    Hidden files and folders are skipped silently; files of other types are listed as ignored.
    """
    extensions = MODALITIES[modality].extensions
    try:
        entries = sorted(p for p in root.iterdir() if not hidden(p.name))
    except OSError as error:
        raise ConvpipeError(f"Cannot list {root}: {error.strerror or error}") from None
    class_dirs = [p for p in entries if p.is_dir()]
    # Files beside the class folders have no label: listed, so that they are not missed silently.
    ignored = [(id_prefix + printable_name(p.name), "not in a class folder") for p in entries if p not in class_dirs]
    if not class_dirs:
        raise ConvpipeError(
            f"No class subfolders in {root}: expected one folder per class holding "
            f"{modality.value} files ({', '.join(extensions)})."
        )
    inputs, labels, ids = [], [], []
    resolved_root = root.resolve()
    # what each class folder holds, real folders first: a link to one of them, or to where an
    # earlier link leads (a data folder of links into a store), would give its files a second label
    claimed = {p.resolve(): p.name for p in class_dirs if not p.is_symlink()}
    for class_dir in class_dirs:
        target = class_dir.resolve()
        if target == resolved_root or target in resolved_root.parents:
            # e.g. data/mirror -> . would add every class again under a wrong label
            ignored.append((id_prefix + class_dir.name, "links back to the data folder"))
            continue
        if class_dir.is_symlink():
            # either way round: inside a claimed folder, or holding one (then found first by name)
            other = next(
                (name for real, name in claimed.items() if real == target or real in target.parents or target in real.parents),
                None,
            )
            if other is not None:
                ignored.append((id_prefix + class_dir.name, f"links to class folder {other} (its inputs under a second label)"))
                continue
            claimed[target] = class_dir.name
        found, label, links = 0, class_label(class_dir.name), []
        for parts, path in walk_files(class_dir, links):
            relative = "/".join((class_dir.name, *parts))
            relative = relative if relative.isascii() else printable_name(relative)
            suffix = _suffix(parts[-1])
            if suffix.lower() not in extensions:
                ignored.append((id_prefix + relative, f"unsupported file type {suffix or '(none)'}"))
                continue
            inputs.append(path)
            labels.append(label)
            ids.append(id_prefix + relative)
            found += 1
        ignored += [(id_prefix + printable_name("/".join((class_dir.name, *parts))), "a linked folder (not followed)") for parts in links]
        if not found:
            raise ConvpipeError(
                f"Class folder {class_dir} has no {modality.value} files ({', '.join(extensions)})."
            )
    return Dataset(inputs, labels, ids), ignored


def class_label(name: str) -> str:
    """A class name as a person reads it: NFC-normalized, so that "café" written with a
    combining accent (as macOS writes file names) and with "é" are one class, not two that
    print alike; a folder name's bytes that are not UTF-8 as \\xNN (as `printable_name`)."""
    return unicodedata.normalize("NFC", printable_name(name))


def label_key(label: str) -> str:
    """What labels that differ only in case, spaces or leading zeros ("Sports" / "sports",
    "1" / "01") share: they are separate classes, often one class typed two ways."""
    key = " ".join(label.casefold().split())
    return str(int(key)) if key.isdigit() and key.isascii() else key


def label_groups(labels: list[str]) -> dict[str, list[str]]:
    """`labels` grouped by `label_key`: a group of more than one is one class typed two ways."""
    groups: dict[str, list[str]] = {}
    for label in labels:
        groups.setdefault(label_key(label), []).append(label)
    return groups


def retyped(unknown: list[str], known: list[str]) -> list[tuple[str, str]]:
    """(label, class) for each of the `unknown` labels that is one of the `known` classes typed
    another way (case, spaces, leading zeros; see `label_key`), where only one class matches."""
    keys = label_groups(known)
    return [(label, keys[label_key(label)][0]) for label in unknown if len(keys.get(label_key(label), [])) == 1]


def printable_name(name: str) -> str:
    """A file name as valid text: bytes that are not UTF-8 become \\xNN escapes (stable, so the
    same file always gets the same id, and JSON can hold it)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _suffix(name: str) -> str:
    """`Path(name).suffix` without building a Path (this runs for every file of a data set)."""
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


def walk_files(folder: Path, links: list | None = None) -> list[tuple[tuple[str, ...], Path]]:
    """The files below `folder`, in path order: their path parts relative to it, and their paths.
    Hidden entries are skipped and symlinked folders not followed (a link may lead back up, or
    to another class); their path parts are added to `links`.

    This runs for every file on every run, warm ones included, so it costs no `stat`:
    `os.scandir` knows each entry's type, and `Path.iterdir` builds child paths without parsing
    them again (half the cost of `joinpath`).
    """
    found = []
    stack: list[tuple[tuple[str, ...], Path]] = [((), folder)]
    while stack:
        parts, current = stack.pop()
        try:
            with os.scandir(current) as listing:
                entries = list(listing)
            paths = {child.name: child for child in current.iterdir()}
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks, as Path.is_dir
            except OSError:  # e.g. a link to itself: listed as a file, and skipped when read
                is_dir = False
            path = paths.get(name) or current / name  # not in the second listing: created since
            if is_dir and not entry.is_symlink():
                stack.append(((*parts, name), path))
            elif is_dir:
                if links is not None:
                    links.append((*parts, name))
            else:
                found.append(((*parts, name), path))
    found.sort(key=lambda pair: pair[0])  # tuples of parts sort as POSIX paths do
    return found


#: A manifest row's id: "row 12", the CSV line where the row ends.
ROW_PREFIX = "row "
EXCERPT_CHARS = 40


def row_name(row_id: str, value: str, column: str) -> str:
    """A manifest row as a person can find it again: its id with its path or the start of its
    text (a row number alone goes stale as soon as the CSV is sorted or edited)."""
    if not value:
        return row_id
    if column != "text":
        return f"{row_id} ({value})"
    return f'{row_id} ("{excerpt(value)}")'


def excerpt(text: str, chars: int = EXCERPT_CHARS) -> str:
    """The start of `text` on one line: whitespace runs read as one space, "..." where it is cut."""
    flat = " ".join(text.split())
    return flat[:chars] + "..." if len(flat) > chars else flat


def first_three(names: list[str]) -> str:
    """The first three `names` and how many more: a message stays one line for thousands."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def readable_id(value: Any, input_id: str) -> str:
    """How skipped inputs are listed: a manifest row with its path or text excerpt, anything
    else (a class folder's relative path, a built-in id) by its id."""
    if not input_id.startswith(ROW_PREFIX) or "/" in input_id:
        return input_id
    if isinstance(value, os.PathLike):
        return row_name(input_id, os.fsdecode(value), "path")
    return row_name(input_id, value, "text") if isinstance(value, str) else input_id


def read_manifest(path: Path, modality: Modality) -> tuple[Dataset, list]:
    """A CSV with a header: `path,label` (paths relative to the CSV) or `text,label`."""
    column = MODALITIES[modality].csv_column
    # Decode line by line: one Latin-1 row must not garble the UTF-8 rows around it. CSV
    # structure (commas, quotes, newlines) is the same bytes in both encodings.
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # two bytes a character: whole
        data = decode_text(data)[0].encode("utf-8")
    lines = data.splitlines(keepends=True)
    decoded = [decode_text(line) for line in lines]
    text = "".join(line for line, _ in decoded)
    fallback_rows = [number for number, (_, fallback) in enumerate(decoded, start=1) if fallback]
    if fallback_rows:
        logger.warning(
            "%s: line(s) %s are not valid UTF-8; read them as Windows-1252 (Latin-1).",
            path, ", ".join(map(str, fallback_rows[:10])) + (" ..." if len(fallback_rows) > 10 else ""),
        )
    reader = csv.DictReader(io.StringIO(text, newline=""))
    # Spreadsheets write headers like " Text , Label": match names as a person reads them.
    written = [name.strip() for name in (reader.fieldnames or [])]
    found = [name.lower() for name in written]
    reader.fieldnames = found
    duplicated = [name for name in (column, "label") if found.count(name) > 1]
    if duplicated:
        # csv.DictReader would silently keep the last of the columns
        raise ConvpipeError(
            f"{path} has column(s) {', '.join(duplicated)} more than once in its header; keep one of each."
        )
    missing = [name for name in (column, "label") if name not in found]
    if missing:
        separator = next((name for sign, name in ((";", "semicolons"), ("\t", "tabs")) if sign in "".join(written)), None)
        raise ConvpipeError(
            f"{path} is missing column(s) {', '.join(missing)}; found: {', '.join(written) or '(none)'}. "
            f"{'An' if modality.value[0] in 'aeiou' else 'A'} {modality.value} manifest needs a header '{column},label'"
            + (f" (this one looks separated by {separator}; convpipe reads comma-separated files)." if separator else ".")
            + (" Its rows hold the texts themselves, not paths: for .txt files, use one folder per class."
               if column == "text" and "path" in found else "")
        )
    inputs, labels, ids, ignored = [], [], [], []
    try:
        with _csv_fields_up_to(len(text)):  # a long text is one field: the csv module caps them at 128 KiB
            rows = [(reader.line_num, row) for row in reader]
    except csv.Error as error:
        raise ConvpipeError(f"{path} line {reader.line_num}: {error}.") from None
    for line_num, row in rows:
        row_id = f"{ROW_PREFIX}{line_num}"
        value, label = (row.get(column) or "").strip(), class_label((row.get("label") or "").strip())
        extra = [field for field in row.get(None) or [] if field.strip()]
        if extra:
            # Usually an unquoted comma in a text or path: its fields no longer line up with the
            # header, so the label read would be a piece of the text (a made-up class).
            ignored.append(
                (row_name(row_id, value, column), f"{len(found) + len(row[None])} fields, the header has {len(found)} (a comma not in quotes?)")
            )
            continue
        empty = not value or column == "text" and is_blank(value)  # zero-width characters only: all padding
        if empty or not label:
            ignored.append((row_name(row_id, value, column), f"empty {column if empty else 'label'}"))
            continue
        if [field.strip().lower() for field in row.values() if isinstance(field, str)] == found:
            # the header again: two manifests joined with `cat` (it would be a class "label")
            ignored.append((row_id, "the header row again (two CSV files joined?)"))
            continue
        if column == "path" and "\0" in value:  # no file system takes it: os.stat raises ValueError
            ignored.append((row_name(row_id, value, column), "the path holds a NUL byte"))
            continue
        inputs.append(value if column == "text" else (path.parent / value))
        labels.append(label)
        ids.append(row_id)
    merged = _merged_rows(inputs, set(labels), column, text)
    for index in reversed(merged):
        first_line = int(ids[index][len(ROW_PREFIX):]) - inputs[index].count("\n")
        ignored.append((
            row_name(ids[index], str(inputs[index]), column),
            f"one field from line {first_line} on holds what look like other rows (a quote left open?)",
        ))
        for values in (inputs, labels, ids):
            del values[index]
    if not inputs:
        raise ConvpipeError(f"{path} has no rows with both {column} and label.")
    if column == "path":
        warn_of_misplaced_paths(path, inputs)
    return Dataset(inputs, labels, ids), ignored


def warn_of_misplaced_paths(manifest: Path, paths: list[Path]) -> None:
    """Say why the manifest's paths name no file, where a common mistake explains it: paths
    written from the current folder rather than the CSV's, or with Windows backslashes. Such a
    mistake runs through the whole file, so about 200 paths are looked at, not every one."""
    sampled = paths[:: max(1, len(paths) // 200)]
    missing = [p for p in sampled if not os.path.lexists(p)]
    if not missing:
        return
    relative = [p.relative_to(manifest.parent) for p in missing if p.is_relative_to(manifest.parent)]  # not absolute ones
    if not relative:
        return
    from_here = sum(os.path.lexists(p) for p in relative)
    backslashed = sum("\\" in str(p) for p in relative)
    if from_here:
        logger.warning(
            "%s: %d of its %d paths %sname no file beside the CSV, but do from the current folder (first: %s): "
            "paths in a manifest are relative to the CSV's own folder.", manifest, from_here, len(sampled),
            "" if len(sampled) == len(paths) else "looked at ", relative[0],
        )
    elif backslashed:
        logger.warning(
            "%s: %d of its paths name no file and hold backslashes (first: %s): write paths with / as the "
            "separator.", manifest, backslashed, relative[0],
        )


@contextlib.contextmanager
def _csv_fields_up_to(size: int):
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, size + 1))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _quotes_well_formed(text: str) -> bool:
    """Whether every quoted field of the CSV `text` closes right before a comma or a line end.
    A quote left open runs its field on until the next quote, which opens a later field and is
    followed by text, not a comma: the csv module's strict mode refuses exactly that."""
    try:
        with _csv_fields_up_to(len(text)):
            for _ in csv.reader(io.StringIO(text, newline=""), strict=True):
                pass
    except csv.Error:
        return False
    return True


def _merged_rows(values: list, labels: set[str], column: str, csv_text: str) -> list[int]:
    """Positions of fields that swallowed other rows: an unclosed quote runs a field on, over
    line ends, until the next quote, and the rows between become one input under a wrong label.
    A path never holds a line end. A text may; one whose lines end like a row (",sports") did
    not mean to. Where every quote in the file is well formed, a line ending in ", business" is
    more likely the text's own sentence, and it takes two lines that end as rows are written: a
    comma right before something shaped like a label (a few words, not a number or a sentence:
    "1,200 workers." and "Color,Red" are a text's own), one of them a known label. A quote left
    open can still run on to an inch mark before a comma (55",tech), which strict CSV accepts."""
    row_end = re.compile(r',\s*"?([^,"\n]+?)"?\s*$')
    written_row_end = re.compile(r',"?([^\s,"][^,"\n]*?)"?\s*$')  # no space after the comma
    quotes_well_formed = None  # the file is parsed again, strictly, only once a text holds a line end

    def label_like(tail: str) -> bool:
        return any(c.isalpha() for c in tail) and not tail[0].isdigit() and tail[-1] not in ".!?;:)" and len(tail.split()) <= 3

    def swallowed_rows(lines: list[str]) -> bool:
        if not quotes_well_formed:
            return any((match := row_end.search(line)) and match.group(1).strip() in labels for line in lines)
        tails = [match.group(1).strip() for line in lines if (match := written_row_end.search(line))]
        tails = [tail for tail in tails if tail in labels or label_like(tail)]  # labels may be numbers
        return len(tails) >= 2 and any(tail in labels for tail in tails)

    merged = []
    for index, value in enumerate(values):
        text = str(value)
        if "\n" not in text:
            continue
        if column != "text":
            merged.append(index)
            continue
        if quotes_well_formed is None:
            quotes_well_formed = _quotes_well_formed(csv_text)
        if swallowed_rows(text.splitlines()):
            merged.append(index)
    return merged


def split_dataset(
    dataset: Dataset, val_split: float, test_split: float, seed: int
) -> dict[str, Dataset]:
    """Stratified, seeded split into train/validation/test.

    Each class contributes round(n * share) inputs to validation and test, but always keeps at
    least one for training, so a class with a single input still trains (with a warning).
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    by_class: dict[str, list[int]] = {}
    for index, label in enumerate(dataset.labels):
        by_class.setdefault(label, []).append(index)
    untested = []
    for label, indices in sorted(by_class.items()):
        indices = list(rng.permutation(indices))
        n = len(indices)
        n_test = min(int(round(n * test_split)), max(n - 1, 0))
        n_val = min(int(round(n * val_split)), max(n - 1 - n_test, 0))
        if n < 3:
            n_test = n_val = 0
        if test_split > 0 and n_test == 0:
            untested.append(f"{label} ({n})")
        parts["test"] += indices[:n_test]
        parts["validation"] += indices[n_test : n_test + n_val]
        parts["train"] += indices[n_test + n_val :]
    if untested:  # one line, however many classes: evaluate will show them as "-"
        shown = ", ".join(untested[:10]) + (f" and {len(untested) - 10} more" if len(untested) > 10 else "")
        logger.warning(
            "%d class(es) too small to hold any input out for the test split (inputs in brackets): %s.",
            len(untested), shown,
        )
    return {name: dataset.subset(sorted(indices)) for name, indices in parts.items()}
