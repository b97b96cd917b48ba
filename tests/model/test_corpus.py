"""The narrated-clip corpus: determinism, layout, real media files, sound/picture sync,
narration statistics and the command line. Small corpora (12 clips) keep it quick."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from model.corpus import (
    CorpusError,
    ManifestError,
    iter_manifest,
    make_corpus,
    motion,
    narration,
    read_corpus_info,
    read_manifest,
    render,
    sound,
)
from model.corpus.__main__ import main as cli_main
from model.corpus.generate import _pool_context, place_speech
from model.corpus.manifest import ROW_FIELDS
from model.corpus.plan import plan_item
from model.corpus.world import (
    HELD_OUT_PAIRS,
    Purpose,
    Scene,
    SceneObject,
    describe,
    item_rng,
    scene_from_attributes,
    scene_of,
)
from model.transcripts import read_transcript

N_CLIPS = 12
SEED = 5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus-parallel")
    make_corpus(out, N_CLIPS, SEED, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def corpus_again(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same seed again, in one process: must not matter."""
    out = tmp_path_factory.mktemp("corpus-serial")
    make_corpus(out, N_CLIPS, SEED, workers=1, progress=False)
    return out


def _vtt_files(corpus_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((corpus_dir / "clips").glob("*.vtt"))}


def test_same_seed_gives_same_manifest_and_transcripts(corpus: Path, corpus_again: Path) -> None:
    assert (corpus / "manifest.jsonl").read_bytes() == (
        corpus_again / "manifest.jsonl"
    ).read_bytes()
    assert (corpus / "corpus.json").read_bytes() == (corpus_again / "corpus.json").read_bytes()
    first, second = _vtt_files(corpus), _vtt_files(corpus_again)
    assert first and first == second


def test_another_seed_gives_another_world() -> None:
    ours = [plan_item(SEED, 50, "clip", i) for i in range(50)]
    theirs = [plan_item(SEED + 1, 50, "clip", i) for i in range(50)]
    assert [p.scene for p in ours] != [p.scene for p in theirs]
    assert sum(a.sentences == b.sentences for a, b in zip(ours, theirs, strict=True)) < 5


def test_layout_rows_and_corpus_info(corpus: Path) -> None:
    rows = read_manifest(corpus)
    assert [r["kind"] for r in rows] == ["clip"] * N_CLIPS + ["audio"] * 2 + ["still"] * 2
    for row in rows:
        assert list(row) == list(ROW_FIELDS)
        assert (corpus / row["path"]).is_file()
        assert row["split"] in ("train", "val", "test")
        assert row["description"]
        if row["kind"] == "clip":
            assert row["path"] == f"clips/{row['id']}.mp4"
            assert 4.0 <= row["duration_s"] <= 10.0
        if row["transcript"] is None:
            assert row["narration"] is None and row["aligned"]
    narrated = [r for r in rows if r["transcript"]]
    assert narrated, "a 12-clip corpus has narrated clips"
    info = read_corpus_info(corpus)
    assert info["seed"] == SEED and info["n"] == N_CLIPS
    assert info["counts"] == {"clip": N_CLIPS, "audio": 2, "still": 2}
    assert {tuple(p.values()) for p in info["held_out_combinations"]} == set(HELD_OUT_PAIRS)
    assert sum(info["splits"][s]["clip"] for s in ("train", "val", "test")) == N_CLIPS
    assert set(info["vocabularies"]) == {"shape", "colour", "size", "motion", "background"}
    assert "bouncing" in info["narration"]["vocabulary"]
    assert [r["id"] for r in iter_manifest(corpus, kind="still")] == [
        "still-000000",
        "still-000001",
    ]
    # No scratch or half-written files are left behind.
    assert not [p for p in corpus.rglob(".*") if p.is_file()]


