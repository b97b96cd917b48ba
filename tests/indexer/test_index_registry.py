"""A new model version builds in the background while the old one serves, then swaps."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from indexer import (
    ArraySource,
    IndexPolicy,
    IndexRegistry,
    IndexSet,
    NoActiveIndexError,
    RebuildError,
    SourceError,
)
from indexer.synthetic import ClusteredSphere

LAYOUT = {"vat": ["audio"]}
DIMS = {"vat": 32}


class SlowSource(ArraySource):
    """A database that answers slowly, so the build is still running while we look."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.fail = False

    def vectors(self, space: str, modality: str, ids: np.ndarray) -> np.ndarray:
        if self.fail:
            raise SourceError("the database went away")
        time.sleep(self.delay)
        return super().vectors(space, modality, ids)


def test_search_before_open_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NoActiveIndexError, match="open"):
        IndexRegistry(tmp_path).search("vat", "audio", np.zeros((1, 32), np.float32), 5)


def test_rebuild_for_a_new_version_swaps_atomically_while_serving(
    tmp_path: Path, sphere: ClusteredSphere
) -> None:
    policy = IndexPolicy(add_batch=500, tuning_queries=100)
    v1_vectors = sphere.sample(3000, seed=31)
    v2_vectors = ClusteredSphere(32, 60, 0.7, seed=99).sample(3000, seed=32)  # "new model"
    ids = np.arange(3000, dtype=np.int64) + 1
    v1 = ArraySource()
    v1.put("vat", "audio", ids, v1_vectors)
    v2 = SlowSource(delay=0.15)
    v2.put("vat", "audio", ids, v2_vectors)

    registry = IndexRegistry(tmp_path, policy)
    registry.open("v1", LAYOUT, DIMS, v1)
    assert registry.version == "v1"

    stop = threading.Event()
    seen_versions: list[str] = []
    errors: list[BaseException] = []

    def searcher() -> None:
        try:
            while not stop.is_set():
                version = registry.version
                result = registry.search("vat", "audio", v1_vectors[:4], 5)
                assert (result.ids >= 0).all()
                seen_versions.append(str(version))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=searcher)
    thread.start()
    status = registry.start_rebuild("v2", LAYOUT, DIMS, v2)
    assert status.to_version == "v2"
    with pytest.raises(RebuildError, match="already running"):
        registry.start_rebuild("v3", LAYOUT, DIMS, v2)

    # While v2 builds: v1 serves, memory counts both, changes keep flowing.
    deadline = time.time() + 20
    while registry.rebuild_status()["done"] == 0 and time.time() < deadline:  # type: ignore[index]
        time.sleep(0.02)
    memory = registry.memory()
    assert registry.version == "v1"
    assert memory["active_bytes"] > 0 and memory["next_bytes"] > 0
    assert memory["total_bytes"] == memory["active_bytes"] + memory["next_bytes"]
    assert memory["next_planned_bytes"] <= memory["next_budget_bytes"]

    new_ids = np.array([90001, 90002], dtype=np.int64)
    new_v2 = ClusteredSphere(32, 60, 0.7, seed=99).sample(2, seed=33)
    v2.put("vat", "audio", new_ids, new_v2)  # the database first (the truth) ...
    assert registry.add("v2", "vat", "audio", new_ids, new_v2) is False  # ... then the index
    v1.delete(ids[:3])
    v2.delete(ids[:3])
    registry.remove(ids[:3])

    assert registry.wait_rebuild(60)
    # The searcher's next search after the swap reads v2; on a loaded machine the search
    # it was in when the swap happened (with v1) can end after wait_rebuild returns.
    deadline = time.time() + 30
    while thread.is_alive() and seen_versions[-1:] != ["v2"] and time.time() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(10)
    assert not errors, errors
    assert registry.rebuild_status()["state"] == "done"  # type: ignore[index]
    assert registry.version == "v2" and seen_versions[0] == "v1" and seen_versions[-1] == "v2"
    assert registry.active.count("vat", "audio") == 3000 - 3 + 2
    hits = registry.search("vat", "audio", new_v2, 1).ids[:, 0]
    assert (hits == new_ids).all(), "added during the build, caught up before the swap"
    gone = registry.search("vat", "audio", v2_vectors[:3], 10).ids
    assert not np.isin(gone, ids[:3]).any(), "deleted during the build, gone after the swap"
    assert registry.memory()["next_bytes"] == 0

    with pytest.raises(RebuildError, match="already active"):
        registry.start_rebuild("v2", LAYOUT, DIMS, v2)


