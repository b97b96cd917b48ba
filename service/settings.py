"""Service settings: one pydantic-settings object read from `MMV_*` environment variables.

docs/service.md lists every setting; keep that table in step with this class.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Scope = Literal["read", "write"]
SCOPES: tuple[str, ...] = ("read", "write")
FFMPEG_MIN_MEMORY_MB = 512  # below this, ordinary files fail to decode


class SettingsError(ValueError):
    """Settings that the service refuses to start with; the message says how to fix them."""


class Settings(BaseSettings):
    # allow_inf_nan=False: `inf` passed every bound and then failed at run time (every
    # upload a 500 with MMV_MAX_UPLOAD_MB=inf, searches waiting forever for companions).
    model_config = SettingsConfigDict(
        env_prefix="MMV_", extra="ignore", frozen=True, allow_inf_nan=False
    )

    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # "KEY:read,OTHER:write"; empty = no auth (allowed only on loopback).
    api_keys: str = ""
    model: str = "models/default"
    demo_clips: int = Field(0, ge=0)
    demo_seed: int = 0

    # Past one machine (docs/scaling.md): empty = SQLite in the data directory;
    # postgresql://user:password@host:5432/db = the database every replica and worker
    # shares (media and model versions then live in a data directory all hosts mount).
    database_url: str = ""
    db_pool_size: int = Field(10, ge=2, le=500)  # connections per process (PostgreSQL)
    # What each host keeps for itself (FAISS index files, the decode cache). Empty: the
    # data directory with SQLite; DATA_DIR/local/<host>-<port> with PostgreSQL.
    local_dir: Path | None = None
    follow_poll_s: float = Field(0.2, gt=0)  # how often a replica reads the change log
    # A replica silent this long is taken as dead: another takes over its uploads.
    replica_timeout_s: float = Field(30.0, ge=3.0)

    # Upload caps.
    max_upload_mb: float = Field(512.0, gt=0)
    # An upload whose body sends nothing for this long is cut off (408): a stalled
    # client must not hold one of the few upload slots for good.
    upload_idle_s: float = Field(60.0, gt=0)
    max_duration_s: float = Field(3600.0, gt=0)
    max_pixels: int = Field(4096 * 4096, gt=0)  # width × height of a frame or image
    max_transcript_kb: int = Field(1024, gt=0)
    max_text_chars: int = Field(10_000, gt=0)

    # Admission: work in flight and free disk (503 `overloaded`, 507 `insufficient_storage`).
    max_uploads_in_flight: int = Field(64, ge=1)  # being received or processed
    max_example_searches_in_flight: int = Field(32, ge=1)  # POST /v1/search/upload
    min_free_disk_mb: float = Field(1024.0, ge=0)  # kept free on the data directory's disk

    # CORS: comma-separated origins ("*" allowed); empty = no CORS headers at all.
    cors_origins: str = ""

    # Ingestion and search.
    # Uniformly spaced windows embedded per file (averaged); 0 = enough to cover the
    # file once, at most 10 (the paper's evaluation protocol).
    embed_windows: int = Field(0, ge=0, le=64)
    workers: int = Field(2, ge=1, le=64)  # processes for decode / ASR / embed of uploads
    asr: bool = True  # speech recognition for uploads with sound and no transcript
    # Limits of the work one upload can cause (docs/service.md "Security"). Each ffmpeg /
    # ffprobe process: CPU seconds (RLIMIT_CPU) and address space (RLIMIT_AS; 0 = none;
    # ffmpeg's own libraries map ~260 MB, a 12-bit 4096² HEVC frame stream ~800 MB).
    ffmpeg_cpu_s: float = Field(120.0, gt=0)
    ffmpeg_memory_mb: int = Field(2048, ge=0)
    # Speech recognition of one track: CPU seconds per second of sound, at least
    # asr_timeout_s; past it (or past max_transcript_kb of text) the item is indexed
    # without a transcript.
    asr_timeout_s: float = Field(60.0, ge=0)
    asr_cpu_per_audio_s: float = Field(1.0, ge=0)
    # Address space of each media worker process (RLIMIT_AS; 0 = none): a decode or
    # recognition that outgrows it fails that upload, not the host.
    media_worker_memory_mb: int = Field(0, ge=0)
    # Moments: a file longer than a segment is also searchable by its stretches, cut every
    # hop (docs/service.md "Moments"). hop <= segment; 0 segment seconds: no segments.
    segment_s: float = Field(10.0, ge=0.0)
    segment_hop_s: float = Field(5.0, gt=0.0)
    search_batch_ms: float = Field(0.0, ge=0.0, le=1000.0)  # extra wait for companions
    search_batch_max: int = Field(64, ge=1)
    search_threads: int = Field(2, ge=1, le=16)  # search batches that may run at once
    device: Literal["auto", "cpu", "cuda"] = "auto"
    index_memory_mb: int = Field(2048, ge=64)  # CPU memory for one version's indexes

    # The training worker (`python -m service.worker`) and switching model versions.
    train_nproc: int = Field(1, ge=1, le=256)  # > 1: training runs under torchrun (DDP)
    # CPU threads of each training process; 0: the host's cores shared among the processes.
    # Fewer leaves cores to an API on the same host (threads that outnumber free cores
    # spin waiting on each other: slower, not faster).
    train_threads: int = Field(0, ge=0, le=1024)
    retrain_after_items: int = Field(0, ge=0)  # 0: off; N: queue a job after N new sounds
    # Inactive versions made by training jobs kept for a roll-back, newest first; older
    # ones are deleted with their vectors and files (each holds its weights, a speech
    # language model and every item's vectors). 0: every one is kept.
    keep_versions: int = Field(5, ge=0)
    job_lease_s: float = Field(30.0, ge=1.0)  # a worker silent this long is taken as dead
    worker_poll_s: float = Field(2.0, gt=0)  # how often an idle worker looks for a job
    switch_poll_s: float = Field(1.0, gt=0)  # how often the API looks for a version to use
    # How often the API embeds ready items that lack a vector of the serving version.
    repair_every_s: float = Field(60.0, gt=0)

    # Operations.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True
    access_log: bool = True
    shutdown_timeout_s: float = Field(60.0, gt=0)  # how long shutdown waits for uploads

    @field_validator("ffmpeg_memory_mb")
    @classmethod
    def _ffmpeg_memory_enough(cls, value: int) -> int:
        if 0 < value < FFMPEG_MIN_MEMORY_MB:
            raise ValueError(
                f"MMV_FFMPEG_MEMORY_MB={value} is too small for ffmpeg to start (its libraries "
                f"alone map ~260 MB): use at least {FFMPEG_MIN_MEMORY_MB}, or 0 for no limit"
            )
        return value

    @field_validator("host")
    @classmethod
    def _host_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("MMV_HOST must not be empty")
        return value.strip()

    @cached_property
    def keys(self) -> dict[str, Scope]:
        """API key -> scope, parsed from `api_keys`."""
        out: dict[str, Scope] = {}
        entries = [e.strip() for e in self.api_keys.split(",") if e.strip()]
        for number, entry in enumerate(entries, 1):
            # Entries are named by their place: a key's own characters never reach a log.
            key, sep, scope = entry.rpartition(":")
            if not sep or not key or scope not in SCOPES:
                raise SettingsError(
                    "MMV_API_KEYS must be comma-separated KEY:read or KEY:write entries; "
                    f"entry {number} of {len(entries)} does not end in :read or :write"
                )
            if not all(32 <= ord(c) <= 126 for c in key) or key != key.strip():
                # An Authorization header carries bytes read as latin-1, trimmed: a key
                # with other characters, or spaces at its ends, could never match.
                raise SettingsError(
                    f"MMV_API_KEYS: entry {number} of {len(entries)} has a character that is "
                    "not printable ASCII, or spaces at an end (a key must be sendable in a "
                    "header)"
                )
            if key in out:
                raise SettingsError(
                    f"MMV_API_KEYS: entry {number} of {len(entries)} repeats an earlier "
                    "entry's key (with which scope was meant?)"
                )
            out[key] = scope  # type: ignore[assignment]
        return out

    @cached_property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def min_free_disk_bytes(self) -> int:
        return int(self.min_free_disk_mb * 1024 * 1024)

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name other than localhost may resolve anywhere

    def check(self) -> None:
        """Refuse unsafe or malformed settings before anything starts."""
        keys = self.keys  # parses, raising SettingsError on bad entries
        if self.segment_s and self.segment_hop_s > self.segment_s:
            raise SettingsError(
                f"MMV_SEGMENT_HOP_S={self.segment_hop_s:g} is longer than MMV_SEGMENT_S="
                f"{self.segment_s:g}: segments would leave gaps; use a hop up to the length"
            )
        if "*" in self.cors_origin_list and not keys:
            raise SettingsError(
                "MMV_CORS_ORIGINS=* lets a page of any site call the API, and without "
                "MMV_API_KEYS it would need no key: any site a local user visits could read "
                "the whole library. Name the origins allowed, or set MMV_API_KEYS too"
            )
        if not self.is_loopback and not keys:
            raise SettingsError(
                f"MMV_HOST={self.host} is reachable from other machines, so API keys are "
                "required: set MMV_API_KEYS=KEY:write (comma-separate more KEY:read/KEY:write "
                "entries), or bind to 127.0.0.1"
            )

    @property
    def shared_database(self) -> bool:
        """PostgreSQL: other API replicas and workers may share the database."""
        return bool(self.database_url)

    @property
    def database(self) -> Path | str:
        """What Storage opens: the PostgreSQL URL, or the SQLite file."""
        return self.database_url or self.db_path

    @cached_property
    def replica_name(self) -> str:
        """This API process among the replicas of one database: host and port."""
        return f"{socket.gethostname()}-{self.port}"

    # Locations inside the data directory; no user input ever becomes a path.
    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def host_dir(self) -> Path:
        """This host's own folder (see local_dir): never shared with another replica."""
        if self.local_dir is not None:
            return self.local_dir
        if self.shared_database:
            return self.data_dir / "local" / self.replica_name
        return self.data_dir

    @property
    def indexes_dir(self) -> Path:
        return self.host_dir / "indexes"

    @property
    def cache_dir(self) -> Path:
        return self.host_dir / "cache"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def tmp_dir(self) -> Path:
        """Uploads being received: beside media/ (a rename moves them into place), one
        folder per replica, so a replica starting clears only its own leftovers."""
        if self.shared_database:
            return self.data_dir / "tmp" / self.replica_name
        return self.data_dir / "tmp"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "db.sqlite"
