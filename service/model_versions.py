"""Model versions in the data directory: register the starting model, find the active one.

At first start the checkpoint named by MMV_MODEL (a folder written by
`model.save_model`) is copied into DATA_DIR/models/<version>/ and recorded in the
database as the active version. The version name is the folder's name plus a short
hash of its files, so the same checkpoint always gets the same version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from model.atomic_files import publish_dir
from service.embedder import ModelHandle
from service.storage import ModelRow, Storage, now_rfc3339

log = logging.getLogger("service.models")

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"


class ModelVersionError(RuntimeError):
    """The starting model cannot be registered (a missing or broken checkpoint folder)."""


def checkpoint_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".-")
    return cleaned or "model"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def register_starting_model(source: Path, models_dir: Path, storage: Storage) -> ModelRow:
    """Copy `source` into models_dir/<version>/ (atomically) and record it as active."""
    if not (source / CONFIG_FILE).is_file():
        raise ModelVersionError(
            f"{source} is not a model checkpoint folder (it has no {CONFIG_FILE})"
        )
    version = f"{_safe_name(source.resolve().name)}-{checkpoint_hash(source)[:10]}"
    target = models_dir / version
    if not target.is_dir():

        def copy(tmp: Path) -> None:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            # copytree gives the folder the source's time: an old folder no row names
            # yet is what a training worker's tidy removes (service/worker/versions.py).
            os.utime(tmp)

        publish_dir(target, copy, durable=True)
    existing = storage.models.get(version)
    if existing is None:
        storage.models.add(
            ModelRow(
                version=version,
                created_at=now_rfc3339(),
                config=_read_json(target / CONFIG_FILE),
                metrics=_read_json(target / METRICS_FILE),
                parent=None,
                active=True,
            )
        )
    else:
        storage.models.activate(version)
    log.info("registered model %s from %s", version, source)
    return storage.models.get(version)  # type: ignore[return-value]


def active_model_version(
    model_setting: str, models_dir: Path, storage: Storage, shared: bool = False
) -> ModelHandle | None:
    """The active version, registering MMV_MODEL first when the data directory has none.

    None when there is no registered model and MMV_MODEL does not exist: the service
    then serves without a model (readyz 503, `no_model` errors) and says so in its log.
    With a `shared` database (several hosts), an active version whose folder this host
    cannot see is ModelVersionError: registering MMV_MODEL would make it the active
    version of every replica (a volume not mounted yet must not switch the cluster).
    """
    row = storage.models.active()
    if row is not None and (models_dir / row.version).is_dir():
        return ModelHandle(row.version, models_dir / row.version)
    if row is not None and shared:
        raise ModelVersionError(
            f"the active model version {row.version} has no folder at "
            f"{models_dir / row.version}: is the shared data directory mounted on this host "
            "(MMV_DATA_DIR)? Refusing to register MMV_MODEL over it for every replica"
        )
    if row is not None:
        log.error("the active model version %s has no folder at %s; registering MMV_MODEL=%s "
                  "instead", row.version, models_dir / row.version, model_setting)  # fmt: skip
    source = Path(model_setting)
    if not source.exists():
        log.error(
            "no model: MMV_MODEL=%s does not exist and the data directory has no model; "
            "train one (make model) or point MMV_MODEL at a checkpoint folder",
            model_setting,
        )
        return None
    row = register_starting_model(source, models_dir, storage)
    return ModelHandle(row.version, models_dir / row.version)
