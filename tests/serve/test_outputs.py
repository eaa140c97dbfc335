"""The folder of answered audio behind ``output_format: url``: names, expiry, reads."""

import os
import time

import pytest

from speech.serve.outputs import AudioFiles


@pytest.fixture
def files(tmp_path):
    return AudioFiles(tmp_path / "outputs", ttl_s=60)


def test_a_stored_file_reads_back_whole_under_a_random_name(files):
    first, second = files.put(b"RIFF one", "wav"), files.put(b"RIFF two", "wav")
    assert first != second and first.endswith(".wav") and len(first) == 32 + len(".wav")
    assert files.read(first) == b"RIFF one" and files.read(second) == b"RIFF two"
    assert not list(files.root.glob(".*.tmp"))  # written through a temporary file, renamed


@pytest.mark.parametrize("name", ["../store.sqlite", "x.wav", "0" * 32 + ".exe", "0" * 32 + ".WAV", ""])
def test_a_name_that_is_not_ours_reads_nothing(files, name):
    (files.root / "x.wav").write_bytes(b"not ours")
    assert files.read(name) is None


def test_an_expired_file_reads_nothing_and_is_swept(files):
    name = files.put(b"old", "mp3")
    path = files.root / name
    an_hour_ago = time.time() - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))
    assert files.read(name) is None and not path.exists()


def test_a_file_deleted_under_it_reads_nothing_instead_of_raising(files, monkeypatch):
    name = files.put(b"soon gone", "flac")
    # another request's sweep removes it between this request's sweep and its read
    monkeypatch.setattr(files, "sweep", lambda: (files.root / name).unlink())
    assert files.read(name) is None
