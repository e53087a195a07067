"""Synthesize the built-in spoken-word demo dataset with espeak-ng.

Ten short command words (as in Speech Commands) are spoken by many synthetic speakers:
espeak-ng accents combined with voice variants, random speaking rate and pitch. Each clip is
resampled to 16 kHz mono, trimmed of leading/trailing silence, given a random loudness (so
level is not a class cue) and written as 16-bit FLAC to ``<out>/<word>/<word>_<nnn>.flac``.

Two sets can be made:

* the demo set (`make_demo`), committed at ``pipelines/demo_data/speech/``;
* a harder held-out set (`make_heldout`) for choosing defaults: its speakers (accents *and*
  variants) are disjoint from the demo ones, clips carry white or pink background noise at a
  random SNR and start after a random silence, and its ``train/`` and ``test/`` halves use
  disjoint speakers. It is not committed.

Regenerate the committed demo set (requires the ``espeak-ng`` binary) with::

    python -m pipelines.demo_data.make_speech

and a held-out set with::

    python -m pipelines.demo_data.make_speech --heldout --out /tmp/speech_heldout

Parameters are drawn from ``random.Random(seed)`` and espeak-ng is deterministic, so a given
seed and espeak-ng version reproduce the same clips.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import librosa
import numpy as np
import soundfile

WORDS: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")

SAMPLE_RATE = 16000
DEMO_DIR = Path(__file__).resolve().parent / "speech"
DEMO_CLIPS_PER_WORD = 40

# Speakers are (accent, variant) pairs. Demo and held-out pools share neither accents nor
# variants, so held-out scores measure generalization to unseen speakers. MBROLA voices are
# avoided: their data files are usually not installed.
DEMO_ACCENTS: tuple[str, ...] = ("en", "en-us", "en-gb-scotland", "en-029", "en-gb-x-rp")
DEMO_VARIANTS: tuple[str, ...] = (
    "",  # the accent's default voice
    "m1", "m2", "m3", "m4", "m5", "m6", "m7",
    "f1", "f2", "f3", "f4", "f5",
    "croak", "klatt", "klatt2", "klatt3",
)  # fmt: skip
HELDOUT_ACCENTS: tuple[str, ...] = ("en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
HELDOUT_VARIANTS: tuple[str, ...] = (
    "m8", "klatt4", "klatt5", "Alicia", "Andy", "Annie", "Lee", "Mike", "adam", "anika",
    "aunty", "belinda", "benjamin", "edward", "grandma", "grandpa", "linda", "max", "norbert",
    "quincy", "robert", "shelby", "steph", "victor",
)  # fmt: skip

SPEED_RANGE = (120, 220)  # words per minute
PITCH_RANGE = (20, 80)  # espeak-ng pitch, 0-99
RMS_DBFS_RANGE = (-32.0, -16.0)  # loudness of the written clip
SNR_DB_RANGE = (5.0, 20.0)  # held-out background noise
MAX_OFFSET_S = 0.3  # held-out leading silence (filled with background noise)
TRIM_TOP_DB = 40.0  # anything this far below the clip's peak counts as silence
TRIM_MARGIN_S = 0.01  # kept on both sides of the trimmed word
PEAK_LIMIT = 0.98  # loudness is lowered, never clipped, to stay under this peak
NOISE_KINDS = ("white", "pink")


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Everything needed to synthesize one clip; drawn up front so output is deterministic."""

    word: str
    voice: str
    speed: int
    pitch: int
    rms_dbfs: float
    noise: str | None = None
    snr_db: float | None = None
    offset_s: float = 0.0
    noise_seed: int = 0


def espeak_data_dir() -> Path:
    """Return the espeak-ng data directory reported by `espeak-ng --version`."""
    out = subprocess.run(
        ["espeak-ng", "--version"], check=True, capture_output=True, text=True
    ).stdout
    return Path(out.split("Data at:")[-1].strip())


def check_variants(variants: Sequence[str]) -> None:
    """Raise `ValueError` for a variant espeak-ng lacks (it would silently use the default)."""
    variant_dir = espeak_data_dir() / "voices" / "!v"
    missing = [v for v in variants if v and not (variant_dir / v).is_file()]
    if missing:
        raise ValueError(f"espeak-ng variants not installed in {variant_dir}: {missing}")


def voices(accents: Sequence[str], variants: Sequence[str]) -> list[str]:
    """Return every espeak-ng voice name `accent[+variant]` of the given pools."""
    return [f"{a}+{v}" if v else a for a in accents for v in variants]


