"""Start TensorFlow without its native start-up lines in front of convpipe's own output.

TensorFlow 2.21's C++ logging ignores `TF_CPP_MIN_LOG_LEVEL` until absl is initialized, so every
command printed about seven lines first ("All log messages before absl::InitializeLog()...",
oneDNN, "Could not find cuda drivers", "failed call to cuInit" on machines without a GPU), and
a one-line error became the eighth line (tensorflow issue 100442).

While TensorFlow is imported and lists its devices, file descriptor 2 is a pipe: a thread
forwards each line to the real stderr as it comes, except the known start-up lines. Anything
else (a real error, a crash report) still comes through at once. Nothing is filtered after that.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import threading
from collections.abc import Iterator

#: The start-up lines that carry no information on a working installation.
NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|^[IW]\d{4} [\d:. ]+\d+ \S+\] (oneDNN custom operations are on|Could not find cuda drivers)"
)
#: cuInit fails on every machine without an NVIDIA driver; after "Could not find cuda drivers" it
#: says nothing new. With a driver present, it is kept: then it explains a missing GPU.
NO_DRIVER_FOLLOW_UP = re.compile(r"^E\d{4} [\d:. ]+\d+ \S+\] failed call to cuInit")

@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Lines written to file descriptor 2 inside the block, minus `NOISE`, reach stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        no_driver = False
        with os.fdopen(read_end, "rb") as pipe:
            for raw in pipe:
                line = raw.decode(errors="replace")
                if NOISE.search(line):
                    no_driver = no_driver or "Could not find cuda drivers" in line
                    continue
                if no_driver and NO_DRIVER_FOLLOW_UP.search(line):
                    continue
                os.write(saved, raw)

    thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # drops the pipe's last writer: the thread reads to the end and stops
        thread.join(timeout=10)
        os.close(saved)


@functools.cache  # once per process
def start_tensorflow() -> None:
    """Import TensorFlow and find its devices, quietly. Also under Keras' other backends: the
    input pipelines are tf.data, so TensorFlow starts on every backend."""
    with native_stderr_filtered():
        import tensorflow as tf

        tf.config.list_physical_devices()
