"""Upload a folder of media to a running service: `python -m service.bulk_upload DIR`.

A media library is imported file by file through the public API (`POST /v1/items`, the
same checks as any upload), a few at once, with a progress bar:

- every video, sound and picture under DIR (by its extension; hidden files skipped;
  linked folders and files that lead out of DIR followed, unless `--no-links`), in path
  order; a transcript beside a file (same name in any case, `.vtt`, `.srt` or `.txt`)
  goes with it, so speech recognition is not needed;
- each file's folder, relative to DIR, becomes its `folder` metadata (searches can then
  be filtered to one folder), besides any `--metadata` given to all;
- a file the server refuses is reported with its reason and the rest go on; a server
  that is busy (503, `Retry-After`) is waited for; one that cannot be reached is tried
  again a few times, then the run stops;
- `--report FILE` (JSON lines, one per file) records what became of each file; run
  again with the same report, the files it records as stored and unchanged since (size
  and modification time) are not sent again: an interrupted import continues where it
  stopped. Bytes already stored under another name are the same item (200). A file
  changed since is sent again, and the item this import added for its earlier bytes is
  deleted once the new bytes are stored and no file the report knows is them
  (`--keep-replaced` keeps it). The report records the folder: given another folder,
  its lines about the first are left alone.

A file that cannot be read (a broken link, removed meanwhile) is refused alone; a name
that is not UTF-8 (an old archive's Latin-1) is sent with its odd bytes replaced. A
server without a model (503 without `Retry-After`) stops the run, as does Ctrl-C, after
the uploads under way.

A server still loading its model is waited for (up to 15 minutes). A file whose same
bytes an earlier run sent and the server still processes is reported `processing`, not
stored, and sent again by the next run.

Exit status: 0 when every file is stored, 1 when some were refused or are still being
processed, 2 when the run could not go on (the server unreachable or without a model, a
key refused, a bad argument), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
from tqdm import tqdm

from model.transcripts import FolderNames, sidecar_of
from service.errors import InvalidRequest
from service.json_fields import check_metadata, json_problem

# What ffmpeg reads that a library is likely to hold; anything else is left alone (the
# server would refuse it by its content anyway, but a folder holds notes and sidecars).
MEDIA_EXTENSIONS = frozenset(
    {
        "mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "mts", "m2ts",
        "flv", "wmv", "asf", "ogv", "3gp",
        "wav", "mp3", "m4a", "aac", "flac", "ogg", "oga", "opus", "wma", "aif", "aiff", "au",
        "jpg", "jpeg", "png", "gif", "webp", "bmp", "tif", "tiff",
    }
)  # fmt: skip
PICTURE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "gif", "webp", "bmp", "tif", "tiff"})
STORED = ("added", "already")
BUSY_TRIES = 30  # busy answers (503, 429, a proxy's 502/504) waited out per file
PROXY_WAIT_S = 2.0  # a proxy's answer without Retry-After: waited this × the try
CONNECT_TRIES = 5  # connection failures per file before the run stops
TIMEOUT_S = 3600.0  # one upload: sending and processing a long file (wait=true)
READY_WAIT_S = 900.0  # a server loading its model and indexes (a large collection's)
READY_POLL_S = 2.0


class ServerUnreachable(RuntimeError):
    """The service could not be reached: the run stops rather than fail every file."""


@dataclass
class Outcome:
    path: str  # relative to the folder
    status: str  # added | already | refused | skipped | processing (not stored yet)
    size: int
    mtime_ns: int
    item_id: str | None = None
    error: str | None = None
    root: str | None = None  # the folder imported (resolved); None in older reports
    # Items of this file's earlier bytes (it changed since a run stored it), deleted
    # once its new bytes are stored and no other file is them; kept here until then.
    replaces: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # those this run deleted


def media_files(root: Path, follow_links: bool = True) -> Iterator[tuple[Path, Path | None]]:
    """Media files under `root`, in path order, each with its transcript beside it (a
    picture has none: notes.txt beside photo.jpg is not what it says). Hidden files and
    folders are skipped. Linked folders that lead out of `root` are followed (a library
    gathered from disks by links), each real folder once; a link to a folder inside it
    is the same files under a second name, left to their own."""
    inside = os.path.realpath(root)
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=follow_links):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        keep = []
        for d in sorted(dirs):
            link = os.path.join(folder, d)
            inner_link = os.path.islink(link) and _within(os.path.realpath(link), inside)
            if not d.startswith(".") and not inner_link:
                keep.append(d)
        dirs[:] = keep
        names = FolderNames.of(files)

        def leads_out(path: Path) -> bool:  # with --no-links: a file linked from elsewhere
            return (
                not follow_links
                and path.is_symlink()
                and not _within(os.path.realpath(path), inside)
            )

        for name in sorted(files):
            path = Path(folder) / name
            extension = path.suffix.lower().lstrip(".")
            if name.startswith(".") or extension not in MEDIA_EXTENSIONS or leads_out(path):
                continue
            sidecar = None if extension in PICTURE_EXTENSIONS else sidecar_of(path, names)
            # A transcript linked from outside (`clip.txt -> ~/.aws/credentials` in a
            # folder from someone else) would become a searchable item's text.
            yield path, None if sidecar is not None and leads_out(sidecar) else sidecar


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def report_lines(path: Path | None) -> dict[tuple[str | None, str], Outcome]:
    """What earlier runs recorded, by (folder, relative path): the last line per file
    wins. One report may be given several folders."""
    if path is None or not path.is_file():
        return {}
    found: dict[tuple[str | None, str], Outcome] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            outcome = Outcome(**json.loads(line))
        except (ValueError, TypeError):
            continue  # a line cut off when the earlier run was killed
        found[(outcome.root, outcome.path)] = outcome
    return found


def read_report(path: Path | None, root: str | None = None) -> dict[str, Outcome]:
    """What earlier runs recorded of the files of `root` (any folder's when None), by
    relative path. Lines of older reports name no folder: they count as any folder's."""
    return {
        o.path: o for (r, _), o in report_lines(path).items() if root is None or r in (None, root)
    }


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(60.0, max(0.5, float(response.headers.get("retry-after", "2"))))
    except ValueError:
        return 2.0


def _text(name: str) -> str:
    """A file or folder name as text the server can store: one that is not UTF-8 (an
    old archive's Latin-1 names) with its undecodable bytes replaced."""
    return os.fsencode(name).decode("utf-8", "replace")


def _is_api_error(response: httpx.Response) -> bool:
    """An error in the API's shape (not a proxy's page in front of it)."""
    try:
        return isinstance(response.json().get("error"), dict)
    except (ValueError, AttributeError):
        return False


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


def upload_one(
    client: httpx.Client,
    root: Path,
    path: Path,
    transcript: Path | None,
    metadata: dict[str, Any],
    folder_key: str | None,
    asr: bool,
) -> Outcome:
    relative = path.relative_to(root).as_posix()
    try:
        stat = path.stat()
    except OSError as exc:  # gone since the folder was read, or a broken link
        return Outcome(relative, "refused", 0, 0, error=f"cannot be read: {exc.strerror}")
    outcome = Outcome(relative, "refused", stat.st_size, stat.st_mtime_ns)
    meta = dict(metadata)
    if folder_key:
        parent = path.parent.relative_to(root).as_posix()
        meta[folder_key] = "" if parent == "." else _text(parent)
    data = {"metadata": json.dumps(meta)} if meta else {}
    if transcript is not None:
        try:
            data["transcript"] = transcript.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            outcome.error = f"its transcript {transcript.name} cannot be read: {exc}"
            return outcome
    busy = connect = 0
    while True:
        try:
            with path.open("rb") as f:
                response = client.post(
                    "/v1/items",
                    params={"wait": "true", "asr": str(asr).lower()},
                    data=data,
                    files={"file": (_text(path.name), f)},
                )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            connect += 1
            if connect >= CONNECT_TRIES:
                raise ServerUnreachable(f"{client.base_url}: {exc}") from None
            time.sleep(2.0 * connect)
            continue
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            # The connection closed while this file was sent: the server may have
            # refused it early (too large) or gone away. Which one, /healthz says.
            if _answers(client):
                outcome.error = f"the server closed the connection while it was sent ({exc})"
                return outcome
            connect += 1
            if connect >= CONNECT_TRIES:
                raise ServerUnreachable(f"{client.base_url}: {exc}") from None
            time.sleep(2.0 * connect)
            continue
        except httpx.TimeoutException as exc:
            outcome.error = f"no answer within {TIMEOUT_S:.0f} s ({type(exc).__name__})"
            return outcome
        except OSError as exc:  # the file went away or cannot be read
            outcome.error = f"cannot be read: {exc}"
            return outcome
        ours = _is_api_error(response)
        if response.status_code == 503 and ours and "retry-after" not in response.headers:
            # Not busy: unable (no model loaded), for this file as for every other.
            raise ServerUnreachable(_error_message(response))
        # Busy (503 with Retry-After), too many requests, or a proxy in front that found
        # no replica ready or gave up waiting (502, 503, 504: the server may still store
        # it; sent again, the same bytes are answered with their item): waited out.
        if response.status_code in (429, 502, 503, 504) and busy < BUSY_TRIES:
            busy += 1
            asked = ours or "retry-after" in response.headers
            time.sleep(_retry_after(response) if asked else min(60.0, PROXY_WAIT_S * busy))
            continue
        if not ours and response.status_code in (502, 503, 504) and not _answers(client):
            # The proxy's answers outlasted every try, and nothing behind it answers:
            # every other file would wait as long.
            raise ServerUnreachable(f"{client.base_url}: {_error_message(response)}")
        if response.status_code in (200, 201):
            body = response.json()
            outcome.item_id = body["id"]
            if body.get("status") == "processing":
                # The same bytes, sent by an earlier run, still processed after the
                # server's wait: not stored yet (its processing may fail), so a run
                # again sends it again rather than skip it as stored.
                outcome.status = "processing"
                outcome.error = "still being processed by the server; run again to check"
                return outcome
            outcome.status = "added" if response.status_code == 201 else "already"
            return outcome
        if response.status_code in (401, 403):
            raise ServerUnreachable(_error_message(response))
        outcome.error = _error_message(response)
        return outcome


def wait_until_ready(client: httpx.Client, progress: bool, wait_s: float = READY_WAIT_S) -> None:
    """A server still loading its model answers every upload 503: each file would wait
    out its BUSY_TRIES and be refused. So wait for /readyz first; one without a model
    that is not starting stops the run (no upload could be taken)."""
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            response = client.get("/readyz", timeout=10.0)
        except httpx.HTTPError:
            return  # the uploads' own connection tries say what is wrong
        if response.status_code != 503:
            return
        message = _error_message(response)
        if not message.startswith("starting"):
            raise ServerUnreachable(message)
        if time.monotonic() > deadline:
            raise ServerUnreachable(f"not ready after {wait_s:.0f} s: {message}")
        if progress and not said:
            print(f"waiting for the service: {message}", file=sys.stderr, flush=True)
            said = True
        time.sleep(READY_POLL_S)


def open_report(path: Path) -> TextIO:
    """The report, opened to add lines; a last line an earlier run left cut off (killed
    mid-write, a full disk) is ended first, or this run's first line would join it and
    both be unreadable."""
    handle = path.open("a+b")
    try:
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
    finally:
        handle.close()
    return path.open("a", encoding="utf-8")


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz", timeout=10.0).status_code == 200
    except httpx.HTTPError:
        return False


def run(
    root: Path,
    url: str,
    *,
    key: str | None = None,
    jobs: int = 2,
    metadata: dict[str, Any] | None = None,
    folder_key: str | None = "folder",
    asr: bool = True,
    report: Path | None = None,
    replace_changed: bool = True,
    follow_links: bool = True,
    progress: bool = True,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Upload every media file under `root`; returns what became of each. With
    `replace_changed`, the item a run with `report` added for a file's earlier bytes is
    deleted once the file, changed since, is stored anew (and no other file is it)."""
    root_id = os.path.realpath(root)
    # What the report says of another folder's files (the same report given another
    # folder) is not about these files, whatever their relative paths.
    reported = report_lines(report)
    earlier = {o.path: o for (r, _), o in reported.items() if r in (None, root_id)}
    todo: list[Path] = []
    transcripts: dict[Path, Path | None] = {}
    replacing: dict[Path, list[str]] = {}  # items of a changed file's earlier bytes
    sizes: dict[Path, int] = {}  # for the progress bar; no second stat that could fail
    outcomes: list[Outcome] = []
    for path, transcript in media_files(root, follow_links):
        before = earlier.get(path.relative_to(root).as_posix())
        transcripts[path] = transcript
        if before is not None and before.root == root_id and replace_changed:
            # Only what this import added: bytes it found stored were someone else's.
            added = [before.item_id] if before.status == "added" and before.item_id else []
            replacing[path] = [*added, *before.replaces]
        try:
            stat = path.stat()
        except OSError:  # a broken link, a folder it may not search: upload_one reports it
            todo.append(path)
            sizes[path] = 0
            continue
        sizes[path] = stat.st_size
        if (
            before is not None
            and before.status in STORED
            and (before.size, before.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
        ):
            outcomes.append(Outcome(**{**asdict(before), "status": "skipped", "deleted": []}))
        else:
            todo.append(path)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    lock = threading.Lock()
    written = open_report(report) if report is not None else None
    sizes = {p: sizes[p] for p in todo}
    bar = tqdm(total=sum(sizes.values()), unit="B", unit_scale=True,
               desc=f"uploading {len(todo)} files", disable=not progress)  # fmt: skip
    stop = threading.Event()

    def record(outcome: Outcome) -> None:
        if written is not None and not written.closed:
            # ASCII: a name that is not UTF-8 is written escaped, read back the same.
            written.write(json.dumps(asdict(outcome)) + "\n")
            written.flush()

    def one(client: httpx.Client, path: Path) -> Outcome | None:
        if stop.is_set():
            return None
        try:
            outcome = upload_one(
                client, root, path, transcripts[path], metadata or {}, folder_key, asr
            )
        except ServerUnreachable:
            stop.set()
            raise
        except Exception as exc:  # this file's own trouble: the others go on
            stat_size = sizes.get(path, 0)
            outcome = Outcome(path.relative_to(root).as_posix(), "refused", stat_size, 0,
                              error=f"{type(exc).__name__}: {exc}")  # fmt: skip
        outcome.root = root_id
        # Kept until the new bytes are stored: a refused file keeps its earlier item.
        outcome.replaces = [i for i in replacing.get(path, []) if i != outcome.item_id]
        with lock:
            outcomes.append(outcome)
            bar.update(sizes.get(path, 0))
            record(outcome)
            if outcome.status == "refused":
                bar.write(f"refused {_text(outcome.path)}: {outcome.error}")
            if on_outcome is not None:
                on_outcome(outcome)
        return outcome

    limits = httpx.Limits(max_connections=jobs)
    timeout = httpx.Timeout(TIMEOUT_S, connect=10.0)
    try:
        with (
            httpx.Client(base_url=url, headers=headers, timeout=timeout, limits=limits) as client,
            ThreadPoolExecutor(max_workers=jobs) as pool,
        ):
            try:  # a wrong address is said at once, not after every file's retries
                client.get("/healthz", timeout=10.0).raise_for_status()
            except httpx.HTTPError as exc:
                raise ServerUnreachable(f"{url}: {exc}") from None
            wait_until_ready(client, progress)
            futures = [pool.submit(one, client, path) for path in todo]
            try:
                for future in futures:
                    future.result()
                if replace_changed:  # every upload has ended: an item no file is can go
                    for outcome in delete_replaced(client, outcomes, earlier, reported, root_id):
                        record(outcome)
            except KeyboardInterrupt:  # Ctrl-C: send nothing more
                stop.set()
                under_way = sum(1 for f in futures if f.running())
                if under_way:
                    print(f"\nstopping: {under_way} uploads under way end first (each is "
                          "stored or not, and reported); Ctrl-C again to abandon them",
                          file=sys.stderr)  # fmt: skip
                try:
                    pool.shutdown(wait=True, cancel_futures=True)
                except KeyboardInterrupt:  # again: abandoned, now (threads blocked in a
                    # read cannot be interrupted; the interpreter's exit would wait on them)
                    with lock:
                        if written is not None:
                            written.close()  # what ended is in it; the rest is not
                    print(
                        f"abandoned: the server may still store the {under_way} files "
                        "under way; run again with the same report",
                        file=sys.stderr,
                    )
                    os._exit(130)
                raise
            except BaseException:  # unreachable: send nothing more
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        bar.close()
        if written is not None:
            written.close()
    return sorted(outcomes, key=lambda o: o.path)


def delete_replaced(
    client: httpx.Client,
    outcomes: list[Outcome],
    earlier: dict[str, Outcome],
    reported: dict[tuple[str | None, str], Outcome],
    root: str,
) -> list[Outcome]:
    """Delete the items of changed files' earlier bytes, where the new bytes are stored
    and no file of this run is those items (a copy kept beside, the change undone); the
    outcomes whose `replaces` this changed. One whose new bytes are not stored keeps its
    old item: a search still finds the file as it was."""
    alive = {o.item_id for o in outcomes if o.item_id and o.status != "refused"}
    # Files the report knows that this run did not find (a disk not mounted, another
    # folder's import): still theirs.
    walked = {o.path for o in outcomes}
    alive |= {
        o.item_id for (r, path), o in reported.items()
        if o.item_id and not (r in (None, root) and path in walked)
    }  # fmt: skip
    changed = []
    for outcome in outcomes:
        if not outcome.replaces or outcome.status not in (*STORED, "skipped"):
            continue
        left = []
        outcome.error = None  # a deletion an earlier run could not make is tried again
        for item_id in outcome.replaces:
            if item_id in alive:
                continue  # another file is these bytes: nothing to delete
            try:
                response = client.delete(f"/v1/items/{item_id}", timeout=60.0)
            except httpx.HTTPError as exc:
                response = None
                outcome.error = f"its earlier item {item_id} could not be deleted: {exc}"
            if response is not None and response.status_code not in (204, 404):
                outcome.error = (
                    f"its earlier item {item_id} could not be deleted: {_error_message(response)}"
                )
            if response is None or response.status_code not in (204, 404):
                left.append(item_id)
            else:
                outcome.deleted.append(item_id)
        outcome.replaces = left
        # The report keeps the stored status (a "skipped" line would be sent again).
        status = earlier[outcome.path].status if outcome.status == "skipped" else outcome.status
        changed.append(Outcome(**{**asdict(outcome), "status": status}))
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="the folder to import (with its subfolders)")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the service's address")
    p.add_argument(
        "--key",
        default=os.environ.get("MMV_API_KEY"),
        help="a write key where the service has keys (default: $MMV_API_KEY)",
    )
    p.add_argument("--jobs", type=int, default=2, help="uploads at once (default 2)")
    p.add_argument("--metadata", default=None, help="a flat JSON object given to every file")
    p.add_argument("--folder-key", default="folder",
                   help="the metadata key holding each file's folder ('' for none)")  # fmt: skip
    p.add_argument("--no-asr", action="store_true", help="no speech recognition")
    p.add_argument("--report", type=Path, default=None,
                   help="JSON lines of what became of each file; files it records as stored "
                   "are not sent again")  # fmt: skip
    p.add_argument("--no-links", action="store_true",
                   help="do not follow links (folders, files, transcripts) that lead out of "
                   "the folder")  # fmt: skip
    p.add_argument("--keep-replaced", action="store_true",
                   help="keep the items of files changed since the report's run (by default "
                   "each is deleted once the file's new bytes are stored)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if not a.folder.is_dir():
        print(f"{a.folder} is not a folder", file=sys.stderr)
        return 2
    if a.jobs < 1:
        print("--jobs must be at least 1", file=sys.stderr)
        return 2
    metadata: dict[str, Any] = {}
    if a.metadata:
        try:
            metadata = json.loads(a.metadata)
        except RecursionError:
            print("--metadata is nested too deeply to read", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"--metadata is not JSON: {json_problem(exc)}", file=sys.stderr)
            return 2
        try:
            check_metadata(metadata)  # the server's own rule, before any file is sent
        except InvalidRequest as exc:
            print(f"--metadata: {exc.message}", file=sys.stderr)
            return 2
    try:
        outcomes = run(
            a.folder, a.url, key=a.key, jobs=a.jobs, metadata=metadata,
            folder_key=a.folder_key or None, asr=not a.no_asr, report=a.report,
            replace_changed=not a.keep_replaced, follow_links=not a.no_links,
            progress=not a.quiet,
        )  # fmt: skip
    except ServerUnreachable as exc:
        print(f"stopped: the service cannot be used: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = " with the same --report" if a.report else " with --report FILE next time"
        print(f"interrupted: the files sent so far are stored; run again{again} to go on",
              file=sys.stderr)  # fmt: skip
        return 130
    kinds = (*STORED, "skipped", "refused", "processing")
    counts = {s: sum(o.status == s for o in outcomes) for s in kinds}
    pending = f", {counts['processing']} still processing" if counts["processing"] else ""
    print(
        f"{len(outcomes)} files: {counts['added']} added, {counts['already']} already stored, "
        f"{counts['skipped']} skipped (stored by an earlier run), {counts['refused']} refused"
        + pending
    )
    deleted = sum(len(o.deleted) for o in outcomes)
    if deleted:
        items = "item" if deleted == 1 else "items"
        print(f"{deleted} {items} of changed files' earlier bytes deleted (the new bytes "
              "are stored)")  # fmt: skip
    left = {o.path for o in outcomes if o.replaces and o.status in (*STORED, "skipped")}
    for o in outcomes:
        if o.status in ("refused", "processing") or o.path in left:
            print(f"  {_text(o.path)}: {o.error}")
    return 1 if counts["refused"] or counts["processing"] or left else 0


if __name__ == "__main__":
    sys.exit(main())
