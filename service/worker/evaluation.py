"""Zero-shot retrieval on a job's held-out slice, for the active model and the new one.

Each held-out clip is a candidate once by its pictures and once by its sound; its
transcript is a text query. Four directions: text→video, text→audio (S_vat),
video→audio, audio→video (S_va); R@1, R@5, R@10 and the median rank, a query's own clip
its only positive (the paper's protocol, model/evaluation/retrieval_metrics.py).

`not_worse(before, after)` decides `activate: auto`: the new version is activated when
its score — the mean over the directions both models have of (R@1 + R@5 + R@10) / 3 —
is at least the active one's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model import MMV
from model.embedding import embed_texts, embed_windows
from model.evaluation.retrieval_metrics import retrieval_metrics
from model.media import MediaLimits
from model.media.decode_cache import DecodeCache
from model.spaces import space_for
from service.worker.training_set import SpecClip

DIRECTIONS = (("text", "video"), ("text", "audio"), ("video", "audio"), ("audio", "video"))
SCORE_RECALLS = ("R@1", "R@5", "R@10")


def evaluate_on_slice(
    model: MMV,
    clips: list[SpecClip],
    cache_dir: Path,
    n_windows: int | None = None,
    limits: MediaLimits | None = None,
) -> dict[str, Any]:
    """{"directions": {"text->video": {R@1, R@5, R@10, median_rank, ...}, ...},
    "clips": n, "score": float}. Windows come from the decode cache (decoded once)."""
    model.eval()
    cache = DecodeCache(cache_dir)
    video, audio, owner = [], [], []
    for i, clip in enumerate(clips):
        windows = cache.cached_windows(
            Path(clip.path), model.config, n_windows, limits=limits, digest=clip.content_hash
        ).load()
        assert windows.video is not None and windows.audio is not None  # clips have both
        video.append(windows.video)
        audio.append(windows.audio)
        owner += [i] * len(windows.starts_s)
    owners = np.asarray(owner)
    embedded = {
        "video": embed_windows(model, "video", np.concatenate(video), owners, len(clips)),
        "audio": embed_windows(model, "audio", np.concatenate(audio), owners, len(clips)),
    }
    narrated = [i for i, c in enumerate(clips) if (t := c.transcript()) and t.text]
    if narrated:
        texts = [clips[i].transcript().text for i in narrated]  # type: ignore[union-attr]
        embedded["text"] = embed_texts(model, texts)
    option = model.config.heads.space
    out: dict[str, Any] = {}
    for query, target in DIRECTIONS:
        space = space_for(option, query, target)
        if space is None or query not in embedded:
            continue
        queries = embedded[query][space]
        positive = np.asarray(narrated) if query == "text" else None
        out[f"{query}->{target}"] = {
            "space": space,
            **retrieval_metrics(queries, embedded[target][space], positive),
        }
    return {"clips": len(clips), "directions": out, "score": score(out)}


def score(directions: dict[str, Any], only: set[str] | None = None) -> float:
    values = [
        np.mean([m[r] for r in SCORE_RECALLS])
        for name, m in directions.items()
        if only is None or name in only
    ]
    return round(float(np.mean(values)), 4) if values else 0.0


def not_worse(before: dict[str, Any], after: dict[str, Any]) -> tuple[bool, str]:
    """(activate?, the sentence the job records)."""
    shared = set(before["directions"]) & set(after["directions"])
    old, new = score(before["directions"], shared), score(after["directions"], shared)
    if new >= old:
        return True, f"validation score {new:.3f} is not below the active model's {old:.3f}"
    worse = [
        name
        for name in sorted(shared)
        if after["directions"][name]["R@1"] < before["directions"][name]["R@1"]
    ]
    detail = f" (R@1 dropped in {', '.join(worse)})" if worse else ""
    return False, (
        f"not activated: validation score {new:.3f} is below the active model's "
        f"{old:.3f}{detail} on {after['clips']} held-out clips"
    )
