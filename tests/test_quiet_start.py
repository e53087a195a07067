"""TensorFlow's native start-up lines are filtered out; everything else on stderr gets through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipelines.quiet_start import NO_DRIVER_FOLLOW_UP, NOISE

ROOT = Path(__file__).resolve().parents[1]

WRITER = r"""
import os, sys
from pipelines.quiet_start import native_stderr_filtered

lines = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795486171.601229    3387 port.cc:153] oneDNN custom operations are on. You may see ...",
    "I0000 00:00:1795486171.602375    3387 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
    "E0000 00:00:1795486174.524872    3387 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
    "a real error from C++",
]
with native_stderr_filtered():
    for line in lines[int(sys.argv[1]):]:
        os.write(2, (line + "\n").encode())
print("after", file=sys.stderr)
"""


def run_writer(start: int) -> list[str]:
    completed = subprocess.run(
        [sys.executable, "-c", WRITER, str(start)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stderr.splitlines()


def test_start_up_lines_are_dropped_and_others_kept():
    assert run_writer(0) == ["a real error from C++", "after"]


def test_cuinit_is_kept_where_a_driver_was_found():
    # Without "Could not find cuda drivers" before it, a failed cuInit explains a missing GPU.
    assert run_writer(3) == [
        "E0000 00:00:1795486174.524872    3387 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
        "a real error from C++",
        "after",
    ]


def test_a_command_error_is_the_only_line_on_stderr(image_run, tmp_path):
    # The CLI's own log level; TensorFlow ignores it for the lines it writes before absl starts.
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    completed = subprocess.run(
        [sys.executable, "cli.py", "predict", str(image_run.run_dir), str(tmp_path / "missing.png")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )
    assert completed.returncode == 1
    lines = completed.stderr.splitlines()
    assert lines[-1] == f"Error: Input not found: {tmp_path / 'missing.png'}"
    # Other TensorFlow builds may print other lines; the known start-up ones must be gone.
    assert not [line for line in lines if NOISE.search(line) or NO_DRIVER_FOLLOW_UP.search(line)], lines
