"""The unseen world: layout and world.json, real media an upload would be, words the
corpus never uses, determinism, and that colour and pitch register really are in the
pictures and the sound. One small world (6 things × 3 clips) keeps it quick."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from model.config import load_config
from model.corpus import CorpusError, ManifestError, world
from model.corpus.__main__ import main as cli_main
from model.corpus.narration import narration_vocabulary
from model.corpus.unseen import (
    UnseenWorld,
    WorldFile,
    load_unseen_world,
    make_unseen_world,
)
from model.corpus.unseen.build import build_clip
from model.corpus.unseen.things import (
    COLOUR_RGB,
    COLOURS,
    REGISTER_HZ,
    SENTENCES,
    SHAPES,
    combinations,
    vocabulary,
)
from model.corpus.unseen.timbre import TIMBRES, note
from model.media import decode_full, load_windows, read_media_info
from model.transcripts import parse_transcript

SEED = 3
N_THINGS, UPLOADS, TESTS = 6, 2, 1


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> UnseenWorld:
    out = tmp_path_factory.mktemp("unseen")
    return make_unseen_world(
        out,
        seed=SEED,
        combinations=N_THINGS,
        uploads_per_combination=UPLOADS,
        tests_per_combination=TESTS,
        workers=2,
    )


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All frames at the file's own rate and size, and the sound at 16 kHz."""
    clip = decode_full(path, fps=8, size=96, sample_rate=16000)
    assert clip.video is not None and clip.audio is not None
    return clip.video, clip.audio


def test_layout_and_world_json_round_trip(small_world: UnseenWorld) -> None:
    root = small_world.root
    assert [c.index for c in small_world.combinations] == list(range(N_THINGS))
    assert {c.shape for c in small_world.combinations} == set(SHAPES)
    assert len(small_world.uploads) == N_THINGS * UPLOADS
    assert len(small_world.tests) == N_THINGS * TESTS
    for item in small_world.files:
        assert item.path.startswith("uploads/" if item.role == "upload" else "tests/")
        assert (root / item.path).is_file() and (root / item.transcript).is_file()
        assert 4.0 <= item.duration_s <= 6.0
        assert small_world.combination(item.combination).id == item.combination
    # File names do not give the thing away.
    for item, thing in itertools.product(small_world.files, small_world.combinations):
        assert thing.colour not in item.path and thing.shape not in item.path
    for thing in small_world.combinations:
        assert 2 <= len(thing.queries) <= 3 and len(set(thing.queries)) == len(thing.queries)
        for query in thing.queries:
            assert thing.colour in query.split() and thing.shape in query.split()
    assert load_unseen_world(root) == small_world
    assert load_unseen_world(root).info == small_world.info
    assert not [p for p in root.rglob(".*") if p.is_file()]  # no scratch files left


def test_clips_decode_like_uploads_and_transcripts_name_the_thing(
    small_world: UnseenWorld,
) -> None:
    config = load_config("tiny")
    for item in small_world.files:
        path = small_world.path(item)
        info = read_media_info(path)
        assert (info.video_codec, info.audio_codec) == ("h264", "aac")
        assert (info.width, info.height, info.fps) == (96, 96, 8)
        assert info.duration_s == pytest.approx(item.duration_s, abs=0.15)
        windows = load_windows(path, config)
        assert windows.video is not None and windows.audio is not None
        assert windows.video.shape[1:] == (8, 64, 64, 3)
        assert windows.audio.shape[0] == windows.video.shape[0]
        assert float(np.abs(windows.audio).max()) > 0.05
        transcript = parse_transcript((small_world.root / item.transcript).read_text())
        assert transcript and len(transcript.segments) == 1
        cue = transcript.segments[0]
        thing = small_world.combination(item.combination)
        words = cue.text.lower().rstrip(".").split()
        assert thing.colour in words and thing.shape in words
        assert cue.text == item.narration
        assert 0.1 < cue.start < cue.end < item.duration_s


def test_words_that_name_things_are_new_to_the_corpus() -> None:
    corpus_words = set(narration_vocabulary())
    for names in world.vocabularies().values():
        corpus_words |= {w for name in names for w in name.split()}
    ours = vocabulary()
    naming = ours["shape"] + ours["colour"] + ours["sound"] + ours["sound_verbs"]
    assert not set(naming) & corpus_words
    assert not set(ours["background"]) & corpus_words
    # A query names its own thing's colour, shape and sound, and nothing else.
    for thing in combinations():
        own = {thing.colour, thing.shape, thing.sound, *thing.words().values()}
        for query in thing.queries():
            assert set(query.split()) <= own | {"in", "that"}, query
            assert thing.colour in query.split() and thing.shape in query.split()


