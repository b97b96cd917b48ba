"""Make an unseen world: plan, draw, sound, speak and encode each clip, in parallel.

Clips are built a few at a time (one ffmpeg per batch, `writer.write_mp4s`) in a pool
of worker processes like the corpus's; world.json is written last, so it always
describes a complete world.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.corpus import narration, sound, writer
from model.corpus.errors import CorpusError
from model.corpus.generate import _pool_context, default_workers
from model.corpus.unseen import picture, timbre
from model.corpus.unseen.catalogue import (
    WORLD_FILE,
    UnseenWorld,
    WorldCombination,
    WorldFile,
)
from model.corpus.unseen.things import (
    DURATION_STEP_S,
    MIN_DURATION_S,
    N_COMBINATIONS,
    QUERIES,
    SENTENCES,
    VOICES,
    WORLD_VERSION,
    ClipPlan,
    Combination,
    Purpose,
    Role,
    clip_rng,
    plan_clip,
    vocabulary,
)
from model.corpus.unseen.things import combinations as world_combinations
from model.transcripts import Segment, Transcript

ENCODE_BATCH = 4  # clips per ffmpeg process (and per worker task)
FOLDERS = ("uploads", "tests")


@dataclass(frozen=True)
class _Task:
    out_dir: str
    seed: int
    clips: tuple[tuple[int, Role, int], ...]  # (combination index, role, clip index)


@dataclass(frozen=True)
class BuiltClip:
    """One clip's media before encoding: what tests and checks look at."""

    plan: ClipPlan
    duration_s: float
    media: writer.ClipMedia  # frames uint8 [T, H, W, 3], audio float32 at sound.SAMPLE_RATE
    coverage: np.ndarray  # the object's coverage [T, H, W]
    effects: np.ndarray  # the sound without the narrator
    cue: Segment


def build_clip(seed: int, combination: Combination, role: Role, index: int, out: Path) -> BuiltClip:
    """Plan, speak, sound and draw one clip (nothing is written)."""
    plan = plan_clip(seed, combination, role, index)
    speech = narration.speak(plan.sentence, plan.voice)  # at sound.SAMPLE_RATE
    start = plan.speech_start_s
    end = round(start + speech.size / sound.SAMPLE_RATE, 3)
    needed = end + plan.tail_s
    duration = max(MIN_DURATION_S, math.ceil(needed / DURATION_STEP_S) * DURATION_STEP_S)
    n_samples = round(duration * sound.SAMPLE_RATE)
    rng = clip_rng(seed, combination.index, role, index, Purpose.SOUND)
    effects = timbre.thing_sound(plan, n_samples, rng)
    audio, _ = sound.mix(effects, [(start, speech)])
    texture = clip_rng(seed, combination.index, role, index, Purpose.TEXTURE)
    frames, coverage = picture.render_clip(plan, duration, texture)
    media = writer.ClipMedia(out / plan.folder / f"{plan.name}.mp4", frames, audio)
    return BuiltClip(plan, duration, media, coverage, effects, Segment(start, end, plan.sentence))


def _file_row(built: BuiltClip) -> WorldFile:
    plan = built.plan
    return WorldFile(
        path=f"{plan.folder}/{plan.name}.mp4",
        transcript=f"{plan.folder}/{plan.name}.vtt",
        combination=plan.combination.id,
        role=plan.role,
        index=plan.index,
        duration_s=built.duration_s,
        narration=plan.sentence,
        background=plan.background,
        motion=plan.motion.path,
        pitch_hz=plan.pitch_hz,
        voice={
            "name": plan.voice.name,
            "words_per_minute": plan.voice.words_per_minute,
            "pitch": plan.voice.pitch,
        },
    )


def build_batch(task: _Task) -> list[WorldFile]:
    """Build, encode and write a few clips; their world.json rows."""
    out = Path(task.out_dir)
    things = world_combinations()
    built = [build_clip(task.seed, things[c], role, i, out) for c, role, i in task.clips]
    writer.write_mp4s([b.media for b in built], picture.FPS, sound.SAMPLE_RATE, sound.FILE_RATE)
    rows = []
    for b in built:
        row = _file_row(b)
        writer.write_text(out / row.transcript, Transcript([b.cue], source="corpus").to_vtt())
        rows.append(row)
    return rows


