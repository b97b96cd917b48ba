"""Activating a model version that a concurrent DELETE removes.

POST /v1/models/{v}/activate checked that the version exists, then asked for the switch
in a transaction of its own: a DELETE of the version in between made `request_switch`
raise KeyError, answered 500. It is 404 `not_found`, as the DELETE's own race is.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from service.errors import NotFound
from service.routes.models import activate_model
from service.storage import ModelRow, Storage


def test_activating_a_version_deleted_after_the_check_is_404(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage(tmp_path / "db.sqlite")
    try:
        storage.models.add(ModelRow("a", "2026-12-06T00:00:00Z", {}, {}, None, True))
        storage.models.add(ModelRow("b", "2026-12-06T00:00:01Z", {}, {}, "a", False))
        read = storage.models.get

        def read_then_deleted(version: str) -> ModelRow | None:
            row = read(version)
            storage.models.delete(version)  # the other request's DELETE, just after the check
            return row

        monkeypatch.setattr(storage.models, "get", read_then_deleted)
        switch = SimpleNamespace(check=lambda: pytest.fail("no switch to start"))
        with pytest.raises(NotFound):
            activate_model("b", None, storage, switch)  # type: ignore[arg-type]
        assert storage.models.target() is None
    finally:
        storage.close()


def test_a_version_this_replica_still_serves_is_not_deleted_through_it(tmp_path: Path) -> None:
    """Another replica finished the switch to `b`; this one still builds b's indexes
    and serves `a`. The check of which replicas serve `a` left out the one asked, so a
    DELETE sent to it removed the vectors and files it was serving with."""
    from service.errors import Conflict
    from service.routes.models import delete_model
    from service.settings import Settings

    storage = Storage(tmp_path / "db.sqlite")
    try:
        storage.models.add(ModelRow("a", "2026-12-06T00:00:00Z", {}, {}, None, True))
        storage.models.add(ModelRow("b", "2026-12-06T00:00:01Z", {}, {}, "a", False))
        storage.models.activate("b")  # the other replica's switch, complete
        here = SimpleNamespace(serving=SimpleNamespace(version="a"))
        settings = Settings(data_dir=tmp_path)
        with pytest.raises(Conflict, match="still serves on this replica"):
            delete_model("a", None, storage, settings, here)  # type: ignore[arg-type]
        assert storage.models.get("a") is not None
        done = SimpleNamespace(serving=SimpleNamespace(version="b"))  # its switch is done
        assert delete_model("a", None, storage, settings, done).status_code == 204  # type: ignore[arg-type]
        assert storage.models.get("a") is None
    finally:
        storage.close()


def test_deleting_the_active_version_says_to_activate_another(tmp_path: Path) -> None:
    """The check for a version this replica still serves came first, and told a
    single replica it was 'switching to the active version' when nothing switched."""
    from service.errors import Conflict
    from service.routes.models import delete_model
    from service.settings import Settings

    storage = Storage(tmp_path / "db.sqlite")
    try:
        storage.models.add(ModelRow("a", "2026-12-06T00:00:00Z", {}, {}, None, True))
        here = SimpleNamespace(serving=SimpleNamespace(version="a"))
        with pytest.raises(Conflict, match="activate another version first"):
            delete_model("a", None, storage, Settings(data_dir=tmp_path), here)  # type: ignore[arg-type]
    finally:
        storage.close()
