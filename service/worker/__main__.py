"""`python -m service.worker`: the training worker, with the API's MMV_* settings.

Runs beside the API on the same data directory (and model package): it claims queued
training jobs one at a time, trains, evaluates and publishes new model versions, and
asks the API to switch to them (docs/service.md, "The training worker").
"""

from __future__ import annotations

import os

from model.usable_cpus import usable_cpus

# Before torch loads: one thread per CPU the container's quota allows, not per host core.
os.environ.setdefault("OMP_NUM_THREADS", str(usable_cpus()))

import argparse
import signal
import sys

from pydantic import ValidationError

from service.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.worker", description=__doc__)
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 0 when a worker of this host is alive, 1 when not (a container health check)",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except (SettingsError, ValidationError) as exc:
        print(f"mmv-search worker cannot start: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return check(settings)

    from service.logs import setup_logging
    from service.storage import Storage, StorageError
    from service.worker.loop import Worker

    setup_logging(settings.log_level, settings.log_json)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        storage = Storage(settings.database, settings.db_pool_size)
    except StorageError as exc:
        print(f"mmv-search worker cannot start: {exc}", file=sys.stderr)
        return 2
    worker = Worker(settings, storage)

    def on_signal(signum: int, _frame: object) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        worker.run()
    finally:
        storage.close()
    return 0


def check(settings: Settings) -> int:
    from service.storage import StorageError
    from service.worker.health import check_worker

    try:
        alive, why = check_worker(settings)
    except StorageError as exc:
        alive, why = False, str(exc)
    print(why, file=sys.stdout if alive else sys.stderr)
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