def test_a_failed_rebuild_leaves_the_old_version_serving(
    tmp_path: Path, sphere: ClusteredSphere
) -> None:
    v1 = ArraySource()
    v1.put("vat", "audio", np.arange(500, dtype=np.int64), sphere.sample(500, seed=34))
    broken = SlowSource(delay=0.0)
    broken.put("vat", "audio", np.arange(500, dtype=np.int64), sphere.sample(500, seed=35))
    broken.fail = True
    registry = IndexRegistry(tmp_path)
    registry.open("v1", LAYOUT, DIMS, v1)
    registry.start_rebuild("v2", LAYOUT, DIMS, broken)
    assert registry.wait_rebuild(30)
    status = registry.rebuild_status()
    assert status is not None and status["state"] == "failed"
    assert "database went away" in str(status["error"])
    assert registry.version == "v1"
    assert registry.search("vat", "audio", sphere.sample(2, seed=36), 3).ids.shape == (2, 3)


def test_a_save_that_fails_after_the_swap_leaves_the_new_version_active_and_says_so(
    tmp_path: Path, sphere: ClusteredSphere, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = np.arange(500, dtype=np.int64)
    v1, v2 = ArraySource(), ArraySource()
    v1.put("vat", "audio", ids, sphere.sample(500, seed=37))
    v2.put("vat", "audio", ids, sphere.sample(500, seed=38))
    registry = IndexRegistry(tmp_path)
    registry.open("v1", LAYOUT, DIMS, v1)

    real_save = IndexSet.save

    def disk_full_after_the_swap(self: IndexSet) -> None:
        if registry.version == "v2":
            raise OSError(28, "No space left on device")
        real_save(self)

    monkeypatch.setattr(IndexSet, "save", disk_full_after_the_swap)
    registry.start_rebuild("v2", LAYOUT, DIMS, v2)
    assert registry.wait_rebuild(30)
    status = registry.rebuild_status()
    assert status is not None and status["state"] == "done"
    assert "saving it failed" in str(status["error"]) and "No space left" in str(status["error"])
    assert registry.version == "v2"  # it serves: adds go to it, not to the old set
    assert registry.search("vat", "audio", sphere.sample(2, seed=39), 3).ids.shape == (2, 3)


def test_a_disk_that_cannot_take_a_save_neither_stops_a_start_nor_a_switch(
    tmp_path: Path, sphere: ClusteredSphere, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening saved the set and let the error out: a full disk stopped the service at
    start-up (every index file sound) and failed each try of a switch, for good."""
    ids = np.arange(500, dtype=np.int64)
    v1, v2 = ArraySource(), ArraySource()
    v1.put("vat", "audio", ids, sphere.sample(500, seed=40))
    v2.put("vat", "audio", ids, sphere.sample(500, seed=41))

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(IndexSet, "save", disk_full)
    registry = IndexRegistry(tmp_path)
    registry.open("v1", LAYOUT, DIMS, v1)
    assert registry.search("vat", "audio", sphere.sample(2, seed=42), 3).ids.shape == (2, 3)
    registry.start_rebuild("v2", LAYOUT, DIMS, v2)
    assert registry.wait_rebuild(30)
    status = registry.rebuild_status()
    assert status is not None and status["state"] == "done", status
    assert registry.version == "v2"


def test_a_rebuild_can_wait_built_for_the_caller_to_swap_it_in(
    tmp_path: Path, sphere: ClusteredSphere
) -> None:
    """The service swaps the query model and the indexes at one instant: the built set
    waits (adds and removes reach it) until swap() is called."""
    ids = np.arange(400, dtype=np.int64)
    v1, v2 = ArraySource(), ArraySource()
    v1.put("vat", "audio", ids, sphere.sample(400, seed=40))
    v2_vectors = sphere.sample(400, seed=41)
    v2.put("vat", "audio", ids, v2_vectors)
    registry = IndexRegistry(tmp_path)
    registry.open("v1", LAYOUT, DIMS, v1)
    registry.start_rebuild("v2", LAYOUT, DIMS, v2, swap=False)
    assert registry.wait_rebuild(30)
    assert registry.rebuild_status()["state"] == "ready"  # type: ignore[index]
    assert registry.version == "v1"
    assert registry.memory()["next_bytes"] > 0
    with pytest.raises(RebuildError, match="waits to be swapped in"):
        registry.start_rebuild("v3", LAYOUT, DIMS, v2)

    added = sphere.sample(1, seed=42)
    v2.put("vat", "audio", np.array([9000]), added)
    assert registry.add("v2", "vat", "audio", np.array([9000]), added) is True
    v2.put("vat", "audio", np.array([9001]), sphere.sample(1, seed=43))  # only in the source
    v1.delete(ids[:2])
    v2.delete(ids[:2])
    registry.remove(ids[:2])
    with pytest.raises(RebuildError, match="no built index set of version 'v3'"):
        registry.swap("v3")

    swapped = registry.swap("v2")
    assert registry.version == "v2" and registry.active is swapped
    assert registry.rebuild_status()["state"] == "done"  # type: ignore[index]
    assert registry.active.count("vat", "audio") == 400 - 2 + 2  # the last catch-up ran
    assert registry.search("vat", "audio", added, 1).ids[0, 0] == 9000
    assert not np.isin(registry.search("vat", "audio", v2_vectors[:2], 10).ids, ids[:2]).any()
    assert (tmp_path / "v2" / "manifest.json").is_file()  # saved once it serves
    with pytest.raises(RebuildError, match="no built index set"):
        registry.swap("v2")


def built_beside(
    tmp_path: Path, sphere: ClusteredSphere, n: int, seed: int
) -> tuple[IndexRegistry, ArraySource]:
    """v1 serving n vectors, v2's set built beside it and waiting to be swapped in."""
    ids = np.arange(n, dtype=np.int64)
    v1, v2 = ArraySource(), ArraySource()
    v1.put("vat", "audio", ids, sphere.sample(n, seed=seed))
    v2.put("vat", "audio", ids, sphere.sample(n, seed=seed + 1))
    registry = IndexRegistry(tmp_path)
    registry.open("v1", LAYOUT, DIMS, v1)
    registry.start_rebuild("v2", LAYOUT, DIMS, v2, swap=False)
    assert registry.wait_rebuild(30)
    return registry, v2


def test_a_swap_can_leave_the_save_to_its_caller(tmp_path: Path, sphere: ClusteredSphere) -> None:
    # The service swaps under its ingestion lock and saves after letting go of it: the
    # save (every index serialised, hashed, fsynced) must not hold uploads up.
    registry, v2 = built_beside(tmp_path, sphere, 200, seed=46)
    manifest = tmp_path / "v2" / "manifest.json"
    built = manifest.read_bytes()  # the rebuild saved what it built
    added = sphere.sample(1, seed=48)
    v2.put("vat", "audio", np.array([5000]), added)  # caught up by the swap
    registry.swap("v2", save=False)
    assert registry.version == "v2" and registry.active.count("vat", "audio") == 201
    assert manifest.read_bytes() == built  # not saved by the swap
    registry.save_swapped()
    assert manifest.read_bytes() != built


def test_a_waiting_set_can_be_discarded_and_the_old_one_serves_on(
    tmp_path: Path, sphere: ClusteredSphere
) -> None:
    registry, v2 = built_beside(tmp_path, sphere, 300, seed=44)
    registry.discard_next()
    status = registry.rebuild_status()
    assert status is not None and status["state"] == "failed" and "discarded" in status["error"]
    assert registry.version == "v1" and registry.memory()["next_bytes"] == 0
    registry.start_rebuild("v2", LAYOUT, DIMS, v2)  # a later switch starts afresh
    assert registry.wait_rebuild(30) and registry.version == "v2"


def test_a_rebuild_called_off_stops_at_its_next_batch_and_the_old_set_serves_on(
    tmp_path: Path, sphere: ClusteredSphere
) -> None:
    """A switch to another version waited for the whole build (minutes on a large
    collection) before it could be called off."""
    v1 = ArraySource()
    v1.put("vat", "audio", np.arange(300, dtype=np.int64), sphere.sample(300, seed=50))
    slow = SlowSource(delay=0.2)  # 40 batches of 50: 8 s if built to the end
    slow.put("vat", "audio", np.arange(2000, dtype=np.int64), sphere.sample(2000, seed=51))
    registry = IndexRegistry(tmp_path, IndexPolicy(add_batch=50, tuning_queries=20))
    registry.open("v1", LAYOUT, DIMS, v1)
    registry.start_rebuild("v2", LAYOUT, DIMS, slow, swap=False)
    time.sleep(0.5)
    registry.cancel_rebuild()
    assert registry.wait_rebuild(30)
    status = registry.rebuild_status()
    assert status is not None and status["state"] == "failed"
    assert status["error"] == "called off before it was built" and status["done"] < 2000
    assert registry.version == "v1" and registry.memory()["next_bytes"] == 0
    with pytest.raises(RebuildError, match="no built index set"):
        registry.swap("v2")
    slow.delay = 0.0
    registry.start_rebuild("v2", LAYOUT, DIMS, slow)  # asked for again: built afresh
    assert registry.wait_rebuild(30) and registry.version == "v2"
