"""model.training: clip, corpus and folder datasets, their decode cache, batches and the
trainer's loader."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import load_config
from model.media import load_windows
from model.media.decode_cache import content_hash
from model.media.media_info import PROBE_VERSION
from model.tokenizer import Tokenizer
from model.training.batches import collate_batch
from model.training.clip_dataset import ClipDataset, ClipItem
from model.training.corpus_dataset import CorpusDataset, read_training_manifest
from model.training.errors import DatasetError
from model.training.folder_dataset import FolderDataset
from model.training.loader import StepBatchSampler, step_loader
from model.transcripts import Segment, Transcript

TINY = load_config("tiny")
K = TINY.loss.num_positives


@pytest.fixture(scope="module")
def corpus_dir(
    tmp_path_factory: pytest.TempPathFactory, narrated_clips: list[tuple[Path, Transcript]]
) -> Path:
    """The narrated clips laid out as a corpus: 4 train clips (the last without a
    transcript), 2 val clips, plus an audio item and a still that are not clips."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "clips").mkdir()
    (root / "audio").mkdir()
    rows = []
    for i, (path, _) in enumerate(narrated_clips):
        cid = f"clip-{i:06d}"
        shutil.copy(path, root / "clips" / f"{cid}.mp4")
        vtt = path.with_suffix(".vtt")
        if vtt.exists():
            shutil.copy(vtt, root / "clips" / f"{cid}.vtt")
        rows.append(
            {
                "id": cid,
                "kind": "clip",
                "split": "train" if i in (0, 1, 2, 5) else "val",
                "path": f"clips/{cid}.mp4",
                "transcript": f"clips/{cid}.vtt" if vtt.exists() else None,
                "duration_s": 4.0,
                "description": "evaluation only",
                "narration": "evaluation only",
                "aligned": True,
                "attributes": {"never": "read by training"},
            }
        )
    shutil.copy(narrated_clips[0][0], root / "audio" / "audio-000000.mp4")
    rows.append(
        {"id": "audio-000000", "kind": "audio", "split": "train", "path": "audio/audio-000000.mp4",
         "transcript": None, "duration_s": 4.0, "description": "", "narration": None,
         "aligned": True, "attributes": {}}
    )  # fmt: skip
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def text_encoder(narrated_clips: list[tuple[Path, Transcript]]) -> Tokenizer:
    texts = [s.text for _, t in narrated_clips for s in t.segments]
    return Tokenizer.build(texts, max_size=200, max_words=TINY.text.max_words)


def test_manifest_rows_keep_only_training_fields(corpus_dir: Path) -> None:
    rows = read_training_manifest(corpus_dir)
    assert len(rows) == 7
    assert all(set(r) == {"id", "kind", "split", "path", "transcript", "duration_s"} for r in rows)


def test_corpus_samples(corpus_dir: Path, tmp_path: Path) -> None:
    train = CorpusDataset(corpus_dir, TINY, "train", seed=3, cache_dir=tmp_path)
    val = CorpusDataset(corpus_dir, TINY, "val", seed=3, cache_dir=tmp_path)
    assert len(train) == 4 and len(val) == 2  # the audio item is not a clip
    assert train.augment is not None and val.augment is None
    crop, frames = TINY.video.crop_size, TINY.video.frames
    for i in range(len(train)):
        sample = train[i]
        assert sample["video"].shape == (frames, crop, crop, 3)
        assert sample["video"].dtype == torch.float32
        assert float(sample["video"].min()) >= 0.0 and float(sample["video"].max()) <= 1.0
        assert sample["audio"].shape == (TINY.audio_samples,)
        assert sample["audio"].dtype == torch.float32
        assert sample["has_audio"] is True
        rms = float(sample["audio"].pow(2).mean().sqrt())
        assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.2)  # the clip's tone
        assert 0.0 <= sample["start_s"] <= 4.0 - TINY.clip_seconds + 1e-6
        if sample["id"] == "clip-000005":  # no transcript: video-audio loss only
            assert sample["texts"] == [] and sample["has_text"] is False
            continue
        assert sample["has_text"] is True and len(sample["texts"]) == K
        # Nearest first: the first narration is the 1 s cue around the window's centre.
        centre = sample["start_s"] + TINY.clip_seconds / 2
        seconds = [int(t.rsplit(" ", 1)[1]) for t in sample["texts"]]
        assert abs(seconds[0] + 0.5 - centre) <= 0.5 + 1e-6
        assert sorted(abs(s + 0.5 - centre) for s in seconds) == [
            abs(s + 0.5 - centre) for s in seconds
        ]
    # Evaluation view: the middle window, no augmentation, the same every time.
    a, b = val[0], val[0]
    assert a["start_s"] == pytest.approx(1.0)
    assert torch.equal(a["video"], b["video"])


