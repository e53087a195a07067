"""The preprocessing cache, parallel reading and sharded streaming.

Hits and misses are counted through `PreprocessCache.stats`, never measured with a clock.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import (
    CLASSES, TINY_AUDIO, TINY_IMAGE, assert_one_line_error, describe_result, invoke, write_image_folder, write_png, write_wav,
)
from pipelines.cache import PreprocessCache, fitted_key
from pipelines.datasets import Dataset, load_source
from pipelines.featurize import Skipped, encode_to_shards, read_cached
from pipelines.modality import Modality
from pipelines.parallel_read import read_into_cache
from preprocess import AudioPreprocessor, ConvpipeError, ImagePreprocessor, TextPreprocessor


def audio_inputs(folder):
    return load_source(str(folder), Modality.audio).full


def stored(cache, key):
    return PreprocessCache(cache.root).stored_item(key)


def cached_items(cache, keys):
    return [stored(cache, key) for key in keys]


def touch(path, seconds_later: int = 10) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds_later * 10**9))


def test_second_read_hits_and_a_touched_file_or_changed_parameter_recomputes_exactly_those(audio_folder, tmp_path):
    dataset = audio_inputs(audio_folder)
    preprocessor = AudioPreprocessor(duration=0.25, num_mels=16)
    cache = PreprocessCache(tmp_path / "cache")
    keys, _ = read_into_cache(preprocessor, dataset.inputs, cache, workers=1)
    assert (cache.stats.hits, cache.stats.misses) == (0, 36)
    first = cached_items(cache, keys)

    warm = PreprocessCache(tmp_path / "cache")
    assert read_into_cache(preprocessor, dataset.inputs, warm, workers=1)[0] == keys
    assert (warm.stats.hits, warm.stats.misses) == (36, 0)

    touched = PreprocessCache(tmp_path / "cache")
    touch(dataset.inputs[5])
    new_keys, _ = read_into_cache(preprocessor, dataset.inputs, touched, workers=1)
    assert (touched.stats.hits, touched.stats.misses) == (35, 1)
    assert [i for i, (a, b) in enumerate(zip(keys, new_keys)) if a != b] == [5]
    np.testing.assert_array_equal(stored(touched, new_keys[5]), first[5])  # same bytes, same result

    changed = PreprocessCache(tmp_path / "cache")
    read_into_cache(AudioPreprocessor(duration=0.25, num_mels=8), dataset.inputs, changed, workers=1)
    assert (changed.stats.hits, changed.stats.misses) == (0, 36)


def test_another_convpipe_version_reads_everything_again(audio_folder, tmp_path, monkeypatch):
    from importlib import metadata

    import pipelines
    import pipelines.cache

    # The version written in the code is the one installed (pyproject.toml reads it from there).
    assert metadata.version("convpipe") == pipelines.__version__
    dataset = audio_inputs(audio_folder)
    preprocessor = AudioPreprocessor(duration=0.25, num_mels=16)
    keys, _ = read_into_cache(preprocessor, dataset.inputs, PreprocessCache(tmp_path / "cache"), workers=1)
    monkeypatch.setattr(pipelines.cache, "__version__", pipelines.__version__ + ".post1")
    upgraded = PreprocessCache(tmp_path / "cache")
    new_keys, _ = read_into_cache(preprocessor, dataset.inputs, upgraded, workers=1)
    assert (upgraded.stats.hits, upgraded.stats.misses) == (0, 36)
    assert not set(keys) & set(new_keys)


def test_a_file_replaced_by_one_of_the_same_size_and_mtime_is_read_again(audio_folder, tmp_path):
    # `cp -p`, `rsync -a` or an archive's 2-second times can carry an mtime over; clips of one
    # length have one size.
    dataset = audio_inputs(audio_folder)
    preprocessor = AudioPreprocessor(duration=0.25, num_mels=16)
    keys, _ = read_into_cache(preprocessor, dataset.inputs, PreprocessCache(tmp_path / "c"), workers=1)
    target, other = dataset.inputs[2], dataset.inputs[20]
    assert target.stat().st_size == other.stat().st_size and target.read_bytes() != other.read_bytes()
    old = target.stat()
    replacement = target.with_name("new.tmp")
    replacement.write_bytes(other.read_bytes())
    os.utime(replacement, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(replacement, target)  # a new inode
    in_place, old = dataset.inputs[3], dataset.inputs[3].stat()
    in_place.write_bytes(other.read_bytes())  # the same inode; only its ctime tells
    os.utime(in_place, ns=(old.st_atime_ns, old.st_mtime_ns))
    cache = PreprocessCache(tmp_path / "c")
    new_keys, _ = read_into_cache(preprocessor, dataset.inputs, cache, workers=1)
    assert (cache.stats.hits, cache.stats.misses) == (34, 2)
    for index in (2, 3):
        np.testing.assert_array_equal(stored(cache, new_keys[index]), stored(cache, keys[20]))


def test_cache_verify_tells_a_rewritten_file_from_a_touched_one(audio_folder, tmp_path):
    dataset = audio_inputs(audio_folder)
    preprocessor = AudioPreprocessor(duration=0.25, num_mels=16)
    read_into_cache(preprocessor, dataset.inputs, PreprocessCache(tmp_path / "c", verify=True), workers=1)
    touch(dataset.inputs[0])  # same content, new mtime: still a hit when content is verified
    other = dataset.inputs[1].read_bytes()
    dataset.inputs[2].write_bytes(other)  # new content: a miss
    cache = PreprocessCache(tmp_path / "c", verify=True)
    read_into_cache(preprocessor, dataset.inputs, cache, workers=1)
    assert (cache.stats.hits, cache.stats.misses) == (35, 1)


def test_skipped_inputs_are_cached_with_their_reason_and_give_the_same_summary(audio_folder, tmp_path):
    (audio_folder / "alpha" / "broken.wav").write_bytes(b"RIFF not really audio")
    dataset = audio_inputs(audio_folder)
    preprocessor = AudioPreprocessor(duration=0.25, num_mels=16)
    summaries = []
    for _ in range(2):
        cache, skipped = PreprocessCache(tmp_path / "c"), Skipped()
        items, kept = read_cached(preprocessor, dataset, "train", skipped, False, cache, workers=1)
        summaries.append((skipped.summary(), skipped.entries, len(items), len(kept)))
    assert cache.stats.misses == 0 and cache.stats.hits == 37
    assert summaries[0] == summaries[1]
    assert summaries[1][0].startswith("skipped 1 of 37 inputs: ")
    assert summaries[1][1][0]["input"] == "alpha/broken.wav"


def test_a_split_read_before_is_answered_by_one_batch_row_with_its_skips(audio_folder, tmp_path, monkeypatch):
    import sqlite3

    import pipelines.parallel_read as parallel_read

    monkeypatch.setattr(parallel_read, "BATCH_MIN_INPUTS", 2)
    (audio_folder / "alpha" / "broken.wav").write_bytes(b"RIFF not really audio")
    dataset = audio_inputs(audio_folder)
    preprocessor = AudioPreprocessor(duration=0.25, num_mels=16)
    first, first_skipped = PreprocessCache(tmp_path / "c"), Skipped()
    items, _ = read_cached(preprocessor, dataset, "train", first_skipped, False, first, workers=1)
    expected = list(items)

    warm, skipped = PreprocessCache(tmp_path / "c"), Skipped()
    monkeypatch.setattr(warm, "lookup_many", lambda keys: pytest.fail("looked up entry by entry"))
    items, kept = read_cached(preprocessor, dataset, "train", skipped, False, warm, workers=1)
    assert warm.stats.hits == 37 and skipped.entries == first_skipped.entries and len(kept) == 36
    with sqlite3.connect(tmp_path / "c" / "entries.sqlite") as db:  # an entry lost since: recomputed
        db.execute("DELETE FROM entries WHERE key = ?", (items.keys[0],))
    for got, want in zip(items, expected):
        np.testing.assert_array_equal(got, want)
    assert warm.stats.corrupt == 1

    touch(dataset.inputs[5])  # another list of keys: entry by entry again
    touched = PreprocessCache(tmp_path / "c")
    read_cached(preprocessor, dataset, "train", Skipped(), False, touched, workers=1)
    assert (touched.stats.hits, touched.stats.misses) == (36, 1)


def test_a_corrupt_entry_is_a_miss_and_is_recomputed(audio_folder, tmp_path):
    import sqlite3

    dataset = audio_inputs(audio_folder)
    preprocessor = AudioPreprocessor(duration=0.25, num_mels=16)
    cache = PreprocessCache(tmp_path / "c")
    keys, _ = read_into_cache(preprocessor, dataset.inputs, cache, workers=1)
    expected = cached_items(cache, keys)
    cache.cleanup()
    with sqlite3.connect(tmp_path / "c" / "entries.sqlite") as db:
        # one flipped byte: found when loaded (checksum); one cut-off array: found by the lookup
        db.execute("UPDATE entries SET data = CAST(zeroblob(1) || substr(data, 2) AS BLOB) WHERE key = ?", (keys[3],))
        db.execute("UPDATE entries SET data = substr(data, 1, 100) WHERE key = ?", (keys[4],))

    again = PreprocessCache(tmp_path / "c")
    items, kept = read_cached(preprocessor, dataset, "train", Skipped(), False, again, workers=1)
    assert (again.stats.hits, again.stats.misses, again.stats.corrupt) == (35, 1, 1)
    loaded = list(items)
    assert again.stats.corrupt == 2 and len(kept) == 36
    for got, want in zip(loaded, expected):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(stored(again, keys[3]), expected[3])  # rewritten


def test_an_unreadable_cache_database_is_started_afresh(audio_folder, tmp_path):
    dataset = audio_inputs(audio_folder)
    preprocessor = AudioPreprocessor(duration=0.25, num_mels=16)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "entries.sqlite").write_bytes(b"not a database" * 100)
    cache = PreprocessCache(tmp_path / "c")
    keys, results = read_into_cache(preprocessor, dataset.inputs, cache, workers=1)
    assert (cache.stats.hits, cache.stats.misses) == (0, 36) and all(r.reason is None for r in results)
    warm = PreprocessCache(tmp_path / "c")
    read_into_cache(preprocessor, dataset.inputs, warm, workers=1)
    assert (warm.stats.hits, warm.stats.misses) == (36, 0)


def test_a_cache_database_damaged_inside_is_started_afresh_not_an_error_for_good(audio_folder, tmp_path):
    # damage SQLite meets only in a query ("database disk image is malformed") was a one-line
    # error on every later command that used the cache
    dataset = audio_inputs(audio_folder)
    preprocessor = AudioPreprocessor(num_mels=16)
    keys, _ = read_into_cache(preprocessor, dataset.inputs, PreprocessCache(tmp_path / "c"), workers=1)
    expected = cached_items(PreprocessCache(tmp_path / "c"), keys)
    database = tmp_path / "c" / "entries.sqlite"
    import sqlite3

    sqlite3.connect(database).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()  # the pages into the file
    size = database.stat().st_size
    assert size > 6 * 65536
    with open(database, "r+b") as handle:  # every page but the first, whose header opening reads
        handle.seek(65536)
        handle.write(np.random.default_rng(0).bytes(size - 65536))
    # cache info says so and changes nothing; cache clear empties it
    from pipelines.cache import cache_info

    assert cache_info(tmp_path / "c")["entries"] is None and database.stat().st_size == size
    cache = PreprocessCache(tmp_path / "c")
    again, results = read_into_cache(preprocessor, dataset.inputs, cache, workers=1)
    assert cache.stats.misses == 36 and all(r.reason is None for r in results)
    for key, item in zip(again, expected):
        np.testing.assert_array_equal(stored(cache, key), item)


def test_a_damaged_cache_database_is_replaced_once_when_two_processes_find_it(tmp_path):
    # each process replaced it on its own: the second deleted the first one's new database,
    # and the first one's later writes went to a deleted file
    import sqlite3

    from pipelines.entry_store import EntryStore, encode_row

    first, second = EntryStore(tmp_path), EntryStore(tmp_path)
    first.put_many([encode_row(f"k{i}", np.zeros(3, np.float32), None, []) for i in range(5)])
    second.count()  # both hold a connection to the same file
    sqlite3.connect(tmp_path / "entries.sqlite").execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    with open(tmp_path / "entries.sqlite", "r+b") as handle:
        handle.write(b"\xff" * 60_000)
    assert first.count() == 0  # damaged: started afresh
    first.put_many([encode_row(f"n{i}", np.zeros(3, np.float32), None, []) for i in range(10)])
    assert second.count() == 10  # reconnected to the new one, not another fresh start
    assert EntryStore(tmp_path).count() == 10
    with pytest.raises(sqlite3.ProgrammingError):  # a misuse, not damage: raised, the entries kept
        first.put_many([("too", "few", "values")])
    assert EntryStore(tmp_path).count() == 10


def test_text_entries_keep_their_tokens_and_latin1_notes(tmp_path):
    folder = tmp_path / "texts"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        (folder / label / "plain.txt").write_text(f"plain {label} text", encoding="utf-8")
    (folder / "a" / "latin.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    dataset = load_source(str(folder), Modality.text).full
    preprocessor = TextPreprocessor(level="word", positions=8)
    runs = []
    for _ in range(2):
        cache, skipped = PreprocessCache(tmp_path / "c"), Skipped()
        items, _ = read_cached(preprocessor, dataset, "train", skipped, False, cache, workers=1)
        runs.append(([list(item) for item in items], skipped.notes))
    assert cache.stats.hits == 3
    assert runs[0] == runs[1]
    assert ["café", "crème"] in runs[1][0]
    assert len(runs[1][1]) == 1 and runs[1][1][0]["input"] == "a/latin.txt"


def test_an_image_path_given_as_a_str_and_palette_images_are_keyed_by_what_they_show(tmp_path):
    from PIL import Image

    pre = ImagePreprocessor(image_size=(4, 4), color_mode="rgb")

    def through_cache(inputs):
        dataset = Dataset(inputs, ["a"] * len(inputs), [str(i) for i in range(len(inputs))])
        items, _ = read_cached(pre, dataset, "", Skipped(), False, PreprocessCache(tmp_path / "cache"), 1)
        return encode_to_shards(pre, items).to_numpy()[:, 0, 0] * 255

    path = str(tmp_path / "img.png")  # a str, as library code passes it: a path, not a text
    Image.fromarray(np.full((4, 4, 3), 10, np.uint8)).save(path)
    np.testing.assert_allclose(through_cache([path]), [[10, 10, 10]], atol=1e-4)
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(path)  # rewritten: its old read was returned
    np.testing.assert_allclose(through_cache([path]), [[200, 200, 200]], atol=1e-4)
    red, blue = Image.new("P", (4, 4)), Image.new("P", (4, 4))  # the same indices, other palettes
    red.putpalette([255, 0, 0] * 256)
    blue.putpalette([0, 0, 255] * 256)
    np.testing.assert_allclose(through_cache([red, blue]), [[255, 0, 0], [0, 0, 255]], atol=1e-4)


def test_a_text_that_names_a_file_is_keyed_as_the_text_itself(tmp_path):
    # To a text preprocessor a str is the data: a file of that name must not key (or stale) it.
    pre = TextPreprocessor(level="word", positions=4)
    named = tmp_path / "notes.txt"
    named.write_text("one")
    text = str(named)
    with PreprocessCache(tmp_path / "cache") as cache:
        before, _ = read_into_cache(pre, [text], cache, workers=1)
        named.write_text("something else entirely")
        after, _ = read_into_cache(pre, [text], cache, workers=1)
    assert before == after
    assert TextPreprocessor.str_is_data and not ImagePreprocessor.str_is_data and not AudioPreprocessor.str_is_data


@pytest.mark.parametrize("modality,method", [("audio", "fork"), ("audio", "forkserver"), ("image", None)])
def test_parallel_and_serial_reading_give_identical_arrays(modality, method, audio_folder, image_folder, tmp_path, monkeypatch):
    import pipelines.workers as workers

    if method is not None:
        monkeypatch.setattr(workers, "start_method", lambda: method)
    folder = audio_folder if modality == "audio" else image_folder
    dataset = load_source(str(folder), Modality(modality)).full
    preprocessor = (
        AudioPreprocessor(duration=0.25, num_mels=16) if modality == "audio" else ImagePreprocessor(image_size=(8, 8))
    )
    serial, parallel = PreprocessCache(tmp_path / "serial"), PreprocessCache(tmp_path / "parallel")
    calls = []
    keys, _ = read_into_cache(preprocessor, dataset.inputs, serial, workers=1)
    parallel_keys, _ = read_into_cache(
        preprocessor, dataset.inputs, parallel, workers=2, min_parallel=0, progress=lambda *a: calls.append(a)
    )
    assert keys == parallel_keys
    for key in keys:
        np.testing.assert_array_equal(stored(serial, key), stored(parallel, key))
    assert calls and calls[-1] == (36, 36)  # the progress callback saw every input
    assert parallel.stats.misses == 36 and PreprocessCache(tmp_path / "parallel").entries.count() == 36


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_parallel_and_serial_encoding_give_identical_shards(modality, audio_folder, image_folder, text_folder, tmp_path, monkeypatch):
    import pipelines.parallel_encode as parallel_encode
    from pipelines.featurize import encode_to_shards, fit_cached
    from pipelines.workers import Workers

    monkeypatch.setattr(parallel_encode, "PARALLEL_MIN_INPUTS", 0)
    folder = {"audio": audio_folder, "image": image_folder, "text": text_folder}[modality]
    dataset = load_source(str(folder), Modality(modality)).full
    make = {
        "audio": lambda: AudioPreprocessor(duration=0.25, num_mels=16),
        "image": lambda: ImagePreprocessor(image_size=(8, 8)),
        "text": lambda: TextPreprocessor(level="char", ngram_sizes=(2, 3), hash_buckets=64),
    }[modality]
    parallel_flags = []
    map_chunks = Workers.map_chunks

    def spy(self, chunks, local, remote, parallel=True, progress=None):
        parallel_flags.append(parallel and self.count > 1)
        return map_chunks(self, chunks, local, remote, parallel, progress)

    monkeypatch.setattr(Workers, "map_chunks", spy)
    arrays = []
    for count in (1, 2):
        cache = PreprocessCache(tmp_path / f"cache{count}")
        with Workers(count) as workers:
            items, _ = read_cached(make(), dataset, "train", Skipped(), False, cache, workers)
            preprocessor = fit_cached(items.preprocessor, items)
            arrays.append(encode_to_shards(preprocessor, items, None, workers).to_numpy())
    assert parallel_flags[-1], "the second encode ran in worker processes"
    assert arrays[0].shape[0] == len(dataset) and arrays[0].dtype == arrays[1].dtype
    np.testing.assert_array_equal(arrays[0], arrays[1])


def test_keeping_freed_memory_stops_chunk_sized_arrays_from_page_faulting_each_time():
    """Encoding a chunk as the parent does (64 loaded items, 64 encoded rows, one stacked array),
    40 times: by default glibc gives the freed heap back after each chunk and faults it in again;
    `keep_freed_memory` keeps it."""
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's malloc only")
    script = (
        "import resource, sys, numpy as np\n"
        "from pipelines.allocator import keep_freed_memory\n"
        "if sys.argv[1] == 'keep': assert keep_freed_memory() and not keep_freed_memory()\n"
        "blob = bytes(64 * 64 * 3)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(40):\n"
        "    items = [np.frombuffer(bytes(blob), np.uint8).copy() for _ in range(64)]\n"
        "    rows = np.stack([item.astype(np.float32) / 255 for item in items])\n"
        "    del items, rows\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    faults = {}
    for mode in ("default", "keep"):
        done = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, env=env,
                              cwd=Path(__file__).resolve().parents[1], check=True)
        faults[mode] = int(done.stdout.split()[-1])
    # About 1,500 pages per chunk: faulted in 40 times by default, about once when kept.
    assert faults["default"] > 20_000 and faults["keep"] < 8_000, faults


def _store_five(root, number, barrier, results):
    from pipelines.entry_store import EntryStore, encode_row

    barrier.wait()
    try:
        EntryStore(root).put_many([encode_row(f"{number}-{i}", np.zeros(4, np.uint8), None, []) for i in range(5)])
        results.put("ok")
    except Exception as error:  # reported to the test
        results.put(repr(error))


def test_two_workers_creating_the_cache_database_at_once_both_store(tmp_path):
    """Switching a new database to WAL raced: before the retry, 123 of 300 such pairs failed
    with "database is locked"."""
    import multiprocessing

    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    outcomes = []
    for attempt in range(20):
        root = tmp_path / str(attempt)
        root.mkdir()
        barrier, results = context.Barrier(2), context.Queue()
        processes = [context.Process(target=_store_five, args=(root, n, barrier, results)) for n in range(2)]
        for process in processes:
            process.start()
        outcomes += [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join()
        assert PreprocessCache(root).entries.count() == 10
    assert set(outcomes) == {"ok"}, [o for o in outcomes if o != "ok"][:3]


def _die(*args):
    os._exit(9)  # what the kernel's out-of-memory killer does to a worker


def test_a_worker_that_dies_is_a_one_line_error(tmp_path):
    from pipelines.workers import Workers
    from preprocess import ConvpipeError

    with Workers(2) as workers, pytest.raises(ConvpipeError, match="worker process died.*--workers 1"):
        workers.map_chunks([1, 2, 3], local=lambda chunk: chunk, remote=lambda chunk: (_die, chunk))


# Starts two workers, writes their process ids to a file and SIGKILLs itself, as `kill -9` does
# to a command in the middle of reading its inputs.
KILLED_WITH_WORKERS = """
import os, signal, sys
from pipelines.workers import Workers
pool = Workers(2)
pool.map_chunks([-1, -2, -3, -4], local=abs, remote=lambda chunk: (abs, chunk))
with open(sys.argv[1], "w") as handle:
    handle.write(" ".join(str(pid) for pid in pool._pool._processes))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_workers_end_when_their_command_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    if not Path("/proc/self/stat").exists():
        pytest.skip("reads process states from /proc")
    pids_file = tmp_path / "pids"
    completed = subprocess.run(
        [sys.executable, "-c", KILLED_WITH_WORKERS, str(pids_file)], cwd=Path(__file__).parents[1], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
    )
    assert completed.returncode == -signal.SIGKILL
    pids = [int(pid) for pid in pids_file.read_text().split()]
    assert len(pids) == 2

    def running(pid: int) -> bool:  # an ended child not yet reaped by its new parent is a zombie
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 30  # a bound on a hang, not a timing: they end within seconds
    while any(map(running, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in pids if running(pid)]
    for pid in left:  # the old behaviour: they waited for work forever
        os.kill(pid, signal.SIGKILL)
    assert not left, "worker processes outlived the killed command"


def test_the_fork_server_ignores_ctrl_c_while_it_imports(tmp_path):
    # Ctrl-C reaches the whole process group: the fork server, busy importing librosa, printed a
    # traceback of its own (36-79 lines) above the command's "Interrupted."
    import os
    import subprocess
    import sys

    (tmp_path / "sigint_probe.py").write_text(  # a preloaded module that says what the server does with SIGINT
        "import os, signal\n"
        "open(os.environ['PROBE_OUT'] + '.tmp', 'w').write(str(signal.getsignal(signal.SIGINT) is signal.SIG_IGN))\n"
        "os.replace(os.environ['PROBE_OUT'] + '.tmp', os.environ['PROBE_OUT'])\n"  # else it may be read still empty
    )
    script = """
import signal, time, os
# as in a terminal: a shell's background job starts with Ctrl-C ignored, and would keep it so
signal.signal(signal.SIGINT, signal.default_int_handler)
from pipelines.workers import prestart
class Reader:
    worker_imports = ("sigint_probe",)
prestart(2, Reader)
while not os.path.exists(os.environ["PROBE_OUT"]):
    time.sleep(0.05)
print(open(os.environ["PROBE_OUT"]).read(), signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""
    root = Path(__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}", "PROBE_OUT": str(tmp_path / "probe.txt")}
    result = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["True", "True"], result.stderr[-2000:]  # the server ignores it; the command does not


def test_workers_are_forked_only_from_a_parent_without_a_framework_or_threads(monkeypatch):
    import sys
    import threading

    from pipelines.workers import start_method

    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert start_method() == "fork" if sys.platform.startswith("linux") else start_method() != "fork"
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    assert start_method() in ("forkserver", "spawn")
    monkeypatch.delitem(sys.modules, "tensorflow")
    monkeypatch.setattr(threading, "active_count", lambda: 3)
    assert start_method() in ("forkserver", "spawn")


def test_a_second_train_decodes_nothing_and_evaluate_reuses_the_cache(audio_run, cli_runner, tmp_path, monkeypatch):
    def no_decoding(self, x):
        raise AssertionError(f"decoded {x} although it is cached")

    assert invoke(cli_runner, ["evaluate", audio_run.run_dir, "--out", tmp_path / "cold"]).exit_code == 0
    monkeypatch.setattr(AudioPreprocessor, "read", no_decoding)
    out = tmp_path / "warm"
    result = invoke(
        cli_runner, ["train", "--modality", "audio", "--data", audio_run.data, "--out", out, "--workers", "1", *TINY_AUDIO]
    )
    assert result.exit_code == 0, describe_result(result)
    document = json.loads((out / "config.json").read_text())
    assert document["cache"]["misses"] == 0 and document["cache"]["hits"] == 27  # train + validation
    assert document["cache"]["shard_hits"] == 2  # same fit, same inputs: encoded shards reused
    assert document["cache"]["fit_hits"] == 1  # the band statistics were not recomputed
    assert document["config"]["train"]["workers"] == 1
    cold = json.loads((audio_run.run_dir / "config.json").read_text())
    assert document["val_accuracy"] == cold["val_accuracy"]
    # The skip summary line is the same as on the cold run.
    assert result.output.splitlines()[-3] == [l for l in audio_run.output.splitlines() if l.startswith("training and validation: used all")][0]

    result = invoke(cli_runner, ["evaluate", out])
    assert result.exit_code == 0, describe_result(result)
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["cache"]["hits"] == 9 and report["cache"]["misses"] == 0


def counting(monkeypatch, owner, name: str) -> list:
    """Replace `owner.name` by a wrapper that records each call's first argument."""
    calls, original = [], getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(args[0] if args else None)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def test_a_warm_run_takes_the_image_probe_from_the_cache_until_a_sampled_file_changes(tmp_path, monkeypatch, caplog):
    """The sampled images are opened once; a changed, added or removed one is probed afresh,
    and every answer is the uncached probe's (the 16-bit advice included)."""
    import logging

    from PIL import Image

    from pipelines.defaults import build_preprocessor

    paths = []
    for i, (height, width) in enumerate([(20, 12), (24, 16), (28, 20)]):
        paths.append(write_png(tmp_path / "images" / f"{i}.png", np.full((height, width), 40 * i, np.uint8)))
    paths.append(write_png(tmp_path / "images" / "3.png", np.full((32, 24), 4000, np.uint16)))
    opened = counting(monkeypatch, Image, "open")

    def build(inputs, cache=None, params=None):
        opened.clear()
        caplog.clear()
        train = Dataset(inputs, ["a"] * len(inputs), [str(i) for i in range(len(inputs))])
        with caplog.at_level(logging.WARNING):
            preprocessor, choices = build_preprocessor(Modality.image, params or {}, train, cache=cache)
        return preprocessor.get_config(), choices, caplog.text.count("fit in 12 bits")

    root = tmp_path / "cache"
    uncached = build(paths)
    assert len(opened) == 4 and uncached[2] == 1
    cold = PreprocessCache(root)
    assert build(paths, cold) == uncached and len(opened) == 4 and cold.stats.probe_hits == 0
    warm = PreprocessCache(root)
    assert build(paths, warm) == uncached and opened == [] and warm.stats.probe_hits == 1

    write_png(paths[1], np.zeros((60, 40, 3), np.uint8))  # a sampled file changed: now larger, in colour
    changed = build(paths, PreprocessCache(root))
    assert len(opened) == 4 and changed == build(paths) and changed != uncached
    assert changed[0]["color_mode"] == "rgb"
    added = write_png(tmp_path / "images" / "4.png", np.zeros((8, 8), np.uint8))
    for inputs in ([*paths, added], paths[:3]):  # an added or a removed file
        cache = PreprocessCache(root)
        assert build(inputs, cache) == build(inputs) and cache.stats.probe_hits == 0
    cache = PreprocessCache(root)  # other arguments (the bit depth alone is wanted): another probe
    given = {"image_size": [8, 8], "color_mode": "grayscale"}
    assert build(paths, cache, given) == build(paths, params=given) and cache.stats.probe_hits == 0


def test_a_warm_run_takes_the_clip_lengths_from_the_cache_and_still_warns(tmp_path, monkeypatch, caplog):
    import logging

    import soundfile

    from pipelines.defaults import build_preprocessor

    clips = [tmp_path / "clips" / f"{i}.wav" for i in range(3)]
    for path, seconds in zip(clips, (2, 3, 4)):
        write_wav(path, np.zeros(seconds * 1000, np.float32), sample_rate=1000)
    probed = counting(monkeypatch, soundfile, "info")
    root = tmp_path / "cache"

    def warning(cache):
        probed.clear()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            build_preprocessor(Modality.audio, {}, Dataset(clips, ["a"] * 3, ["x"] * 3), cache=cache)
        return caplog.text

    assert "median training clip is 3.0 s long" in warning(PreprocessCache(root)) and len(probed) == 3
    warm = PreprocessCache(root)
    assert "median training clip is 3.0 s long" in warning(warm) and probed == [] and warm.stats.probe_hits == 1
    touch(clips[0])  # the same length, yet not known to be: probed again
    assert "median training clip is 3.0 s long" in warning(PreprocessCache(root)) and len(probed) == 3
    write_wav(clips[1], np.zeros(5000, np.float32), sample_rate=1000)
    assert "median training clip is 4.0 s long" in warning(PreprocessCache(root)) and len(probed) == 3


def test_no_cache_stores_no_probe(image_folder, tmp_path):
    from pipelines.defaults import build_preprocessor

    train = load_source(str(image_folder), Modality.image).full
    with PreprocessCache.open(tmp_path / "unused", enabled=False) as temporary:
        for _ in range(2):
            build_preprocessor(Modality.image, {}, train, cache=temporary)
        assert temporary.stats.probe_hits == 0 and not list(temporary.root.iterdir())


def test_a_second_train_opens_no_sampled_image_again(image_run, cli_runner, tmp_path, monkeypatch):
    from PIL import Image

    opened = counting(monkeypatch, Image, "open")
    out = tmp_path / "warm"
    result = invoke(
        cli_runner, ["train", "--modality", "image", "--data", image_run.data, "--out", out, "--workers", "1", *TINY_IMAGE]
    )
    assert result.exit_code == 0, describe_result(result)
    assert opened == []  # neither probed nor decoded
    cold, warm = (json.loads((run / "config.json").read_text()) for run in (image_run.run_dir, out))
    assert (cold["cache"]["probe_hits"], warm["cache"]["probe_hits"]) == (0, 1)
    assert warm["data_choices"] == cold["data_choices"] and "color_mode" in warm["data_choices"]
    assert warm["config"]["preprocess"] == cold["config"]["preprocess"]


def test_a_second_preprocess_opens_no_sampled_image_again(image_folder, tmp_path, monkeypatch):
    from PIL import Image

    from pipelines.export import export_arrays

    root = tmp_path / "cache"
    export_arrays(Modality.image, str(image_folder), tmp_path / "cold.npz", cache=PreprocessCache(root), workers=1)
    opened = counting(monkeypatch, Image, "open")
    warm = PreprocessCache(root)
    export_arrays(Modality.image, str(image_folder), tmp_path / "warm.npz", cache=warm, workers=1)
    assert opened == [] and warm.stats.probe_hits == 1


def test_a_probe_is_kept_per_probe_version_and_never_for_in_memory_inputs(tmp_path, monkeypatch):
    import pipelines.cache

    paths = [write_png(tmp_path / "images" / f"{i}.png", np.zeros((8, 8), np.uint8)) for i in range(2)]
    calls = []

    def probe():
        calls.append(None)
        return {"probed": len(calls)}

    root = tmp_path / "cache"
    assert [PreprocessCache(root).probe("images", paths, {}, probe) for _ in range(2)] == [{"probed": 1}] * 2
    # a bumped PROBE_VERSION means the stored result may be wrong now: probed again
    monkeypatch.setattr(pipelines.cache, "PROBE_VERSION", pipelines.cache.PROBE_VERSION + 1)
    assert PreprocessCache(root).probe("images", paths, {}, probe) == {"probed": 2}
    arrays = [np.zeros((8, 8), np.uint8)] * 2  # no file identity to key them by
    for expected in (3, 4):
        cache = PreprocessCache(root)
        assert cache.probe("images", arrays, {}, probe) == {"probed": expected} and cache.stats.probe_hits == 0


def test_no_cache_leaves_nothing_behind_and_cache_info_and_clear(image_folder, cli_runner, tmp_path):
    cache_dir = tmp_path / "cache"
    common = ["--modality", "image", "--data", image_folder, "--cache-dir", cache_dir]
    result = invoke(cli_runner, ["preprocess", *common, "--no-cache", "--out", tmp_path / "a.npz"])
    assert result.exit_code == 0, describe_result(result)
    assert not cache_dir.exists()
    result = invoke(cli_runner, ["preprocess", *common, "--out", tmp_path / "b.npz", "--workers", "1"])
    assert result.exit_code == 0, describe_result(result)
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        np.testing.assert_array_equal(a["x"], b["x"])
        assert a["x"].shape == (36, 8, 12, 1)

    result = invoke(cli_runner, ["cache", "info", "--cache-dir", cache_dir])
    assert result.exit_code == 0, describe_result(result)
    assert "36 preprocessed inputs" in result.output and "shard sets  1" in result.output
    assert "fits        0 fitted preprocessors" in result.output  # images learn nothing in a fit
    result = invoke(cli_runner, ["cache", "clear", "--cache-dir", cache_dir])
    assert result.exit_code == 0 and "Removed 36 entries and 1 shard sets" in result.output
    assert "0 preprocessed inputs" in invoke(cli_runner, ["cache", "info", "--cache-dir", cache_dir]).output


def test_empty_paths_are_refused_and_clear_leaves_a_folder_that_is_no_cache(cli_runner, image_folder, tmp_path, monkeypatch):
    # "$DATA" or "$CACHE" unset: read as the current folder, they trained on it or cached into it
    monkeypatch.chdir(tmp_path)
    train = ["train", "--modality", "image", "--data", image_folder, "--epochs", "1", "--image-size", "8,8"]
    assert_one_line_error(invoke(cli_runner, [*train, "--cache-dir", ""]), "--cache-dir is empty")
    assert_one_line_error(invoke(cli_runner, ["cache", "clear", "--cache-dir", " "]), "--cache-dir is empty")
    assert_one_line_error(invoke(cli_runner, ["train", "--modality", "image", "--data", ""]), "--data is empty")
    (tmp_path / "fits").mkdir()  # e.g. astronomy images: a user's folder of that name
    (tmp_path / "fits" / "m31.fits").write_bytes(b"SIMPLE")
    assert_one_line_error(invoke(cli_runner, ["cache", "clear", "--cache-dir", "."]), "is not a convpipe cache")
    assert (tmp_path / "fits" / "m31.fits").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["fits", "images"]
    old = tmp_path / "old-cache"  # the layout before format 2: entries/ab/<key>.npz, no database
    (old / "entries" / "ab").mkdir(parents=True)
    (old / "entries" / "ab" / "abcdef.npz").write_bytes(b"")
    result = invoke(cli_runner, ["cache", "clear", "--cache-dir", old])
    assert result.exit_code == 0 and not (old / "entries").exists(), describe_result(result)


def test_cache_info_and_clear_on_a_cache_they_cannot_open_are_one_line(cli_runner, tmp_path, monkeypatch):
    # a read-only cache folder: SQLite cannot set up its journal there (was a traceback)
    import sqlite3

    import pipelines.entry_store

    (tmp_path / "c").mkdir()
    sqlite3.connect(tmp_path / "c" / "entries.sqlite").close()

    def read_only(db):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(pipelines.entry_store, "_set_up", read_only)
    for action, words in (("info", "Cannot read the cache in"), ("clear", "Cannot read the cache in")):
        line = assert_one_line_error(invoke(cli_runner, ["cache", action, "--cache-dir", tmp_path / "c"]), words)
        assert "unable to open database file" in line and "check the folder's permissions" in line


def test_cache_info_counts_the_fitted_preprocessors_and_clear_removes_them(audio_folder, cli_runner, tmp_path):
    cache_dir = tmp_path / "cache"
    common = ["--modality", "audio", "--data", audio_folder, "--cache-dir", cache_dir, "--workers", "1"]
    for out in ("a", "b"):  # the second export reuses the fit
        result = invoke(cli_runner, ["preprocess", *common, "--out", tmp_path / f"{out}.npz"])
        assert result.exit_code == 0, describe_result(result)
    assert "fits        1 fitted preprocessors" in invoke(cli_runner, ["cache", "info", "--cache-dir", cache_dir]).output
    invoke(cli_runner, ["cache", "clear", "--cache-dir", cache_dir])
    assert "fits        0 fitted preprocessors" in invoke(cli_runner, ["cache", "info", "--cache-dir", cache_dir]).output


@pytest.mark.parametrize("blocker", ["file", "database_folder"])
def test_an_unusable_cache_folder_is_one_line_error(blocker, image_folder, cli_runner, tmp_path):
    cache_dir = tmp_path / "cache"
    if blocker == "file":
        cache_dir.write_text("not a folder")
    else:  # SQLite cannot open it; it must not be taken for a damaged database and deleted
        (cache_dir / "entries.sqlite").mkdir(parents=True)
    result = invoke(cli_runner, ["preprocess", "--modality", "image", "--data", image_folder,
                                 "--cache-dir", cache_dir, "--workers", "1", "--out", tmp_path / "x.npz"])
    assert_one_line_error(result, "preprocessing cache", "--no-cache")
    assert blocker == "file" or (cache_dir / "entries.sqlite").is_dir()


def test_shards_that_cannot_be_written_are_one_line_error(image_folder, tmp_path):
    from pipelines.featurize import encode_to_shards
    from preprocess import ConvpipeError

    cache = PreprocessCache(tmp_path / "cache")
    items, _ = read_cached(ImagePreprocessor(image_size=(8, 8)), load_source(str(image_folder), Modality.image).full,
                           "train", Skipped(), False, cache, 1)
    (cache.root / "shards").write_text("a file where the shard folders go")
    with pytest.raises(ConvpipeError, match=r"Cannot write preprocessed shards in .*--no-cache"):
        encode_to_shards(items.preprocessor, items, None, 1)


@pytest.mark.parametrize("command", ["preprocess", "train"])
@pytest.mark.parametrize("workers", ["-2", "99999999999"])  # the second overflowed the process pool's C int
def test_bad_worker_count_is_one_line_error(image_folder, cli_runner, tmp_path, command, workers):
    result = invoke(cli_runner, [command, "--modality", "image", "--data", image_folder, "--workers", workers,
                                 "--out", tmp_path / ("x.npz" if command == "preprocess" else "run")])
    assert_one_line_error(result, "--workers", workers, "up to 1024")


def test_the_xdg_cache_folder_is_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert PreprocessCache.open(None).root == tmp_path / "xdg" / "convpipe"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert PreprocessCache.open(None).root == Path.home() / ".cache" / "convpipe"
    temporary = PreprocessCache.open(tmp_path / "ignored", enabled=False)
    assert temporary.temporary and temporary.root.is_dir() and temporary.root != tmp_path / "ignored"
    temporary.cleanup()
    assert not temporary.root.exists()


def test_image_png_written_after_a_run_is_a_new_entry(image_folder, tmp_path):
    dataset = load_source(str(image_folder), Modality.image).full
    preprocessor = ImagePreprocessor(image_size=(8, 8))
    read_into_cache(preprocessor, dataset.inputs, PreprocessCache(tmp_path / "c"), workers=1)
    write_png(image_folder / "alpha" / "new.png", np.full((10, 12), 200, np.uint8))
    dataset = load_source(str(image_folder), Modality.image).full
    cache = PreprocessCache(tmp_path / "c")
    read_into_cache(preprocessor, dataset.inputs, cache, workers=1)
    assert (cache.stats.hits, cache.stats.misses) == (36, 1)


def test_cache_settings_come_from_toml_and_round_trip_through_config_json(tmp_path):
    from pipelines.config import RunConfig, resolve_config

    toml = tmp_path / "run.toml"
    toml.write_text('modality = "audio"\n[train]\nworkers = 3\ncache = false\ncache_verify = true\n', encoding="utf-8")
    config = resolve_config(None, config_file=toml, train={"cache_dir": "/tmp/elsewhere"})
    assert (config.train.workers, config.train.cache, config.train.cache_verify) == (3, False, True)
    assert config.train.cache_dir == "/tmp/elsewhere"
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_what_a_worker_imports_brings_no_framework():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    probe = "import pipelines.parallel_read, preprocess.audio, preprocess.image, preprocess.text, sys; " \
            "print(sorted(m for m in ('tensorflow', 'keras', 'torch', 'jax') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_shards_that_cannot_fit_on_the_disk_are_refused_before_writing(monkeypatch, tmp_path):
    import shutil
    from collections import namedtuple

    from pipelines.featurize import check_free_space

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 10**9, 10**9))
    folder = tmp_path / "cache" / "shards" / "abc"  # not made yet: its first existing parent is asked
    check_free_space(folder, 100, (64, 64, 1), "float32")  # 1.6 MB: fits
    with pytest.raises(ConvpipeError, match=r"need 5.0 GB \(50 x \(5000, 5000, 1\) float32\).*1.0 GB free.*--image-size"):
        check_free_space(folder, 50, (5000, 5000, 1), "float32")
    assert not folder.exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 600_000, 600_000))
    with pytest.raises(ConvpipeError, match=r"need 1.6 MB .* has 0.6 MB free"):  # said "0.0 GB"
        check_free_space(folder, 100, (64, 64, 1), "float32")


