"""Make docs/img/web_page.png, the README's picture of the web page.

    .venv/bin/python tests/e2e/screenshot.py [--out docs/img/web_page.png] [--query TEXT]

Starts `python -m service` on a free port with a temporary data directory, adds a few
narrated test clips, a sound and a picture through the API, opens the page in headless
Chromium 1280 pixels wide and saves a picture of the whole page.

With the trained models/default the collection is a small narrated-clip corpus (the
world the model was trained on: lavfi test patterns mean nothing to it) and a one-minute
recording of three of its scenes one after another, and the page shows a text search
(`/?q=QUERY`, by default the description of the recording's middle scene: the recording
is found at that stretch, a moment with its timeline and cue). A
`python -m service.worker` then trains on it: one short job makes a second model
version, and the picture is taken while a second job trains, so the training panel
shows a live progress bar and loss curve next to both versions. A few minutes on 2
cores. Until that model is trained a random tiny model stands in on test patterns; its
text rankings mean nothing, so the page then shows a query by example instead (the ball
clip dropped on the search area: the same clip comes first with score 1.000), and no
training (too few clips to train on).

The collection panel is shown filtered to its sounds, to keep the picture short.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import httpx
from browser import chromium_page, drop_file, open_page
from e2e_server import (
    REPO,
    Server,
    Worker,
    make_clip,
    make_noise,
    make_picture,
    make_random_model,
    running_server,
    start_worker,
    wait_until,
)
from long_recording import distinct_scenes, make_recording
from tqdm import tqdm

# (lavfi picture source, tone Hz, transcript, metadata) for each clip; the first is the
# example of the query-by-example screenshot.
CLIPS = [
    ("testsrc", 440, "a red ball bounces while a drum rolls", {"scene": "ball", "camera": "a"}),
    ("smptebars", 220, "colour bars and a steady tone before the show", {"scene": "bars"}),
    ("testsrc2", 330, "a coloured box slides across the screen to a soft hum", {"scene": "box"}),
    ("rgbtestsrc", 660, "three coloured stripes and a high beep", {"scene": "stripes"}),
    ("pal100bars", 550, "bright bars while a whistle plays", {"scene": "bars"}),
]
QUERY = "a ball bounces while a drum rolls"
TRAINED = REPO / "models" / "default"
CORPUS_CLIPS = 20  # what a training job needs at least (16 to train on, 4 held out)
SCENE_S = 20.0  # each scene of the recording
FIRST_STEPS = 20  # the job that makes the second version
LIVE_STEPS = 60  # the job shown training
LIVE_POINTS = 8  # loss points on its curve when the picture is taken
JOB_TIMEOUT_S = 900.0
Upload = tuple[Path, str, dict[str, str]]  # file, transcript, metadata


def make_collection(work: Path) -> list[Upload]:
    """The clips, one sound and one picture."""
    files = [
        (make_clip(work / f"{src}.mp4", src, tone, size="320x240"), transcript, meta)
        for src, tone, transcript, meta in CLIPS
    ]
    files.append((make_noise(work / "rain.wav", "pink"), "", {"scene": "rain"}))
    picture = make_picture(work / "hd-bars.png", "320x180", "smptehdbars")
    files.append((picture, "", {"scene": "hd bars"}))
    return files


def corpus_collection(work: Path) -> tuple[list[Upload], str]:
    """A dozen generated clips with their transcripts, two sounds and a still, and a
    recording of three narrated scenes; and the middle scene's description as the query."""
    from model.corpus import make_corpus, read_manifest

    folder = work / "corpus"
    make_corpus(folder, CORPUS_CLIPS, seed=11, workers=2, progress=False, n_audio=2, n_stills=1)
    rows = read_manifest(folder)
    files: list[Upload] = [
        (
            folder / row["path"],
            (folder / row["transcript"]).read_text() if row["transcript"] else "",
            {"description": row["description"]},
        )
        for row in rows
    ]
    first, *others = distinct_scenes(rows, 3)
    recording = make_recording(folder, [others[0], first, others[1]], work / "scenes.mp4",
                               SCENE_S)  # fmt: skip
    meta = {"description": f"three scenes, {SCENE_S:.0f} s each"}
    files.append((recording.path, recording.transcript.read_text(), meta))
    return files, first["description"]


