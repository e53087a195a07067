"""Make a text data set with a module-disjoint train/test split, for choosing the text defaults.

Docstrings of eight installed third-party packages (deep learning, plotting, graphs, arrays,
syntax highlighting, scientific computing, machine learning, symbolic maths), labelled by
package. Whole modules (source files) go to either train or test, so test texts come from
modules, and often topics, the model never saw: the built-in stdlib set is split at random,
which lets near-duplicate docstrings of one module land on both sides.

Each docstring is cut before its examples (a ``>>>`` line or an "Examples" heading), where
``import numpy as np`` would give the package away; texts under 5 words, texts that occur more
than once (inherited or copied docstrings) and test folders are dropped.

    python benchmarks/make_docstrings.py --out /tmp/docstrings --train-per-package 160 --test-per-package 60

With `--min-chars N`, each text is instead several consecutive docstrings of one module, joined in
source order until the text holds at least N characters (a module's remainder joins its last
text; a module with fewer in all is one shorter text): long documents, for the word-level
default of texts with a median of 1,000 characters or more.

writes out/train/<package>/*.txt, out/test/<package>/*.txt (the layout `--data` reads as a
predefined split) and out/modules.json, which lists each package's train and test modules.
Output is deterministic given the seed and the installed package versions (also recorded).
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import importlib.util
import json
import re
import shutil
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

PACKAGES = {  # import name -> distribution name (for the recorded version)
    "keras": "keras",
    "matplotlib": "matplotlib",
    "networkx": "networkx",
    "numpy": "numpy",
    "pygments": "Pygments",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "sympy": "sympy",
}
SKIPPED_FOLDERS = {"test", "tests", "testing", "_vendor", "vendored", "externals", "_lib", "benchmarks"}
_EXAMPLES = re.compile(r"^\s*(>>>|Examples?\s*$|Example usage|\.\. (code-block|plot)::)", re.MULTILINE)
MIN_WORDS = 5


def description(docstring: str) -> str:
    """The docstring up to its examples, stripped."""
    match = _EXAMPLES.search(docstring)
    return (docstring[: match.start()] if match else docstring).strip()


def package_docstrings(package: str) -> dict[str, list[tuple[str, str]]]:
    """`{module path: [(id, text), ...]}` for every source file of an installed package."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{package} is not installed.")
    root = Path(spec.origin).parent
    modules: dict[str, list[tuple[str, str]]] = {}
    for file in sorted(root.rglob("*.py")):
        relative = file.relative_to(root.parent).as_posix()
        if SKIPPED_FOLDERS & set(file.relative_to(root).parts[:-1]):
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        found = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                text = description(doc) if doc else ""
                if len(text.split()) >= MIN_WORDS:
                    found.append((f"{relative}:{getattr(node, 'lineno', 0)}", text))
        if found:
            modules[relative] = found
    return modules


def split_modules(modules: dict[str, list], test_share: float, seed: int) -> tuple[list[str], list[str]]:
    """Modules in a seeded, stable order (CRC-32 of the path); the first ones go to test until
    they hold `test_share` of the package's docstrings."""
    order = sorted(modules, key=lambda m: (zlib.crc32(f"{seed}:{m}".encode()), m))
    total = sum(len(modules[m]) for m in modules)
    test, held = [], 0
    for module in order:
        if held >= test_share * total:
            break
        test.append(module)
        held += len(modules[module])
    return sorted(set(modules) - set(test)), sorted(test)


def evenly(items: list, count: int) -> list:
    """At most `count` items, evenly spaced in source order (deterministic, spans all modules)."""
    if len(items) <= count:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def joined(docs: list[tuple[str, str]], min_chars: int) -> list[tuple[str, str]]:
    """Consecutive docstrings of one module joined into texts of at least `min_chars` characters
    (the remainder joins the last text); `docs` itself when `min_chars` is 0."""
    if not min_chars:
        return docs
    texts: list[tuple[str, str]] = []
    current: list[tuple[str, str]] = []
    for doc in docs:
        current.append(doc)
        if sum(len(text) for _, text in current) >= min_chars:
            texts.append(current)
            current = []
    if current:
        if texts:
            texts[-1] = texts[-1] + current
        else:
            texts.append(current)
    return [(group[0][0], "\n\n".join(text for _, text in group)) for group in texts]


def make_docstrings(out: Path, train_per_package: int, test_per_package: int, test_share: float, seed: int, min_chars: int = 0) -> dict:
    found = {package: package_docstrings(package) for package in PACKAGES}
    counts = Counter(text for modules in found.values() for docs in modules.values() for _, text in docs)
    if out.exists():
        shutil.rmtree(out)
    summary: dict = {"seed": seed, "test_share": test_share, "min_chars": min_chars, "versions": {}, "packages": {}}
    for package, modules in found.items():
        modules = {m: joined([(i, t) for i, t in docs if counts[t] == 1], min_chars) for m, docs in modules.items()}
        modules = {m: docs for m, docs in modules.items() if docs}
        train_modules, test_modules = split_modules(modules, test_share, seed)
        parts = {
            "train": evenly([d for m in train_modules for d in modules[m]], train_per_package),
            "test": evenly([d for m in test_modules for d in modules[m]], test_per_package),
        }
        for part, docs in parts.items():
            folder = out / part / package
            folder.mkdir(parents=True)
            for index, (_, text) in enumerate(docs):
                (folder / f"{index:04d}.txt").write_text(text + "\n", encoding="utf-8")
        summary["versions"][package] = importlib.metadata.version(PACKAGES[package])
        summary["packages"][package] = {
            "train_texts": len(parts["train"]),
            "test_texts": len(parts["test"]),
            "train_modules": train_modules,
            "test_modules": test_modules,
            "ids": {part: [i for i, _ in docs] for part, docs in parts.items()},
        }
    (out / "modules.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train-per-package", type=int, default=160)
    parser.add_argument("--test-per-package", type=int, default=60)
    parser.add_argument("--test-share", type=float, default=0.25, help="share of docstrings in test modules")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-chars", type=int, default=0, help="join a module's docstrings into texts of at least this many characters")
    args = parser.parse_args()
    summary = make_docstrings(args.out, args.train_per_package, args.test_per_package, args.test_share, args.seed, args.min_chars)
    for package, info in summary["packages"].items():
        print(
            f"{package:11s} train {info['train_texts']:4d} texts / {len(info['train_modules']):4d} modules, "
            f"test {info['test_texts']:4d} / {len(info['test_modules']):3d}"
        )


if __name__ == "__main__":
    main()