def _espeak(word: str, voice: str, speed: int, pitch: int, sample_rate: int) -> np.ndarray:
    """Speak `word` with espeak-ng and return float32 mono audio at `sample_rate`."""
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "tmp.wav"
        cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav_path)]
        subprocess.run([*cmd, word], check=True, capture_output=True)
        audio, native_rate = soundfile.read(wav_path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if native_rate != sample_rate:
        audio = librosa.resample(audio, orig_sr=native_rate, target_sr=sample_rate)
    return audio.astype(np.float32)


def _trim(audio: np.ndarray, sample_rate: int, top_db: float) -> np.ndarray:
    """Cut leading/trailing silence, keeping a short margin around the word."""
    _, (start, end) = librosa.effects.trim(audio, top_db=top_db, frame_length=512, hop_length=128)
    margin = int(TRIM_MARGIN_S * sample_rate)
    return audio[max(0, start - margin) : min(len(audio), end + margin)]


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def _noise(kind: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white or pink (1/f power) noise."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {kind!r}")
    noise = rng.standard_normal(length)
    if kind == "pink":
        spectrum = np.fft.rfft(noise)
        freqs = np.arange(len(spectrum), dtype=np.float64)
        freqs[0] = 1.0  # keep DC finite
        noise = np.fft.irfft(spectrum / np.sqrt(freqs), n=length)
    return (noise / max(_rms(noise), 1e-12)).astype(np.float32)


def synthesize(
    word: str,
    voice: str,
    speed: int,
    pitch: int,
    out_path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    *,
    rms_dbfs: float | None = None,
    rng: random.Random | None = None,
    noise: str | None = None,
    snr_db: float | None = None,
    offset_s: float = 0.0,
    noise_seed: int = 0,
    top_db: float = TRIM_TOP_DB,
) -> np.ndarray:
    """Synthesize one spoken word and write it as 16-bit mono FLAC.

    Args:
        word: text to speak.
        voice: espeak-ng voice, e.g. `"en-us+f3"`.
        speed: speaking rate in words per minute.
        pitch: espeak-ng base pitch, 0-99.
        out_path: destination `.flac` file; parent folders are created.
        sample_rate: output rate in Hz.
        rms_dbfs: loudness of the written clip (RMS, dB re full scale). `None` draws it
            uniformly from `RMS_DBFS_RANGE` with `rng`, so level carries no class information.
        rng: source of the random loudness; a fresh `random.Random()` when `None`.
        noise: `"white"` or `"pink"` background noise, or `None` for a clean clip.
        snr_db: speech-to-noise ratio in dB; required when `noise` is set.
        offset_s: seconds of leading silence (noise, if any) before the word.
        noise_seed: seed of the noise generator.
        top_db: trimming threshold below the clip's peak, in dB.

    Returns:
        The float32 waveform that was written.
    """
    audio = _trim(_espeak(word, voice, speed, pitch, sample_rate), sample_rate, top_db)
    speech_rms = _rms(audio)
    if speech_rms == 0.0:
        raise RuntimeError(f"espeak-ng produced silence for {word!r} with voice {voice!r}")
    audio = np.concatenate([np.zeros(int(round(offset_s * sample_rate)), np.float32), audio])
    if noise is not None:
        if snr_db is None:
            raise ValueError("snr_db is required when noise is set")
        background = _noise(noise, len(audio), np.random.default_rng(noise_seed))
        audio = audio + background * speech_rms * 10.0 ** (-snr_db / 20.0)
    if rms_dbfs is None:
        rms_dbfs = (rng or random.Random()).uniform(*RMS_DBFS_RANGE)
    # Gain so that the *speech* part has the target RMS; lowered if it would clip.
    gain = 10.0 ** (rms_dbfs / 20.0) / speech_rms
    gain = min(gain, PEAK_LIMIT / float(np.max(np.abs(audio))))
    audio = (audio * gain).astype(np.float32)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(out_path, audio, sample_rate, format="FLAC", subtype="PCM_16")
    return audio


def _draw_specs(
    voice_pool: Sequence[str], clips_per_word: int, rng: random.Random, *, noisy: bool
) -> list[ClipSpec]:
    """Draw clip parameters word by word; every word uses the same speaker distribution."""
    specs = []
    for word in WORDS:
        for _ in range(clips_per_word):
            spec = ClipSpec(
                word=word,
                voice=rng.choice(voice_pool),
                speed=rng.randint(*SPEED_RANGE),
                pitch=rng.randint(*PITCH_RANGE),
                rms_dbfs=rng.uniform(*RMS_DBFS_RANGE),
            )
            if noisy:
                spec = dataclasses.replace(
                    spec,
                    noise=rng.choice(NOISE_KINDS),
                    snr_db=rng.uniform(*SNR_DB_RANGE),
                    offset_s=rng.uniform(0.0, MAX_OFFSET_S),
                    noise_seed=rng.getrandbits(32),
                )
            specs.append(spec)
    return specs


def _write_set(out_dir: Path, specs: Sequence[ClipSpec], sample_rate: int) -> list[Path]:
    """Write `specs` as `out_dir/<word>/<word>_<nnn>.flac`, replacing older clips there."""
    for word in WORDS:
        for stale in (out_dir / word).glob("*.flac"):
            stale.unlink()
    paths, counts = [], dict.fromkeys(WORDS, 0)
    for spec in specs:
        path = out_dir / spec.word / f"{spec.word}_{counts[spec.word]:03d}.flac"
        counts[spec.word] += 1
        synthesize(
            spec.word,
            spec.voice,
            spec.speed,
            spec.pitch,
            path,
            sample_rate,
            rms_dbfs=spec.rms_dbfs,
            noise=spec.noise,
            snr_db=spec.snr_db,
            offset_s=spec.offset_s,
            noise_seed=spec.noise_seed,
        )
        paths.append(path)
    return paths


def make_demo(
    out_dir: str | Path = DEMO_DIR,
    clips_per_word: int = DEMO_CLIPS_PER_WORD,
    seed: int = 0,
    sample_rate: int = SAMPLE_RATE,
) -> list[Path]:
    """Write the clean demo set (demo speakers only) and return the clip paths."""
    check_variants(DEMO_VARIANTS)
    specs = _draw_specs(
        voices(DEMO_ACCENTS, DEMO_VARIANTS), clips_per_word, random.Random(seed), noisy=False
    )
    return _write_set(Path(out_dir), specs, sample_rate)


def make_heldout(
    out_dir: str | Path,
    clips_per_word: int,
    seed: int,
    test_fraction: float = 0.3,
    sample_rate: int = SAMPLE_RATE,
) -> dict[str, list[Path]]:
    """Write the harder held-out set to `out_dir/train` and `out_dir/test`.

    Speakers never appear in the demo set; held-out variants are split so that `test/`
    speakers are disjoint from `train/` ones. Each word gets `clips_per_word` clips in total,
    `round(clips_per_word * test_fraction)` of them in `test/` (with `test_fraction=0`
    everything goes to `train/`).

    Returns:
        Clip paths per split, `{"train": [...], "test": [...]}`.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    check_variants(HELDOUT_VARIANTS)
    rng = random.Random(seed)
    variants = list(HELDOUT_VARIANTS)
    rng.shuffle(variants)
    num_test = round(clips_per_word * test_fraction)
    num_test_variants = max(1, round(len(variants) * test_fraction)) if num_test else 0
    split_variants = {"test": variants[:num_test_variants], "train": variants[num_test_variants:]}
    split_clips = {"test": num_test, "train": clips_per_word - num_test}
    paths = {}
    for split in ("train", "test"):
        pool = voices(HELDOUT_ACCENTS, split_variants[split])
        specs = _draw_specs(pool, split_clips[split], rng, noisy=True) if pool else []
        paths[split] = _write_set(Path(out_dir) / split, specs, sample_rate)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help=f"output folder (demo default: {DEMO_DIR})")
    parser.add_argument(
        "--clips-per-word",
        type=int,
        help=f"clips per word (default: {DEMO_CLIPS_PER_WORD} demo, 85 held-out)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--heldout", action="store_true", help="write the held-out train/test set instead"
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.3,
        help="held-out share of clips (and speakers) in test/ (default: 0.3)",
    )
    args = parser.parse_args(argv)
    if args.heldout:
        if args.out is None:
            parser.error("--heldout needs --out (the held-out set is not committed)")
        split_paths = make_heldout(
            args.out, args.clips_per_word or 85, args.seed, test_fraction=args.test_fraction
        )
        for split, paths in split_paths.items():
            print(f"{split}: {len(paths)} clips in {args.out / split}")
    else:
        out = args.out or DEMO_DIR
        paths = make_demo(out, args.clips_per_word or DEMO_CLIPS_PER_WORD, args.seed)
        size = sum(p.stat().st_size for p in paths)
        print(f"{len(paths)} clips, {size / 1e6:.2f} MB in {out}")


if __name__ == "__main__":
    main()
