"""What a training job learns from: the stored clips, a held-out slice that never moves,
and a recipe that fits the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model import load_config
from service.storage import Embedding, NewItem, Storage
from service.worker.recipe import MAX_STEPS, MIN_STEPS, choose_recipe
from service.worker.training_set import (
    MIN_TRAIN,
    MIN_VAL,
    TrainingDataError,
    TrainingSet,
    bucket,
    build_training_set,
)

VTT = "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\na teal crescent whistles\n"


def add_items(storage: Storage, media: Path, n: int, start: int = 0) -> None:
    vector = np.ones(4, np.float32) / 2
    for i in range(start, start + n):
        digest = f"{i:064x}"
        (media / digest).write_bytes(b"clip")
        row = storage.items.create(
            NewItem(kind="video", modalities=["video", "audio"], content_hash=digest,
                    transcript="a teal crescent whistles" if i % 2 else None,
                    transcript_vtt=VTT if i % 2 else None, duration_s=4.0)
        )  # fmt: skip
        storage.items.mark_ready(row.seq, "v", [Embedding("va", "video", vector)],
                                 ["video", "audio"], row.transcript, None, 4.0)  # fmt: skip
    # Items the worker cannot learn from: a sound without pictures, a silent video.
    for kind, modalities in (("audio", ["audio"]), ("video", ["video"])):
        digest = f"{kind}{start}".ljust(64, "0")
        (media / digest).write_bytes(b"x")
        row = storage.items.create(NewItem(kind=kind, modalities=modalities, content_hash=digest))
        storage.items.mark_ready(row.seq, "v", [], modalities, None, None, 1.0)


def test_clips_with_pictures_and_sound_split_once_and_for_all(
    storage: Storage, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    add_items(storage, media, 200)
    first = build_training_set(storage, media)
    assert len(first.train) + len(first.val) == 200  # sounds and silent videos left out
    assert all(bucket(c.id) < 10 for c in first.val) and 8 <= len(first.val) <= 35
    narrated = [c for c in first.train + first.val if c.transcript() is not None]
    assert len(narrated) == 100 and narrated[0].transcript().text == "a teal crescent whistles"  # type: ignore[union-attr]

    add_items(storage, media, 300, start=1000)  # the collection grows
    second = build_training_set(storage, media)
    old_val = {c.id for c in first.val}
    assert old_val <= {c.id for c in second.val}, "a held-out clip stays held out"
    assert not old_val & {c.id for c in second.train}
    assert second.describe()["val_ids"] == [c.id for c in second.val]

    spec = tmp_path / "spec.json"
    second.write(spec)
    assert TrainingSet.read(spec) == second


def test_a_small_collection_is_refused_with_what_is_missing(
    storage: Storage, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    add_items(storage, media, MIN_TRAIN + MIN_VAL - 1)
    with pytest.raises(TrainingDataError, match="at least 20 stored clips with pictures and sound"):
        build_training_set(storage, media)
    add_items(storage, media, 1, start=500)
    small = build_training_set(storage, media)
    assert len(small.val) == MIN_VAL and len(small.train) == MIN_TRAIN


def test_the_recipe_fits_the_data() -> None:
    config = load_config("tiny").replace(train={"batch_size": 256})
    tiny = choose_recipe(config, 40, "active", None)
    assert tiny.batch_size == 16 and tiny.steps == 250 and tiny.lr < config.train.lr  # 100 epochs
    assert (
        choose_recipe(config.replace(train={"batch_size": 8}), 4, "active", None).steps == MIN_STEPS
    )
    world = choose_recipe(config, 170, "active", None)
    assert world.batch_size == 64 and world.steps == 266  # 100 epochs of 170 clips
    big = choose_recipe(config, 100_000, "scratch", None)
    assert big.batch_size == 256 and big.steps == MAX_STEPS and big.lr == config.train.lr
    asked = choose_recipe(config, 170, "active", 7)
    assert asked.steps == 7 and "asked" in asked.steps_rule
    assert asked.overrides()["train.batch_size"] == 64


def test_a_job_reads_its_clips_through_links_a_delete_cannot_take_away(tmp_path: Path) -> None:
    """An item deleted while a job runs removes its media file; the job's pinned set
    still reads it (a hard link in the run folder). A clip already gone when the set is
    pinned is left out instead of failing the job when it is decoded."""
    from service.worker.training_set import SpecClip, TrainingSet

    media = tmp_path / "media"
    media.mkdir()
    clips = []
    for name in ("a" * 64, "b" * 64, "c" * 64):
        (media / name).write_bytes(name.encode())
        clips.append(SpecClip(name[:1], str(media / name), name, 3.0, None))
    (media / ("c" * 64)).unlink()  # deleted between the set's query and its pinning
    with pytest.raises(TrainingDataError, match="deleted"):  # nothing left to validate on
        TrainingSet(clips[:1], clips[2:], last_seq=7).pinned(tmp_path / "run" / "clips")
    pinned = TrainingSet(clips[:1] + clips[2:], clips[1:2], 7).pinned(tmp_path / "run" / "clips")
    assert [c.id for c in pinned.train] == ["a"] and [c.id for c in pinned.val] == ["b"]
    for name in ("a" * 64, "b" * 64):
        (media / name).unlink()  # the items are deleted
    kept = pinned.train + pinned.val
    assert [Path(c.path).read_bytes() for c in kept] == [b"a" * 64, b"b" * 64]
    assert all(Path(c.path).parent == tmp_path / "run" / "clips" for c in kept)


def test_a_training_set_file_is_whole_or_not_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed while it writes spec.json leaves the file it had, never half of
    the new one; a file torn anyway (written before that, a power cut) reads as a
    TrainingSetFileError the worker can act on."""
    from service.worker.training_set import SpecClip

    clips = [SpecClip(str(i), f"/media/{i}", f"{i:064x}", 4.0, VTT) for i in range(4)]
    spec = tmp_path / "spec.json"
    TrainingSet(clips[:2], clips[2:], last_seq=4).write(spec)

    def killed(path: Path, data: str | bytes, *_: object, **__: object) -> None:
        raw = data.encode() if isinstance(data, str) else data
        with open(path, "wb") as f:
            f.write(raw[: len(raw) // 2])
        raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(Path, "write_text", killed)
    monkeypatch.setattr(Path, "write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        TrainingSet(clips[1:], clips[:1], last_seq=9).write(spec)
    monkeypatch.undo()
    assert TrainingSet.read(spec) == TrainingSet(clips[:2], clips[2:], last_seq=4)
    assert [p.name for p in tmp_path.iterdir()] == ["spec.json"]

    from service.worker.training_set import TrainingSetFileError

    spec.write_text(spec.read_text()[:40])
    with pytest.raises(TrainingSetFileError, match=r"spec\.json cannot be read"):
        TrainingSet.read(spec)
    spec.write_text('{"train": []}')
    with pytest.raises(TrainingSetFileError, match="KeyError"):
        TrainingSet.read(spec)