def test_queries_are_not_narration_sentences() -> None:
    for thing in combinations():
        sentences = {t.format(**thing.words()) for t in SENTENCES}
        assert not set(thing.queries()) & sentences


def test_order_spreads_over_shapes_and_colours() -> None:
    everything = combinations()
    assert len({(c.shape, c.colour) for c in everything}) == len(SHAPES) * len(COLOURS) == 48
    first12 = combinations(12)
    assert {c.shape for c in first12} == set(SHAPES)
    assert {c.colour for c in first12} == set(COLOURS)
    assert combinations(12) == everything[:12]
    with pytest.raises(ValueError):
        combinations(49)


def test_same_seed_same_clip_another_seed_another(small_world: UnseenWorld, tmp_path: Path) -> None:
    """A clip depends on (seed, thing, role, index) only: a one-clip world in one
    process holds the same clip as the small world made by two workers."""
    first = small_world.uploads[0]
    assert (first.combination, first.index) == (small_world.combinations[0].id, 0)
    again = make_unseen_world(
        tmp_path / "again", seed=SEED, combinations=1, uploads_per_combination=1,
        tests_per_combination=0, workers=1,
    )  # fmt: skip
    other = make_unseen_world(
        tmp_path / "other", seed=SEED + 1, combinations=1, uploads_per_combination=1,
        tests_per_combination=0, workers=1,
    )  # fmt: skip
    assert again.files[0] == first
    frames, audio = _decode(small_world.path(first))
    frames_again, audio_again = _decode(again.path(again.files[0]))
    np.testing.assert_array_equal(frames, frames_again)
    np.testing.assert_array_equal(audio, audio_again)
    assert small_world.path(first).read_bytes() == again.path(again.files[0]).read_bytes()
    frames_other, audio_other = _decode(other.path(other.files[0]))
    assert other.files[0].path != first.path
    n = min(len(frames), len(frames_other))
    assert np.abs(frames[:n].astype(int) - frames_other[:n]).mean() > 5
    m = min(audio.size, audio_other.size)
    assert np.abs(audio[:m] - audio_other[:m]).mean() > 0.01


def _nearest(value: np.ndarray, table: dict[str, tuple[float, ...]]) -> str:
    return min(table, key=lambda k: float(np.linalg.norm(value - np.asarray(table[k]))))


def test_colour_is_in_the_picture(small_world: UnseenWorld) -> None:
    """The mean colour of the object's pixels in the decoded video is its colour."""
    means = {}
    for item in small_world.files:
        thing = combinations()[small_world.combination(item.combination).index]
        role = "upload" if item.role == "upload" else "test"
        built = build_clip(SEED, thing, role, item.index, small_world.root)
        assert built.duration_s == item.duration_s
        frames, _ = _decode(small_world.path(item))
        inside = built.coverage[: len(frames)] > 0.999
        # Keep the core of the object: away from its outline and h264's colour bleed.
        core = inside.copy()
        for axis, step in itertools.product((1, 2), (-2, 2)):
            core &= np.roll(inside, step, axis=axis)
        mean = frames[core].mean(axis=0) / 255.0
        assert _nearest(mean, COLOUR_RGB) == thing.colour, (item.path, mean)
        means[thing.colour] = mean
    for a, b in itertools.combinations(means.values(), 2):
        assert np.abs(a - b).max() > 0.2


def _peak_hz(audio: np.ndarray, rate: int, quiet: list[tuple[float, float]]) -> float:
    """The strongest frequency of the sound outside the given (speech) spans."""
    keep = np.ones(audio.size, dtype=bool)
    for start, end in quiet:
        keep[max(0, round(start * rate)) : round(end * rate)] = False
    spectrum = np.abs(np.fft.rfft(audio * keep))
    freqs = np.fft.rfftfreq(audio.size, 1 / rate)
    spectrum[freqs < 60] = 0
    return float(freqs[int(spectrum.argmax())])


