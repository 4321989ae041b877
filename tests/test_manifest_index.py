"""ManifestIndex: a manifest bigger than memory is indexed, not loaded, and any row can be read."""
import json
import pickle
import tracemalloc

import numpy as np
import pytest
import torch

from audio_io import ManifestIndex

N_ROWS = 200_000


@pytest.fixture(scope="module")
def big_manifest(tmp_path_factory):
    path = tmp_path_factory.mktemp("manifest") / "train.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(N_ROWS):
            row = {"audio": f"wavs/spk{i % 997:04d}/utt{i:07d}.wav", "text": "నమస్కారం " * (i % 5 + 1),
                   "speaker": f"spk{i % 997:04d}", "lang": "te", "duration": round(1.0 + (i % 300) / 100, 2),
                   "split": "train", "words": [{"word": "నమస్కారం", "start": 0.1, "end": 0.6}]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            if i % 50_000 == 0:
                f.write("\n")  # blank lines are skipped, as read_manifest does
    return path


def test_index_is_small_and_rows_read_on_demand(big_manifest):
    size = big_manifest.stat().st_size
    tracemalloc.start()
    index = ManifestIndex(big_manifest)
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(index) == N_ROWS
    # 20 bytes a row in numpy arrays (4 MB here); the parsed rows would be ~1 KB each (~200 MB).
    assert retained < 6e6, f"index keeps {retained / 1e6:.1f} MB"
    assert peak < 12e6 and peak < size / 5, f"indexing peaked at {peak / 1e6:.1f} MB for a {size / 1e6:.0f} MB file"
    assert index.offsets.nbytes + index.lengths.nbytes + index.durations.nbytes + index.speaker_ids.nbytes == 20 * N_ROWS

    rng = np.random.default_rng(0)
    for i in [0, N_ROWS - 1, -1, *rng.integers(0, N_ROWS, 200).tolist()]:
        k = i % N_ROWS
        row = index[i]
        assert row["audio"].endswith(f"utt{k:07d}.wav") and row["audio"].startswith(str(big_manifest.parent))
        assert row["speaker"] == f"spk{k % 997:04d}" == index.speaker(k)
        assert row["duration"] == pytest.approx(float(index.durations[k]))
        assert row["words"][0]["word"] == "నమస్కారం"
    with pytest.raises(IndexError):
        index[N_ROWS]

    assert len(index.speakers) == 997 and index.speakers == sorted(index.speakers)
    assert np.bincount(index.speaker_ids).tolist() == [len(range(s, N_ROWS, 997)) for s in range(997)]
    assert index.hours() == pytest.approx(sum(1.0 + (i % 300) / 100 for i in range(N_ROWS)) / 3600, rel=1e-4)


class _Audio(torch.utils.data.Dataset):
    def __init__(self, index):
        self.index = index

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        return self.index[i]["audio"]


def test_index_in_loader_workers_and_after_pickling(big_manifest):
    index = ManifestIndex(big_manifest)
    index[5]  # opens the descriptor in this process; workers and copies must open their own
    copy = pickle.loads(pickle.dumps(index))
    assert copy[123_456] == index[123_456] and copy._fd != index._fd
    picks = [[3, 199_999], [77_777, 150_000]]
    loader = torch.utils.data.DataLoader(_Audio(index), batch_sampler=picks, num_workers=2,
                                         collate_fn=lambda batch: batch)
    got = [path for batch in loader for path in batch]
    assert [p.rsplit("/", 1)[1] for p in got] == [f"utt{i:07d}.wav" for b in picks for i in b]


def test_bad_row_names_its_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"audio": "a.wav", "text": "", "speaker": "s", "lang": "te", "duration": 1, "split": "train"}\n'
                    '{"audio": "b.wav", "text": ""}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"m.jsonl:2: missing fields"):
        ManifestIndex(path)
