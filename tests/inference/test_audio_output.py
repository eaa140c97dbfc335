"""Rendering and encoding the output audio: volume, sample rate, channels, wav/flac/pcm/mp3 bytes."""

import errno
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speech.inference import audio_output
from speech.inference.request import (
    BITRATES,
    SAMPLE_RATES,
    AudioSetting,
    RequestError,
    VoiceSetting,
    mp3_bitrates,
)

SR = 16000

# ISO 11172-3 / 13818-3 layer III tables: kbps by bitrate index, Hz by sample-rate index, per MPEG version
# (the header's 2 version bits: 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5).
_KBPS = {
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_KBPS[0] = _KBPS[2]
_HZ = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
# Which Speech-02 bitrates each output rate carries (MPEG-1 up to 320 kbps, MPEG-2 160, MPEG-2.5 64).
CARRIED = {8000: (32000, 64000), 16000: (32000, 64000, 128000), 22050: (32000, 64000, 128000)}
CARRIED |= {24000: CARRIED[16000], 32000: BITRATES, 44100: BITRATES}


def mp3_frames(data: bytes) -> list[tuple[int, int]]:
    """``(sample_rate Hz, bitrate bit/s)`` of each layer III frame, walked from the first frame header."""
    is_header = lambda i: i + 4 <= len(data) and data[i] == 0xFF and data[i + 1] & 0xE6 == 0xE2  # sync, III
    i, frames = next(i for i in range(len(data)) if is_header(i)), []
    while is_header(i):
        version, kbps_index, hz_index = (data[i + 1] >> 3) & 3, data[i + 2] >> 4, (data[i + 2] >> 2) & 3
        kbps, hz = _KBPS[version][kbps_index], _HZ[version][hz_index]
        frames.append((hz, kbps * 1000))
        i += (144 if version == 3 else 72) * kbps * 1000 // hz + ((data[i + 2] >> 1) & 1)  # + padding byte
    return frames


@pytest.fixture
def tone():
    t = np.arange(SR) / SR
    return (0.25 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_volume_sample_rate_and_channels(tone):
    out, rate = audio_output.render(tone, SR, VoiceSetting(volume=2.0), AudioSetting())
    assert rate == SR and out.shape == tone.shape
    np.testing.assert_allclose(out, 2 * tone, rtol=1e-6)
    out, rate = audio_output.render(tone, SR, VoiceSetting(), AudioSetting(sample_rate=8000, channel=2))
    assert rate == 8000 and out.shape == (8000, 2)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])
    # The tone survives resampling: same RMS (it is far below the new Nyquist frequency).
    assert np.sqrt(np.mean(out[:, 0] ** 2)) == pytest.approx(0.25 / np.sqrt(2), rel=0.02)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_wav_and_flac_round_trip(tone, fmt):
    data = audio_output.encode(tone, SR, fmt)
    wav, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == SR and sf.info(io.BytesIO(data)).format == fmt.upper()
    np.testing.assert_allclose(wav, tone, atol=1 / 16384)


def test_pcm_is_headerless_int16_and_clipped(tone):
    loud = tone * 8  # peaks at 2.0: clipped to full scale
    data = audio_output.encode(loud, SR, "pcm")
    samples = np.frombuffer(data, dtype="<i2")
    assert samples.shape == tone.shape
    assert samples.max() == 32767 and samples.min() == -32767
    np.testing.assert_allclose(samples[:10] / 32767, np.clip(loud[:10], -1, 1), atol=1e-4)


def test_mp3_encodes(tone):
    data = audio_output.encode(tone, SR, "mp3")
    wav, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == SR and abs(len(wav) - len(tone)) < 2000  # the codec adds encoder delay/padding
    assert np.sqrt(np.mean(wav**2)) == pytest.approx(0.25 / np.sqrt(2), rel=0.1)


def test_mp3_bitrates_per_rate():
    assert {rate: mp3_bitrates(rate) for rate in SAMPLE_RATES} == CARRIED


@pytest.mark.parametrize(
    ("rate", "bitrate"), [(rate, bitrate) for rate, bitrates in CARRIED.items() for bitrate in bitrates]
)
def test_mp3_bitrate_is_written_exactly(rate, bitrate):
    tone = (0.25 * np.sin(2 * np.pi * 220 * np.arange(rate) / rate)).astype(np.float32)
    data = audio_output.encode(tone, rate, "mp3", bitrate=bitrate)
    frames = mp3_frames(data)
    # Constant bitrate: every frame of the whole 1 s stream (1152 samples a frame in MPEG-1, 576 else).
    assert set(frames) == {(rate, bitrate)} and len(frames) * (1152 if rate >= 32000 else 576) >= rate
    wav, decoded_rate = sf.read(io.BytesIO(data), dtype="float32")
    assert decoded_rate == rate and abs(len(wav) - rate) < 2500
    assert np.sqrt(np.mean(wav**2)) == pytest.approx(0.25 / np.sqrt(2), rel=0.1)


def test_mp3_bitrate_reaches_a_file(tmp_path, tone):
    stereo = np.stack([tone, tone], axis=1)
    path = audio_output.write(tmp_path / "out.mp3", stereo, SR, "mp3", bitrate=64000)
    assert set(mp3_frames(path.read_bytes())) == {(SR, 64000)} and sf.info(path).channels == 2


