"""AudioPreprocessor: decoding, resampling, fixed length, log-mel spectrogram, fitted normalization."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile

from preprocess import AudioPreprocessor, InputError, NotFittedError, Preprocessor
from tests.conftest import tone, write_wav
import struct
from preprocess.audio import wav_frames_missing

SR = 16000
ROOT = Path(__file__).resolve().parents[1]


def small(**params) -> AudioPreprocessor:
    return AudioPreprocessor(**{"sample_rate": SR, "duration": 0.25, "num_mels": 32, **params})


def expected_band(frequency: float, pre: AudioPreprocessor) -> int:
    """The mel band whose centre is nearest `frequency` (band i is centred on edge i + 1)."""
    edges = librosa.mel_frequencies(n_mels=pre.num_mels + 2, fmin=pre.fmin, fmax=pre.fmax or pre.sample_rate / 2)
    return int(np.argmin(np.abs(edges[1:-1] - frequency)))


def noisy_tones(count: int, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    return [
        (tone(300 + 500 * i) + 0.05 * rng.standard_normal(int(0.25 * SR)).astype(np.float32), SR)
        for i in range(count)
    ]


# ---- shape and known outputs -----------------------------------------------------------------


@pytest.mark.parametrize("duration, hop_length, num_mels", [(0.25, 160, 16), (0.5, 256, 40)])
def test_output_shape_dtype_and_finiteness(tmp_path, duration, hop_length, num_mels):
    path = write_wav(tmp_path / "a.wav", tone(440, duration=duration))
    pre = AudioPreprocessor(sample_rate=SR, duration=duration, hop_length=hop_length, num_mels=num_mels)
    out = pre.fit([path]).transform([path, path])
    expected = (1 + int(SR * duration) // hop_length, num_mels, 1)
    assert pre.output_shape == expected
    assert out.shape == (2, *expected)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("frequency", [300.0, 1000.0, 2500.0, 6000.0])
def test_pure_tone_peaks_in_the_band_holding_its_frequency(frequency):
    pre = small()
    decibels = pre.read((tone(frequency), SR))  # unnormalized, (time, bands)
    assert decibels.shape == (26, 32)
    assert int(np.argmax(decibels.mean(axis=0))) == expected_band(frequency, pre)


def test_rows_are_time_in_order():
    # a tone in the first half, silence in the second: energy in early rows only
    samples = np.concatenate([tone(1000, duration=0.125), np.zeros(2000, np.float32)])
    decibels = small().read((samples, SR))
    assert decibels[:8].max() > decibels[-8:].max() + 40


def test_silence_gives_finite_values_at_the_floor():
    silent = (np.zeros(4000, dtype=np.float32), SR)
    absolute = small(top_db=None)
    np.testing.assert_allclose(absolute.read(silent), 10 * np.log10(absolute.log_floor))
    relative = small()  # no peak to measure from: the quietest level, not a flat full-level clip
    np.testing.assert_allclose(relative.read(silent), -relative.top_db)
    assert relative.read((tone(440), SR)).max() == 0.0  # a clip with sound keeps its own peak at 0 dB
    out = relative.fit([silent, (tone(440), SR)]).transform_one(silent)
    assert np.all(np.isfinite(out))


def test_top_db_limits_the_range_below_the_peak_and_ignores_gain():
    pre = small(top_db=60.0)
    clip = tone(1000, duration=0.125)
    loud, quiet = pre.read((clip, SR)), pre.read((clip * 0.01, SR))
    assert loud.max() == 0.0 and loud.min() >= -60.0
    np.testing.assert_allclose(loud, quiet, atol=1e-3)


def test_fmin_and_fmax_bound_the_mel_bands_like_librosa_with_the_same_limits():
    # fmin/fmax must reach the mel filter bank, not only be validated: the log-mel of white noise
    # equals librosa's for the same band limits, in dB below the clip's peak floored at -top_db
    noise = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.3
    for fmin, fmax in [(1000.0, 4000.0), (0.0, 4000.0), (1000.0, None)]:
        pre = small(num_mels=16, fmin=fmin, fmax=fmax)
        power = librosa.feature.melspectrogram(
            y=noise, sr=SR, n_fft=pre.n_fft, hop_length=pre.hop_length, n_mels=16, fmin=fmin, fmax=fmax, power=2.0
        )
        decibels = 10 * np.log10(np.maximum(power, pre.log_floor))
        expected = np.maximum(decibels - decibels.max(), -pre.top_db).T
        np.testing.assert_allclose(pre.read((noise, SR)), expected, atol=1e-3)


def test_defaults_are_the_ones_the_readme_tables_state():
    """README, preprocessing flags and [preprocess] settings: 16 kHz, 1 s, 64 mel bands, n_fft
    512, hop 160, 20 Hz to half the sample rate, log_floor 1e-10, top_db 80, per_band."""
    pre = AudioPreprocessor()
    found = (pre.sample_rate, pre.duration, pre.num_mels, pre.n_fft, pre.hop_length, pre.fmin, pre.fmax)
    assert found == (16000, 1.0, 64, 512, 160, 20.0, None)
    assert (pre.log_floor, pre.top_db, pre.normalization) == (1e-10, 80.0, "per_band")


def test_transform_is_deterministic(tmp_path):
    path = write_wav(tmp_path / "a.wav", tone(700))
    pre = small().fit([path])
    np.testing.assert_array_equal(pre.transform_one(path), pre.transform_one(path))


# ---- decoding ---------------------------------------------------------------------------------


def test_stereo_44k_file_is_mixed_to_mono_and_resampled(tmp_path):
    rate = 44100
    left = tone(2000, duration=0.25, sample_rate=rate)
    path = write_wav(tmp_path / "stereo.wav", np.stack([left, np.zeros_like(left)], axis=1), sample_rate=rate)
    pre = small()
    waveform = pre.load_waveform(path)
    assert waveform.shape == (4000,) and waveform.dtype == np.float32
    # mixing averages the channels: a full-scale-0.5 tone on one side becomes 0.25 in mono
    assert 0.2 < np.abs(waveform[100:-100]).max() < 0.3
    assert int(np.argmax(pre.read(path).mean(axis=0))) == expected_band(2000, pre)


def test_stereo_arrays_in_either_layout_mix_like_the_file(tmp_path):
    # librosa.load(mono=False) gives (channels, samples), soundfile (samples, channels); averaged
    # over the wrong axis, a (2, 4000) clip used to become 2 samples of garbage.
    stereo = np.stack([tone(440), tone(3000, amplitude=0.2)])  # (2, 4000), distinct channels
    path = write_wav(tmp_path / "stereo.wav", stereo.T, subtype="FLOAT")
    by_librosa, rate = librosa.load(path, sr=None, mono=False)
    assert by_librosa.shape == (2, 4000)
    pre = small().fit([path])
    from_file = pre.transform_one(path)
    np.testing.assert_array_equal(pre.transform_one((by_librosa, rate)), from_file)
    np.testing.assert_array_equal(pre.transform_one((by_librosa.T, rate)), from_file)


def test_opposite_channels_cancel_when_mixed(tmp_path):
    left = tone(1000)
    path = write_wav(tmp_path / "cancel.wav", np.stack([left, -left], axis=1), subtype="FLOAT")
    np.testing.assert_allclose(small().load_waveform(path), 0.0, atol=1e-6)


def test_flac_file_and_bytes_decode_like_wav(tmp_path):
    samples = tone(800)
    wav = write_wav(tmp_path / "a.wav", samples, subtype="PCM_16")
    flac = write_wav(tmp_path / "a.flac", samples, subtype="PCM_16")
    pre = small()
    # both are 16-bit; the two encoders may round a sample differently by one step
    np.testing.assert_allclose(pre.load_waveform(flac), samples, atol=1e-4)
    np.testing.assert_allclose(pre.load_waveform(wav), samples, atol=1e-4)
    np.testing.assert_array_equal(pre.load_waveform(flac.read_bytes()), pre.load_waveform(flac))


def test_short_clip_is_zero_padded_at_the_end(tmp_path):
    samples = tone(1000, duration=0.1)  # 1600 samples, duration is 0.25 s = 4000
    waveform = small().load_waveform(write_wav(tmp_path / "short.wav", samples, subtype="FLOAT"))
    assert waveform.shape == (4000,)
    np.testing.assert_allclose(waveform[:1600], samples, atol=1e-6)
    np.testing.assert_array_equal(waveform[1600:], 0.0)


def test_long_clip_is_cropped_to_its_start(tmp_path):
    samples = np.concatenate([tone(1000, duration=0.25), tone(5000, duration=0.75)])
    path = write_wav(tmp_path / "long.wav", samples, subtype="FLOAT")
    pre = small()
    waveform = pre.load_waveform(path)
    np.testing.assert_allclose(waveform, samples[:4000], atol=1e-6)
    assert pre.read(path).shape == (26, 32)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples_raise_input_error(tmp_path, bad):
    samples = tone(1000)
    samples[100] = bad
    path = write_wav(tmp_path / "nan.wav", samples, subtype="FLOAT")
    with pytest.raises(InputError, match=r"nan\.wav: audio contains NaN or infinite samples"):
        small().read(path)
    with pytest.raises(InputError, match="NaN or infinite"):
        small().read((samples, SR))


@pytest.mark.parametrize("top_db", [80.0, None])
def test_finite_samples_too_large_for_a_spectrogram_raise_input_error(tmp_path, top_db, recwarn):
    samples = tone(1000)
    samples[50] = 3e38  # finite, but its power overflows: every decibel was NaN
    path = write_wav(tmp_path / "huge.wav", samples, subtype="FLOAT")
    with pytest.raises(InputError, match=r"huge\.wav: samples too large for a spectrogram \(peak 3e\+38"):
        small(top_db=top_db).read(path)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]  # no stray numpy lines
    from pipelines.baseline import mfcc_statistics

    with pytest.raises(InputError, match="too large"):
        mfcc_statistics(samples, SR)
    with pytest.raises(InputError, match="too large"):  # long enough for librosa's delta, which refuses infinities
        mfcc_statistics(np.sin(np.arange(SR, dtype=np.float32)) * np.float32(1e18), SR)
    assert np.all(np.isfinite(small(top_db=top_db).read((samples / 3e38, SR))))  # the same clip, scaled


def test_not_an_audio_file_raises_input_error_naming_it(tmp_path):
    path = tmp_path / "fake.wav"
    path.write_text("definitely not RIFF data\n" * 20)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with pytest.raises(InputError) as caught:
            small().read(path)
    assert not shown, [str(w.message) for w in shown]  # librosa's fallback warnings stay inside
    assert str(caught.value).startswith(f"{path}: not a readable audio file")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "fmt, message",
    [
        # libsndfile's own words: soundfile 0.12's bundled library says "Internal psf_fseek() failed"
        ("FLAC", r"damaged audio data \((flac decoder lost sync|Internal psf_fseek\(\) failed)\)"),
        ("OGG", r"damaged audio data \(Supported file format but file is malformed\)"),
        ("MP3", r"truncated audio \(header promises 48,000 frames, file holds [\d,]+\)"),
    ],
)
def test_cut_off_compressed_audio_is_refused_not_read_as_a_shorter_clip(tmp_path, fmt, message):
    if fmt not in soundfile.available_formats():
        pytest.skip(f"this libsndfile has no {fmt}")
    whole = tmp_path / f"whole.{fmt.lower()}"
    soundfile.write(whole, tone(440, duration=3.0) * 0.5, SR, format=fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    pre = small(duration=3.0)
    assert pre.read(whole).shape == pre.output_shape[:2]  # the whole file reads
    with pytest.raises(InputError, match=message):
        pre.read(cut)


@pytest.mark.skipif("MP3" not in soundfile.available_formats(), reason="this libsndfile has no MP3")
def test_a_cut_off_mp3_is_called_damaged_not_missing(tmp_path):
    whole = tmp_path / "whole.mp3"
    soundfile.write(whole, tone(440, duration=1.0), SR, format="MP3")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole.read_bytes()[:100])
    with pytest.raises(InputError, match=r"cut\.mp3: not a readable audio file \(its audio data is damaged") as caught:
        small().read(cut)
    assert "does not exist" not in str(caught.value)


@pytest.mark.parametrize(
    "value, reason",
    [
        ((np.zeros(10, np.float32), 0), "sample rate must be a positive int, got 0"),
        ((np.zeros(10, np.float32), True), "sample rate must be a positive int, got True"),  # not 1 Hz
        # librosa.resample never returned from 2**62 Hz
        ((np.zeros(10, np.float32), 2**62), f"sample rate {2**62:,} Hz is above the 100,000,000 Hz convpipe reads"),
        (42, "expected a path, bytes or a (waveform, sample_rate) tuple"),
        # was "could not convert string to float"
        (("c0.wav", SR), "waveform must be an array of numbers, got str 'c0.wav' (pass a file as the path alone)"),
        # None became NaN: "contains NaN or infinite samples" misled
        ((np.array([0.1, None] * 50), SR), "waveform must be an array of numbers, got an array of object"),
    ],
)
def test_bad_in_memory_inputs_raise_input_error(value, reason):
    with pytest.raises(InputError) as caught:
        small().read(value)
    assert caught.value.reason == reason


def test_a_file_claiming_an_absurd_sample_rate_is_refused(tmp_path):
    path = tmp_path / "fast.wav"
    soundfile.write(path, np.zeros(100, np.float32), 400_000_000)  # a WAV header holds up to 4 GHz
    with pytest.raises(InputError, match=r"fast\.wav: sample rate 400,000,000 Hz is above"):
        small().read(path)


def test_bytes_are_described_by_their_size_not_an_object_address():
    with pytest.raises(InputError) as caught:
        small().read(b"x" * 4096)
    assert str(caught.value) == "<4,096 bytes>: not a readable audio file (Format not recognised)"


# ---- fitting ---------------------------------------------------------------------------------


def test_transform_before_fit_raises_not_fitted(tmp_path):
    path = write_wav(tmp_path / "a.wav", tone(440))
    with pytest.raises(NotFittedError, match="not fitted"):
        small().transform_one(path)
    with pytest.raises(NotFittedError):
        small().transform([path])


def test_per_band_normalization_standardizes_the_training_set():
    train = noisy_tones(6)
    pre = small().fit(train)
    assert pre.band_mean_.shape == (32,) and pre.band_std_.shape == (32,)
    frames = pre.transform(train)[..., 0].reshape(-1, 32)  # every time step of every clip
    np.testing.assert_allclose(frames.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(frames.std(axis=0), 1.0, atol=1e-3)


def test_a_band_constant_over_the_training_set_keeps_unit_scale():
    # Low, smoothly faded tones leave the high bands at the -top_db floor in every frame: such a
    # band must be divided by 1, not by the 1e-3 floor, which would blow a test clip's energy
    # there up a thousandfold.
    fade = np.hanning(int(0.25 * SR)).astype(np.float32)
    train = [(tone(frequency) * fade, SR) for frequency in (300, 400, 500)]
    pre = small().fit(train)
    constant = np.all([np.all(pre.read(x) == -pre.top_db, axis=0) for x in train], axis=0)
    assert constant[-8:].all()  # the top bands at least, or the test shows nothing
    np.testing.assert_array_equal(pre.band_std_[constant], 1.0)
    np.testing.assert_array_equal(pre.band_mean_[constant], -pre.top_db)
    noise = (np.random.default_rng(0).standard_normal(int(0.25 * SR)).astype(np.float32) * 0.3, SR)
    out = pre.transform_one(noise)[:, constant, 0]
    np.testing.assert_allclose(out, pre.read(noise)[:, constant] + pre.top_db, atol=1e-4)
    assert out.min() >= 0.0 and out.max() <= pre.top_db


def test_normalization_none_keeps_decibels():
    train = noisy_tones(3)
    pre = small(normalization="none").fit(train)
    np.testing.assert_allclose(pre.transform_one(train[0])[..., 0], pre.read(train[0]), atol=1e-6)


def test_refitting_replaces_the_previous_fit():
    pre = small().fit(noisy_tones(3, seed=1))
    loud = [(tone(1000, amplitude=0.9), SR)]
    pre.fit(loud)
    np.testing.assert_allclose(pre.band_mean_, small().fit(loud).band_mean_)


def test_save_load_round_trip_uses_json_and_npz(tmp_path):
    train = noisy_tones(4)
    pre = small(num_mels=24, fmin=50.0, fmax=7000.0).fit(train)
    pre.save(tmp_path / "pre.json")
    document = json.loads((tmp_path / "pre.json").read_text())
    assert document["class"] == "AudioPreprocessor"
    assert sorted(document["arrays"]) == ["band_mean_", "band_std_"]
    with np.load(tmp_path / "pre.npz", allow_pickle=False) as arrays:
        np.testing.assert_array_equal(arrays["band_mean_"], pre.band_mean_)
    loaded = Preprocessor.load(tmp_path / "pre.json")
    assert type(loaded) is AudioPreprocessor
    assert loaded.get_config() == pre.get_config()
    np.testing.assert_array_equal(loaded.transform(train), pre.transform(train))


def test_numpy_scalar_parameters_save_as_plain_json(tmp_path):
    pre = small(sample_rate=np.int64(SR), duration=np.float32(0.25), top_db=np.float64(80)).fit([(tone(440), SR)])
    pre.save(tmp_path / "pre.json")  # was "Object of type int64 is not JSON serializable"
    config = json.loads((tmp_path / "pre.json").read_text())["config"]
    assert config["sample_rate"] == SR and type(config["sample_rate"]) is int
    loaded = AudioPreprocessor.load(tmp_path / "pre.json")
    np.testing.assert_array_equal(loaded.transform_one((tone(440), SR)), pre.transform_one((tone(440), SR)))


def test_save_refuses_parameters_that_load_would_refuse(tmp_path):
    with pytest.raises(ValueError, match="`duration`"):
        small(duration=float("nan")).save(tmp_path / "pre.json")  # was saved, then refused by load
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["pre.v1", "pre.npz", "pre"])
def test_save_and_load_need_a_json_path(tmp_path, name):
    pre = small().fit([(tone(440), SR)])
    with pytest.raises(ValueError, match=r"`path` must end in \.json .*Received: path="):
        pre.save(tmp_path / name)
    with pytest.raises(ValueError, match=r"`path` must end in \.json"):
        AudioPreprocessor.load(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_a_json_and_npz_from_different_saves_are_refused_and_older_saves_still_load(tmp_path):
    small().fit([(tone(440), SR)]).save(tmp_path / "a.json")
    small().fit([(tone(3000), SR)]).save(tmp_path / "b.json")
    (tmp_path / "a.npz").write_bytes((tmp_path / "b.npz").read_bytes())
    with pytest.raises(InputError) as caught:  # loaded b's statistics silently
        AudioPreprocessor.load(tmp_path / "a.json")
    assert str(caught.value) == f"{tmp_path / 'a.json'}: a.json and a.npz were not saved together"
    # a pair saved before the token existed has none on either side, and loads
    pre = small().fit([(tone(440), SR)])
    document = json.loads((tmp_path / "a.json").read_text())
    del document["save_token"]
    (tmp_path / "old.json").write_text(json.dumps(document))
    np.savez(tmp_path / "old.npz", band_mean_=pre.band_mean_, band_std_=pre.band_std_)
    np.testing.assert_array_equal(AudioPreprocessor.load(tmp_path / "old.json").band_std_, pre.band_std_)


def test_a_value_json_cannot_hold_fails_before_any_file_is_written(tmp_path, monkeypatch):
    pre = small().fit([(tone(440), SR)])
    unserializable = {"fitted": object()}, {"band_mean_": pre.band_mean_}
    monkeypatch.setattr(AudioPreprocessor, "_fitted_state", lambda self: unserializable)
    with pytest.raises(TypeError, match="not JSON serializable"):
        pre.save(tmp_path / "pre.json")
    assert list(tmp_path.iterdir()) == []  # no orphan .npz


def test_statistics_that_do_not_match_num_mels_name_the_real_arrays_file(tmp_path):
    small().fit([(tone(440), SR)]).save(tmp_path / "mine.json")
    document = json.loads((tmp_path / "mine.json").read_text())
    document["config"]["num_mels"] = 16
    (tmp_path / "mine.json").write_text(json.dumps(document))
    with pytest.raises(InputError) as caught:
        AudioPreprocessor.load(tmp_path / "mine.json")
    assert str(caught.value) == (  # named "preprocessor.npz", whatever the file was called
        f"{tmp_path / 'mine.json'}: cannot restore the fitted state with the arrays in mine.npz "
        "(band_mean_ has shape (32,), but num_mels=16)"
    )


def test_loading_an_unfitted_save_stays_unfitted(tmp_path):
    small().save(tmp_path / "pre.json")
    assert not (tmp_path / "pre.npz").exists()
    with pytest.raises(NotFittedError):
        AudioPreprocessor.load(tmp_path / "pre.json").transform_one((tone(440), SR))


def test_a_cut_off_npz_is_an_input_error(tmp_path):
    pre = small().fit([(tone(440), SR), (tone(880), SR)])
    pre.save(tmp_path / "pre.json")
    npz = tmp_path / "pre.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(InputError, match="missing or unreadable arrays"):
        AudioPreprocessor.load(tmp_path / "pre.json")


def test_load_refuses_another_preprocessor_class(tmp_path):
    small().save(tmp_path / "pre.json")
    from preprocess import TextPreprocessor

    with pytest.raises(InputError, match="holds an AudioPreprocessor, expected a TextPreprocessor"):
        TextPreprocessor.load(tmp_path / "pre.json")


@pytest.mark.parametrize(
    "params, name",
    [
        ({"num_mels": 0}, "num_mels"),
        ({"hop_length": -1}, "hop_length"),
        ({"sample_rate": 8000.5}, "sample_rate"),
        ({"sample_rate": 160_000_000}, "sample_rate"),  # a typo for 16000: resampling to it took minutes
        ({"duration": 0}, "duration"),
        ({"duration": float("nan")}, "duration"),  # passed `<= 0`, then failed reading every file
        ({"duration": float("inf")}, "duration"),
        ({"fmax": 9000.0}, "fmax"),
        ({"fmin": 500.0, "fmax": 400.0}, "fmin"),
        ({"normalization": "global"}, "normalization"),
        ({"log_floor": float("nan")}, "log_floor"),  # every output was NaN
        ({"log_floor": float("inf")}, "log_floor"),  # every output was constant
        ({"log_floor": "x"}, "log_floor"),  # these three were raw TypeErrors
        ({"fmin": "20"}, "fmin"),
        ({"top_db": "80"}, "top_db"),
        ({"top_db": float("inf")}, "top_db"),  # silence read as -inf
    ],
)
def test_bad_parameters_raise_value_error_naming_the_parameter(params, name):
    pre = small(**params)  # __init__ only stores
    with pytest.raises(ValueError, match=f"Received: .*{name}="):
        pre.fit([(tone(440), SR)])


@pytest.mark.parametrize(
    "params, name",
    [
        ({"hop_length": 0}, "hop_length"),  # a raw ZeroDivisionError
        ({"hop_length": "160"}, "hop_length"),  # a raw TypeError
        ({"duration": -1}, "duration"),  # (-99, 64, 1)
        ({"num_mels": 0}, "num_mels"),  # (101, 0, 1)
        ({"sample_rate": 8000.5}, "sample_rate"),
    ],
)
def test_output_shape_of_bad_parameters_raises_value_error_naming_the_parameter(params, name):
    with pytest.raises(ValueError, match=f"Received: .*{name}="):
        AudioPreprocessor(**params).output_shape


def test_output_shape_needs_no_spectrogram_library():
    # known before any input: it checks what the shape is computed from, not the mel filters
    code = "from preprocess import AudioPreprocessor\nprint(AudioPreprocessor().output_shape)\nimport sys\nprint('librosa' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["(101,", "64,", "1)", "False"]


def test_fmin_zero_is_a_valid_lowest_band_edge():
    pre = small(fmin=0.0, num_mels=16).fit([(tone(440), SR)])  # librosa's own default; a negative one is refused
    assert pre.transform_one((tone(440), SR)).shape == pre.output_shape


def test_a_window_too_short_for_even_one_mel_band_says_so_not_at_most_one():
    with pytest.raises(ValueError, match=r"`num_mels`=1 .* No number of bands works: raise `n_fft`"):
        small(num_mels=1, n_fft=2, hop_length=1).fit([(tone(440), SR)])


def test_mel_bands_that_would_hold_no_frequency_bin_are_refused_with_the_most_that_fit():
    import librosa

    with pytest.raises(ValueError, match=r"`num_mels`=1000 is too many .* 529 band\(s\) .*at most 191 bands") as caught:
        small(num_mels=1000).fit([(tone(440), SR)])
    assert "\n" not in str(caught.value)
    # The bound is exact: 191 bands each hold a bin, 192 do not (librosa warns of empty filters).
    assert librosa.filters.mel(sr=SR, n_fft=512, n_mels=191, fmin=20.0).max(axis=1).min() > 0
    with pytest.warns(UserWarning, match="Empty filters"):
        librosa.filters.mel(sr=SR, n_fft=512, n_mels=192, fmin=20.0)
    small(num_mels=191).fit([(tone(440), SR)])


@pytest.mark.parametrize("sample_rate, n_fft", [(8000, 64), (16000, 256), (16000, 512), (22050, 2048), (44100, 128)])
def test_empty_mel_bands_are_counted_as_librosa_s_filters_have_them(sample_rate, n_fft):
    # Counted in numpy, so that checking settings does not import librosa; the count must be librosa's.
    from preprocess.audio import _empty_mel_bands

    for num_mels, fmin, fmax_share in [(1, 0.0, 1.0), (16, 20.0, 1.0), (64, 0.0, 0.5), (128, 300.0, 0.9), (256, 20.0, 1.0), (1000, 1000.0, 1.0)]:
        fmax = sample_rate / 2 * fmax_share
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            weights = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=num_mels, fmin=fmin, fmax=fmax)
        expected = int(np.sum(weights.max(axis=1) <= 0))
        assert _empty_mel_bands.__wrapped__(sample_rate, n_fft, num_mels, fmin, fmax) == expected, (num_mels, fmin, fmax)


def test_checking_settings_does_not_import_librosa_into_the_main_process():
    # librosa (and numba) cost train's main process about 1 s and 140 MiB; only the workers decode audio.
    code = (
        "import sys; from preprocess import AudioPreprocessor; "
        "AudioPreprocessor(num_mels=64).validate_params(); "
        "print(sorted(m for m in ('librosa', 'numba') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_an_fft_window_longer_than_the_clip_is_refused():
    with pytest.raises(ValueError, match=r"`n_fft`=512 is longer than a whole clip \(0.01 s at 16000 Hz is 160 samples\)"):
        small(duration=0.01).fit([(tone(440), SR)])


def test_a_wav_cut_short_is_reported_not_silently_shortened(tmp_path):
    whole = write_wav(tmp_path / "whole.wav", tone(440, duration=0.25), SR, subtype="PCM_16")
    data = whole.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: 44 + 2000])  # header + 1,000 of 4,000 frames
    pre = small().fit([(tone(440), SR)])
    with pytest.raises(InputError, match=r"cut\.wav: truncated WAV \(header promises 4,000 frames, file holds 1,000\)"):
        pre.transform_one(cut)
    with pytest.raises(InputError, match="truncated WAV"):
        pre.transform_one(data[: 44 + 2000])
    assert pre.transform_one(whole).shape == pre.output_shape


def test_a_long_file_is_cropped_to_the_duration_it_needs(tmp_path):
    # 20 s of audio: the first 0.25 s are a 500 Hz tone, the rest a 3 kHz tone
    head, rest = tone(500, duration=0.25), tone(3000, duration=19.75)
    path = write_wav(tmp_path / "long.flac", np.concatenate([head, rest]), SR)
    pre = small()
    np.testing.assert_allclose(pre.read(path), pre.read((head, SR)), atol=0.1)  # 16-bit FLAC rounding


def test_integer_pcm_waveforms_read_like_their_files(tmp_path):
    pcm = (tone(440) * 0.5 * 32767).astype(np.int16)
    path = tmp_path / "pcm.wav"
    soundfile.write(path, pcm, SR, subtype="PCM_16")
    pre = small(top_db=None)
    np.testing.assert_allclose(pre.read((pcm, SR)), pre.read(path), atol=1e-3)
    unsigned = (pcm.astype(np.int32) // 256 + 128).astype(np.uint8)  # 8-bit WAV's layout
    assert abs(float(pre.read((unsigned, SR)).max()) - float(pre.read(path).max())) < 0.5
    with pytest.raises(InputError, match="integer waveforms must be 8-, 16- or 32-bit PCM, got int64"):
        pre.read((pcm.astype(np.int64), SR))
    # big-endian PCM (AIFF, `np.frombuffer(data, ">i2")`) means what its native twin means
    np.testing.assert_array_equal(pre.read((pcm.astype(">i2"), SR)), pre.read((pcm, SR)))
    np.testing.assert_array_equal(pre.read((tone(440).astype(">f4"), SR)), pre.read((tone(440).astype("<f4"), SR)))


def test_default_duration_cutting_most_clips_short_is_said(tmp_path, caplog):
    import logging

    from pipelines.datasets import Dataset
    from pipelines.defaults import build_preprocessor
    from pipelines.modality import Modality

    paths = [write_wav(tmp_path / f"{i}.wav", np.zeros(int(SR * 4.2), np.float32)) for i in range(3)]
    data = Dataset(paths, ["a", "b", "a"], ["0", "1", "2"])
    with caplog.at_level(logging.WARNING):
        build_preprocessor(Modality.audio, {"sample_rate": SR}, data)
    assert "median training clip is 4.2 s long, and only its first 1.0 s is read" in caplog.text
    assert "--duration 5" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build_preprocessor(Modality.audio, {"sample_rate": SR, "duration": 1.0}, data)  # chosen: not said
    assert "median training clip" not in caplog.text


def test_a_recording_without_samples_says_what_it_may_be(tmp_path):
    import soundfile

    soundfile.write(tmp_path / "none.wav", np.zeros(0, np.float32), SR)  # a header and no frame
    with pytest.raises(InputError, match=r"none\.wav: no audio samples \(an empty recording, or one cut off"):
        small().read(tmp_path / "none.wav")


def wav_with_odd_chunk(frames: int) -> bytes:
    """16-bit mono PCM with a 3-byte LIST chunk (plus its pad byte) between fmt and data, as
    tagging tools write."""
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    samples = (np.sin(np.arange(frames) / 3) * 3000).astype("<i2").tobytes()
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"LIST" + struct.pack("<I", 3) + b"abc" + b"\0"  # odd size: padded to even
    body += b"data" + struct.pack("<I", len(samples)) + samples
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_a_truncated_wav_with_an_odd_sized_chunk_before_its_data_is_found(tmp_path):
    whole = wav_with_odd_chunk(4000)
    assert wav_frames_missing(whole, len(whole)) is None
    cut = whole[:-2000]  # 1,000 frames lost
    assert wav_frames_missing(cut[:4096], len(cut)) == (4000, 3000)
    (tmp_path / "cut.wav").write_bytes(cut)
    # refused, not read as a shorter clip
    with pytest.raises(InputError, match=r"truncated WAV \(header promises 4,000 frames, file holds 3,000\)"):
        AudioPreprocessor(duration=0.25).read(tmp_path / "cut.wav")


@pytest.mark.parametrize(
    "name, value, reason",
    [
        ("band_mean_", np.float64(1e300), "band_mean_ must hold finite numbers"),  # inf once float32
        ("band_mean_", np.float32(3e38), "band_mean_ must lie within"),
        ("band_std_", np.float32(1e-40), "band_std_ must be at least 0.001"),  # positive, yet every output inf
    ],
)
def test_load_refuses_fitted_statistics_that_make_outputs_infinite(tmp_path, name, value, reason):
    signal = (0.3 * np.sin(np.arange(16000) / 5)).astype(np.float32)
    small().fit([(signal, 16000)]).save(tmp_path / "a.json")
    arrays = dict(np.load(tmp_path / "a.npz"))
    arrays[name] = np.full(arrays[name].shape, value, dtype=np.asarray(value).dtype)
    np.savez(tmp_path / "a.npz", **arrays)
    with pytest.raises(InputError, match=reason):
        Preprocessor.load(tmp_path / "a.json")


def test_an_empty_two_channel_array_is_named_empty_not_nan(recwarn):
    pre = small().fit([(np.full(16000, 0.1, np.float32), 16000)])
    with pytest.raises(InputError, match="no audio samples"):
        pre.transform_one((np.zeros((0, 2), np.float32), 16000))
    assert not [w for w in recwarn if "Mean of empty slice" in str(w.message)]


def test_without_normalization_there_is_nothing_to_fit():
    pre = AudioPreprocessor(duration=0.25, normalization="none")
    assert pre.is_fitted and pre.fit([]) is pre and pre.fit(["missing.wav"]) is pre  # nothing read
    np.testing.assert_array_equal(pre.transform_one((tone(440, duration=0.25), SR)), pre.read((tone(440, duration=0.25), SR))[..., None])
    with pytest.raises(NotFittedError):
        AudioPreprocessor(duration=0.25).transform_one((tone(440, duration=0.25), SR))


def test_errors_survive_pickling_so_a_process_pool_hands_them_back():
    # unpickled as InputError(message), the error broke multiprocessing.Pool (it hung)
    import pickle

    from preprocess import FitError
    from preprocess.errors import SettingError

    error = pickle.loads(pickle.dumps(InputError("clips/a.wav", "not a readable audio file")))
    assert (type(error), error.source, error.reason, str(error)) == (InputError, "clips/a.wav", "not a readable audio file", "clips/a.wav: not a readable audio file")
    for flag, message in ((True, "--batch-size must be positive"), (False, "batch_size must be positive")):
        setting = pickle.loads(pickle.dumps(SettingError("batch_size", "must be positive", flag=flag)))
        assert (setting.name, setting.reason, str(setting)) == ("batch_size", "must be positive", message)
    with pytest.raises(FitError, match="at least one training input"):  # a FitError, as documented
        AudioPreprocessor().fit([])