def test_samples_depend_only_on_seed_epoch_and_index(corpus_dir: Path, tmp_path: Path) -> None:
    one = CorpusDataset(corpus_dir, TINY, "train", seed=11, cache_dir=tmp_path)
    two = CorpusDataset(corpus_dir, TINY, "train", seed=11, cache_dir=tmp_path)
    other_seed = CorpusDataset(corpus_dir, TINY, "train", seed=12, cache_dir=tmp_path)
    a, b = one[(1, 0)], two[(1, 0)]
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])
    assert a["texts"] == b["texts"]
    assert not torch.equal(a["video"], one[(1, 1)]["video"])  # a new epoch, a new draw
    assert not torch.equal(a["video"], other_seed[(1, 0)]["video"])


def test_decode_cache_serves_later_epochs(corpus_dir: Path, tmp_path: Path) -> None:
    ds = CorpusDataset(corpus_dir, TINY, "train", seed=0, cache_dir=tmp_path)
    for epoch in range(2):
        for i in range(len(ds)):
            ds[(i, epoch)]
        assert ds.decode_count == len(ds)  # decoded in epoch 0 only
    cached = np.load(ds.cache_path(0) / "video.npy", mmap_mode="r")
    side = ds.decode_side
    assert side > TINY.video.crop_size  # room for random crops
    assert cached.shape == (4 * TINY.video.fps, side, side, 3)  # the whole 4 s clip
    again = CorpusDataset(corpus_dir, TINY, "train", seed=0, cache_dir=tmp_path)
    again[0]
    assert again.decode_count == 0  # a new dataset (new run) reads the same cache


def test_cache_windows_are_slices_of_the_cached_arrays(corpus_dir: Path, tmp_path: Path) -> None:
    """Windows are read from the cache a slice at a time: the same frames and sound as
    slicing the whole arrays, padded at the end of the clip."""
    ds = CorpusDataset(corpus_dir, TINY, "train", augment=False, cache_dir=tmp_path)
    ds[0]
    video = np.load(ds.cache_path(0) / "video.npy")
    audio = np.load(ds.cache_path(0) / "audio.npy")
    decoded = ds._decoded(0)
    assert decoded.audio is not None
    n = len(video)
    for start, stop in [(0, 8), (3, 11), (n - 5, n + 3), (n, n + 8), (-2, 4)]:
        assert np.array_equal(decoded.video.rows(start, stop), video[max(0, start) : stop])
    assert np.array_equal(decoded.audio.rows(100, 32_100), audio[100:32_100])
    assert np.array_equal(decoded.video.read(), video)
    frames, pcm, start_s, has_audio = ds._window(0, np.random.default_rng(0))
    first = round(start_s * TINY.video.fps)
    assert has_audio and np.array_equal(frames, video[first : first + TINY.video.frames])
    s0 = round(start_s * TINY.audio.sample_rate)
    expected = audio[s0 : s0 + TINY.audio_samples].astype(np.float32) / 32767.0
    assert np.array_equal(pcm[: len(expected)], expected)


