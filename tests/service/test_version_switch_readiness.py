"""What /readyz says at the end of a switch of model versions.

The switch saves the swapped-in index set after it lets uploads go on again; while it
saved, /readyz already named the new version as the one serving and still reported the
switch under way (stage `swapping`): a client waiting for "serves v2, no switch running"
saw the two disagree for as long as the save took (CI caught it in
test_an_api_killed_mid_switch_serves_one_whole_version_and_finishes_it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import service.runtime as runtime_module
from service.prometheus import Metrics
from service.routes.ops import readiness
from service.runtime import Runtime
from service.settings import Settings
from service.storage import Embedding, ModelRow, NewItem, VersionServed, now_rfc3339
from service.version_switch import SwitchStatus

REPO = Path(__file__).resolve().parents[2]


def test_readyz_reports_no_switch_once_the_new_version_serves(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", asr=False, workers=1)
    runtime = Runtime(settings, Metrics())
    try:
        for version in ("v1", "v2"):  # the same weights under two names: a real switch
            (settings.models_dir / version).symlink_to(REPO / "models" / "default")
            runtime.storage.models.add(
                ModelRow(version, now_rfc3339(), {}, {}, None, version == "v1")
            )
        runtime.load_model_and_indexes()
        embedder = runtime.model.embedder
        assert embedder is not None and embedder.version == "v1"
        by_space = embedder.embed_texts(["a teal crescent"])
        runtime.storage.items.create(
            NewItem(kind="text", modalities=["text"], text="a teal crescent", status="ready"),
            "v1", [Embedding(space, "text", vectors[0]) for space, vectors in by_space.items()],
        )  # fmt: skip

        registry = runtime.model.indexes
        assert registry is not None
        seen: list[dict[str, Any]] = []
        save = registry.save_swapped

        def save_swapped() -> None:
            seen.append(readiness(runtime.model, runtime.switch).model_dump())
            save()

        registry.save_swapped = save_swapped  # type: ignore[method-assign]
        runtime.storage.models.request_switch("v2")
        runtime.switch.check()
        assert runtime.switch.wait(120)
        status = runtime.switch.status
        assert status is not None and status.stage == "done", status
        assert len(seen) == 1
        assert seen[0]["model_version"] == "v2" and seen[0]["reindex"] is None, seen[0]
        # Its heartbeat says what it serves: the version a DELETE must leave alone.
        runtime.beat()
        serving = (
            runtime.storage.db.connection()
            .execute("SELECT serving FROM heartbeats WHERE name = ?", (settings.replica_name,))
            .fetchone()
        )
        assert serving[0] == "v2"
    finally:
        runtime.media_pool.shutdown()
        runtime.storage.close()


def test_readyz_says_why_a_switch_failed_until_it_is_no_longer_wanted(tmp_path: Path) -> None:
    """A failed try read `reindex: null`, as if no switch waited: the reason (items that
    could not be embedded, a disk full) was in the log only."""
    settings = Settings(data_dir=tmp_path / "data", asr=False, workers=1)
    runtime = Runtime(settings, Metrics())
    try:
        (settings.models_dir / "v1").symlink_to(REPO / "models" / "default")
        runtime.storage.models.add(ModelRow("v1", now_rfc3339(), {}, {}, None, True))
        runtime.load_model_and_indexes()
        why = "UnembeddedItems: 65 items could not be embedded"
        runtime.switch.status = SwitchStatus("v2", "failed", error=why)
        reindex = readiness(runtime.model, runtime.switch).reindex
        assert reindex is not None and reindex.to_version == "v2"
        assert reindex.stage == "failed" and reindex.error == why
        runtime.switch.check()  # v1 is what the database wants now (v2 rolled back)
        assert readiness(runtime.model, runtime.switch).reindex is None
    finally:
        runtime.media_pool.shutdown()
        runtime.storage.close()


def test_the_version_a_starting_replica_loads_cannot_be_deleted_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A starting replica's heartbeat named no version until its indexes were open
    (minutes on a large collection): the version it was loading could be deleted, its
    vectors with it, and the replica then served partial results."""
    settings = Settings(data_dir=tmp_path / "data", asr=False, workers=1)
    runtime = Runtime(settings, Metrics())
    try:
        for version in ("v1", "v2"):
            (settings.models_dir / version).symlink_to(REPO / "models" / "default")
            runtime.storage.models.add(
                ModelRow(version, now_rfc3339(), {}, {}, None, version == "v1")
            )
        real_open = runtime_module.open_indexes
        refused: list[BaseException] = []

        def open_while_another_replica_switches(*args: Any, **kw: Any) -> Any:
            runtime.storage.models.activate("v2")  # another replica finished a switch
            with pytest.raises(VersionServed) as refusal:
                runtime.storage.models.delete("v1", settings.replica_timeout_s, "other")
            refused.append(refusal.value)
            return real_open(*args, **kw)

        monkeypatch.setattr(runtime_module, "open_indexes", open_while_another_replica_switches)
        runtime.load_model_and_indexes()
        assert refused and runtime.model.serving is not None
        assert runtime.model.serving.version == "v1" and runtime.model.loading is None
    finally:
        runtime.media_pool.shutdown()
        runtime.storage.close()


def test_index_folders_of_versions_deleted_elsewhere_are_swept(tmp_path: Path) -> None:
    """Each replica keeps its own indexes; a version deleted through another one left its
    folder here for good (up to the index memory budget each)."""
    settings = Settings(data_dir=tmp_path / "data", asr=False, workers=1)
    runtime = Runtime(settings, Metrics())
    try:
        runtime.storage.models.add(ModelRow("v1", now_rfc3339(), {}, {}, None, True))
        for name in ("v1", "deleted-elsewhere", ".building"):
            (settings.indexes_dir / name).mkdir()
        assert runtime.sweep_index_folders() == ["deleted-elsewhere"]
        left = sorted(p.name for p in settings.indexes_dir.iterdir())
        assert left == [".building", "v1"]
    finally:
        runtime.media_pool.shutdown()
