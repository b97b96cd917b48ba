"""Searching by a long stored item: its own segments are no answer, and must not take
the places of other items' moments.

The segment index was asked for max(16, 4·(k+1)) hits with nothing left out. A long
item's own segments are the nearest to its whole-file vector, so they filled those hits
and were then dropped as "the query itself": another long item's matching stretch came
back without its `segment`, at its whole-file score and rank ("find similar" on the web
page, `{"query": {"item_id": …}}`). Real Storage, real FAISS indexes, the real model's
spaces; the vectors are made so that the answer is known.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service import searcher as searcher_module
from service.active_model import ActiveModel
from service.embedder import Embedder, ModelHandle
from service.indexes import open_indexes
from service.prometheus import Metrics
from service.searcher import Searcher, results_json
from service.settings import Settings
from service.storage import Embedding, ModelRow, NewItem, NewSegment, Storage, now_rfc3339

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load(ModelHandle("v1", REPO / "models" / "default"), "cpu")


@pytest.fixture
def world(
    tmp_path: Path, embedder: Embedder
) -> Iterator[tuple[Storage, ThreadPoolExecutor, Embedder]]:
    storage = Storage(tmp_path / "db.sqlite")
    storage.models.add(ModelRow("v1", now_rfc3339(), {}, {}, None, True))
    executor = ThreadPoolExecutor(1)
    try:
        yield storage, executor, embedder
    finally:
        executor.shutdown()
        storage.close()


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def audio(
    storage: Storage, dims: dict[str, int], name: str, whole: np.ndarray,
    segments: list[np.ndarray], rng: np.random.Generator,
) -> str:  # fmt: skip
    """A stored sound: `whole` its va vector, one 10 s segment every 5 s per vector."""
    row = storage.items.create(
        NewItem(kind="audio", modalities=["audio"], content_hash=name, metadata={"album": "talks"})
    )
    other = {s: unit(rng.standard_normal(d)) for s, d in dims.items() if s != "va"}
    vectors = [Embedding("va", "audio", whole)] + [
        Embedding(s, "audio", v) for s, v in other.items()
    ]
    cut = [
        NewSegment(5.0 * n, 5.0 * n + 10, [Embedding("va", "audio", v)]
                   + [Embedding(s, "audio", unit(rng.standard_normal(dims[s]))) for s in other])
        for n, v in enumerate(segments)
    ]  # fmt: skip
    storage.items.mark_ready(
        row.seq, "v1", vectors, ["audio"], None, None, 5.0 * len(segments) + 5, segments=cut
    )
    return row.id


@pytest.mark.parametrize("filtered", [False, True], ids=["unfiltered", "filtered"])
@pytest.mark.parametrize("group", [True, False], ids=["grouped", "every-segment"])
@pytest.mark.parametrize("fetch_max", [2048, 0], ids=["fetched-past", "selector"])
def test_a_long_query_items_own_segments_leave_room_for_other_items_moments(
    world: Any, tmp_path: Path, filtered: bool, group: bool, fetch_max: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Fetched past them (up to 2,048 hits), or left out by a FAISS selector (an item of
    more segments than that): either way the other item's moment comes first."""
    monkeypatch.setattr(searcher_module, "OWN_SEGMENTS_FETCH_MAX", fetch_max)
    # A: 5 minutes, every stretch close to its whole (59 segments); the query. B: one
    # minute, its 40-50 s stretch close to A, the rest and the whole far.
    searcher, a, b, b_segments, u = two_long_sounds(world, tmp_path)
    query = searcher.item_query(a, "audio", 3, {"album": "talks"} if filtered else None, group)
    answer = searcher.run_batch([query])[0]
    assert not isinstance(answer, Exception), answer
    results = json.loads(results_json(answer, 0.0))["results"]

    assert a not in [r["item"]["id"] for r in results]  # never its own answer
    best = results[0]
    assert best["item"]["id"] == b, results
    assert best["segment"] == {"start_s": 40.0, "end_s": 50.0}
    assert best["score"] == pytest.approx(float(b_segments[8] @ u), abs=1e-4)


