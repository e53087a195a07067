"""Audio -> (time, frequency, 1) log-mel spectrograms."""

from __future__ import annotations

import functools
import io
import os
import warnings
from typing import Any

import numpy as np
import soundfile

from preprocess.base import GLOBAL_STATE, Preprocessor, check_int, check_number, describe_input, is_int, native_byte_order, read_bytes
from preprocess.errors import FitError, InputError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
#: Far above any recorder (ultrasound ones reach a few MHz); a WAV header can claim 4 GHz.
MAX_SAMPLE_RATE = 100_000_000
NORMALIZATIONS = ("per_band", "none")


class AudioPreprocessor(Preprocessor):
    """Decode, mix to mono, resample, pad/crop and turn audio into a normalized log-mel image.

    Rows are time steps in order, columns are mel bands from low to high frequency, so nearby
    values are related along both axes and a 2-D CNN can read the result like an image.

    Args:
        sample_rate: rate (Hz) every input is resampled to.
        duration: seconds kept per input; shorter inputs are zero-padded at the end, longer
            ones cropped (only the needed frames are read where the format allows).
        n_fft: FFT window length in samples.
        hop_length: samples between successive time steps.
        num_mels: number of mel bands (columns of the output).
        fmin: lowest band edge in Hz.
        fmax: highest band edge in Hz; `None` means `sample_rate / 2`.
        log_floor: power floor before the log (positive, finite), so silence gives a finite
            value, never -inf.
        top_db: decibels kept below each clip's loudest cell; quieter cells are raised to that
            level. Measuring from the clip's own peak makes the output independent of recording
            gain, and the limit stops padding and digital silence from dominating the scale. A
            clip of digital silence has no peak and reads as `-top_db` throughout.
            `None` keeps absolute levels (down to `log_floor`).
        normalization: `"per_band"` standardizes each band with the mean and standard
            deviation fitted on the training inputs; `"none"` keeps decibels.

    Example:
        >>> pre = AudioPreprocessor(sample_rate=16000, duration=1.0)
        >>> tone = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
        >>> pre.fit([(tone, 16000)]).transform_one((tone, 16000)).shape
        (101, 64, 1)

    Input: a path, bytes, or a `(waveform, sample_rate)` tuple. The waveform is a numeric array
    `(samples,)`, or 2-D in either layout: soundfile's `(samples, channels)` or librosa's
    `(channels, samples)` (`librosa.load(path, mono=False)`); the shorter axis is taken as the
    channels, which are averaged.
    Output shape: `(1 + sample_rate * duration // hop_length, num_mels, 1)`, float32.
    """

    extensions = AUDIO_EXTENSIONS
    # librosa imports lazily; its first spectrogram pulls in scipy.signal and numba (about 1 s).
    worker_imports = ("soundfile", "librosa.feature.spectral")

    def __init__(
        self,
        sample_rate: int = 16000,
        duration: float = 1.0,
        n_fft: int = 512,
        hop_length: int = 160,
        num_mels: int = 64,
        fmin: float = 20.0,
        fmax: float | None = None,
        log_floor: float = 1e-10,
        top_db: float | None = 80.0,
        normalization: str = "per_band",
    ):
        self.sample_rate = sample_rate
        self.duration = duration
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.num_mels = num_mels
        self.fmin = fmin
        self.fmax = fmax
        self.log_floor = log_floor
        self.top_db = top_db
        self.normalization = normalization

    def validate_params(self) -> None:
        self._validate_shape_params()
        check_int("n_fft", self.n_fft)
        check_number("fmin", self.fmin, zero_ok=True)
        check_number("fmax", self.fmax, none_ok=True)
        check_number("log_floor", self.log_floor)  # NaN made every output NaN, inf a constant
        check_number("top_db", self.top_db, none_ok=True)  # inf made silence -inf
        nyquist = self.sample_rate / 2
        fmax = nyquist if self.fmax is None else self.fmax
        if not 0 <= self.fmin < fmax <= nyquist:
            raise ValueError(
                f"Need 0 <= fmin < fmax <= sample_rate / 2 = {nyquist:g}. "
                f"Received: fmin={self.fmin!r}, fmax={self.fmax!r}"
            )
        if self.n_fft > self.num_samples:
            raise ValueError(
                f"`n_fft`={self.n_fft} is longer than a whole clip ({self.duration:g} s at {self.sample_rate} Hz "
                f"is {self.num_samples} samples); lengthen `duration` or lower `n_fft`."
            )
        empty = _empty_mel_bands(self.sample_rate, self.n_fft, self.num_mels, self.fmin, fmax)
        if empty:
            most = _most_mel_bands(self.sample_rate, self.n_fft, self.num_mels, self.fmin, fmax)
            fix = f"Use at most {most} bands, or raise `n_fft`." if most else (
                "No number of bands works: raise `n_fft`, or widen `fmin`-`fmax`."
            )
            raise ValueError(
                f"`num_mels`={self.num_mels} is too many for n_fft={self.n_fft} at sample_rate={self.sample_rate} "
                f"between {self.fmin:g} and {fmax:g} Hz: {empty} band(s) would hold no frequency bin and always "
                f"read silence. {fix}"
            )
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"`normalization` must be one of {NORMALIZATIONS}. "
                f"Received: normalization={self.normalization!r}"
            )

    def _validate_shape_params(self) -> None:
        """The checks of the parameters `output_shape` is computed from, without the mel-band
        count `validate_params` also makes (a filter bank per call)."""
        for name in ("sample_rate", "hop_length", "num_mels"):
            check_int(name, getattr(self, name))
        if self.sample_rate > MAX_SAMPLE_RATE:  # a typo for 16000 would hang in resampling
            raise ValueError(f"`sample_rate` must be at most {MAX_SAMPLE_RATE:,} Hz. Received: sample_rate={self.sample_rate}")
        check_number("duration", self.duration)

    def _is_one_input(self, inputs: Any) -> bool:
        # (waveform, sample_rate), not a batch of two inputs
        return isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[1], (int, float, np.number))

    @property
    def num_samples(self) -> int:
        return int(round(self.sample_rate * self.duration))

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """`(time steps, num_mels, 1)`; known before `fit`. Bad parameters raise ValueError."""
        self._validate_shape_params()
        return (1 + self.num_samples // self.hop_length, self.num_mels, 1)

    # ---- read: decode -> waveform -> log-mel (stateless) ---------------------------------

    def read(self, x: Any) -> np.ndarray:
        """Log-mel spectrogram in decibels, shape `(time, num_mels)`, before normalization."""
        import librosa

        waveform = self.load_waveform(x)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
            power = librosa.feature.melspectrogram(
                y=waveform,
                sr=self.sample_rate,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                n_mels=self.num_mels,
                fmin=self.fmin,
                fmax=self.fmax,
                power=2.0,
            )
        if not np.all(np.isfinite(power)):
            # finite samples so large (corrupt float data, or physical units) that their power
            # overflows: every decibel would be NaN, and the fitted band statistics with them
            peak = float(np.max(np.abs(waveform)))
            raise InputError(
                describe_input(x), f"samples too large for a spectrogram (peak {peak:.3g}; audio samples are expected within about -1 to 1)"
            )
        floor = 10.0 * np.log10(self.log_floor)
        decibels = 10.0 * np.log10(np.maximum(power, self.log_floor))
        if self.top_db is not None:
            if decibels.max() <= floor:
                # Digital silence has no peak to measure from: measured from itself it would
                # read as a clip at full level everywhere. It is as quiet as the scale goes.
                decibels = np.full_like(decibels, -float(self.top_db))
            else:
                decibels = np.maximum(decibels - decibels.max(), -float(self.top_db))
        return decibels.T.astype(np.float32)

    def load_waveform(self, x: Any) -> np.ndarray:
        """Mono float32 waveform at `sample_rate`, exactly `duration` seconds long."""
        import librosa

        source = describe_input(x)
        if isinstance(x, tuple) and len(x) == 2:
            samples, rate = _waveform(x[0], source), x[1]
            if not is_int(rate) or rate <= 0:
                raise InputError(source, f"sample rate must be a positive int, got {rate!r}")
            if samples.ndim == 2 and samples.shape[0] < samples.shape[1]:
                samples = samples.T  # librosa's (channels, samples): fewer channels than samples
        elif isinstance(x, (str, os.PathLike, bytes, bytearray)):
            samples, rate = self._decode(x, source)  # (samples, channels)
        else:
            raise InputError(source, "expected a path, bytes or a (waveform, sample_rate) tuple")
        _check_rate(rate, source)  # (the fallback decoder's and a tuple's too)
        if np.size(samples) == 0:  # before the downmix, whose mean of nothing warns and gives NaN
            raise InputError(source, "no audio samples (an empty recording, or one cut off before its first frame)")
        with np.errstate(over="ignore"):  # finite samples past float32's range: refused just below
            finite_before = bool(np.all(np.isfinite(samples)))
            samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim == 2:
            samples = samples.mean(axis=1)
        if samples.ndim != 1:
            raise InputError(source, f"expected a 1-D or 2-D waveform, got shape {samples.shape}")
        if samples.size == 0:
            raise InputError(source, "no audio samples (an empty recording, or one cut off before its first frame)")
        if not np.all(np.isfinite(samples)):
            raise InputError(source, "audio samples too large (beyond float32's range)" if finite_before else "audio contains NaN or infinite samples")
        samples = samples[: int(np.ceil(self.duration * rate))]
        if rate != self.sample_rate:
            samples = librosa.resample(samples, orig_sr=int(rate), target_sr=self.sample_rate)
        return librosa.util.fix_length(samples, size=self.num_samples).astype(np.float32)

    def _decode(self, x: Any, source: str) -> tuple[np.ndarray, int]:
        """Read only the frames `duration` needs: a 5-minute file costs no more than 1 second."""
        if isinstance(x, (bytes, bytearray)):
            data, total = bytes(x), len(x)
            if not data:
                raise InputError(source, "empty file")
            opened: Any = io.BytesIO(data)
        else:
            data, total = _read_head(x)
            opened = x
        missing = wav_frames_missing(data, total)
        if missing is not None:
            promised, present = missing
            raise InputError(
                source, f"truncated WAV (header promises {promised:,} frames, file holds {present:,})"
            )
        try:
            handle = soundfile.SoundFile(opened)
        except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
            if "malformed" in str(error):  # a format libsndfile knows, damaged: no other decoder helps
                raise InputError(source, f"damaged audio data ({_libsndfile_reason(error)})") from None
            return self._decode_fallback(source, error)
        with handle:
            rate, promised = handle.samplerate, handle.frames
            _check_rate(rate, source)  # before reading: a 400 MHz header would ask for 4e8 frames a second
            wanted = int(np.ceil(self.duration * rate))
            try:
                samples = handle.read(frames=wanted, dtype="float32", always_2d=True)
            except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
                # The header was read, the data then failed (a cut-off FLAC loses sync): another
                # decoder would return the part before the cut as if it were the whole clip.
                raise InputError(source, f"damaged audio data ({_libsndfile_reason(error)})") from None
        expected = min(wanted, promised) if promised > 0 else 0
        # A cut-off mp3 reads without an error, just short of what its header promises. The
        # margin allows for an encoder's padding and for frame counts estimated from the bit rate.
        if len(samples) < expected - max(0.02 * expected, 2304):
            raise InputError(
                source, f"truncated audio (header promises {promised:,} frames, file holds {len(samples):,})"
            )
        return samples, rate

    def _decode_fallback(self, source: str, error: Exception) -> tuple[np.ndarray, int]:
        """Formats libsndfile cannot read (e.g. mp3 on old builds) go through librosa/audioread."""
        import librosa

        if isinstance(source, str) and os.path.exists(source):
            try:
                # librosa warns that soundfile failed (we know) and that audioread is deprecated;
                # a file it cannot read either ends as one InputError below, not as warnings.
                with GLOBAL_STATE, warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    samples, rate = librosa.load(source, sr=None, mono=True, duration=self.duration)
                return samples, int(rate)
            except Exception:
                pass
        reason = _libsndfile_reason(error)
        if "File does not exist" in reason and os.path.isfile(source):
            # libsndfile's words for a file it can open but cannot make sense of (a cut-off mp3)
            reason = "its audio data is damaged or in a format the installed decoders cannot read"
        raise InputError(source, f"not a readable audio file ({reason})")

    # ---- fit/encode: per-band standardization ------------------------------------------------

    def fit_read(self, items: list[np.ndarray]) -> "AudioPreprocessor":
        self.validate_params()
        if not items:
            if not self.needs_fit:  # nothing to learn: `fit` reads no input (pipelines still pass theirs)
                return self
            raise FitError("AudioPreprocessor.fit needs at least one training input.")
        # Running sums, one item at a time: `items` may be a lazy sequence over a large cache,
        # and stacking every spectrogram would hold the whole training set in memory.
        count, total, squares = 0, 0.0, 0.0
        for item in items:
            values = np.asarray(item, dtype=np.float64)  # (time steps, bands)
            count += values.shape[0]
            total = total + values.sum(axis=0)
            squares = squares + np.square(values).sum(axis=0)
        mean = total / count
        self.band_mean_ = mean.astype(np.float32)
        # A band that is constant over the training set (e.g. all silence) keeps unit scale.
        std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
        self.band_std_ = np.where(std > MIN_BAND_STD, std, 1.0).astype(np.float32)
        return self

    @property
    def needs_fit(self) -> bool:  # type: ignore[override]
        return self.normalization != "none"  # the band statistics are all fit learns

    def encode(self, item: np.ndarray) -> np.ndarray:
        if self.normalization == "per_band":
            item = (item - self.band_mean_) / self.band_std_
        return item[:, :, None].astype(np.float32)

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if not hasattr(self, "band_mean_"):
            return {}, {}
        return {"fitted": True}, {"band_mean_": self.band_mean_, "band_std_": self.band_std_}

    def _restore_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if not values:
            return  # saved unfitted
        if values != {"fitted": True}:
            raise ValueError(f"unexpected fitted values {values}")
        restored = {}
        for name in ("band_mean_", "band_std_"):
            if arrays[name].shape != (self.num_mels,):
                raise ValueError(f"{name} has shape {arrays[name].shape}, but num_mels={self.num_mels}")
            if not np.issubdtype(arrays[name].dtype, np.floating):
                raise ValueError(f"{name} must hold finite numbers")
            with np.errstate(over="ignore"):  # checked as used: a float64 1e300 becomes inf in float32
                restored[name] = arrays[name].astype(np.float32)
            if not np.all(np.isfinite(restored[name])):
                raise ValueError(f"{name} must hold finite numbers")
        # Decibels: a mean far outside any level, or a std below fit's floor, makes every output inf.
        if not np.all(np.abs(restored["band_mean_"]) <= MAX_BAND_MEAN):
            raise ValueError(f"band_mean_ must lie within +-{MAX_BAND_MEAN:g} dB")
        if not np.all(restored["band_std_"] >= MIN_BAND_STD):
            raise ValueError(f"band_std_ must be at least {MIN_BAND_STD:g}, the floor fit uses")
        self.band_mean_ = restored["band_mean_"]
        self.band_std_ = restored["band_std_"]


_HEAD_BYTES = 1 << 16  # enough for any real WAV header
#: Per-band standard deviations below this (a band that never changes) are fitted as 1.
MIN_BAND_STD = 1e-3
#: Fitted band means lie within this many decibels; a loaded file beyond it is damaged.
MAX_BAND_MEAN = 1e4


#: (offset, full scale) of integer PCM samples: unsigned types are centred on their midpoint.
PCM_SCALES = {
    np.dtype(np.int8): (0, 2**7), np.dtype(np.int16): (0, 2**15), np.dtype(np.int32): (0, 2**31),
    np.dtype(np.uint8): (2**7, 2**7), np.dtype(np.uint16): (2**15, 2**15),
}


def _waveform(samples: Any, source: str) -> np.ndarray:
    """`samples` as an array of numbers. Text failed in float conversion, and objects such as
    None passed as NaN: both with misleading messages."""
    if isinstance(samples, (str, bytes, os.PathLike)):
        raise InputError(source, f"waveform must be an array of numbers, got {type(samples).__name__} "
                                 f"{str(samples)[:60]!r} (pass a file as the path alone)")
    try:
        array = np.asarray(samples)
    except ValueError:  # ragged nested lists
        raise InputError(source, "waveform must be an array of numbers, got rows of different lengths") from None
    if array.dtype.kind not in "iuf":  # signed, unsigned, floating
        raise InputError(source, f"waveform must be an array of numbers, got an array of {array.dtype}")
    array = native_byte_order(array)
    if array.dtype.kind in "iu":
        # Integer PCM on the scale soundfile reads files on (full scale = 1.0), so an int16 array
        # gives the spectrogram its WAV file gives, with or without `top_db`.
        if array.dtype not in PCM_SCALES:
            raise InputError(source, f"integer waveforms must be 8-, 16- or 32-bit PCM, got {array.dtype}; "
                                     "pass float samples in [-1, 1]")
        offset, scale = PCM_SCALES[array.dtype]
        array = (array.astype(np.float64) - offset) / scale
    return array



def _check_rate(rate: int, source: str) -> None:
    if rate > MAX_SAMPLE_RATE:  # resampling from 2**62 Hz never returned
        raise InputError(source, f"sample rate {rate:,} Hz is above the {MAX_SAMPLE_RATE:,} Hz convpipe reads")


def _libsndfile_reason(error: Exception) -> str:
    """libsndfile's own words, without its "Error opening <_io.BytesIO object at 0x...>: "."""
    reason = (getattr(error, "error_string", None) or str(error).split("\n")[0]).strip().rstrip(".")
    return reason.removeprefix("Error : ") or type(error).__name__


_HZ_PER_MEL = 200.0 / 3  # librosa's constants, computed as it does
_MIN_LOG_MEL = 1000.0 / _HZ_PER_MEL
_LOG_STEP = np.log(6.4) / 27.0


def _slaney_mels(hz: np.ndarray) -> np.ndarray:
    """Hz to mels on librosa's default (Slaney) scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, 1000.0) / 1000.0) / _LOG_STEP
    return np.where(hz >= 1000.0, log_part, hz / _HZ_PER_MEL)


def _slaney_hz(mels: np.ndarray) -> np.ndarray:
    """The inverse of `_slaney_mels`."""
    return np.where(mels >= _MIN_LOG_MEL, 1000.0 * np.exp(_LOG_STEP * (mels - _MIN_LOG_MEL)), _HZ_PER_MEL * mels)


@functools.lru_cache(maxsize=64)
def _empty_mel_bands(sample_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float) -> int:
    """How many mel bands hold no FFT bin: they would read silence for every input.

    The weights of `librosa.filters.mel` (its defaults: Slaney scale and norm, float32) in numpy,
    so that checking the settings does not import librosa (and numba) into the main process:
    about 1 s and 140 MiB there, where only the workers decode audio."""
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_f = _slaney_hz(np.linspace(_slaney_mels(fmin), _slaney_mels(fmax), num_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    with np.errstate(divide="ignore", invalid="ignore"):
        rising, falling = -ramps[:-2] / fdiff[:-1, np.newaxis], ramps[2:] / fdiff[1:, np.newaxis]
        weights = np.maximum(0, np.minimum(rising, falling)).astype(np.float32)
        weights *= (2.0 / (mel_f[2 : num_mels + 2] - mel_f[:num_mels]))[:, np.newaxis]
    return int(np.sum(weights.max(axis=1) <= 0))


def _most_mel_bands(sample_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float) -> int:
    """The largest number of bands below `num_mels` with none empty (bands narrow as they grow);
    0 when even one band would be empty."""
    if num_mels <= 1 or _empty_mel_bands(sample_rate, n_fft, 1, fmin, fmax):
        return 0
    low, high = 1, num_mels - 1
    while low < high:
        middle = (low + high + 1) // 2
        if _empty_mel_bands(sample_rate, n_fft, middle, fmin, fmax):
            high = middle - 1
        else:
            low = middle
    return low


def _read_head(path: Any) -> tuple[bytes, int]:
    """The first bytes of a file and its size, with every OS failure as an `InputError`."""
    head = read_bytes(path, limit=_HEAD_BYTES)
    return head, os.stat(path).st_size


def wav_frames_missing(head: bytes, total_size: int) -> tuple[int, int] | None:
    """For a RIFF/WAVE file whose data chunk is cut short: (frames promised, frames present).

    libsndfile and librosa silently return the shorter data, so a file cut off mid-copy would
    otherwise train as a shorter clip. Returns None for other formats, intact files, and the
    streaming convention of a zero or 0xFFFFFFFF data size.
    """
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    block_align, offset = 0, 12
    while offset + 8 <= len(head):
        chunk, size = head[offset : offset + 4], int.from_bytes(head[offset + 4 : offset + 8], "little")
        start = offset + 8
        if chunk == b"fmt " and start + 14 <= len(head):
            block_align = int.from_bytes(head[start + 12 : start + 14], "little")
        elif chunk == b"data":
            if size in (0, 0xFFFFFFFF) or block_align <= 0:
                return None
            present = max(total_size - start, 0)
            if present >= size:
                return None
            return size // block_align, present // block_align
        offset = start + size + (size & 1)  # chunks are padded to an even size
    return None