def upload(base_url: str, files: list[Upload]) -> list[dict[str, object]]:
    """Add the files through the REST API; returns the items."""
    items = []
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for path, transcript, meta in tqdm(files, desc="uploading", unit="file"):
            data = {"metadata": json.dumps(meta)}
            if transcript:
                data["transcript"] = transcript
            with path.open("rb") as f:
                res = client.post("/v1/items", files={"file": (path.name, f)}, data=data)
            res.raise_for_status()
            items.append(res.json())
    return items


def train(server: Server, work: Path) -> Worker:
    """A worker; one finished job (a second version, switched to when it is not worse),
    and a second job training when this returns (the caller stops the worker)."""
    worker = start_worker(server.data_dir, Path("unused"), work / "worker.log",
                          MMV_WORKER_POLL_S="0.5")  # fmt: skip
    with httpx.Client(base_url=server.url, timeout=60) as client:

        def job(job_id: str) -> dict[str, Any]:
            return client.get(f"/v1/training/jobs/{job_id}").json()

        first = client.post("/v1/training/jobs", json={"steps": FIRST_STEPS}).json()["id"]
        print(f"training {first} ({FIRST_STEPS} steps)")
        done = wait_until(lambda: (j := job(first))["status"] not in ("queued", "running") and j,
                          JOB_TIMEOUT_S, "the first job ends", every_s=1)  # fmt: skip
        if done["status"] != "succeeded":
            raise RuntimeError(f"the first job {done['status']}: {done['error']}\n{worker.log()}")
        if done["activated"]:
            wait_until(
                lambda: client.get("/readyz").json()["model_version"] == done["model_version"],
                120, "the switch to the new version",
            )  # fmt: skip
        live = client.post("/v1/training/jobs", json={"steps": LIVE_STEPS}).json()["id"]
        print(f"training {live} ({LIVE_STEPS} steps) for the picture")
        wait_until(lambda: len(job(live)["progress"]["history"]) >= LIVE_POINTS,
                   JOB_TIMEOUT_S, "the live job's loss curve", every_s=1)  # fmt: skip
    return worker


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshot of the web page for the README.")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "web_page.png")
    parser.add_argument("--query", default=None, help="the text search (trained model only)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mmv-screenshot-") as tmp:
        work = Path(tmp)
        trained = (TRAINED / "config.json").is_file()
        if trained:
            files, first_description = corpus_collection(work)
            query_text = args.query or first_description
        else:
            files, query_text = make_collection(work), args.query or QUERY
        model_dir = (
            TRAINED
            if trained
            else make_random_model(work / "model", " ".join(c[2] for c in CLIPS).split())
        )
        print(f"model: {model_dir}" + ("" if trained else " (random: query by example)"))
        with running_server(
            work / "data", model_dir, work / "server.log", MMV_SWITCH_POLL_S="0.5"
        ) as server:
            items = upload(server.url, files)
            worker = train(server, work) if trained else None
            try:
                shoot(server, items, trained, query_text, args.out)
            finally:
                if worker is not None:
                    worker.stop()
    print(f"wrote {args.out}")


def shoot(
    server: Server, items: list[dict[str, Any]], trained: bool, query_text: str, out: Path
) -> None:
    with chromium_page(1280, 800) as page:
        if trained:
            query = httpx.QueryParams({"q": query_text, "target": "video", "k": 6})
            open_page(page, server.url, f"/?{query}")
        else:
            open_page(page, server.url, "/?target=video&k=6")
            drop_file(page, "#search", str(items[0]["media_url"]), "ball.mp4")
        page.wait_for_selector("#results .card video")
        if trained and not page.query_selector("#results .card[data-start-s]"):
            print("warning: no result at a stretch of the recording (no moment in the picture)")
        page.wait_for_selector("#item-list li")
        # Every player shows its first frame and has stopped loading (no spinner).
        page.wait_for_function(
            "[...document.querySelectorAll('#results video')]"
            ".every(v => v.readyState >= 2 && v.networkState === v.NETWORK_IDLE)"
        )
        page.select_option("#items-kind", "audio")
        page.wait_for_function(
            "(items => items.length && items.every(li => li.dataset.kind === 'audio'))"
            "([...document.querySelectorAll('#item-list li')])"
        )
        page.wait_for_selector("#model-list li")
        if trained:
            page.wait_for_selector("#job-list li[data-status='running'] figure.loss-chart")
        page.wait_for_timeout(500)  # the controls fade their loading state out
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)


if __name__ == "__main__":
    main()