def test_a_cleared_or_damaged_cache_is_decoded_again_or_named(
    corpus_dir: Path, tmp_path: Path
) -> None:
    ds = CorpusDataset(corpus_dir, TINY, "train", seed=0, cache_dir=tmp_path)
    first = ds[(0, 0)]
    shutil.rmtree(tmp_path / "decoded")  # cleared while a run holds the dataset
    again = ds[(0, 0)]
    assert ds.decode_count == 2
    assert torch.equal(first["video"], again["video"])
    assert torch.equal(first["audio"], again["audio"])
    video = ds.cache_path(0) / "video.npy"
    # Truncated inside the first frame (the header is 128 bytes): a disk that filled up.
    video.write_bytes(video.read_bytes()[:1000])
    fresh = CorpusDataset(corpus_dir, TINY, "train", seed=0, cache_dir=tmp_path)
    with pytest.raises(DatasetError, match="shorter than its header"):
        fresh[(0, 0)]


def test_collate_pads_and_masks_narrations(
    corpus_dir: Path, tmp_path: Path, text_encoder: Tokenizer
) -> None:
    ds = CorpusDataset(corpus_dir, TINY, "train", seed=0, cache_dir=tmp_path)
    samples = [ds[i] for i in range(len(ds))]
    samples[0]["texts"] = samples[0]["texts"][:1]  # one narration only
    samples[1]["texts"] = ["the of and", *samples[1]["texts"][:1]]  # stop-words only
    batch = collate_batch(samples, text_encoder, K)
    b, max_words = len(samples), TINY.text.max_words
    assert batch["video"].shape == (b, TINY.video.frames, 64, 64, 3)
    assert batch["audio"].shape == (b, TINY.audio_samples)
    assert batch["text_ids"].shape == (b, K, max_words)
    assert batch["text_mask"].shape == (b, K, max_words) and batch["text_mask"].dtype == torch.bool
    positives = batch["positive_mask"].tolist()
    assert positives[0] == [True, False, False]
    assert positives[1] == [False, True, False]  # no known word left: not a positive
    missing = next(i for i, s in enumerate(samples) if s["id"] == "clip-000005")
    assert positives[missing] == [False, False, False]
    assert batch["has_text"].tolist() == [any(p) for p in positives]
    assert not batch["text_mask"][~batch["positive_mask"]].any()
    assert batch["ids"] == [s["id"] for s in samples]


def test_step_sampler_shards_and_reshuffles() -> None:
    # 10 clips in batches of 2: 5 steps an epoch.
    steps = list(StepBatchSampler(10, 2, seed=5, start=0, steps=10))
    first = [key for keys in steps[:5] for key in keys]
    second = [key for keys in steps[5:] for key in keys]
    assert sorted(i for i, _ in first) == list(range(10))
    assert {e for _, e in first} == {0} and {e for _, e in second} == {1}
    assert [i for i, _ in first] != [i for i, _ in second]
    # 3 ranks share a global batch of 6: each its own third, together the whole batch.
    whole = list(StepBatchSampler(12, 6, seed=5, start=0, steps=2))
    ranks = [list(StepBatchSampler(12, 6, 5, 0, 2, rank=r, world_size=3)) for r in range(3)]
    for step, keys in enumerate(whole):
        shares = [set(rank[step]) for rank in ranks]
        assert all(len(share) == 2 for share in shares)
        assert not (shares[0] & shares[1] or shares[0] & shares[2] or shares[1] & shares[2])
        assert set().union(*shares) == set(keys)


