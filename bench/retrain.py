"""The product's promise, measured through the API only (issue #17): a world the shipped
model has never seen is uploaded to a fresh server, searched, taught to the model by one
training job, and searched again.

The world is model/corpus/unseen: 48 things (6 shapes × 8 colours, each with its own
sound; narrated), 4 uploaded clips each (192 candidates) and 1 held-out clip each, plus
3 text queries per thing. Retrieval is judged by thing (chance R@1 = 1/48):
- text → audio: the 144 text queries against the sound of the 192 uploads;
- audio → video: the 48 held-out clips' sound (a wav example) against their pictures.
The baseline is the same server before the job, in the same run. The job runs with the
defaults a user gets (`POST /v1/training/jobs` with `{}`: from the active model, steps
chosen by the worker, activated when not worse on the held-out slice), by a real
`python -m service.worker` beside the API; the load generator is this script, on the
same 2 cores.

    .venv/bin/python bench/retrain.py [--quick]     # --quick: 12 things, 150 steps
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))

from e2e_server import running_server, start_worker, wait_until
from unseen_world_client import audio_examples, measure, upload_world

from model.corpus.unseen import make_unseen_world

REPO = Path(__file__).resolve().parent.parent
GAIN = 3.0  # the new R@1 must be at least this many times the old one
FLOOR = 0.5  # and at least this


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 things and 150 steps")
    parser.add_argument("--keep", type=Path, default=None, help="keep the data directory here")
    args = parser.parse_args()
    things = 12 if args.quick else 48
    request = {"steps": 150} if args.quick else {}

    import torch

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"GPU: {'yes' if torch.cuda.is_available() else 'none'}, "
        f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-retrain-") as scratch:
        root = args.keep or Path(scratch)
        started = time.perf_counter()
        world = make_unseen_world(root / "world", combinations=things)
        print(f"world: {things} things, {len(world.uploads)} uploads, {len(world.tests)} "
              f"held-out clips, made in {time.perf_counter() - started:.1f} s")  # fmt: skip
        examples = audio_examples(world, root / "examples")
        model = REPO / "models" / "default"
        with running_server(root / "data", model, root / "server.log",
                            MMV_SWITCH_POLL_S="0.5") as server:  # fmt: skip
            client = httpx.Client(base_url=server.url, timeout=120)
            t = time.perf_counter()
            uploaded = upload_world(client, world)
            upload_s = time.perf_counter() - t
            print(f"uploaded {len(uploaded.thing_of)} clips in {upload_s:.1f} s")
            before = measure(client, uploaded, examples)

            worker = start_worker(server.data_dir, model, root / "worker.log",
                                  MMV_WORKER_POLL_S="0.5")  # fmt: skip
            try:
                t = time.perf_counter()
                job_id = client.post("/v1/training/jobs", json=request).json()["id"]

                def finished() -> dict | None:
                    job = client.get(f"/v1/training/jobs/{job_id}").json()
                    return job if job["status"] in ("succeeded", "failed", "cancelled") else None

                job = wait_until(finished, 3600, "the training job")
                job_s = time.perf_counter() - t
                if job["status"] != "succeeded" or not job["activated"]:
                    print(f"the job did not activate a new version: {job}")
                    print(worker.log()[-3000:])
                    return 1
                new = job["model_version"]
                wait_until(
                    lambda: client.get("/readyz").json()["model_version"] == new, 300, "switch"
                )
                switch_s = time.perf_counter() - t - job_s
            finally:
                worker.stop()
            after = measure(client, uploaded, examples)

    recipe = job["data"]["recipe"]
    print(
        f"\njob: {job['data']['train']} clips to train on, {job['data']['val']} held out; "
        f"{recipe['steps']} steps of batch {recipe['batch_size']} at lr {recipe['lr']} "
        f"({recipe['steps_rule']}); {job_s:.0f} s from queued to done, switch {switch_s:.1f} s"
    )
    val_before, val_after = job["metrics"]["before"], job["metrics"]["after"]
    print(f"held-out slice score (mean R@1/5/10, 4 directions): {val_before['score']:.3f} -> "
          f"{val_after['score']:.3f}")  # fmt: skip
    print(
        f"\nretrieval by thing through the API: {after['things']} things, "
        f"{after['candidates']} candidates, chance R@1 {after['chance R@1']:.3f}"
    )
    print("| direction | queries | before R@1 | after R@1 | gain |")
    print("|---|---|---|---|---|")
    verdicts = []
    for name, queries in (
        ("text->audio R@1", "text queries"),
        ("audio->video R@1", "audio queries"),
    ):
        old, new_r = before[name], after[name]
        gain = new_r / old if old > 0 else float("inf")
        print(f"| {name[:-4]} | {after[queries]} | {old:.3f} | {new_r:.3f} | {gain:.1f}× |")
        verdicts.append((name, old, new_r))
    print(f"\nmodel versions: before {before['model_versions']}, after {after['model_versions']}")
    for name, old, new_r in verdicts:
        holds = new_r >= FLOOR and new_r >= GAIN * old
        print(
            f"target {name.split()[0]}_r1_after_retraining: {new_r:.3f} (goal ≥ {FLOOR} and "
            f"≥ {GAIN:g}× {old:.3f}) {'HOLDS' if holds else 'MISSES'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