def make_unseen_world(
    out: str | Path,
    *,
    seed: int = 0,
    combinations: int = N_COMBINATIONS,
    uploads_per_combination: int = 4,
    tests_per_combination: int = 1,
    workers: int | None = None,
    overwrite: bool = False,
) -> UnseenWorld:
    """Generate the first `combinations` things of the unseen world, each with
    `uploads_per_combination` clips to upload and `tests_per_combination` held-out
    query clips, into out/uploads, out/tests and out/world.json.

    Every clip is a pure function of (seed, combination, role, index): a smaller world
    holds the same clips as a larger one with the same seed. `workers` processes build
    the clips (default: one per core); they do not change the result.
    """
    n_things = combinations
    if not 1 <= n_things <= N_COMBINATIONS:
        raise CorpusError(
            f"the unseen world has 1 to {N_COMBINATIONS} combinations, not {n_things}"
        )
    if seed < 0:
        raise CorpusError(f"the seed must be zero or positive (seed={seed})")
    if uploads_per_combination < 0 or tests_per_combination < 0:
        raise CorpusError("the numbers of uploads and tests per combination cannot be negative")
    if uploads_per_combination + tests_per_combination == 0:
        raise CorpusError("a world needs at least one clip per combination")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise CorpusError(f"workers must be at least 1 ({workers})")
    writer.require_ffmpeg()
    narration.require_espeak()
    root = Path(out)
    _prepare(root, overwrite)

    things = world_combinations(n_things)
    clips = [
        (thing.index, role, i)
        for thing in things
        for role, count in (("upload", uploads_per_combination), ("test", tests_per_combination))
        for i in range(count)
    ]
    tasks = [
        _Task(str(root), seed, tuple(clips[start : start + ENCODE_BATCH]))
        for start in range(0, len(clips), ENCODE_BATCH)
    ]
    started = time.perf_counter()
    rows: list[WorldFile] = []
    if workers == 1 or len(tasks) == 1:
        for task in tasks:
            rows += build_batch(task)
    else:
        with _pool_context().Pool(min(workers, len(tasks))) as pool:
            for batch in pool.imap(build_batch, tasks):
                rows += batch
    seconds = time.perf_counter() - started
    if len({r.path for r in rows}) != len(rows):  # 32-bit names: a clash is ~1e-5 at 240
        raise CorpusError("two clips drew the same file name; try another seed")

    entries = tuple(
        WorldCombination(
            id=t.id,
            index=t.index,
            shape=t.shape,
            colour=t.colour,
            sound=t.sound,
            register_hz=t.register_hz,
            queries=t.queries(),
        )
        for t in things
    )
    info = _world_info(seed, entries, rows, uploads_per_combination, tests_per_combination)
    writer.write_text(root / WORLD_FILE, json.dumps(info, indent=2) + "\n")
    return UnseenWorld(root, seed, entries, tuple(rows), info=info, seconds=seconds)


def _prepare(root: Path, overwrite: bool) -> None:
    """Make the folders; refuse to mix two worlds in one folder unless told to replace."""
    if (root / WORLD_FILE).exists() and not overwrite:
        raise CorpusError(
            f"{root} already holds an unseen world ({WORLD_FILE}); choose another folder "
            "or replace it (--force, overwrite=True)"
        )
    if overwrite:  # remove only what a world consists of, never the folder itself
        (root / WORLD_FILE).unlink(missing_ok=True)
        for folder in FOLDERS:
            shutil.rmtree(root / folder, ignore_errors=True)
    try:
        for folder in FOLDERS:
            (root / folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(f"cannot create the world's folders in {root}: {exc}") from exc


def _world_info(
    seed: int,
    entries: tuple[WorldCombination, ...],
    rows: list[WorldFile],
    uploads: int,
    tests: int,
) -> dict[str, Any]:
    return {
        "generator": "model.corpus.unseen",
        "version": WORLD_VERSION,
        "seed": seed,
        "counts": {
            "combinations": len(entries),
            "uploads_per_combination": uploads,
            "tests_per_combination": tests,
            "uploads": sum(1 for r in rows if r.role == "upload"),
            "tests": sum(1 for r in rows if r.role == "test"),
        },
        "video": {
            "width": picture.VIDEO_SIZE,
            "height": picture.VIDEO_SIZE,
            "fps": picture.FPS,
            "codec": "h264",
            "audio_codec": "aac",
            "audio_sample_rate": sound.FILE_RATE,
            "audio_bitrate": writer.AUDIO_BITRATE,
        },
        "vocabulary": vocabulary(),
        "narration": {
            "sentence_templates": list(SENTENCES),
            "voices": list(VOICES),
            "espeak_ng": narration.espeak_version(),
        },
        "query_templates": list(QUERIES),
        "combinations": [e.to_json() for e in entries],
        "files": [r.to_json() for r in rows],
    }
