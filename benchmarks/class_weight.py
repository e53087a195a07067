"""Does `--class-weight balanced` help on imbalanced data? scikit-learn's digits, with classes 5-9
cut to 14 training images each (classes 0-4 keep about 140), scored on a balanced test set of 35
per class that no run trains on.

    python benchmarks/class_weight.py [--seeds 0,1,2] [--out benchmarks/class_weight.json]

For each seed and each choice (none, balanced), `train` on train/ and `evaluate` on test/ through
the CLI; the JSON holds test accuracy (the balanced test set makes it balanced accuracy), macro
F1 and the rare classes' mean recall, per run and averaged.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RARE = range(5, 10)


def make_data(root: Path) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits, rng = load_digits(), np.random.default_rng(0)
    for label in range(10):
        order = rng.permutation(np.flatnonzero(digits.target == label))
        test, rest = order[:35], order[35:]
        for split, chosen in (("train", rest[:14] if label in RARE else rest), ("test", test)):
            for index in chosen:
                path = root / split / str(label) / f"{index}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((digits.images[index] * 255 / 16).astype(np.uint8)).save(path)
    return root


def run(data: Path, out: Path, seed: int, choice: str) -> dict:
    cli = [sys.executable, str(ROOT / "cli.py")]
    subprocess.run([*cli, "train", "--modality", "image", "--data", str(data), "--out", str(out),
                    "--seed", str(seed), "--class-weight", choice], check=True, capture_output=True)
    subprocess.run([*cli, "evaluate", str(out)], check=True, capture_output=True)
    report = json.loads((out / "report" / "report.json").read_text())
    rare_recall = float(np.mean([report["per_class"][str(label)]["recall"] for label in RARE]))
    return {"seed": seed, "class_weight": choice, "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            "rare_class_recall": rare_recall}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "class_weight.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = make_data(Path(folder) / "digits")
        runs = [run(data, Path(folder) / f"{choice}-{seed}", int(seed), choice)
                for seed in args.seeds.split(",") for choice in ("none", "balanced")]
    summary = {
        choice: {key: round(float(np.mean([r[key] for r in runs if r["class_weight"] == choice])), 3)
                 for key in ("accuracy", "macro_f1", "rare_class_recall")}
        for choice in ("none", "balanced")
    }
    Path(args.out).write_text(json.dumps({"runs": runs, "mean": summary}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