def test_a_full_disk_is_met_with_advice_the_command_can_follow(cli_runner, monkeypatch, tmp_path):
    """--no-cache writes its shards under TMPDIR, where --cache-dir does not apply; preprocess
    (like evaluate) takes no --image-size: the refusal names what does move them or shrink them."""
    import re
    import shutil
    from collections import namedtuple

    import typer.main

    import cli

    usage = namedtuple("usage", "total used free")
    real = shutil.disk_usage
    # only the temporary cache's disk is full
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1, 1, 10) if "convpipe-shards-" in str(path) else real(path))
    data = write_image_folder(tmp_path / "images", per_class=2)
    args = ["preprocess", "--modality", "image", "--data", data, "--out", tmp_path / "x.npz", "--workers", "1"]
    line = assert_one_line_error(invoke(cli_runner, [*args, "--no-cache"]), "free; use --cache with --cache-dir on a larger disk")
    assert "set TMPDIR to one" in line and "--image-size" not in line
    command = typer.main.get_command(cli.app).commands["preprocess"]
    flags = {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)}
    assert set(re.findall(r"--[a-z][a-z-]*", line)) <= flags
    result = invoke(cli_runner, [*args, "--cache", "--cache-dir", tmp_path / "big"])  # the advice, followed
    assert result.exit_code == 0, describe_result(result)