def test_media_files_are_real_h264_aac_wav_png(corpus: Path) -> None:
    from model.media import read_media_info

    for row in read_manifest(corpus):
        info = read_media_info(corpus / row["path"])
        if row["kind"] == "clip":
            assert (info.video_codec, info.audio_codec) == ("h264", "aac")
            assert (info.width, info.height) == (render.VIDEO_SIZE, render.VIDEO_SIZE)
            assert info.sample_rate == sound.FILE_RATE
            assert info.duration_s == pytest.approx(row["duration_s"], abs=0.15)
            assert info.fps == pytest.approx(render.FPS)
        elif row["kind"] == "audio":
            assert info.kind == "audio" and info.sample_rate == sound.FILE_RATE
            assert info.channels == 1
            assert info.duration_s == pytest.approx(row["duration_s"], abs=0.01)
        else:
            assert info.kind == "image"
            assert (info.width, info.height) == (render.STILL_SIZE, render.STILL_SIZE)


def _frame_energy(wave: np.ndarray, rate: int, frame_s: float = 0.02) -> np.ndarray:
    step = round(frame_s * rate)
    frames = wave[: wave.size // step * step].reshape(-1, step)
    return np.log(np.mean(frames**2, axis=1) + 1e-6)


def test_transcript_cues_are_where_the_voice_is(corpus: Path) -> None:
    """The WebVTT cues are where the narrator speaks in the encoded file.

    The narrator's track is rebuilt from the plan (same espeak-ng output, same
    placement); its cues must equal the file's, and the energy of the sound decoded
    from the mp4 must follow that voice with no time shift.
    """
    from model.media import decode_audio

    rate = 16000
    checked = 0
    for row in read_manifest(corpus, kind="clip"):
        if not row["transcript"]:
            continue
        segments = read_transcript(corpus / row["transcript"]).segments
        assert " ".join(s.text for s in segments) == row["narration"]
        assert all(0 <= s.start < s.end <= row["duration_s"] for s in segments)
        assert all(a.end < b.start for a, b in itertools.pairwise(segments))
        index = int(row["id"].split("-")[1])
        plan = plan_item(SEED, N_CLIPS, "clip", index)
        placed, cues = place_speech(plan, item_rng(SEED, "clip", index, Purpose.PLACEMENT))
        times = [t for s in segments for t in (s.start, s.end)]
        assert [t for c in cues for t in (c.start, c.end)] == pytest.approx(times, abs=1e-6)
        voice = np.zeros(round(row["duration_s"] * sound.SAMPLE_RATE))
        for start, speech in placed:
            begin = round(start * sound.SAMPLE_RATE)
            voice[begin : begin + speech.size] = speech[: voice.size - begin]
        expected = _frame_energy(voice, sound.SAMPLE_RATE)
        heard = _frame_energy(decode_audio(corpus / row["path"], sample_rate=rate), rate)
        length = min(expected.size, heard.size) - 20
        lags = range(-10, 11)  # ±200 ms
        scores = [
            np.corrcoef(expected[10 : 10 + length], heard[10 + lag : 10 + lag + length])[0, 1]
            for lag in lags
        ]
        best = int(np.argmax(scores))
        # Effects and noise fill the pauses, so the match is partial, but it peaks at lag 0.
        assert abs(lags[best]) <= 1 and scores[best] > 0.3, (row["id"], lags[best], scores[best])
        assert scores[best] > max(scores[0], scores[-1]) + 0.1
        checked += 1
        if checked == 6:
            break
    assert checked == 6


def test_narration_shares_splits_and_held_out_pairs() -> None:
    """Over 2,000 planned clips (plans only: no pixels, no sound)."""
    n = 2000
    plans = [plan_item(SEED, n, "clip", i) for i in range(n)]
    narrated = [p for p in plans if p.narrated]
    misaligned = [p for p in narrated if not p.aligned]
    assert 0.07 <= 1 - len(narrated) / n <= 0.13
    assert 0.16 <= len(misaligned) / len(narrated) <= 0.24
    assert Counter(p.split for p in plans) == {"train": 1600, "val": 200, "test": 200}
    by_id = {p.id: p for p in plans}
    for plan in misaligned:
        other = by_id[plan.narration_of]
        assert other.split == plan.split and abs(other.index - plan.index) <= 30
    for plan in plans:
        pairs = {(o.shape, o.colour) for o in plan.scene.objects}
        if plan.split == "train":
            assert not pairs & set(HELD_OUT_PAIRS)
    for split in ("val", "test"):
        held = [p for p in plans if p.split == split and p.scene.held_out]
        assert 20 <= len(held) <= 60, split  # HELD_OUT_SHARE = 0.2 of 200
    assert len({describe(p.scene) for p in plans}) >= 1000  # the issue asks for ≥ 100


def test_narrations_name_what_their_scene_shows() -> None:
    n = 300
    plans = {p.id: p for p in (plan_item(SEED, n, "clip", i) for i in range(n))}
    for plan in plans.values():
        if not plan.narrated:
            continue
        text = " ".join(plan.sentences).lower()
        assert plan.narration_of is not None
        described = plans[plan.narration_of].scene
        for obj in described.objects:
            assert any(w in text for w in narration.SHAPE_WORDS[obj.shape]), (text, obj.shape)
            assert any(w in text for w in narration.COLOUR_WORDS[obj.colour]), text
            assert any(w in text for w in narration.SIZE_WORDS[obj.size]), text
            verbs = narration.MOTION_ING[obj.motion] + narration.MOTION_VERB[obj.motion]
            assert any(w.split()[0] in text for w in verbs), (text, obj.motion)
        words = (
            narration.BACKGROUND_NOUNS[described.background]
            + narration.BACKGROUND_ADJECTIVES[described.background]
            + narration.BACKGROUND_PATTERNS[described.background]
        )
        assert any(w in text for w in words), text
        vocabulary = set(narration.narration_vocabulary())
        assert set(text.replace(".", "").split()) <= vocabulary


def _object(motion_name: str, shape: str = "ball", size: str = "big", **kw: float) -> SceneObject:
    values = dict(
        x=0.5, y=0.6, rate=1.2, amplitude=0.3, phase=0.3, direction=1, tilt=0.0, pitch_hz=300.0
    )
    values.update(kw)
    return SceneObject(shape, "red", size, motion_name, **values)  # type: ignore[arg-type]


def _envelope(x: np.ndarray, window_s: float = 0.01) -> np.ndarray:
    step = round(window_s * sound.SAMPLE_RATE)
    frames = x[: x.size // step * step].reshape(-1, step)
    return np.sqrt(np.mean(frames**2, axis=1))


def test_bounce_sounds_at_each_floor_contact() -> None:
    obj = _object("bouncing", shape="cube")
    duration = 5.0
    x = sound.object_sound(obj, round(duration * sound.SAMPLE_RATE), np.random.default_rng(0))
    hits = motion.hit_times(obj, duration)
    assert len(hits) == 6  # 1.2 bounces/s over 5 s, from phase 0.3
    _, y, _ = motion.pose(obj, hits)
    assert np.allclose(y, obj.y)  # a hit is exactly when the object touches the floor
    env = _envelope(x)
    for t in hits:
        k = round(t / 0.01)
        assert env[k : k + 3].max() > 10 * env[max(0, k - 8) : k - 2].max() + 1e-9
    quiet_mid_air = env[round((hits[0] + 0.35) / 0.01)]
    assert quiet_mid_air < 0.05 * env.max()


def test_slide_tick_rate_follows_speed() -> None:
    slow = _object("sliding", amplitude=0.2, rate=0.4)  # 0.32 frame widths/s
    fast = _object("sliding", amplitude=0.2, rate=0.7)  # 0.56 frame widths/s
    n_slow, n_fast = len(motion.hit_times(slow, 5.0)), len(motion.hit_times(fast, 5.0))
    assert n_fast / n_slow == pytest.approx(0.7 / 0.4, rel=0.1)


def test_floating_pitch_follows_height() -> None:
    obj = _object("floating", rate=0.5, amplitude=0.15)
    duration = 4.0
    x = sound.object_sound(obj, round(duration * sound.SAMPLE_RATE), np.random.default_rng(0))
    window = round(0.05 * sound.SAMPLE_RATE)
    pitches, heights = [], []
    for start in range(0, x.size - window, window):
        chunk = x[start : start + window]
        crossings = np.count_nonzero(np.diff(np.signbit(chunk)))  # a ball hums a pure tone
        pitches.append(crossings / 2 / 0.05)
        heights.append(motion.height(obj, np.array([(start + window / 2) / sound.SAMPLE_RATE]))[0])
    assert np.corrcoef(np.log(pitches), heights)[0, 1] > 0.95
    assert max(pitches) / min(pitches) == pytest.approx(2.0, rel=0.15)  # ± half an octave


def test_big_objects_are_louder_and_lower() -> None:
    rng = np.random.default_rng(0)
    n = 3 * sound.SAMPLE_RATE
    for motion_name in ("bouncing", "spinning"):
        big = sound.object_sound(_object(motion_name, size="big"), n, rng)
        small = sound.object_sound(_object(motion_name, size="small"), n, rng)
        assert np.sqrt(np.mean(big**2)) > 1.5 * np.sqrt(np.mean(small**2))
    objects = [o for i in range(200) for o in scene_of(SEED, "clip", i).objects]
    big_pitch = max(o.pitch_hz for o in objects if o.size == "big")
    assert big_pitch < min(o.pitch_hz for o in objects if o.size == "small")


def test_spinning_is_visible_at_4_fps_and_heard_in_step() -> None:
    """A turn between two model frames (4 fps) stays under half the shape's symmetry
    period, so the rotation never aliases; the whirr swells once per symmetry period."""
    spinning = [
        o for i in range(400) for o in scene_of(SEED, "clip", i).objects if o.motion == "spinning"
    ]
    assert len(spinning) > 50
    for obj in spinning:
        degrees_per_frame = obj.rate * 360 / 4
        assert degrees_per_frame < 0.5 * 360 / sound.SYMMETRY[obj.shape], obj
    obj = _object("spinning", shape="cube", rate=0.3, pitch_hz=300.0)
    duration = 5.0
    x = sound.object_sound(obj, round(duration * sound.SAMPLE_RATE), np.random.default_rng(0))
    env = _envelope(x, 0.05)
    peaks = [k for k in range(1, env.size - 1) if env[k] >= env[k - 1] and env[k] > env[k + 1]]
    peaks = [k for k in peaks if env[k] > 0.8 * env.max()]
    assert len(peaks) == pytest.approx(4 * obj.rate * duration, abs=1)  # 6 swells


def test_shapes_sound_different() -> None:
    """Each shape's hit has its own spectrum (timbre), at the same pitch."""
    rng = np.random.default_rng(0)
    spectra = {}
    for shape in ("ball", "cube", "triangle", "star", "ring"):
        hit = sound.hit(shape, 300.0, rng)[: sound.SAMPLE_RATE // 4]
        spectrum = np.abs(np.fft.rfft(hit, 8192))
        spectra[shape] = spectrum / np.linalg.norm(spectrum)
    shapes = list(spectra)
    for i, a in enumerate(shapes):
        for b in shapes[i + 1 :]:
            assert float(spectra[a] @ spectra[b]) < 0.9, (a, b)


def test_narrator_stands_well_above_the_effects() -> None:
    """Voice-to-rest ratio within every cue, on real espeak-ng output, ≥ 10 dB."""
    checked = 0
    for index in range(20):
        plan = plan_item(SEED, 20, "clip", index)
        if not plan.narrated:
            continue
        placed, cues = place_speech(plan, item_rng(SEED, "clip", index, Purpose.PLACEMENT))
        n = round((cues[-1].end + 0.5) * sound.SAMPLE_RATE)
        effects = sound.scene_sound(plan.scene, n, item_rng(SEED, "clip", index, Purpose.SOUND))
        mixed, voice = sound.mix(effects, placed)
        assert np.abs(mixed).max() < 1.0  # nothing clips
        for cue in cues:
            span = slice(round(cue.start * sound.SAMPLE_RATE), round(cue.end * sound.SAMPLE_RATE))
            rest = mixed[span] - voice[span]
            snr_db = 10 * math.log10(np.mean(voice[span] ** 2) / np.mean(rest**2))
            assert snr_db >= 10.0, (plan.id, cue.text, snr_db)
            checked += 1
    assert checked >= 20


def test_objects_are_drawn_where_they_move() -> None:
    obj = _object("floating", shape="cube", rate=0.5, amplitude=0.15)
    scene = Scene(objects=(obj,), background="checkered", background_rate=0.4)
    frames = render.render_frames(scene, 2.0, np.random.default_rng(0))
    assert frames.shape == (16, render.VIDEO_SIZE, render.VIDEO_SIZE, 3)
    xs, ys, _ = motion.pose(obj, np.arange(16) / render.FPS)
    for k in (0, 4, 8, 12):
        red = (frames[k, ..., 0] > 180) & (frames[k, ..., 1] < 80) & (frames[k, ..., 2] < 80)
        rows, cols = np.nonzero(red)
        assert rows.size > 0.5 * (2 * 0.86 * obj.radius * render.VIDEO_SIZE) ** 2
        assert cols.mean() == pytest.approx(xs[k] * render.VIDEO_SIZE, abs=3)
        assert rows.mean() == pytest.approx(ys[k] * render.VIDEO_SIZE, abs=4)


def test_scene_round_trips_through_the_manifest(corpus: Path) -> None:
    for row in read_manifest(corpus, kind="clip"):
        scene = scene_from_attributes(row["attributes"])
        assert [o.shape for o in scene.objects] == [
            o["shape"] for o in row["attributes"]["objects"]
        ]
        assert plan_item(SEED, N_CLIPS, "clip", int(row["id"].split("-")[1])).scene.background == (
            scene.background
        )


def test_sheet_draws_two_pictures(corpus: Path, tmp_path: Path) -> None:
    from model.corpus.sheet import write_sheets

    paths = write_sheets(corpus, tmp_path, clips=3)
    assert [p.name for p in paths] == ["corpus_sheet.png", "corpus_spectrogram.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000


def test_command_line_make_then_refuse_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    args = ["make", "--out", str(out), "--n", "2", "--seed", "3", "--workers", "1"]
    args += ["--audio", "1", "--stills", "1", "--quiet"]
    command = [sys.executable, "-m", "model.corpus", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 2 clip, 1 audio, 1 still" in done.stdout
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 4
    # The refusal, in-process (a second interpreter start would only re-import torch).
    assert cli_main(args) == 2
    assert "already holds a corpus" in capsys.readouterr().err


def test_workers_fork_unless_other_threads_run() -> None:
    """Fork is fast (nothing to import) but unsafe beside other threads: then spawn."""
    # Earlier tests in the same process may leave library threads behind (torch, ASR
    # pools), so the fork case is checked only when this is the sole thread.
    if threading.active_count() == 1:
        assert _pool_context().get_start_method() == "fork"
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert _pool_context().get_start_method() == "spawn"
    finally:
        stop.set()
        other.join()


def test_bad_requests_raise_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="at least one clip"):
        make_corpus(tmp_path / "x", 0, 1, progress=False)
    with pytest.raises(CorpusError, match="seed"):
        make_corpus(tmp_path / "x", 3, -1, progress=False)
    with pytest.raises(ManifestError, match=r"python -m model\.corpus make"):
        read_manifest(tmp_path / "nothing-here")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.jsonl").write_text(json.dumps({"id": "x"}) + "\n")
    with pytest.raises(ManifestError, match="lacks fields"):
        read_manifest(bad)