def test_loader_is_the_same_for_any_worker_count(
    corpus_dir: Path, tmp_path: Path, text_encoder: Tokenizer
) -> None:
    # Private copy: the media are taken away after the first epoch.
    root = tmp_path / "corpus"
    shutil.copytree(corpus_dir, root)
    ds = CorpusDataset(root, TINY, "train", seed=1, cache_dir=tmp_path / "cache")

    def epochs(workers: int, start: int, stop: int) -> list[list[dict]]:
        """Epochs [start, stop) of 2 steps of 2 clips, as the trainer loads them."""
        sampler = StepBatchSampler(len(ds), 2, seed=9, start=2 * start, steps=2 * stop)
        batches = list(step_loader(ds, sampler, text_encoder, K, workers))
        return [batches[i : i + 2] for i in range(0, len(batches), 2)]

    serial = epochs(0, 0, 2)
    first = epochs(2, 0, 1)
    shutil.rmtree(root / "clips")  # epoch 2 must come from the decode cache alone
    parallel = first + epochs(2, 1, 2)
    for epoch in range(2):
        assert len(serial[epoch]) == len(parallel[epoch]) == 2
        for x, y in zip(serial[epoch], parallel[epoch], strict=True):
            assert x["ids"] == y["ids"]
            assert torch.equal(x["video"], y["video"])
            assert torch.equal(x["audio"], y["audio"])
            assert torch.equal(x["text_ids"], y["text_ids"])
    assert [b["ids"] for b in serial[0]] != [b["ids"] for b in serial[1]]