@pytest.mark.parametrize("action", ["info", "clear"])
def test_cache_commands_on_a_file_are_one_line_errors(cli_runner, tmp_path, action):
    path = tmp_path / "afile"
    path.write_text("not a cache")
    assert_one_line_error(invoke(cli_runner, ["cache", action, "--cache-dir", path]), f"--cache-dir {path} is a file")
    assert path.read_text() == "not a cache"


def test_no_cache_folders_of_killed_processes_are_removed_by_the_next_run(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys
    import tempfile

    from pipelines.cache import PreprocessCache

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"convpipe-shards-{finished.stdout.strip()}-abc"  # its process is gone (SIGKILL)
    alive = tmp_path / f"convpipe-shards-{os.getpid()}-def"  # another cache of a running process
    for folder in (orphan, alive):
        (folder / "shards").mkdir(parents=True)
    cache = PreprocessCache.open(None, enabled=False)
    try:
        assert not orphan.exists() and alive.exists()
        assert cache.root.name.startswith(f"convpipe-shards-{os.getpid()}-") and cache.root.parent == tmp_path
    finally:
        cache.cleanup()
    assert not cache.root.exists()


def test_cache_clear_refuses_a_cache_a_running_command_uses(cli_runner, tmp_path):
    import subprocess
    import sys

    cache_dir = tmp_path / "cache"
    (cache_dir / "shards" / "abc").mkdir(parents=True)
    (cache_dir / "shards" / "abc" / "00000.npy").write_bytes(b"x" * 10)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pipelines.cache import PreprocessCache; "
         f"cache = PreprocessCache.open({str(cache_dir)!r}); print('open', flush=True); sys.stdin.read()"],
        cwd=Path(__file__).resolve().parents[1], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        line = assert_one_line_error(invoke(cli_runner, ["cache", "clear", "--cache-dir", cache_dir]), "in use")
        assert str(cache_dir) in line
        assert (cache_dir / "shards" / "abc" / "00000.npy").exists()
    finally:
        holder.communicate("", timeout=30)
    result = invoke(cli_runner, ["cache", "clear", "--cache-dir", cache_dir])  # the holder has exited
    assert result.exit_code == 0, describe_result(result)
    assert not (cache_dir / "shards").exists()


