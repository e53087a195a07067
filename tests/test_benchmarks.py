"""The benchmark runner's command line (the benchmarks themselves never run in this suite)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

RUN_ALL = Path(__file__).resolve().parents[1] / "benchmarks" / "run_all.py"


@pytest.fixture
def run_all(tmp_path, monkeypatch):
    """benchmarks/run_all.py as a module, writing into tmp_path, with a stand-in start-up
    benchmark and machine description (no child processes, no TensorFlow)."""
    spec = importlib.util.spec_from_file_location("run_all_under_test", RUN_ALL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results.json")
    monkeypatch.setattr(module, "QUICK_RESULTS", tmp_path / "results-quick.json", raising=False)
    monkeypatch.setattr(
        module, "bench_startup", lambda sizes: {"median_seconds": 0.1, "meets_target": True}
    )
    monkeypatch.setattr(
        module, "machine", lambda: {"cpu": "test", "cores": 2, "memory_gib": 1, "versions": {}}
    )
    return module


def run(module, monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["run_all.py", *args])
    module.main()


def test_a_quick_run_leaves_the_full_results_alone(run_all, tmp_path, monkeypatch, capsys):
    full = tmp_path / "results.json"
    full.write_text('{"mode": "full"}', encoding="utf-8")
    run(run_all, monkeypatch, "--quick", "--only", "startup", "--settle", "0")
    # results.json holds the full run the README's table comes from; --quick only checks the scripts.
    assert json.loads(full.read_text(encoding="utf-8")) == {"mode": "full"}
    assert json.loads((tmp_path / "results-quick.json").read_text(encoding="utf-8"))["mode"] == "quick"
    capsys.readouterr()
    run(run_all, monkeypatch, "--table", "--quick")
    assert "quick run" in capsys.readouterr().out


def test_a_full_run_and_an_explicit_out_write_where_they_say(run_all, tmp_path, monkeypatch):
    run(run_all, monkeypatch, "--only", "startup", "--settle", "0")
    assert json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["mode"] == "full"
    chosen = tmp_path / "mine.json"
    run(run_all, monkeypatch, "--quick", "--only", "startup", "--settle", "0", "--out", str(chosen))
    assert json.loads(chosen.read_text(encoding="utf-8"))["mode"] == "quick"
    assert not (tmp_path / "results-quick.json").exists()