@pytest.mark.parametrize(
    ("rate", "bitrate", "allowed", "carriers"),
    [
        (24000, 256000, "[32000, 64000, 128000]", "[32000, 44100]"),
        (8000, 128000, "[32000, 64000]", "[16000, 22050, 24000, 32000, 44100]"),
    ],
)
def test_mp3_bitrate_the_rate_cannot_carry(rate, bitrate, allowed, carriers):
    message = f"mp3 at {rate} Hz cannot carry {bitrate} bit/s: allowed there {allowed}; {bitrate} bit/s needs"
    with pytest.raises(ValueError, match=re.escape(f"{message} a sample rate in {carriers}")):
        audio_output.encode(np.zeros(rate, np.float32), rate, "mp3", bitrate=bitrate)
    with pytest.raises(RequestError, match=re.escape(f"audio.bitrate: {message}")):
        AudioSetting(sample_rate=rate, format="mp3", bitrate=bitrate).validate()


def test_bitrate_is_refused_off_mp3_and_off_the_list(tone):
    with pytest.raises(ValueError, match="a bitrate applies to mp3 only, the format is 'wav'"):
        audio_output.encode(tone, SR, "wav", bitrate=128000)
    with pytest.raises(ValueError, match=r"one of \[32000, 64000, 128000, 256000\] bit/s, got 96000"):
        audio_output.encode(tone, SR, "mp3", bitrate=96000)
    # Without a sample_rate the pair is checked when encoding at the model's rate; with one, up front.
    AudioSetting(format="mp3", bitrate=256000).validate()
    AudioSetting(sample_rate=44100, format="mp3", bitrate=256000).validate()


def test_write_stereo_wav(tmp_path, tone):
    stereo = np.stack([tone, tone], axis=1)
    path = audio_output.write(tmp_path / "a" / "out.wav", stereo, SR, "wav")
    info = sf.info(path)
    assert info.channels == 2 and info.frames == SR and not (tmp_path / "a" / "out.wav.tmp").exists()


def test_silence_length():
    assert audio_output.silence(0.01, SR).shape == (160,) and not audio_output.silence(1.5, SR).any()
    assert audio_output.silence(99.99, 8000).shape == (799920,)


# Issue 17: NaN or infinite samples (a broken model) were written as clicks or zeros; mp3 encoding aborted.
@pytest.mark.parametrize("fmt", ["wav", "pcm", "mp3"])
def test_non_finite_audio_is_not_written(tmp_path, fmt):
    wav = np.zeros(1600, dtype=np.float32)
    wav[100] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite samples; nothing is written"):
        audio_output.write(tmp_path / f"x.{fmt}", wav, 16000, fmt)
    assert not list(tmp_path.iterdir())


# Issue 17, defect 5: out=o.ogg with audio.format=wav wrote WAV bytes under .ogg; the suffix must name the
# format, one of the four written here.
@pytest.mark.parametrize(
    ("name", "fmt", "message"),
    [
        ("o.ogg", "wav", r"o\.ogg ends in \.ogg: the suffix must name the audio format, one of \.wav, "
         r"\.flac, \.pcm, \.mp3; for audio\.format=wav write to .*o\.wav$"),
        ("o", "mp3", r"o has no suffix: the suffix must name the audio format, .*write to .*o\.mp3$"),
        ("o.flac", "wav", r"o\.flac ends in \.flac but audio\.format=wav; set audio\.format=flac or write to "
         r".*o\.wav$"),
        ("o.raw", "pcm", r"o\.raw ends in \.raw: the suffix must name the audio format"),
    ],
)  # fmt: skip
def test_the_suffix_must_name_the_format(tmp_path, name, fmt, message):
    with pytest.raises(audio_output.OutputError, match=message):
        audio_output.check_destination(tmp_path / name, fmt)
    assert audio_output.check_destination(tmp_path / "new" / "o.WAV", "wav") == tmp_path / "new" / "o.WAV"
    assert (tmp_path / "new").is_dir() and not list((tmp_path / "new").iterdir())  # the probe is gone
    with pytest.raises(audio_output.OutputError, match="is a folder, not a file name ending in .wav"):
        audio_output.check_destination(tmp_path, "wav")


# Issue 17, defect 4: a read-only output folder was found only after synthesis, when o.wav.tmp failed.
def test_an_unwritable_folder_is_found_before_anything_is_written(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(audio_output.OutputError, match=r"the output folder .*file is a file$"):
        audio_output.check_destination(tmp_path / "file" / "o.wav", "wav")
    with pytest.raises(
        audio_output.OutputError, match=r"cannot create the output folder .*file/sub: Not a dir"
    ):
        audio_output.check_folder(tmp_path / "file" / "sub")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    if os.geteuid() != 0:  # root writes anyway
        with pytest.raises(audio_output.OutputError, match=r"cannot write to .*readonly: Permission denied"):
            audio_output.check_folder(readonly)

    def read_only_filesystem(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(audio_output.tempfile, "NamedTemporaryFile", read_only_filesystem)
    with pytest.raises(
        audio_output.OutputError,
        match=r"cannot write to the output folder .*readonly: Read-only file system; choose another folder",
    ):
        audio_output.check_destination(readonly / "o.wav", "wav")


# Issue 17: a write that fails after all (a full disk: /dev/full) names the file, not its .tmp, and leaves
# nothing behind under either name.
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_failed_write_names_the_file_and_leaves_nothing(tmp_path, tone):
    (tmp_path / "o.wav.tmp").symlink_to("/dev/full")
    with pytest.raises(audio_output.OutputError, match=r"could not write .*/o\.wav: No space left on device"):
        audio_output.write(tmp_path / "o.wav", tone, SR, "wav")
    assert not list(tmp_path.iterdir())
