"""The traffic of the load test (test_reliability_load.py): 32 clients, each a thread
with its own keep-alive connection, mixing every kind of request the API serves, and
the ledger of what the server acknowledged, to check at the end that nothing is lost.

Every answer is recorded: its kind, status, error code and latency. A 4xx is only
acceptable where it is designed (`designed` names why: an item another client deleted
is 404, an item still processing cannot be a query: 409); anything else, and every
5xx or dropped connection, is kept with its request and answer for the failure message.
The load stays within the server's admission limits, so no 503 `overloaded` is designed:
at most 32 uploads or searches by example at once, plus MAX_PENDING uploads answered 202
and still processing (MMV_MAX_UPLOADS_IN_FLIGHT is 64, example searches 32).
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

WORDS = ("red", "blue", "green", "ball", "cup", "dog", "moon", "bounces", "falls", "barks",
         "drum", "rolls", "wooden", "floor", "small")  # fmt: skip
TARGETS = ("video", "audio", "image", "text")
# What each kind of item can be queried against by id (a pair with no shared space is a
# 422 by design, and not what this load is about).
ITEM_TARGETS = {"video": ("video", "audio"), "audio": ("video", "audio"),
                "image": ("video", "image"), "text": ("text", "audio")}  # fmt: skip
GROUPS = 8  # metadata {"group": "gN"}: what filtered searches ask for
MAX_PENDING = 8  # wait=false uploads still processing at once (clients poll them)
REQUEST_TIMEOUT_S = 180.0  # an upload with wait=true queues behind every other one


# -- unique media: every upload is new bytes, so it is a new item ---------------------------
def unique_bytes(base: bytes, suffix: str, tag: str) -> bytes:
    """`base` made unique by `tag` and still the same media: an mp4 gets a trailing
    `free` box, a png a tEXt chunk, a wav a few changed samples."""
    mark = tag.encode()
    if suffix == ".mp4":
        return base + struct.pack(">I", 8 + len(mark)) + b"free" + mark
    if suffix == ".png":
        body = b"tEXt" + b"Comment\x00" + mark
        chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
        return base[:-12] + chunk + base[-12:]  # before IEND
    if suffix == ".wav":
        start = base.index(b"data") + 8 + 400
        noise = hashlib.sha256(mark).digest()[:16]  # 8 samples of 16 bits: a faint click
        return base[:start] + noise + base[start + len(noise) :]
    raise ValueError(suffix)


@dataclass(frozen=True)
class MediaKind:
    name: str
    path: Path
    modalities: tuple[str, ...]

    @property
    def suffix(self) -> str:
        return self.path.suffix


# -- what the server acknowledged ---------------------------------------------------------
@dataclass
class Upload:
    id: str
    tag: str
    modalities: tuple[str, ...]
    sha256: str | None  # None: a text item
    accepted: int  # 201, or 202 (wait=false)
    seed: bool = False  # a training clip of the set-up: never deleted


class Ledger:
    """Every acknowledged upload and every delete, shared by the clients (one lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.uploads: dict[str, Upload] = {}
        self.ids: list[str] = []
        self.deletable: list[str] = []
        self.pending: set[str] = set()  # wait=false uploads not yet seen ready
        self.deleting: set[str] = set()  # a DELETE was sent: 404s for it are designed
        self.deleted: set[str] = set()  # answered 204

    def add(self, upload: Upload) -> None:
        with self.lock:
            self.uploads[upload.id] = upload
            self.ids.append(upload.id)
            if not upload.seed:
                self.deletable.append(upload.id)
            if upload.accepted == 202:
                self.pending.add(upload.id)

    def pick(self, rng: random.Random, with_media: bool = False) -> Upload | None:
        """Any acknowledged upload, deleted ones included (their 404 is by design)."""
        with self.lock:
            if not self.ids:
                return None
            for _ in range(20):
                upload = self.uploads[rng.choice(self.ids)]
                if not with_media or upload.sha256 is not None:
                    return upload
            return None

    def pick_pending(self, rng: random.Random) -> Upload | None:
        with self.lock:
            return self.uploads[rng.choice(sorted(self.pending))] if self.pending else None

    def take_deletable(self, rng: random.Random) -> Upload | None:
        with self.lock:
            if not self.deletable:
                return None
            upload = self.uploads[self.deletable.pop(rng.randrange(len(self.deletable)))]
            self.deleting.add(upload.id)
            return upload

    def is_deleting(self, item_id: str) -> bool:
        with self.lock:
            return item_id in self.deleting

    def live(self) -> list[Upload]:
        with self.lock:
            return [u for i, u in self.uploads.items() if i not in self.deleting]

    def gone(self) -> list[Upload]:
        with self.lock:
            return [self.uploads[i] for i in sorted(self.deleted)]


# -- what the clients saw ----------------------------------------------------------------
@dataclass
class Call:
    kind: str
    status: int  # 0: no answer (a transport error)
    seconds: float
    code: str | None = None  # the error code of a >= 400 answer
    designed: str | None = None  # why a 4xx is expected here
    request: str = ""
    response: str = ""
    at: float = field(default_factory=time.time)  # when it ended (to find it in the logs)


@dataclass
class Tally:
    calls: list[Call] = field(default_factory=list)
    problems: list[Call] = field(default_factory=list)  # 5xx, undesigned 4xx, no answer
    anomalies: list[str] = field(default_factory=list)  # wrong bytes, a failed item, ...
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, call: Call) -> None:
        bad = call.status == 0 or call.status >= 500 or (call.status >= 400 and not call.designed)
        with self.lock:
            self.calls.append(call)
            if bad:
                self.problems.append(call)

    def anomaly(self, what: str) -> None:
        with self.lock:
            self.anomalies.append(what)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per kind: requests, 2xx/4xx/5xx, no answer, the 4xx by reason, p50/p99 (ms)."""
        by_kind: dict[str, list[Call]] = defaultdict(list)
        with self.lock:
            for call in self.calls:
                by_kind[call.kind].append(call)
                by_kind["all"].append(call)
        table = {}
        for kind, calls in sorted(by_kind.items(), key=lambda kv: (kv[0] == "all", kv[0])):
            ms = sorted(c.seconds * 1000 for c in calls)
            reasons: dict[str, int] = defaultdict(int)
            for c in calls:
                if 400 <= c.status < 500:
                    reasons[f"{c.status} {c.code}: {c.designed or 'NOT DESIGNED'}"] += 1
            table[kind] = {
                "requests": len(calls),
                "2xx": sum(200 <= c.status < 300 for c in calls),
                "4xx": sum(400 <= c.status < 500 for c in calls),
                "5xx": sum(c.status >= 500 for c in calls),
                "no_answer": sum(c.status == 0 for c in calls),
                "p50_ms": round(percentile(ms, 0.50), 1),
                "p99_ms": round(percentile(ms, 0.99), 1),
                "4xx_reasons": dict(reasons),
            }
        return table


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def error_code(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


# -- one client ----------------------------------------------------------------------------
@dataclass
class Mix:
    """The weights of each kind of request (relative)."""

    weights: dict[str, int] = field(
        default_factory=lambda: {
            "search_text_get": 24,
            "search_text_filter": 6,
            "search_vector": 8,
            "search_item": 8,
            "search_example": 2,
            "upload_wait": 4,
            "upload_nowait": 3,
            "text_item": 3,
            "delete": 4,
            "get_item": 8,
            "download": 6,
            "list_items": 2,
            "readyz": 2,
        }
    )


class Client(threading.Thread):
    """One of the load's clients: a random mix of requests until `stop` is set."""

    def __init__(
        self,
        number: int,
        url: str,
        ledger: Ledger,
        tally: Tally,
        stop: threading.Event,
        go: threading.Event,
        media: list[MediaKind],
        dims: dict[str, int],
        mix: Mix,
        seed: int,
    ) -> None:
        super().__init__(name=f"load-client-{number}", daemon=True)
        self.number, self.url, self.ledger, self.tally = number, url, ledger, tally
        self.stop, self.go, self.media, self.dims = stop, go, media, dims
        self.rng = random.Random(seed * 1000 + number)
        self.kinds = list(mix.weights)
        self.weights = [mix.weights[k] for k in self.kinds]
        self.bases = {m.name: m.path.read_bytes() for m in media}
        self.made = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT_S) as http:
                self.http = http
                while not self.stop.is_set():
                    if not self.go.wait(0.5):  # cleared during a lull
                        continue
                    kind = self.rng.choices(self.kinds, self.weights)[0]
                    getattr(self, kind)()
        except BaseException as exc:  # a bug of the test itself: the test reports it
            self.error = exc

    # -- sending and recording -----------------------------------------------------------
    def send(
        self,
        kind: str,
        describe: str,
        request: Callable[[], httpx.Response],
        designed: Callable[[httpx.Response], str | None] = lambda r: None,
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = request()
        except httpx.HTTPError as exc:
            seconds = time.perf_counter() - started
            self.tally.add(Call(kind, 0, seconds, request=describe, response=repr(exc)))
            return None
        seconds = time.perf_counter() - started
        code = error_code(response) if response.status_code >= 400 else None
        why = designed(response) if 400 <= response.status_code < 500 else None
        self.tally.add(
            Call(kind, response.status_code, seconds, code, why, describe,
                 response.text[:2000] if response.status_code >= 400 else "")
        )  # fmt: skip
        return response

    def gone_by_design(self, item_id: str) -> Callable[[httpx.Response], str | None]:
        """A 404 for an item this load deleted (or is deleting) is the right answer."""

        def why(r: httpx.Response) -> str | None:
            if r.status_code == 404 and self.ledger.is_deleting(item_id):
                return "an item deleted by a client"
            return None

        return why

    def new_tag(self) -> str:
        self.made += 1
        return f"c{self.number}-n{self.made}-{self.rng.getrandbits(32):08x}"

    # -- searches ------------------------------------------------------------------------
    def words(self) -> str:
        return " ".join(self.rng.sample(WORDS, self.rng.randint(1, 3)))

    def search_text_get(self) -> None:
        params = {"q": self.words(), "target": self.rng.choice(TARGETS),
                  "k": self.rng.choice((1, 5, 10, 50))}  # fmt: skip
        self.send("search_text", f"GET /v1/search {params}",
                  lambda: self.http.get("/v1/search", params=params))  # fmt: skip

    def search_text_filter(self) -> None:
        body = {"query": {"text": self.words()}, "target": self.rng.choice(TARGETS), "k": 10,
                "filter": {"group": f"g{self.rng.randrange(GROUPS)}"}}  # fmt: skip
        self.send("search_filter", f"POST /v1/search {body}",
                  lambda: self.http.post("/v1/search", json=body))  # fmt: skip

    def search_vector(self) -> None:
        space = self.rng.choice(("va", "vat"))
        target = self.rng.choice(TARGETS if space == "vat" else TARGETS[:3])
        vector = [self.rng.gauss(0.0, 1.0) for _ in range(self.dims[space])]
        body = {"query": {"vector": vector, "space": space}, "target": target, "k": 10}
        self.send("search_vector", f"POST /v1/search vector space={space} target={target}",
                  lambda: self.http.post("/v1/search", json=body))  # fmt: skip

    def search_item(self) -> None:
        upload = self.ledger.pick(self.rng)
        if upload is None:
            return
        kind = "text" if upload.sha256 is None else _kind_of(upload.modalities)
        body = {"query": {"item_id": upload.id}, "target": self.rng.choice(ITEM_TARGETS[kind]),
                "k": 10}  # fmt: skip

        def why(r: httpx.Response) -> str | None:
            if r.status_code == 409 and upload.accepted == 202:
                detail = r.json()["error"].get("detail") or {}
                if detail.get("status") == "processing":
                    return "an item still processing (wait=false) cannot be a query"
            return self.gone_by_design(upload.id)(r)

        self.send("search_item", f"POST /v1/search {body}",
                  lambda: self.http.post("/v1/search", json=body), why)  # fmt: skip

    def search_example(self) -> None:
        media = self.rng.choice(self.media)
        kind = _kind_of(media.modalities)
        target = self.rng.choice(ITEM_TARGETS[kind])
        data = {"target": target, "k": "10"}
        files = {"file": (media.path.name, self.bases[media.name])}
        self.send("search_example", f"POST /v1/search/upload {media.name} target={target}",
                  lambda: self.http.post("/v1/search/upload", data=data, files=files))  # fmt: skip

    # -- writes --------------------------------------------------------------------------
    def upload_wait(self) -> None:
        self.upload(wait=True)

    def upload_nowait(self) -> None:
        with self.ledger.lock:
            backlog = len(self.ledger.pending)
        self.upload(wait=backlog >= MAX_PENDING)  # a client that waits when many are queued

    def upload(self, wait: bool) -> None:
        media = self.rng.choice(self.media)
        tag = self.new_tag()
        content = unique_bytes(self.bases[media.name], media.suffix, tag)
        meta = {"load_tag": tag, "group": f"g{self.rng.randrange(GROUPS)}", "client": self.number}
        data = {"metadata": json.dumps(meta)}
        if "audio" in media.modalities and self.rng.random() < 0.5:
            data["transcript"] = f"a {self.words()} sound"  # else speech recognition runs
        params = {"wait": "true" if wait else "false"}
        r = self.send(
            "upload_wait" if wait else "upload_nowait",
            f"POST /v1/items {params} {media.name} {data}",
            lambda: self.http.post("/v1/items", params=params, data=data,
                                   files={"file": (f"{tag}{media.suffix}", content)}),
        )  # fmt: skip
        if r is None or r.status_code >= 300:
            return
        item = r.json()
        expected = (201, "ready") if wait else (202, "processing")
        if (r.status_code, item["status"]) != expected:
            self.tally.anomaly(f"upload {tag} answered {r.status_code} {item['status']}: {item}")
        self.ledger.add(
            Upload(item["id"], tag, media.modalities, hashlib.sha256(content).hexdigest(),
                   r.status_code)
        )  # fmt: skip

    def text_item(self) -> None:
        tag = self.new_tag()
        meta = {"load_tag": tag, "group": f"g{self.rng.randrange(GROUPS)}"}
        body = {"text": f"{self.words()} {tag}", "metadata": meta}
        r = self.send("text_item", f"POST /v1/items/text {body}",
                      lambda: self.http.post("/v1/items/text", json=body))  # fmt: skip
        if r is not None and r.status_code == 201:
            self.ledger.add(Upload(r.json()["id"], tag, ("text",), None, 201))

    def delete(self) -> None:
        upload = self.ledger.take_deletable(self.rng)
        if upload is None:
            return
        r = self.send("delete", f"DELETE /v1/items/{upload.id}",
                      lambda: self.http.delete(f"/v1/items/{upload.id}"))  # fmt: skip
        if r is not None and r.status_code == 204:
            with self.ledger.lock:
                self.ledger.deleted.add(upload.id)
                self.ledger.pending.discard(upload.id)

    # -- reads ---------------------------------------------------------------------------
    def get_item(self) -> None:
        # Half the time a client polls one of the uploads it did not wait for.
        upload = self.ledger.pick_pending(self.rng) if self.rng.random() < 0.5 else None
        upload = upload or self.ledger.pick(self.rng)
        if upload is None:
            return
        r = self.send("get_item", f"GET /v1/items/{upload.id}",
                      lambda: self.http.get(f"/v1/items/{upload.id}"),
                      self.gone_by_design(upload.id))  # fmt: skip
        if r is None or r.status_code != 200:
            return
        status = r.json()["status"]
        if status == "failed":
            self.tally.anomaly(f"item {upload.id} ({upload.tag}) failed: {r.text[:500]}")
        if status != "processing":
            with self.ledger.lock:
                self.ledger.pending.discard(upload.id)

    def download(self) -> None:
        upload = self.ledger.pick(self.rng, with_media=True)
        if upload is None:
            return
        ranged = self.rng.random() < 0.3
        headers = {"Range": "bytes=0-1023"} if ranged else {}
        r = self.send("download", f"GET /v1/items/{upload.id}/media {headers}",
                      lambda: self.http.get(f"/v1/items/{upload.id}/media", headers=headers),
                      self.gone_by_design(upload.id))  # fmt: skip
        if r is None or r.status_code >= 300 or ranged:
            return
        if hashlib.sha256(r.content).hexdigest() != upload.sha256:
            self.tally.anomaly(f"item {upload.id} ({upload.tag}) served other bytes")

    def list_items(self) -> None:
        self.send("list_items", "GET /v1/items?limit=100",
                  lambda: self.http.get("/v1/items", params={"limit": 100}))  # fmt: skip

    def readyz(self) -> None:
        self.send("readyz", "GET /readyz", lambda: self.http.get("/readyz"))


def _kind_of(modalities: tuple[str, ...]) -> str:
    return "video" if "video" in modalities else modalities[0]
