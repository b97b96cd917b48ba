"""Persistence: verified loads, rebuilds of missing/corrupt/truncated/stale files, kills."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexer import ArraySource, IndexPolicy, IndexSet
from indexer.store import MANIFEST, IndexStore
from indexer.synthetic import ClusteredSphere

LAYOUT = {"vat": ["audio", "video"]}
DIMS = {"vat": 32}
HERE = Path(__file__).parent


@pytest.fixture
def two_sources(data: tuple[np.ndarray, np.ndarray]) -> ArraySource:
    """vat/audio: 4,000 vectors (IVF under ivf_policy); vat/video: 1,000 (still IVF)."""
    ids, vectors = data
    source = ArraySource()
    source.put("vat", "audio", ids, vectors)
    source.put("vat", "video", ids[:1000], vectors[:1000])
    return source


def _open(
    path: Path,
    source: ArraySource,
    policy: IndexPolicy,
    version: str = "v1",
    dims: dict[str, int] | None = None,
) -> IndexSet:
    return IndexSet.open(path, version, LAYOUT, dims or DIMS, source, policy)


def _actions(index_set: IndexSet) -> dict[str, tuple[str, str]]:
    return {event.index: (event.action, event.reason) for event in index_set.events}


def _file(path: Path, key: str) -> Path:
    manifest = json.loads((path / MANIFEST).read_text())
    return path / manifest["indexes"][key]["file"]


def test_save_and_reload_gives_the_same_answers(
    tmp_path: Path, two_sources: ArraySource, ivf_policy: IndexPolicy, sphere: ClusteredSphere
) -> None:
    first = _open(tmp_path, two_sources, ivf_policy)
    assert {a for a, _ in _actions(first).values()} == {"built"}
    queries = sphere.sample(20, seed=21)
    before = first.search("vat", "audio", queries, 10)
    second = _open(tmp_path, two_sources, ivf_policy)
    assert {a for a, _ in _actions(second).values()} == {"loaded"}
    after = second.search("vat", "audio", queries, 10)
    assert (before.ids == after.ids).all()
    assert np.allclose(before.scores, after.scores)
    assert second.stats()["indexes"]["vat/audio"] == {
        **first.stats()["indexes"]["vat/audio"],
        "device_reason": second.stats()["indexes"]["vat/audio"]["device_reason"],
    }
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(
        [MANIFEST, _file(tmp_path, "vat/audio").name, _file(tmp_path, "vat/video").name]
    )


@pytest.mark.parametrize("damage", ["corrupt", "truncate", "delete", "count", "manifest"])
def test_damaged_files_are_rebuilt_with_the_reason_logged(
    tmp_path: Path,
    two_sources: ArraySource,
    ivf_policy: IndexPolicy,
    sphere: ClusteredSphere,
    damage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = _open(tmp_path, two_sources, ivf_policy)
    queries = sphere.sample(20, seed=22)
    before = first.search("vat", "audio", queries, 10)
    target = _file(tmp_path, "vat/audio")
    if damage == "corrupt":
        raw = bytearray(target.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        target.write_bytes(bytes(raw))
        expected = "sha256"
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])
        expected = "truncated"
    elif damage == "delete":
        target.unlink()
        expected = "missing"
    elif damage == "count":
        manifest = json.loads((tmp_path / MANIFEST).read_text())
        manifest["indexes"]["vat/audio"]["count"] += 1
        (tmp_path / MANIFEST).write_text(json.dumps(manifest))
        expected = "manifest recorded"
    else:
        (tmp_path / MANIFEST).write_text("{not json")
        expected = "unreadable"
    caplog.set_level("WARNING", logger="indexer")
    second = _open(tmp_path, two_sources, ivf_policy)
    action, reason = _actions(second)["vat/audio"]
    assert action == "rebuilt" if damage != "manifest" else action == "built"
    assert expected in reason, reason
    assert any(expected in record.getMessage() for record in caplog.records)
    if damage != "manifest":
        assert _actions(second)["vat/video"][0] == "loaded"  # the other index is untouched
    after = second.search("vat", "audio", queries, 10)
    assert (before.ids == after.ids).all()  # same source, same seed: same index
    assert _actions(_open(tmp_path, two_sources, ivf_policy))["vat/audio"][0] == "loaded"


def test_stale_index_is_patched_from_the_source(
    tmp_path: Path,
    two_sources: ArraySource,
    ivf_policy: IndexPolicy,
    data: tuple[np.ndarray, np.ndarray],
    sphere: ClusteredSphere,
) -> None:
    ids, vectors = data
    _open(tmp_path, two_sources, ivf_policy)
    # After the save, the database moved on: 50 acknowledged adds, 30 deletes.
    new_ids = np.arange(50, dtype=np.int64) + 10
    new_vectors = sphere.sample(50, seed=23)
    two_sources.put("vat", "audio", new_ids, new_vectors)
    deleted = ids[1000:1030]
    two_sources.delete(deleted)
    reopened = _open(tmp_path, two_sources, ivf_policy)
    event = next(e for e in reopened.events if e.index == "vat/audio")
    assert (event.action, event.added, event.removed) == ("patched", 50, 30)
    assert reopened.count("vat", "audio") == 4000 + 50 - 30
    found = reopened.search("vat", "audio", new_vectors, 1).ids[:, 0]
    assert (found == new_ids).all()
    hits = reopened.search("vat", "audio", vectors[1000:1030], 10).ids
    assert not np.isin(hits, deleted).any()
    # the patch was saved: a third open loads cleanly
    assert _actions(_open(tmp_path, two_sources, ivf_policy))["vat/audio"][0] == "loaded"


def test_too_stale_other_version_or_dimension_means_rebuild(
    tmp_path: Path,
    two_sources: ArraySource,
    ivf_policy: IndexPolicy,
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    ids, _ = data
    _open(tmp_path, two_sources, ivf_policy)
    two_sources.delete(ids[:1500])  # 37% of vat/audio
    action, reason = _actions(_open(tmp_path, two_sources, ivf_policy))["vat/audio"]
    assert action == "rebuilt" and "stale" in reason
    action, reason = _actions(_open(tmp_path, two_sources, ivf_policy, "v2"))["vat/audio"]
    assert action == "built" and "'v1', not 'v2'" in reason


def test_leftovers_of_a_crash_mid_save_are_ignored_and_removed(
    tmp_path: Path, two_sources: ArraySource, ivf_policy: IndexPolicy
) -> None:
    _open(tmp_path, two_sources, ivf_policy)
    # What a kill during save() can leave: a half-written temp file, and a complete new
    # index file that no manifest names yet.
    (tmp_path / ".vat-audio.0123.tmp").write_bytes(b"half an index")
    orphan = tmp_path / "vat-audio.00000000deadbeef.faiss"
    orphan.write_bytes(_file(tmp_path, "vat/audio").read_bytes())
    reopened = _open(tmp_path, two_sources, ivf_policy)
    assert {a for a, _ in _actions(reopened).values()} == {"loaded"}
    assert not orphan.exists() and not (tmp_path / ".vat-audio.0123.tmp").exists()


def test_a_save_whose_manifest_fails_is_written_again_by_the_next_save(
    tmp_path: Path,
    two_sources: ArraySource,
    ivf_policy: IndexPolicy,
    sphere: ClusteredSphere,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index_set = _open(tmp_path, two_sources, ivf_policy)
    new_ids, new_vectors = np.array([3, 5], dtype=np.int64), sphere.sample(2, seed=24)
    two_sources.put("vat", "audio", new_ids, new_vectors)
    index_set.add("vat", "audio", new_ids, new_vectors)
    real_write_manifest = IndexStore.write_manifest

    def disk_full(self: IndexStore, manifest: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(IndexStore, "write_manifest", disk_full)
    with pytest.raises(OSError):
        index_set.save()
    # The index file was written, but no manifest names it: the index is still unsaved.
    monkeypatch.setattr(IndexStore, "write_manifest", real_write_manifest)
    index_set.save()
    assert json.loads((tmp_path / MANIFEST).read_text())["indexes"]["vat/audio"]["count"] == 4002
    reopened = _open(tmp_path, two_sources, ivf_policy)
    assert _actions(reopened)["vat/audio"][0] == "loaded"  # not patched at every start
    assert (reopened.search("vat", "audio", new_vectors, 1).ids[:, 0] == new_ids).all()


def _load_crash_writer():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("crash_writer", HERE / "crash_writer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(line: str, acked: set[int], deleted: set[int]) -> None:
    """Update what a client knows from one line of crash_writer's output."""
    kind, item = line.split()
    if kind == "ACK":
        acked.add(int(item))
    elif kind == "TRY":  # a delete was asked: no longer promised to exist
        acked.discard(int(item))
    else:
        deleted.add(int(item))


