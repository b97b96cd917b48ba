"""`python -m service.copy_database --to postgresql://...`: move a deployment's database
from SQLite (MMV_DATA_DIR/db.sqlite) to an empty PostgreSQL database, keeping every
item, vector, model version and job (docs/scaling.md, "Moving from SQLite").

Stop the API and the worker first; afterwards start them with MMV_DATABASE_URL set to
the same URL and the same MMV_DATA_DIR (media and model versions stay where they are).
"""

from __future__ import annotations

import argparse
import sys
import time

from service.settings import Settings
from service.storage import Storage, StorageError
from service.storage.copy import copy_database


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.copy_database", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--to", required=True, help="postgresql://user:password@host:5432/db (empty)"
    )
    parser.add_argument(
        "--from", dest="source", help="the SQLite file (default: MMV_DATA_DIR/db.sqlite)"
    )
    args = parser.parse_args(argv)
    source_path = args.source or str(Settings().db_path)
    started = time.perf_counter()
    try:
        source = Storage(source_path)
        target = Storage(args.to)
    except StorageError as exc:
        print(f"cannot copy: {exc}", file=sys.stderr)
        return 2
    last = [0.0]

    def progress(table: str, rows: int) -> None:
        if time.perf_counter() - last[0] > 2:
            last[0] = time.perf_counter()
            print(f"  {table}: {rows} rows", flush=True)

    try:
        copied = copy_database(source, target, progress)
    except StorageError as exc:
        print(f"cannot copy: {exc}", file=sys.stderr)
        return 2
    finally:
        source.close()
        target.close()
    for table, rows in copied.items():
        print(f"{table}: {rows} rows")
    print(f"copied {source_path} into {target.db.name} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
