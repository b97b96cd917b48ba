"""A finished run becomes a model version: its folder under DATA_DIR/models/, with the
speech recogniser's language model rebuilt for it, recorded in the database.

The folder holds what the trainer wrote (weights.safetensors, config.json, vocab.json,
metrics.json with the job's evaluation added, loss.csv/png, val.csv) and asr.lm,
asr.dict and asr-texts.txt: the language model is built from the texts the new version
trained on plus the texts its parent's was built from (its asr-texts.txt), so speech
recognition follows the users' words and keeps the old ones. A parent without that
file (a model made before it existed) lends its language model's words instead, as
vocabulary. The folder is built aside and renamed in; the database row comes last, so
a crash leaves at most an unlisted folder (removed at the next start), never a listed
version without its files.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model.asr.errors import ASRError
from model.asr.language_model import LanguageModel, build_language_model
from model.atomic_files import publish_dir, write_atomic
from model.config import ModelConfig, load_config
from service.model_versions import checkpoint_hash
from service.storage import ModelRow, Storage, VersionServed, now_rfc3339

log = logging.getLogger("service.worker")

RUN_FILES = (
    "weights.safetensors", "config.json", "vocab.json", "metrics.json", "loss.csv",
    "loss.png", "val.csv",
)  # fmt: skip
ASR_TEXTS = "asr-texts.txt"
UNLISTED_GRACE_S = 3600.0
MAX_ASR_TEXTS = 200_000  # newest first: the language model stays quick to build


def version_name(checkpoint: Path) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"trained-{stamp}-{checkpoint_hash(checkpoint)[:8]}"


def _parent_texts(parent_dir: Path) -> tuple[list[str], list[str]]:
    """(texts, extra vocabulary) the parent's language model came from."""
    texts_file = parent_dir / ASR_TEXTS
    if texts_file.is_file():
        return texts_file.read_text(encoding="utf-8").splitlines(), []
    try:
        return [], LanguageModel.load(parent_dir).words
    except ASRError:
        return [], []


def write_language_model(folder: Path, texts: list[str], parent_dir: Path | None) -> dict[str, Any]:
    old_texts, old_words = _parent_texts(parent_dir) if parent_dir else ([], [])
    merged = [t for t in texts if t.strip()] + old_texts
    merged = merged[:MAX_ASR_TEXTS]
    model = build_language_model(merged, old_words)
    model.save(folder)
    (folder / ASR_TEXTS).write_text("\n".join(merged) + "\n", encoding="utf-8")
    return {"texts": len(merged), "new_texts": len(texts), "words": len(model.words)}


def publish_version(
    run_model: Path,
    models_dir: Path,
    storage: Storage,
    *,
    parent: str | None,
    job_id: str,
    texts: list[str],
    evaluation: dict[str, Any],
    compared_with: str | None = None,
    lineage_config: ModelConfig | None = None,
) -> ModelRow:
    """Copy the run's checkpoint into models/<version>/ with its language model and the
    job's evaluation, then record the version (inactive). `lineage_config`: the config
    of the version the job started from; the new one keeps its `train` section."""
    version = version_name(run_model)
    # The speech language model carries on from the version it was compared with (the
    # one that served), also for a model trained from scratch: the words stay the users'.
    lm_parent = compared_with or parent
    parent_dir = models_dir / lm_parent if lm_parent else None
    asr: dict[str, Any] = {}

    def build(tmp: Path) -> None:
        for name in RUN_FILES:
            if (run_model / name).is_file():
                shutil.copy2(run_model / name, tmp / name)
        try:
            asr.update(write_language_model(tmp, texts, parent_dir))
        except ASRError as exc:  # no words to build from: the recogniser's general model
            log.warning("no speech language model for %s: %s", version, exc)
            asr["error"] = str(exc)
        if lineage_config is not None:
            # The trainer saved the job's recipe (a small collection's batch, the
            # fine-tuning rate) as the config's train section; the next job's recipe
            # scales from that section, so it would never grow back (batch 8 for a
            # collection grown to thousands, scratch at the fine-tuning rate). The job's
            # recipe stays in metrics.json and in the job's record.
            saved = load_config(tmp / "config.json")
            kept = saved.replace(train=lineage_config.to_dict()["train"])
            write_atomic(tmp / "config.json", kept.to_json())
        metrics = json.loads((tmp / "metrics.json").read_text())
        metrics["job"] = {
            "id": job_id, "parent": parent, "compared_with": compared_with, **evaluation,
            "asr_lm": asr,
        }  # fmt: skip
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    publish_dir(models_dir / version, build, durable=True)
    folder = models_dir / version
    row = ModelRow(
        version=version,
        created_at=now_rfc3339(),
        config=json.loads((folder / "config.json").read_text()),
        metrics=json.loads((folder / "metrics.json").read_text()),
        parent=parent,
        active=False,
        job_id=job_id,
    )
    storage.models.add(row)
    return row


def remove_unlisted_versions(
    models_dir: Path, storage: Storage, older_than_s: float = UNLISTED_GRACE_S
) -> list[str]:
    """Folders under models/ that no database row names (a crash between publishing a
    folder and recording it; a version deleted while its files were being removed).
    Only folders older than `older_than_s`: a worker may be between the two steps now."""
    listed = {m.version for m in storage.models.all()}
    removed = []
    now = time.time()
    for folder in models_dir.iterdir() if models_dir.is_dir() else []:
        # A hidden `.<version>.*.tmp` is a publish a kill cut short (publish_dir's own
        # cleanup never ran): a whole model's copy, never to be renamed into place.
        unpublished = folder.name.startswith(".") and folder.name.endswith(".tmp")
        if (
            folder.is_dir()
            and (unpublished or not folder.name.startswith("."))
            and folder.name not in listed
            and now - folder.stat().st_mtime > older_than_s
        ):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def prune_old_versions(
    storage: Storage, models_dir: Path, keep: int, replicas_within_s: float
) -> list[str]:
    """Delete the inactive versions made by training jobs past the `keep` newest, with
    their vectors (storage.models.delete) and their folders; the API replicas sweep
    their own indexes of them. Never the active version, the one being switched to, a
    version registered from disk (the starting model), nor one an unfinished job
    trains from or has made. `keep` 0: none is deleted. Returns the versions deleted."""
    if keep <= 0:
        return []
    in_use = {storage.models.target()}
    for job in storage.jobs.unfinished():
        in_use |= {job.data.get("parent"), job.model_version}
    made_by_jobs = [
        m for m in storage.models.all() if m.job_id and not m.active and m.version not in in_use
    ]  # newest first
    deleted = []
    for row in made_by_jobs[keep:]:
        try:
            storage.models.delete(row.version, replicas_within_s)
        except (KeyError, ValueError, VersionServed):  # gone, or asked for, since
            continue
        shutil.rmtree(models_dir / row.version, ignore_errors=True)
        deleted.append(row.version)
    return deleted
