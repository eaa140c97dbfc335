import pytest

from speech.data.meta_list import MetaEntry, MetaListError, read_meta_list, write_meta_list
from speech.data.rejects import RejectLog


def test_roundtrip_relative_paths(tmp_path):
    (tmp_path / "set" / "prompt-wavs").mkdir(parents=True)
    entries = [
        MetaEntry(
            "u1",
            "hello there",
            tmp_path / "set/prompt-wavs/p1.wav",
            "good morning",
            tmp_path / "set/gt/u1.wav",
        ),
        MetaEntry("u2", "你好", tmp_path / "set/prompt-wavs/p2.wav", "早上好"),
    ]
    path = write_meta_list(tmp_path / "set" / "meta.lst", entries)
    lines = path.read_text().splitlines()
    assert lines[0] == "u1|hello there|prompt-wavs/p1.wav|good morning|gt/u1.wav"
    assert lines[1] == "u2|你好|prompt-wavs/p2.wav|早上好"
    back = read_meta_list(path)
    assert [e.utt for e in back] == ["u1", "u2"]
    assert back[0].prompt_wav == tmp_path / "set/prompt-wavs/p1.wav"
    assert back[1].gt_wav is None


@pytest.mark.parametrize(
    "line, match",
    [
        ("u1|a|p.wav", "expected 4 or 5 .* found 3"),
        ("u1|a|p.wav|b|g.wav|extra", "found 6"),
        ("u1|a||b", "field 'prompt_wav' is empty"),
        ("u1|a|p.wav|", "field 'target_text' is empty"),
        ("a/b|a|p.wav|t", "plain file stem"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, match):
    path = tmp_path / "meta.lst"
    path.write_text("ok|a|p.wav|t\n\n" + line + "\n")
    with pytest.raises(MetaListError, match=match) as err:
        read_meta_list(path)
    assert f"{path}:3" in str(err.value)


def test_bad_lines_are_skipped_and_logged_when_asked(tmp_path):
    path = tmp_path / "meta.lst"
    path.write_text("a|x|p.wav|t\nbroken line\na|x|p.wav|t\nb|x|p.wav|t|g.wav\n")
    rejects = RejectLog()
    entries = read_meta_list(path, rejects=rejects)
    assert [e.utt for e in entries] == ["a", "b"]
    assert rejects.counts() == {"bad_meta_line": 2}
    assert "appears twice" in rejects.entries[1][2]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta list not found"):
        read_meta_list(tmp_path / "nope.lst")


def test_writer_refuses_separator_in_text(tmp_path):
    with pytest.raises(MetaListError, match="contains '\\|'"):
        write_meta_list(tmp_path / "m.lst", [MetaEntry("u", "a|b", tmp_path / "p.wav", "t")])
