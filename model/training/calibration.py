"""What runs after training, before saving: the fits that make stills and sounds land
where search looks for them, with the trained network frozen.

- `calibrate_image_bn` (model/deflation.py): the deflated network's BN γ/β, so that a
  still lands next to the clip it was taken from;
- `calibrate_audio_bridge` (model/audio_bridge.py, FAC only): audio's own way into
  S_vat, so that a sound lands next to its clip's narration and video.

Both read the same sample of training clips, centre views (the view the service and the
evaluation embed), taken once: each clip's middle frame, its video embeddings, its
audio's fine embedding and the embedding of the narration around it. Only those are kept, not
the clips, so the sample's memory does not grow with the frame size.

    python -m model.training.calibration CKPT --data CORPUS_OR_FOLDER

fits an existing checkpoint again in place (its metrics.json records the reports).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model.audio_bridge import calibrate_audio_bridge
from model.deflation import calibrate_image_bn
from model.mmv import MMV
from model.training.clip_dataset import ClipDataset

CALIBRATION_CLIPS = 8000  # training clips the calibrations are fitted on (4/5) and judged on
SAMPLE_BATCH = 64


def calibration_steps(clips: int) -> int:
    """Optimiser steps for a sample of `clips`: 400 for thousands (the default model's),
    down to 50 for a user's few hundred, where more steps only fit the same stills again
    and the trainer's finishing stage would wait for nothing."""
    return int(min(400, max(50, clips // 5)))


@dataclass
class CalibrationSample:
    frames: torch.Tensor  # uint8 [N, H, W, 3]: each clip's middle frame
    video: dict[str, torch.Tensor]  # space -> [N, D] L2-normalised, the clip's video
    audio_va: torch.Tensor  # [N, D_va] un-normalised fine audio embedding
    has_audio: torch.Tensor  # [N] bool
    text_vat: torch.Tensor | None  # [N, D_vat] L2-normalised narration around it (FAC)
    has_text: torch.Tensor  # [N] bool


@torch.no_grad()
def collect_sample(
    model: MMV, dataset: ClipDataset, clips: int, seed: int, progress: bool = True
) -> CalibrationSample:
    """Centre views of up to `clips` training clips (a seeded choice), embedded."""
    order = np.random.default_rng([seed, 7]).permutation(len(dataset))[:clips]
    model.eval()
    frames, audio_va, has_audio, texts = [], [], [], []
    video: dict[str, list[torch.Tensor]] = {}
    with dataset.centre_views():
        for first in tqdm(
            range(0, len(order), SAMPLE_BATCH),
            desc="calibration sample",
            unit="batch",
            disable=not progress,
        ):
            items = [dataset[(int(i), 0)] for i in order[first : first + SAMPLE_BATCH]]
            clip = torch.stack([item["video"] for item in items]).to(model.device)
            sound = torch.stack([item["audio"] for item in items]).to(model.device)
            frames.append((clip[:, clip.shape[1] // 2] * 255.0).round().to(torch.uint8).cpu())
            for space, z in model.heads.video(model.video_backbone(clip)).items():
                video.setdefault(space, []).append(F.normalize(z.float(), dim=-1).cpu())
            z_audio = model.heads.audio(model.audio_backbone(sound), coarse=False)
            audio_va.append(z_audio[next(iter(z_audio))].float().cpu())
            has_audio.extend(bool(item["has_audio"]) for item in items)
            # The narration around the window, its nearest sentences joined: a sentence
            # alone is often too short to say what the clip sounds like.
            texts.extend(" ".join(item["texts"]) for item in items)
    has_text = torch.tensor([bool(t) for t in texts])
    text_vat = None
    if "vat" in model.spaces_of("text") and bool(has_text.any()):
        text_vat = torch.cat(
            [
                model.embed_text(texts[i : i + 512])["vat"].float().cpu()
                for i in range(0, len(texts), 512)
            ]
        )
    return CalibrationSample(
        frames=torch.cat(frames),
        video={space: torch.cat(z) for space, z in video.items()},
        audio_va=torch.cat(audio_va),
        has_audio=torch.tensor(has_audio),
        text_vat=text_vat,
        has_text=has_text,
    )


def calibrate(
    model: MMV, dataset: ClipDataset, seed: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Forget the old fits (they belong to older weights), fit both again on a sample
    of `dataset`; returns the reports for metrics.json."""
    started = time.perf_counter()
    model.image_bn.reset()
    if hasattr(model.heads, "audio_bridge"):
        model.heads.audio_bridge.reset()
    sample = collect_sample(model, dataset, CALIBRATION_CLIPS, seed, progress)
    out: dict[str, Any] = {}
    steps = calibration_steps(len(sample.frames))
    image = calibrate_image_bn(
        model,
        sample.frames,
        clip_targets=sample.video,
        steps=steps,
        seed=seed,
        progress=progress,
    )
    out["image_bn"] = image.as_dict()
    audible = sample.has_audio
    if "vat" in sample.video and int(audible.sum()) >= 10:
        # Without any narration (a user's clips with no transcripts) the clip's video
        # alone is the target.
        text_vat = sample.text_vat
        has_text = sample.has_text
        if text_vat is None:
            text_vat, has_text = torch.zeros_like(sample.video["vat"]), torch.zeros_like(has_text)
        report = calibrate_audio_bridge(
            model,
            sample.audio_va[audible],
            sample.video["vat"][audible],
            text_vat[audible],
            has_text[audible],
            steps=steps,
            seed=seed,
            progress=progress,
        )
        if report is not None:
            out["audio_bridge"] = report.as_dict()
    out["calibration_s"] = round(time.perf_counter() - started, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    from model.checkpoint import load, read_metrics, save
    from model.errors import ModelError
    from model.training.train import open_datasets

    parser = argparse.ArgumentParser(
        prog="python -m model.training.calibration",
        description="Fit a checkpoint's image BN and audio bridge again on training clips.",
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="a corpus or a folder of videos")
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    try:
        model = load(a.checkpoint)
        dataset, _ = open_datasets(a.data, model.config, a.seed)
        reports = calibrate(model, dataset, a.seed)
        metrics = read_metrics(a.checkpoint)
        metrics.update(reports)
        save(model, a.checkpoint, metrics)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