def test_a_command_that_fails_after_opening_the_cache_leaves_no_temporary_cache(image_run, tmp_path, monkeypatch):
    """The failure's traceback keeps the command's frame, and so its cache, alive (pytest's
    `raises`, a notebook's last error): the --no-cache folder and the lock went only with it."""
    import tempfile

    from pipelines.config import resolve_config
    from pipelines.evaluation import evaluate
    from pipelines.export import export_arrays
    from pipelines.training import train

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    unreadable = tmp_path / "unreadable"
    for label in CLASSES:
        for i in range(4):
            (unreadable / label).mkdir(parents=True, exist_ok=True)
            (unreadable / label / f"{i}.png").write_text("not a png")
    config = resolve_config("image", data=str(unreadable), train={"cache": False, "epochs": 1})
    calls = [
        lambda: export_arrays(Modality.image, str(unreadable), tmp_path / "a.npz"),
        lambda: evaluate(image_run.run_dir, data=str(unreadable), use_cache=False),
        lambda: train(config, out=tmp_path / "run"),
    ]
    for call in calls:
        with pytest.raises(ConvpipeError) as caught:
            call()
        assert "could be read" in str(caught.value) or "readable" in str(caught.value), caught.value
        assert list(temporary.iterdir()) == [], caught.value


def test_shards_encoded_under_one_fit_are_not_reused_for_another(tmp_path):
    """The same inputs encoded by two preprocessors with the same parameters but different fits
    (another training split, another seed) are two different arrays: the shard cache must not
    hand the first fit's encodings to the second (a silently mis-normalized validation set).
    Audio keeps its fit in arrays (band means and deviations), text in values: both must count."""
    rng = np.random.default_rng(0)
    clips = [(rng.normal(scale=scale, size=4000).astype(np.float32), 16000) for scale in (0.5, 0.05, 0.005)]
    data = Dataset(clips, ["a", "b", "a"], ["c1", "c2", "c3"])
    first = AudioPreprocessor(duration=0.25, top_db=None).fit(clips[:1])
    second = AudioPreprocessor(duration=0.25, top_db=None).fit(clips[1:])
    assert first.get_config() == second.get_config()
    cache = PreprocessCache.open(str(tmp_path / "cache"))
    try:
        items, kept = read_cached(first, data, "validation", Skipped(), False, cache, 1)
        assert kept == [0, 1, 2]
        encoded_first = encode_to_shards(first, items).to_numpy()
        encoded_second = encode_to_shards(second, items).to_numpy()
    finally:
        cache.cleanup()
    np.testing.assert_allclose(encoded_first, first.transform(clips), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(encoded_second, second.transform(clips), rtol=1e-5, atol=1e-5)
    assert not np.allclose(encoded_first, encoded_second)


def test_a_stored_fit_is_reused_only_for_the_same_training_inputs(tmp_path):
    """Another training split of the same size (another seed, other data) must be fitted anew:
    a fit keyed by the number of inputs alone would hand it the first split's vocabulary."""
    from pipelines.featurize import fit_cached

    fruit = Dataset(["apple pear", "apple plum", "pear fig"], ["a", "b", "a"], ["f1", "f2", "f3"])
    tools = Dataset(["saw drill", "saw hammer", "drill file"], ["a", "b", "a"], ["t1", "t2", "t3"])
    make = lambda: TextPreprocessor(level="word", positions=4)  # noqa: E731
    vocabularies = {}
    for name, data in (("fruit", fruit), ("tools", tools), ("fruit again", fruit)):
        cache = PreprocessCache(tmp_path / "cache")
        items, _ = read_cached(make(), data, "train", Skipped(), False, cache, workers=1)
        vocabularies[name] = (set(fit_cached(make(), items).vocabulary_), cache.stats.fit_hits)
    assert vocabularies["fruit"] == ({"apple", "pear", "plum", "fig"}, 0)
    assert vocabularies["tools"] == ({"saw", "drill", "hammer", "file"}, 0)  # fitted on its own inputs
    assert vocabularies["fruit again"] == ({"apple", "pear", "plum", "fig"}, 1)  # the stored fit, reused


def test_the_fitted_key_covers_fitted_arrays():
    tone = np.sin(np.arange(4000) / 5).astype(np.float32)
    loud = AudioPreprocessor(duration=0.25).fit([(tone, 16000)])
    quiet = AudioPreprocessor(duration=0.25).fit([(tone * 0.1 + np.float32(0.01) * np.cos(np.arange(4000)).astype(np.float32), 16000)])
    assert not np.allclose(loud.band_mean_, quiet.band_mean_)
    assert fitted_key(loud) != fitted_key(quiet)
    assert fitted_key(loud) == fitted_key(AudioPreprocessor(duration=0.25).fit([(tone, 16000)]))


def test_a_raised_reading_version_changes_cache_keys_and_the_resume_digest_and_the_first_changes_nothing(monkeypatch):
    from pipelines import __version__
    from pipelines.cache import CACHE_FORMAT, digest, fitted_digest, read_key

    image = ImagePreprocessor(image_size=(4, 4))
    text = TextPreprocessor(level="word", positions=4).fit(["a b", "b c"])
    # reading version 1 keys as before it existed: caches and interrupted runs stay usable
    assert read_key(image) == digest("read", CACHE_FORMAT, "ImagePreprocessor", image.get_config(), __version__)
    keys, digests = (read_key(image), read_key(text)), fitted_digest(text)
    monkeypatch.setattr(ImagePreprocessor, "reading_version", 2)
    assert read_key(image) != keys[0] and read_key(text) == keys[1]  # only the class whose reading changed
    monkeypatch.setattr(TextPreprocessor, "reading_version", 2)
    assert read_key(text) != keys[1] and fitted_digest(text) != digests
