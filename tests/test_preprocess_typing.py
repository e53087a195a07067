"""The preprocessors' type hints, as a type checker in another project sees them."""

from __future__ import annotations

import ast
import typing
from collections.abc import Iterable
from pathlib import Path

import pytest

import preprocess
from preprocess import Preprocessor

ROOT = Path(__file__).resolve().parents[1]


def test_lazily_imported_names_are_imported_for_type_checkers():
    # `__getattr__` makes every lazy name `Any` to mypy and pyright: `from preprocess import
    # TextPreprocessor` type-checked nothing. They are imported under TYPE_CHECKING too.
    tree = ast.parse((ROOT / "preprocess" / "__init__.py").read_text(encoding="utf-8"))
    checked = set()
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            checked |= {alias.asname or alias.name for item in node.body if isinstance(item, ast.ImportFrom) for alias in item.names}
    assert checked == set(preprocess._LAZY)


def test_fit_load_and_from_config_are_typed_as_the_class_they_are_called_on():
    # typed as Preprocessor, `TextPreprocessor(...).fit(texts).to_one_hot(ids)` was an error to mypy
    fit = typing.get_type_hints(Preprocessor.fit)
    assert fit["return"] is fit["self"] and fit["self"].__bound__ is not None
    for name in ("load", "from_config"):
        hints = typing.get_type_hints(Preprocessor.__dict__[name].__func__)
        assert hints["cls"] == type[hints["return"]] and hints["return"] is fit["return"]


def test_batches_are_typed_as_the_iterables_they_may_be():
    # documented as any iterable (a generator, a 4-D image array), hinted as list[Any]
    for method in (Preprocessor.fit, Preprocessor.transform, Preprocessor.fit_transform):
        assert typing.get_type_hints(method)["inputs"] == Iterable[typing.Any]


def test_the_package_says_it_is_typed():
    # without py.typed an installed convpipe is skipped by mypy: every preprocessor is `Any`
    assert (ROOT / "preprocess" / "py.typed").is_file()
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["preprocess"]
