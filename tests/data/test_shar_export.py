from lhotse import CutSet

from speech.data.prepare import export_shar


def test_shar_shards_hold_every_training_cut(shared_prepared, tmp_path):
    files = export_shar(shared_prepared, tmp_path / "shar", shard_size=8)
    train = CutSet.from_file(shared_prepared / "train_cuts.jsonl.gz").to_eager()
    assert len([f for f in files if "recording" in f]) == 3  # 21 cuts in shards of 8
    back = CutSet.from_shar(in_dir=tmp_path / "shar")
    ids = []
    for cut in back:
        ids.append(cut.id)
        original = train[cut.id]
        audio = cut.load_audio()
        assert audio.shape == original.load_audio().shape
        assert cut.supervisions[0].text == original.supervisions[0].text
    assert sorted(ids) == sorted(train.ids)