class ToneTranscriber:
    """A stand-in speech recogniser: names the tone it hears (its main frequency)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, waveform: np.ndarray, sample_rate: int) -> Transcript:
        self.calls += 1
        spectrum = np.abs(np.fft.rfft(waveform))
        hertz = float(np.argmax(spectrum)) * sample_rate / len(waveform)
        seconds = len(waveform) / sample_rate
        return Transcript([Segment(0.0, seconds, f"a tone of {round(hertz, -1):.0f} hertz")], "asr")


def test_folder_dataset_sidecars_asr_and_skips(
    tmp_path: Path,
    narrated_clips: list[tuple[Path, Transcript]],
    media_files: dict[str, Path],
) -> None:
    folder = tmp_path / "my videos"
    (folder / "sub").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    clips = [p for p, _ in narrated_clips]
    transcripts = [t for _, t in narrated_clips]
    shutil.copy(clips[0], folder / "a.mp4")
    (folder / "a.vtt").write_text(transcripts[0].to_vtt())
    shutil.copy(clips[1], folder / "b.mp4")
    (folder / "B.SRT").write_text(transcripts[1].to_srt())  # in any case
    shutil.copy(clips[2], folder / "c.mp4")
    (folder / "c.txt").write_text("a plain text narration for the whole clip")
    shutil.copy(clips[3], folder / "d.mp4")  # no sidecar: transcribed (tone 600 Hz)
    shutil.copy(clips[4], folder / "sub" / "e.mp4")
    (folder / "sub" / "e.vtt").write_text(transcripts[4].to_vtt())
    shutil.copy(clips[5], folder / ".hidden" / "f.mp4")
    shutil.copy(media_files["wav"], folder / "song.wav")
    shutil.copy(media_files["png"], folder / "photo.png")
    shutil.copy(media_files["silent_mp4"], folder / "silent.mp4")
    shutil.copy(media_files["random_bytes"], folder / "broken.mp4")
    (folder / "notes.json").write_text("{}")

    asr = ToneTranscriber()
    ds = FolderDataset(folder, TINY, seed=0, cache_dir=tmp_path / "cache", asr=asr)
    ids = [item.id for item in ds.items]
    assert ids == ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "sub/e.mp4"]
    skipped = dict(ds.skipped)
    assert set(skipped) == {"song.wav", "photo.png", "silent.mp4", "broken.mp4", "notes.json"}
    assert "no sound" in skipped["silent.mp4"] and "not a video" in skipped["photo.png"]
    by_id = {item.id: item for item in ds.items}
    assert by_id["a.mp4"].transcript is not None
    assert by_id["a.mp4"].transcript.segments == transcripts[0].segments
    assert by_id["b.mp4"].transcript is not None
    assert by_id["b.mp4"].transcript.segments == transcripts[1].segments
    c = by_id["c.mp4"].transcript
    assert c is not None and c.segments[0].end == pytest.approx(4.0, abs=0.1)
    d = by_id["d.mp4"].transcript
    assert asr.calls == 1 and d is not None and d.source == "asr"
    assert d.text == "a tone of 600 hertz"
    sample = ds[ids.index("d.mp4")]
    assert sample["texts"] == ["a tone of 600 hertz"] and sample["video"].shape == (8, 64, 64, 3)

    # A second dataset over the same folder reads the transcription from the cache;
    # probes kept by earlier versions are removed, the current ones kept.
    (tmp_path / "cache" / "probe").mkdir()
    (tmp_path / "cache" / "probe-v1").mkdir()
    again_asr = ToneTranscriber()
    again = FolderDataset(folder, TINY, seed=0, cache_dir=tmp_path / "cache", asr=again_asr)
    assert again_asr.calls == 0 and again.asr_count == 0
    assert sorted(p.name for p in (tmp_path / "cache").glob("probe*")) == [
        f"probe-v{PROBE_VERSION}"
    ]
    assert again.items[3].transcript is not None
    assert again.items[3].transcript.text == "a tone of 600 hertz"
    # Stable split by content hash (its first 32 bits as a fraction): choose a
    # fraction that puts two of the five files in "val".
    fractions = sorted(int(content_hash(i.path)[:8], 16) / 2**32 for i in ds.items)
    share = (fractions[1] + fractions[2]) / 2
    cache = tmp_path / "cache"
    train = FolderDataset(folder, TINY, split="train", val_fraction=share, cache_dir=cache)
    val = FolderDataset(folder, TINY, split="val", val_fraction=share, cache_dir=cache)
    assert len(val) == 2
    assert sorted(i.id for i in train.items + val.items) == ids
    assert train.augment is not None and val.augment is None


def test_content_hashes_are_remembered_until_the_file_changes(
    tmp_path: Path, narrated_clips: list[tuple[Path, Transcript]]
) -> None:
    clip = tmp_path / "clip.mp4"
    shutil.copy(narrated_clips[0][0], clip)
    first = ClipDataset([ClipItem("c", clip)], TINY, cache_dir=tmp_path / "cache")
    memo = json.loads((tmp_path / "cache" / "hashes.json").read_text())
    assert [entry[-1] for entry in memo.values()] == [content_hash(clip)]
    assert first.items[0].content_hash == content_hash(clip)
    shutil.copy(narrated_clips[1][0], clip)  # new content under the same name
    second = ClipDataset([ClipItem("c", clip)], TINY, cache_dir=tmp_path / "cache")
    assert second.items[0].content_hash == content_hash(narrated_clips[1][0])
    assert second.cache_path(0) != first.cache_path(0)
    with pytest.raises(DatasetError, match="cannot read"):
        ClipDataset([ClipItem("gone", tmp_path / "gone.mp4")], TINY, cache_dir=tmp_path)


def test_folder_without_videos_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("nothing here")
    with pytest.raises(DatasetError, match="no usable video files"):
        FolderDataset(tmp_path, TINY, cache_dir=tmp_path / "cache")
    with pytest.raises(DatasetError, match="no corpus manifest"):
        CorpusDataset(tmp_path, TINY)


@pytest.fixture(scope="module")
def generated_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = pytest.importorskip("model.corpus")
    out = tmp_path_factory.mktemp("generated") / "corpus"
    corpus.make_corpus(out, n=6, seed=0, workers=1, progress=False, n_audio=1, n_stills=1)
    return out


def test_generated_corpus_loads(
    generated_corpus: Path, tmp_path: Path, text_encoder: Tokenizer
) -> None:
    rows = read_training_manifest(generated_corpus)
    train_clips = [r for r in rows if r["kind"] == "clip" and r["split"] == "train"]
    ds = CorpusDataset(generated_corpus, TINY, "train", cache_dir=tmp_path)
    assert len(ds) == len(train_clips) > 0
    batch = collate_batch([ds[i] for i in range(len(ds))], text_encoder, K)
    assert batch["video"].shape == (len(ds), 8, 64, 64, 3)
    assert batch["audio"].shape == (len(ds), TINY.audio_samples)
    assert float(batch["video"].std()) > 0.02  # real pictures
    assert float(batch["audio"].abs().max()) > 0.01  # real sound
    narrated = [r["transcript"] is not None for r in train_clips]
    assert batch["has_text"].tolist() == narrated


def test_generated_media_decode_by_kind(generated_corpus: Path) -> None:
    kinds = {"clip": "video", "audio": "audio", "still": "image"}
    seen = set()
    for row in read_training_manifest(generated_corpus):
        path = generated_corpus / row["path"]
        inputs = load_windows(path, TINY)
        assert inputs.info.kind == kinds[row["kind"]]
        if row["kind"] == "clip":
            assert inputs.video is not None and inputs.audio is not None
            assert inputs.info.duration_s == pytest.approx(row["duration_s"], abs=0.2)
        elif row["kind"] == "audio":
            assert inputs.audio is not None and inputs.video is None
        else:
            assert inputs.video is not None and inputs.audio is None
        seen.add(row["kind"])
    assert seen == set(kinds)


def test_corpus_clips_share_one_probe_and_decode_as_if_probed(
    small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The corpus's clips all come from one encoder: one ffprobe per process, the rest
    take its facts with their own duration, and decode exactly as with their own probe."""
    import model.corpus.clip_info as clip_info_module
    from model.media import decode_full, read_media_info

    calls: list[Path] = []
    monkeypatch.setattr(
        clip_info_module,
        "read_media_info",
        lambda path, limits=None: calls.append(path) or read_media_info(path, limits),
    )
    ds = CorpusDataset(small_corpus, TINY, "val", cache_dir=tmp_path)
    infos = [ds._info(i) for i in range(len(ds))]
    assert len(ds) >= 5 and len(calls) == 1
    for item, info in zip(ds.items, infos, strict=True):
        probed = read_media_info(item.path)
        assert replace(info, duration_s=None) == replace(probed, duration_s=None)
        assert info.duration_s == pytest.approx(probed.duration_s, abs=0.05)
    for i in range(3):
        cached = ds._decoded(i)
        direct = decode_full(
            ds.items[i].path,
            fps=TINY.video.fps,
            size=ds.decode_side,
            sample_rate=TINY.audio.sample_rate,
            info=read_media_info(ds.items[i].path),
        )
        assert direct.video is not None and direct.audio is not None
        assert np.array_equal(cached.video.read(), direct.video)
        pcm = np.round(np.clip(direct.audio, -1.0, 1.0) * 32767.0).astype(np.int16)
        assert cached.audio is not None
        assert np.array_equal(cached.audio.read(), pcm)