def two_long_sounds(
    world: Any, tmp_path: Path
) -> tuple[Searcher, str, str, list[np.ndarray], np.ndarray]:
    """A (5 minutes, every stretch near u), B (one minute, its 40-50 s near u) and five
    short sounds far from both, indexed; and u."""
    storage, executor, embedder = world
    dims = {space: embedder.dim(space) for space in embedder.model.spaces}
    rng = np.random.default_rng(0)
    u = unit(rng.standard_normal(dims["va"]))

    def near(spread: float) -> np.ndarray:
        return unit(u + spread * unit(rng.standard_normal(dims["va"])))

    a = audio(storage, dims, "a", u, [near(0.2) for _ in range(59)], rng)
    b_segments = [unit(rng.standard_normal(dims["va"])) for _ in range(11)]
    b_segments[8] = near(0.8)
    b = audio(storage, dims, "b", near(3.0), b_segments, rng)
    for n in range(5):
        audio(storage, dims, f"d{n}", unit(rng.standard_normal(dims["va"])), [], rng)
    registry = open_indexes(
        tmp_path / "indexes", storage, "v1", embedder.index_pairs(), dims, 1 << 30
    )
    model = ActiveModel()
    model.use(embedder, registry)
    searcher = Searcher(storage, model, Metrics(), executor, Settings(data_dir=tmp_path))
    return searcher, a, b, b_segments, u


