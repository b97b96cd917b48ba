"""Why stills and sounds were found badly, measured: the table behind docs/training.md's
"Images" and "Text → audio" sections.

    python -m model.evaluation.calibration_study CKPT --data CORPUS [--split val]

For one trained checkpoint it embeds the split's clips (the evaluation's protocol:
windows averaged; a still is the middle frame of the middle window) and measures, with
the rest of the model fixed:
- image → video (S_va) through the untrained network, the trained one as the paper
  deflates it (video γ/β; γ/β fitted to static clips) and as fitted now (to the moving
  clips), beside what the paper's target itself scores (the video network on the static
  clip) and the ceiling (the clip's own moving middle window as the query);
- text → audio (S_vat) through g_va→vat as trained, with audio rescaled to video's norm
  or with BN statistics of its own, and through the audio bridge fitted to video alone
  or to video and narration (what training now does).
The fits use the trainer's calibration sample of the train split; choose on `val`,
never on `test`.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.audio_bridge import calibrate_audio_bridge
from model.checkpoint import load
from model.deflation import calibrate_image_bn, deflated_features, repeat_as_clip
from model.embedding import average_windows, embed_texts, in_batches
from model.errors import ModelError
from model.evaluation.eval_sets import DEFAULT_CANDIDATES, prepare_corpus_eval
from model.evaluation.retrieval_metrics import retrieval_metrics
from model.factory import build_model
from model.mmv import MMV
from model.training.calibration import CALIBRATION_CLIPS, calibration_steps, collect_sample
from model.training.train import open_datasets

BATCH = 64


def _unit(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


@torch.no_grad()
def _raw(model: MMV, modality: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Un-normalised head outputs (and, for audio, the fine embedding g never saw)."""
    if modality == "video":
        return model.heads.video(model.video_backbone(x.float() / 255.0))
    if modality == "audio":
        return model.heads.audio(model.audio_backbone(x), coarse=False)
    bn = model.image_bn.overrides()
    return model.heads.video(deflated_features(model.video_backbone, x.float() / 255.0, bn))


def study(model: MMV, corpus: Path, split: str, candidates: int, seed: int) -> dict[str, Any]:
    model = copy.deepcopy(model).eval()
    model.image_bn.reset()
    model.heads.audio_bridge.reset()
    clips = prepare_corpus_eval(corpus, model.config, split, candidates, 0).clips
    n, owner = len(clips), clips.owner
    frames = clips.middle_frames()

    def found(queries: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return retrieval_metrics(_unit(queries), targets)

    video = in_batches(lambda x: _raw(model, "video", x), clips.video, BATCH)
    video_va = average_windows(_unit(video["va"]), owner, n)
    images: dict[str, dict[str, float]] = {}

    untrained = build_model(model.config, model.tokenizer, load_word_vectors=False).eval()
    untrained_video = in_batches(lambda x: _raw(untrained, "video", x), clips.video, BATCH)
    images["untrained network, deflated"] = found(
        in_batches(lambda x: _raw(untrained, "image", x), frames, BATCH)["va"],
        average_windows(_unit(untrained_video["va"]), owner, n),
    )
    images["trained, deflated with the video γ/β"] = found(
        in_batches(lambda x: _raw(model, "image", x), frames, BATCH)["va"], video_va
    )
    static = in_batches(
        lambda x: _raw(model, "video", repeat_as_clip(x, model.config.video.frames)), frames, BATCH
    )
    images["trained, video network on the static clip (the paper's target)"] = found(
        static["va"], video_va
    )
    train_data, _ = open_datasets(corpus, model.config, seed)
    sample = collect_sample(model, train_data, CALIBRATION_CLIPS, seed, progress=False)
    steps = calibration_steps(len(sample.frames))  # what the trainer runs
    calibrate_image_bn(model, sample.frames, steps=steps, seed=seed, progress=False)  # static
    images["trained, γ/β fitted to static clips (the paper's target)"] = found(
        in_batches(lambda x: _raw(model, "image", x), frames, BATCH)["va"], video_va
    )
    calibrate_image_bn(
        model, sample.frames, clip_targets=sample.video, steps=steps, seed=seed, progress=False
    )
    images["trained, γ/β fitted to the moving clips (now)"] = found(
        in_batches(lambda x: _raw(model, "image", x), frames, BATCH)["va"], video_va
    )
    firsts = np.searchsorted(owner, np.arange(n))
    middle = firsts + np.bincount(owner, minlength=n) // 2
    images["ceiling: the clip's own middle window, moving"] = found(video["va"][middle], video_va)

    audio = in_batches(lambda x: _raw(model, "audio", x), clips.audio, BATCH)
    text = embed_texts(model, [r["description"] for r in clips.rows])["vat"]
    g = model.heads.va_to_vat
    sounds: dict[str, dict[str, float]] = {}

    def through(fn: Any) -> dict[str, float]:
        with torch.no_grad():
            z = fn(torch.from_numpy(audio["va"])).float().numpy()
        return found(text, average_windows(_unit(z), owner, n))

    sounds["through g_va→vat (the paper)"] = through(g)
    norms = {
        "video": float(np.linalg.norm(video["va"], axis=1).mean()),
        "audio": float(np.linalg.norm(audio["va"], axis=1).mean()),
    }
    sounds["through g, audio rescaled to video's mean norm"] = through(
        lambda a: g(F.normalize(a, dim=-1) * norms["video"])
    )

    def own_statistics(a: torch.Tensor) -> torch.Tensor:
        pre = g.fc(F.relu(a))
        scale = g.bn.weight / (pre.var(0, unbiased=False) + g.bn.eps).sqrt()
        return (pre - pre.mean(0)) * scale + g.bn.bias

    sounds["through g with audio's own BN statistics"] = through(own_statistics)
    audible = sample.has_audio
    assert sample.text_vat is not None
    for name, has_text in (
        ("through the audio bridge fitted to video", torch.zeros_like(sample.has_text)),
        ("through the audio bridge fitted to video and narration (now)", sample.has_text),
    ):
        calibrate_audio_bridge(
            model,
            sample.audio_va[audible],
            sample.video["vat"][audible],
            sample.text_vat[audible],
            has_text[audible],
            steps=steps,
            seed=seed,
            progress=False,
        )
        sounds[name] = through(model.heads.audio_bridge)
        model.heads.audio_bridge.reset()
    return {"split": split, "candidates": n, "images": images, "sounds": sounds, "norms": norms}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Split `{result['split']}`, {result['candidates']} candidates.",
        "",
        "| image → video (S_va) | R@1 | R@10 | median rank |",
        "|---|---|---|---|",
    ]
    for name, m in result["images"].items():
        lines.append(f"| {name} | {m['R@1']:.3f} | {m['R@10']:.3f} | {m['median_rank']:g} |")
    lines += [
        "",
        f"Mean norm of the un-normalised fine embeddings: video {result['norms']['video']:.2f}, "
        f"audio {result['norms']['audio']:.2f}.",
        "",
        "| text → audio (S_vat) | R@1 | R@10 | median rank |",
        "|---|---|---|---|",
    ]
    for name, m in result["sounds"].items():
        lines.append(f"| {name} | {m['R@1']:.3f} | {m['R@10']:.3f} | {m['median_rank']:g} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model.evaluation.calibration_study", description=__doc__.split("\n")[0]
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    try:
        model = load(a.checkpoint)
        if model.config.heads.space != "fac":
            raise ModelError("the study measures FAC's paths (g_va→vat); this model is not FAC")
        print(markdown(study(model, a.data, a.split, a.candidates, a.seed)))
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
