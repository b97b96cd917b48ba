"""Build a corpus: plan each item, draw it, sound it, speak it, encode it — in parallel.

Each item is built from (seed, n, kind, index) alone, by `build_batch` in a pool of
worker processes, a few items per task; rows come back in generation order and the
manifest is written once all items exist, so a manifest always describes a complete
corpus.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from model.corpus import narration, render, sound, writer
from model.corpus.errors import CorpusError
from model.corpus.manifest import CORPUS_INFO, MANIFEST, encode_row
from model.corpus.plan import MISALIGNED_SHARE, UNNARRATED_SHARE, ItemPlan, plan_item
from model.corpus.world import (
    DURATION_STEP_S,
    GENERATOR_VERSION,
    HELD_OUT_PAIRS,
    HELD_OUT_SHARE,
    KINDS,
    Kind,
    Purpose,
    attributes,
    describe,
    item_rng,
    vocabularies,
)
from model.transcripts import Segment, Transcript
from model.usable_cpus import usable_cpus

FOLDERS: dict[Kind, str] = {"clip": "clips", "audio": "audio", "still": "stills"}
SPEECH_START_S = (0.2, 0.7)  # the first sentence starts somewhere in here
SENTENCE_GAP_S = (0.2, 0.45)
TAIL_S = (0.3, 0.7)  # quiet after the last sentence
ENCODE_BATCH = 4  # clips per ffmpeg process (and items per worker task)


@dataclass(frozen=True)
class _Task:
    """Items start..stop-1 of one kind: what one worker builds in one go."""

    out_dir: str
    seed: int
    n_clips: int
    kind: Kind
    start: int
    stop: int


@dataclass
class CorpusSummary:
    """What `make_corpus` wrote and how long it took."""

    out_dir: Path
    seed: int
    counts: dict[str, int]  # items per kind
    splits: dict[str, dict[str, int]]  # split -> kind -> items
    distinct_descriptions: int  # among clips
    narrated: int
    misaligned: int
    seconds: float
    workers: int
    info: dict[str, Any] = field(default_factory=dict, repr=False)  # corpus.json

    @property
    def clips_per_s(self) -> float:
        """Narrated clips per second of wall time (audio and stills included in the time)."""
        return self.counts.get("clip", 0) / self.seconds if self.seconds > 0 else 0.0


class _ProgressBar(tqdm):
    """tqdm without its monitor thread: a lingering thread would make the next pool
    spawn instead of fork (see _pool_context)."""

    monitor_interval = 0


def default_workers() -> int:
    return usable_cpus()


def make_corpus(
    out_dir: str | Path,
    n: int,
    seed: int,
    workers: int | None = None,
    progress: bool = True,
    *,
    n_audio: int | None = None,
    n_stills: int | None = None,
    overwrite: bool = False,
    encode_batch: int = ENCODE_BATCH,
) -> CorpusSummary:
    """Generate `n` narrated clips plus `n_audio` sounds and `n_stills` stills (n // 5 each
    by default) into `out_dir`; the same seed gives the same manifest and transcripts.

    `workers` processes build the items (default: one per core); `encode_batch` clips
    share one ffmpeg process (1 = one ffmpeg per clip). Neither changes the result.
    """
    n_audio = n // 5 if n_audio is None else n_audio
    n_stills = n // 5 if n_stills is None else n_stills
    if n < 1:
        raise CorpusError(f"a corpus needs at least one clip (n={n})")
    if seed < 0:
        raise CorpusError(f"the seed must be zero or positive (seed={seed})")
    if n_audio < 0 or n_stills < 0:
        raise CorpusError("the numbers of audio items and stills cannot be negative")
    workers = default_workers() if workers is None else workers
    if workers < 1 or encode_batch < 1:
        raise CorpusError(
            f"workers and encode_batch must be at least 1 ({workers}, {encode_batch})"
        )
    writer.require_ffmpeg()
    narration.require_espeak()
    out = Path(out_dir)
    _prepare(out, overwrite)

    counts: dict[Kind, int] = {"clip": n, "audio": n_audio, "still": n_stills}
    tasks = [
        _Task(str(out), seed, n, kind, start, min(start + encode_batch, counts[kind]))
        for kind in KINDS
        for start in range(0, counts[kind], encode_batch)
    ]
    total = sum(counts.values())
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with _ProgressBar(total=total, unit="item", desc="corpus", disable=not progress) as bar:
        if workers == 1 or len(tasks) == 1:
            for task in tasks:
                rows += build_batch(task)
                bar.update(task.stop - task.start)
        else:
            with _pool_context().Pool(min(workers, len(tasks))) as pool:
                for batch in pool.imap(build_batch, tasks):
                    rows += batch
                    bar.update(len(batch))
    seconds = time.perf_counter() - started

    writer.write_text(out / MANIFEST, "".join(encode_row(r) + "\n" for r in rows))
    info = corpus_info(seed, counts, rows)
    writer.write_text(out / CORPUS_INFO, json.dumps(info, indent=2) + "\n")
    return CorpusSummary(
        out_dir=out,
        seed=seed,
        counts=dict(counts),
        splits=info["splits"],
        distinct_descriptions=info["distinct_descriptions"]["clip"],
        narrated=info["narration"]["narrated"],
        misaligned=info["narration"]["misaligned"],
        seconds=seconds,
        workers=workers,
        info=info,
    )


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork when this process runs no other Python thread: workers start at once, with
    nothing to import (importing `model` pulls in torch: seconds per worker). With
    threads (the service), spawn: forking a threaded process can copy a held lock."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _prepare(out: Path, overwrite: bool) -> None:
    """Make the folders; refuse to mix two corpora in one folder unless told to replace."""
    existing = [p for p in (out / MANIFEST, out / CORPUS_INFO) if p.exists()]
    if existing and not overwrite:
        raise CorpusError(
            f"{out} already holds a corpus ({existing[0].name}); choose another folder "
            "or replace it (--force, overwrite=True)"
        )
    if overwrite:  # remove only what a corpus consists of, never the folder itself
        for name in (MANIFEST, CORPUS_INFO):
            (out / name).unlink(missing_ok=True)
        for folder in FOLDERS.values():
            shutil.rmtree(out / folder, ignore_errors=True)
    try:
        for folder in FOLDERS.values():
            (out / folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(f"cannot create the corpus folders in {out}: {exc}") from exc


def corpus_info(seed: int, counts: dict[Kind, int], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """corpus.json: everything about the corpus except per-item ground truth."""
    splits: dict[str, dict[str, int]] = {
        s: dict.fromkeys(KINDS, 0) for s in ("train", "val", "test")
    }
    for row in rows:
        splits[row["split"]][row["kind"]] += 1
    clips = [r for r in rows if r["kind"] == "clip"]
    narrated = [r for r in clips if r["narration"] is not None]
    return {
        "generator": "model.corpus",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n": counts["clip"],
        "counts": dict(counts),
        "vocabularies": vocabularies(),
        "held_out_combinations": [{"shape": s, "colour": c} for s, c in HELD_OUT_PAIRS],
        "held_out_share": HELD_OUT_SHARE,
        "splits": splits,
        "distinct_descriptions": {
            kind: len({r["description"] for r in rows if r["kind"] == kind}) for kind in KINDS
        },
        "video": {
            "width": render.VIDEO_SIZE,
            "height": render.VIDEO_SIZE,
            "fps": render.FPS,
            "codec": "h264",
            "audio_codec": "aac",
            "audio_sample_rate": sound.FILE_RATE,
            "audio_bitrate": writer.AUDIO_BITRATE,
        },
        "audio": {"sample_rate": sound.FILE_RATE, "channels": 1, "format": "wav pcm_s16le"},
        "still": {"width": render.STILL_SIZE, "height": render.STILL_SIZE, "format": "png"},
        "narration": {
            "unnarrated_share": UNNARRATED_SHARE,
            "misaligned_share": MISALIGNED_SHARE,
            "narrated": len(narrated),
            "misaligned": sum(1 for r in narrated if not r["aligned"]),
            "voices": list(narration.VOICES),
            "espeak_ng": narration.espeak_version(),
            "vocabulary": narration.narration_vocabulary(),
        },
    }


def build_batch(task: _Task) -> list[dict[str, Any]]:
    """Draw, sound, speak and write items start..stop-1 of one kind; their manifest rows."""
    out = Path(task.out_dir)
    plans = [plan_item(task.seed, task.n_clips, task.kind, i) for i in range(task.start, task.stop)]
    if task.kind == "audio":
        return [_build_audio(plan, out, task.seed) for plan in plans]
    if task.kind == "still":
        return [_build_still(plan, out, task.seed) for plan in plans]
    built = [_build_clip(plan, out, task.seed) for plan in plans]
    writer.write_mp4s(
        [media for _, media, _ in built], render.FPS, sound.SAMPLE_RATE, sound.FILE_RATE
    )
    for row, _, vtt in built:
        if vtt is not None:
            writer.write_text(out / row["transcript"], vtt)
    return [row for row, _, _ in built]


def _rng(plan: ItemPlan, seed: int, purpose: int) -> np.random.Generator:
    return item_rng(seed, plan.kind, plan.index, purpose)


def _row(plan: ItemPlan, path: str, duration_s: float) -> dict[str, Any]:
    """The manifest row without narration; clips fill in their narration after."""
    attrs = attributes(plan.scene)
    attrs["narration_of"] = plan.narration_of
    attrs["voice"] = None
    return {
        "id": plan.id,
        "kind": plan.kind,
        "split": plan.split,
        "path": path,
        "transcript": None,
        "duration_s": duration_s,
        "description": describe(plan.scene, plan.kind),
        "narration": None,
        "aligned": plan.aligned,
        "attributes": attrs,
    }


def place_speech(
    plan: ItemPlan, rng: np.random.Generator
) -> tuple[list[tuple[float, np.ndarray]], list[Segment]]:
    """Speak each sentence and choose where it starts; cues carry the real placement."""
    assert plan.voice is not None
    placed: list[tuple[float, np.ndarray]] = []
    cues: list[Segment] = []
    start = rng.uniform(*SPEECH_START_S)
    for sentence in plan.sentences:
        speech = narration.speak(sentence, plan.voice)  # already at sound.SAMPLE_RATE
        start = round(start, 3)  # cue times are milliseconds: place the voice exactly there
        end = round(start + speech.size / sound.SAMPLE_RATE, 3)
        placed.append((start, speech))
        cues.append(Segment(start, end, sentence))
        start = end + rng.uniform(*SENTENCE_GAP_S)
    return placed, cues


def _build_clip(
    plan: ItemPlan, out: Path, seed: int
) -> tuple[dict[str, Any], writer.ClipMedia, str | None]:
    """The clip's row, its media and its WebVTT text; the caller encodes and writes them."""
    duration = plan.base_duration_s
    placed: list[tuple[float, np.ndarray]] = []
    cues: list[Segment] = []
    if plan.narrated:
        rng = _rng(plan, seed, Purpose.PLACEMENT)
        placed, cues = place_speech(plan, rng)
        needed = cues[-1].end + rng.uniform(*TAIL_S)
        duration = max(duration, math.ceil(needed / DURATION_STEP_S) * DURATION_STEP_S)
    n_samples = round(duration * sound.SAMPLE_RATE)
    effects = sound.scene_sound(plan.scene, n_samples, _rng(plan, seed, Purpose.SOUND))
    audio, _ = sound.mix(effects, placed)
    frames = render.render_frames(plan.scene, duration, _rng(plan, seed, Purpose.RENDER))
    folder = FOLDERS["clip"]
    media = writer.ClipMedia(out / folder / f"{plan.id}.mp4", frames, audio)
    row = _row(plan, f"{folder}/{plan.id}.mp4", duration)
    vtt = None
    if plan.narrated:
        assert plan.voice is not None
        vtt = Transcript(cues, source="corpus").to_vtt()
        row["transcript"] = f"{folder}/{plan.id}.vtt"
        row["narration"] = " ".join(plan.sentences)
        row["attributes"]["voice"] = {
            "name": plan.voice.name,
            "words_per_minute": plan.voice.words_per_minute,
            "pitch": plan.voice.pitch,
        }
    return row, media, vtt


def _build_audio(plan: ItemPlan, out: Path, seed: int) -> dict[str, Any]:
    n_samples = round(plan.base_duration_s * sound.SAMPLE_RATE)
    effects = sound.scene_sound(plan.scene, n_samples, _rng(plan, seed, Purpose.SOUND))
    audio = np.clip(sound.upsample_2x(effects), -1.0, 1.0)
    folder = FOLDERS["audio"]
    writer.write_wav(out / folder / f"{plan.id}.wav", audio, sound.FILE_RATE)
    return _row(plan, f"{folder}/{plan.id}.wav", plan.base_duration_s)


def _build_still(plan: ItemPlan, out: Path, seed: int) -> dict[str, Any]:
    rng = _rng(plan, seed, Purpose.RENDER)
    image = render.render_still(plan.scene, rng.uniform(0.0, plan.base_duration_s), rng)
    folder = FOLDERS["still"]
    writer.write_png(out / folder / f"{plan.id}.png", image)
    return _row(plan, f"{folder}/{plan.id}.png", 0.0)