@pytest.mark.parametrize("filtered", [False, True], ids=["unfiltered", "filtered"])
@pytest.mark.parametrize("fetch_max", [2048, 0], ids=["fetched-past", "selector"])
def test_a_moment_querys_other_stretches_answer_without_crowding_out_other_items(
    world: Any, tmp_path: Path, filtered: bool, fetch_max: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Find similar from here (a moment query): the rest of the same recording is a
    fair answer, but its stretches, the nearest of all, took every place of the fetch
    and B came back at its whole-file score with no segment."""
    monkeypatch.setattr(searcher_module, "OWN_SEGMENTS_FETCH_MAX", fetch_max)
    searcher, a, b, b_segments, _ = two_long_sounds(world, tmp_path)
    query = searcher.item_query(
        a, "audio", 3, {"album": "talks"} if filtered else None, True, 20.0, 30.0
    )
    answer = searcher.run_batch([query])[0]
    assert not isinstance(answer, Exception), answer
    results = {r["item"]["id"]: r for r in json.loads(results_json(answer, 0.0))["results"]}

    assert results[b]["segment"] == {"start_s": 40.0, "end_s": 50.0}, results
    assert query.vector is not None
    assert results[b]["score"] == pytest.approx(float(b_segments[8] @ query.vector), abs=1e-4)
    own = results[a]["segment"]  # another stretch of A, never one overlapping 20-30 s
    assert own is not None and (own["end_s"] <= 20.0 or own["start_s"] >= 30.0), own


def test_a_stretch_past_the_last_segment_is_refused_and_a_tiny_one_is_a_unit_vector(
    world: Any, tmp_path: Path
) -> None:
    """A stretch in the gap between the last segment's end and the stored length (or
    any covering no segment) mixed to a zero vector: every score 0, a random order."""
    searcher, a, _, _, _ = two_long_sounds(world, tmp_path)
    # A is 300 s long and its last segment ends there; pretend the length was rounded up.
    storage = world[0]
    with storage.db.transaction() as conn:
        conn.execute("UPDATE items SET duration_s = 300.0004 WHERE id = ?", (a,))
    past = searcher.run_batch([searcher.item_query(a, "audio", 3, None, True, 300.0002, 305.0)])
    assert isinstance(past[0], searcher_module.InvalidRequest), past
    assert "covers none of its segments" in past[0].message
    tiny = searcher.item_query(a, "audio", 3, None, True, 30.0, 30.0 + 1e-13)
    assert not isinstance(searcher.run_batch([tiny])[0], Exception)
    assert tiny.vector is not None
    assert float(np.linalg.norm(tiny.vector)) == pytest.approx(1.0, abs=1e-5)


def test_a_moment_querys_own_stretches_answer_only_as_the_kind_searched_for(
    world: Any, tmp_path: Path
) -> None:
    """Its other stretches were scored by its own kind's vectors and joined any
    target's answers: a sound came back first among videos (sound against sound), and
    a video's stretches answered "sounds" at a picture-against-picture score."""
    storage, executor, embedder = world
    dims = {space: embedder.dim(space) for space in embedder.model.spaces}
    rng = np.random.default_rng(1)
    u = unit(rng.standard_normal(dims["va"]))

    def far() -> np.ndarray:
        return unit(rng.standard_normal(dims["va"]))

    sound = audio(storage, dims, "s", u, [unit(u + 0.2 * far()) for _ in range(11)], rng)
    film = storage.items.create(
        NewItem(kind="video", modalities=["video", "audio"], content_hash="film")
    )
    whole = [Embedding("va", m, far()) for m in ("video", "audio")] + [
        Embedding(s, m, unit(rng.standard_normal(d)))
        for s, d in dims.items() if s != "va" for m in ("video", "audio")
    ]  # fmt: skip
    pictures = [unit(u + 0.1 * far()) for _ in range(11)]  # near each other, and u
    sounds = [far() for _ in range(11)]
    cut = [
        NewSegment(5.0 * n, 5.0 * n + 10, [Embedding("va", "video", pictures[n]),
                                            Embedding("va", "audio", sounds[n])])
        for n in range(11)
    ]  # fmt: skip
    storage.items.mark_ready(film.seq, "v1", whole, ["video", "audio"], None, None, 60.0,
                             segments=cut)  # fmt: skip
    registry = open_indexes(
        tmp_path / "indexes", storage, "v1", embedder.index_pairs(), dims, 1 << 30
    )
    model = ActiveModel()
    model.use(embedder, registry)
    searcher = Searcher(storage, model, Metrics(), executor, Settings(data_dir=tmp_path))

    def ask(item: str, target: str) -> tuple[Any, list[dict[str, Any]]]:
        query = searcher.item_query(item, target, 3, None, True, 20.0, 30.0)
        answer = searcher.run_batch([query])[0]
        assert not isinstance(answer, Exception), answer
        return query, json.loads(results_json(answer, 0.0))["results"]

    _, videos = ask(sound, "video")
    assert [r["item"]["id"] for r in videos] == [film.id]  # never the sound itself
    query, heard = ask(film.id, "audio")
    mine = {r["item"]["id"]: r for r in heard}[film.id]  # the rest of the film, by its sound
    start = int(mine["segment"]["start_s"] // 5)
    assert mine["score"] == pytest.approx(float(sounds[start] @ query.vector), abs=1e-4)


def test_huge_or_tiny_vectors_have_a_direction_and_an_old_versions_example_is_redone(
    world: Any, tmp_path: Path
) -> None:
    """float32 norms overflowed at 1e20 and underflowed at 1e-25: finite vectors refused
    as "not finite" or "all zeros". An example embedded by the version before a switch,
    whose spaces may differ, raised KeyError (a 500) instead of being embedded again."""
    searcher, _, _, _, _ = two_long_sounds(world, tmp_path)
    d = world[2].dim("va")
    for vector in ([1e20] + [0.0] * (d - 1), [1e-25] * d, [3e38] * d, [1e39] * d):
        query = searcher.vector_query(vector, "va", "audio", 3, None)
        assert query.vector is not None
        assert float(np.linalg.norm(query.vector)) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(searcher_module.InvalidRequest):
        searcher.vector_query([float("inf")] + [0.0] * (d - 1), "va", "audio", 3, None)
    with pytest.raises(searcher_module.VersionChanged):
        searcher.example_query("audio", {"vat": np.ones(4, np.float32)}, "audio", 3, "v0")


@pytest.mark.parametrize("filtered", [False, True], ids=["unfiltered", "filtered"])
def test_a_long_recording_near_the_query_leaves_room_for_other_items_moments(
    world: Any, tmp_path: Path, filtered: bool
) -> None:
    """The segment fetch (max(16, 4k)) was filled by A's 59 stretches, all near the
    query: B's matching stretch was never seen, and B came back at its whole-file score
    with no segment."""
    searcher, _, b, b_segments, u = two_long_sounds(world, tmp_path)
    query = searcher.vector_query(u, "va", "audio", 3, {"album": "talks"} if filtered else None)
    answer = searcher.run_batch([query])[0]
    assert not isinstance(answer, Exception), answer
    results = {r["item"]["id"]: r for r in json.loads(results_json(answer, 0.0))["results"]}
    assert results[b]["segment"] == {"start_s": 40.0, "end_s": 50.0}, results
    assert results[b]["score"] == pytest.approx(float(b_segments[8] @ u), abs=1e-4)


def test_a_moment_of_a_long_item_whose_stretches_are_not_indexed_yet_is_409(
    world: Any, tmp_path: Path
) -> None:
    """It was answered by the whole file, silently: another question's answer."""
    searcher, _, _, _, u = two_long_sounds(world, tmp_path)
    storage = world[0]
    bare = storage.items.create(NewItem(kind="audio", modalities=["audio"], content_hash="bare"))
    dims = {space: world[2].dim(space) for space in world[2].model.spaces}
    rng = np.random.default_rng(2)
    vectors = [Embedding(s, "audio", u if s == "va" else unit(rng.standard_normal(d)))
               for s, d in dims.items()]  # fmt: skip
    storage.items.mark_ready(bare.seq, "v1", vectors, ["audio"], None, None, 60.0)
    [answer] = searcher.run_batch([searcher.item_query(bare.id, "audio", 3, None, True, 20, 30)])
    assert isinstance(answer, searcher_module.Conflict), answer
    assert answer.detail == {"reason": "segments_not_ready"}
    [whole] = searcher.run_batch([searcher.item_query(bare.id, "audio", 3, None)])
    assert not isinstance(whole, Exception), whole  # by the whole item: as ever