def test_sigkill_at_any_moment_loses_no_acknowledged_item_and_revives_no_deleted_one(
    tmp_path: Path,
) -> None:
    seed = 1
    crash_writer = _load_crash_writer()
    db, directory = tmp_path / "db.sqlite", tmp_path / "indexes" / "v1"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(HERE.parents[1]), os.environ.get("PYTHONPATH")])
        ),
        "OMP_NUM_THREADS": "1",
    }
    acked: set[int] = set()
    deleted: set[int] = set()
    rng = np.random.default_rng(seed)
    for round_ in range(3):  # each round restarts on what the kill before left
        child = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "crash_writer.py"),
                str(db),
                str(directory),
                str(seed * 10 + round_),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
        stop_after = int(rng.integers(40, 120))
        for _ in range(stop_after):
            _record(child.stdout.readline(), acked, deleted)
        time.sleep(float(rng.uniform(0, 0.02)))  # land anywhere, saves included
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        # Read the rest through the same buffered file: communicate() would read the raw
        # pipe and drop lines readline() had already buffered.
        # The text after the last newline is a line the kill cut short (with
        # PYTHONUNBUFFERED=1 each piece of a print is its own write): never acknowledged.
        *rest, _cut = child.stdout.read().split("\n")
        child.stdout.close()
        for line in rest:  # whole lines printed before the kill were acknowledged too
            if line.strip():
                _record(line, acked, deleted)
        assert child.returncode == -signal.SIGKILL

    source = crash_writer.SqliteSource(str(db))
    truth = set(source.ids("vat", "audio").tolist())
    assert acked <= truth and not (deleted & truth)
    index_set = IndexSet.open(
        directory, "v1", crash_writer.LAYOUT, {"vat": crash_writer.DIM}, source
    )
    live = sorted(truth)
    assert index_set.count("vat", "audio") == len(live)
    vectors = source.vectors("vat", "audio", np.array(live, dtype=np.int64))
    found = index_set.search("vat", "audio", vectors, 3).ids
    assert (found[:, 0] == np.array(live)).all(), "every stored item finds itself"
    assert not np.isin(found, np.array(sorted(deleted), dtype=np.int64)).any()
