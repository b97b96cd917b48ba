"""Is a worker alive on this host? The container health check of the worker
(`python -m service.worker --check`), read from the heartbeats workers leave in the
database: every round of the idle loop and every beat of a running job."""

from __future__ import annotations

import socket

from service.settings import Settings
from service.storage import Storage


def seen_within_s(settings: Settings) -> float:
    """How long a live worker may stay silent: one lease, and never less than three
    rounds of its idle loop."""
    return max(settings.job_lease_s, 3 * settings.worker_poll_s)


def check_worker(settings: Settings, hostname: str | None = None) -> tuple[bool, str]:
    """(True, who) when a worker of this host was seen recently; else (False, why)."""
    if not settings.shared_database and not settings.db_path.exists():
        return False, f"no database at {settings.db_path} yet (has the worker started?)"
    host = hostname or socket.gethostname()
    within = seen_within_s(settings)
    storage = Storage(settings.database, pool_size=2)
    try:
        live = [n for n in storage.heartbeats.live("worker", within) if n.startswith(host + ":")]
    finally:
        storage.close()
    if not live:
        return False, f"no worker of host {host} was seen in the last {within:.0f} s"
    return True, f"worker {live[0]} alive"