def test_register_is_in_the_sound(small_world: UnseenWorld) -> None:
    """Away from the narrator, the sound's strongest frequency is the clip's pitch, in
    its colour's register."""
    peaks: dict[str, list[float]] = {}
    for item in small_world.files:
        thing = small_world.combination(item.combination)
        _, audio = _decode(small_world.path(item))
        cue = parse_transcript((small_world.root / item.transcript).read_text()).segments[0]
        peak = _peak_hz(audio, 16000, [(cue.start - 0.15, cue.end + 0.15)])
        assert peak == pytest.approx(item.pitch_hz, rel=0.05), item.path
        assert min(REGISTER_HZ, key=lambda c: abs(np.log(REGISTER_HZ[c] / peak))) == thing.colour
        peaks.setdefault(thing.colour, []).append(peak)
    assert len(peaks) == N_THINGS  # the six things have six colours, six registers
    for a, b in itertools.combinations(peaks.values(), 2):
        assert abs(np.log(max(a) / min(b))) > 0.2 and abs(np.log(min(a) / max(b))) > 0.2


def _timbre_features(x: np.ndarray, rate: int) -> np.ndarray:
    """Log power in 32 log-spaced bands (100 Hz to 10 kHz), relative to the loudest,
    and the 10 ms loudness envelope over a second."""
    x = np.pad(x[:rate], (0, max(0, rate - x.size)))
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(rate, 1 / rate)
    edges = np.geomspace(100, 10000, 33)
    bands = np.log(
        [power[(freqs >= a) & (freqs < b)].sum() + 1e-6 for a, b in itertools.pairwise(edges)]
    )
    envelope = np.log(np.abs(x[: rate // 100 * 100]).reshape(100, -1).max(axis=1) + 1e-3)
    return np.concatenate([bands - bands.max(), envelope])


def test_every_timbre_peaks_at_its_pitch_and_timbres_differ() -> None:
    rng = np.random.default_rng(0)
    rate = 22050
    for sound, hz in itertools.product(TIMBRES, REGISTER_HZ.values()):
        spectrum = np.abs(np.fft.rfft(note(sound, hz, rng), 4 * rate))
        peak = np.fft.rfftfreq(4 * rate, 1 / rate)[spectrum.argmax()]
        assert peak == pytest.approx(hz, rel=0.03), (sound, hz)

    # In every register, a note is nearer its own timbre's centroid (3 other notes,
    # pitches jittered like clips') than any other timbre's.
    def jittered(sound: str, hz: float) -> np.ndarray:
        return _timbre_features(note(sound, hz * rng.uniform(0.96, 1.04), rng), rate)

    for hz in REGISTER_HZ.values():
        centroids = {s: np.mean([jittered(s, hz) for _ in range(3)], axis=0) for s in TIMBRES}
        for sound in TIMBRES:
            query = jittered(sound, hz)
            nearest = min(centroids, key=lambda s: float(np.linalg.norm(query - centroids[s])))
            assert nearest == sound, (sound, hz)


def test_command_line_then_refuse_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["unseen", "--out", str(tmp_path), "--combinations", "1", "--uploads", "1"]
    assert cli_main([*args, "--tests", "0", "--workers", "1"]) == 0
    assert "wrote 1 uploads and 0 held-out clips of 1 things" in capsys.readouterr().out
    assert cli_main([*args, "--workers", "1"]) == 2  # a world is already there
    assert "already holds an unseen world" in capsys.readouterr().err
    assert cli_main([*args, "--workers", "1", "--force"]) == 0
    assert len(load_unseen_world(tmp_path).files) == 2


def test_bad_requests_raise_typed_errors(tmp_path: Path) -> None:
    for kwargs in ({"combinations": 0}, {"combinations": 49}, {"seed": -1}):
        with pytest.raises(CorpusError):
            make_unseen_world(tmp_path / "bad", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(CorpusError):
        make_unseen_world(tmp_path / "bad", uploads_per_combination=0, tests_per_combination=0)
    with pytest.raises(ManifestError):
        load_unseen_world(tmp_path / "nothing-here")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "world.json").write_text("{not json")
    with pytest.raises(ManifestError):
        load_unseen_world(tmp_path / "broken")


def test_world_file_rows_round_trip() -> None:
    row = WorldFile(
        path="uploads/upload-00000000.mp4", transcript="uploads/upload-00000000.vtt",
        combination="pink-crescent", role="upload", index=0, duration_s=4.0,
        narration="A pink crescent whistles.", background="grid", motion="orbit",
        pitch_hz=201.5, voice={"name": "en-us", "words_per_minute": 160, "pitch": 50},
    )  # fmt: skip
    assert WorldFile.from_json(row.to_json()) == row