def test_corpus_that_does_not_match_its_declared_encoding_is_probed_clip_by_clip(
    small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import model.corpus.clip_info as clip_info_module
    from model.media import read_media_info

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(small_corpus / "manifest.jsonl", corpus)
    (corpus / "clips").symlink_to(small_corpus / "clips")
    info = json.loads((small_corpus / "corpus.json").read_text())
    info["video"]["width"] = 640  # not what the files are
    (corpus / "corpus.json").write_text(json.dumps(info))
    calls: list[Path] = []
    monkeypatch.setattr(
        clip_info_module,
        "read_media_info",
        lambda path, limits=None: calls.append(path) or read_media_info(path, limits),
    )
    ds = CorpusDataset(corpus, TINY, "val", cache_dir=tmp_path / "cache")
    infos = [ds._info(i) for i in range(len(ds))]
    assert len(calls) == len(ds)
    assert infos == [read_media_info(item.path) for item in ds.items]


def test_training_reads_a_manifest_with_only_the_training_fields(tmp_path: Path) -> None:
    row = {"id": "a", "kind": "clip", "split": "train", "path": "a.mp4"}
    (tmp_path / "manifest.jsonl").write_text(
        json.dumps({**row, "transcript": None, "duration_s": 2.0}) + "\n\n" + json.dumps(row)
    )
    with pytest.raises(DatasetError, match="line 3 lacks fields"):
        read_training_manifest(tmp_path)
    (tmp_path / "manifest.jsonl").write_text(
        json.dumps({**row, "transcript": None, "duration_s": 2.0, "extra": 1}) + "\n"
    )
    assert read_training_manifest(tmp_path) == [{**row, "transcript": None, "duration_s": 2.0}]
