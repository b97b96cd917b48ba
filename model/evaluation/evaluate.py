"""Evaluation, the paper's way: zero-shot retrieval, linear probes, images via deflation.

On the corpus test split (the first `--candidates` clips, 1,000 by default):
- zero-shot retrieval text→video, text→audio, video→audio, audio→video and
  image→video: R@1/5/10 and median rank. A query's own clip is its only positive.
  Text queries are the clips' canonical descriptions, as a user would type them
  (and, reported beside, their spoken narrations). Video and audio embeddings are
  averaged over uniformly spaced windows covering each clip (the paper's protocol);
  an image query is the middle frame of its clip, embedded by the deflated network.
  text→sound: the descriptions of the test split's sound files (no colour named),
  against those sound files; text→image and image→text: the test split's still images
  (through the deflated network) and their descriptions;
- linear probes on frozen backbone features (UCF101 / ESC-50 protocol): standardise,
  linear SVM fitted on train-split clips, accuracy on the test clips, labels from the
  manifest's attributes (single-object clips, so each label is unambiguous);
- the same for an untrained model of the same architecture, as the floor.

`validate` is the quick retrieval the trainer runs on its held-out clips. The windows
come from eval_sets.py, the reports from reports.py, the command from __main__.py.
Attributes and descriptions are read here only; training never sees them.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model.atomic_files import write_atomic
from model.checkpoint import load as load_checkpoint
from model.checkpoint import read_metrics
from model.corpus import read_corpus_info
from model.embedding import embed_texts, embed_windows, in_batches
from model.evaluation.errors import EvalError
from model.evaluation.eval_sets import (
    DEFAULT_CANDIDATES,
    PROBE_TRAIN_CLIPS,
    CorpusEval,
    EvalSet,
    prepare_corpus_eval,
)
from model.evaluation.linear_probe import linear_probe
from model.evaluation.retrieval_metrics import chance_recall, retrieval_metrics
from model.factory import build_model
from model.mmv import MMV
from model.spaces import space_for
from model.training.clip_dataset import ClipDataset

DIRECTIONS = (
    ("text", "video"),
    ("text", "audio"),
    ("video", "audio"),
    ("audio", "video"),
    ("image", "video"),
)
# Linear-probe labels: what each modality shows. All but `background` are attributes of
# the clip's one object; the background is seen (its pattern) and heard (its ambience).
PROBES = {
    "video": ("shape", "colour", "motion", "background"),
    "audio": ("shape", "motion", "size", "background"),
}


def probe_label(row: dict[str, Any], label: str) -> str:
    """A single-object clip's value of a probe label, from its manifest attributes."""
    attributes = row["attributes"]
    if label == "background":
        return str(attributes["background"])
    return str(attributes["objects"][0][label])


# -- embeddings ----------------------------------------------------------------------------
def _features(model: MMV, modality: str, x: np.ndarray, batch_size: int) -> np.ndarray:
    return in_batches(lambda t: {"h": model.backbone_features(modality, t)}, x, batch_size)["h"]


def embed_eval_set(
    model: MMV, data: EvalSet, modality: str, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """{space: [N, D]} per item, windows averaged."""
    x = data.video if modality == "video" else data.audio if modality == "audio" else None
    if x is None:
        raise EvalError(f"no windows for modality '{modality}'")
    return embed_windows(model, modality, x, data.owner, len(data), batch_size)


def retrieval(
    option: str,
    embeddings: dict[str, dict[str, np.ndarray]],
    pairs: Sequence[tuple[str, str]],
    query_rows: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Metrics for each (query, target) modality pair that the space option can compare.

    embeddings[modality][space]: [N, D] in clip order (row i of every modality is clip
    i). query_rows[modality]: which clips serve as queries (default all).
    """
    out: dict[str, Any] = {}
    for query, target in pairs:
        name = f"{query}->{target}"
        space = space_for(option, query, target)
        if space is None:
            out[name] = {"space": None, "note": f"no space holds {query} and {target} ({option})"}
            continue
        rows = (query_rows or {}).get(query)
        q = embeddings[query][space]
        positive = None
        if rows is not None:
            q, positive = q[rows], rows
        out[name] = {"space": space, **retrieval_metrics(q, embeddings[target][space], positive)}
    return out


# -- the evaluation ------------------------------------------------------------------------
def evaluate(
    model: MMV, data: CorpusEval, batch_size: int = 64, progress: bool = True
) -> dict[str, Any]:
    """Retrieval, probes and image retrieval of one model on a prepared corpus."""
    started = time.perf_counter()
    option = model.config.heads.space
    clips = data.clips
    rows = clips.rows
    stages = tqdm(total=5, desc="evaluating", unit="stage", disable=not progress)
    emb: dict[str, dict[str, np.ndarray]] = {
        "video": embed_eval_set(model, clips, "video", batch_size),
    }
    stages.update()
    emb["audio"] = embed_eval_set(model, clips, "audio", batch_size)
    stages.update()
    emb["image"] = in_batches(model.embed_image, clips.middle_frames(), batch_size)
    emb["text"] = embed_texts(model, [r["description"] for r in rows])
    result: dict[str, Any] = {
        "candidates": len(rows),
        "chance": {f"R@{k}": chance_recall(k, len(rows)) for k in (1, 5, 10)},
        "retrieval": retrieval(option, emb, DIRECTIONS),
        "retrieval_through_g": through_g(model, clips, emb, batch_size),
        "description_ceiling": description_ceiling([r["description"] for r in rows]),
    }
    narrated = np.array([i for i, r in enumerate(rows) if r["narration"]])
    if len(narrated):
        narration = embed_texts(model, [rows[i]["narration"] for i in narrated])
        full = {s: np.zeros((len(rows), z.shape[1]), np.float32) for s, z in narration.items()}
        for s, z in narration.items():
            full[s][narrated] = z
        result["retrieval_narration"] = retrieval(
            option,
            {**emb, "text": full},
            (("text", "video"), ("text", "audio")),
            query_rows={"text": narrated},
        )
    stages.update()
    if data.sounds is not None:
        sounds = {
            "audio": embed_eval_set(model, data.sounds, "audio", batch_size),
            "text": embed_texts(model, [r["description"] for r in data.sounds.rows]),
        }
        result["retrieval_sounds"] = retrieval(option, sounds, (("text", "audio"),))
    if data.stills is not None:
        stills = {
            "image": in_batches(model.embed_image, data.stills.middle_frames(), batch_size),
            "text": embed_texts(model, [r["description"] for r in data.stills.rows]),
        }
        result["retrieval_stills"] = retrieval(
            option, stills, (("text", "image"), ("image", "text"))
        )
    stages.update()
    if data.probe_train is not None:
        result["probes"] = linear_probes(model, data.probe_train, clips, batch_size)
    stages.update()
    stages.close()
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def through_g(
    model: MMV, clips: EvalSet, emb: dict[str, dict[str, np.ndarray]], batch_size: int
) -> dict[str, Any]:
    """text → audio by the paper's protocol: audio reaches S_vat only through g_va→vat,
    which no audio–text pair trained (zero-shot, property iii). FAC's audio bridge
    (model/audio_bridge.py) is fitted after training against each clip's video and its
    narration: its text → audio is `retrieval`'s, this one is without it. The same
    figure where no bridge is calibrated (shared, disjoint: no space for the pair)."""
    option = model.config.heads.space
    bridge = getattr(model.heads, "audio_bridge", None)
    if bridge is None or not bridge.is_calibrated:
        return retrieval(option, emb, (("text", "audio"),))
    bridge.calibrated.fill_(False)
    try:
        audio = embed_eval_set(model, clips, "audio", batch_size)
    finally:
        bridge.calibrated.fill_(True)
    return retrieval(option, {**emb, "audio": audio}, (("text", "audio"),))


def description_ceiling(descriptions: list[str]) -> dict[str, float]:
    """Best text-query recall possible when clips sharing a description cannot be told
    apart (a query's own clip is then found among its k twins with chance 1/k at R@1)."""
    counts = Counter(descriptions)
    twins = np.array([counts[d] for d in descriptions], dtype=np.float64)
    out = {f"R@{k}": float(np.minimum(1.0, k / twins).mean()) for k in (1, 5, 10)}
    out["unique_share"] = float((twins == 1).mean())
    return out


def linear_probes(
    model: MMV, train: EvalSet, test: EvalSet, batch_size: int = 64
) -> dict[str, Any]:
    """Linear SVM accuracy on frozen backbone features, single-object clips only."""
    single = np.array([i for i, r in enumerate(test.rows) if r["attributes"]["n_objects"] == 1])
    if len(single) < 10:
        return {}
    keep = np.isin(test.owner, single)
    test_owner = np.searchsorted(single, test.owner[keep])
    out: dict[str, Any] = {}
    for modality, labels in PROBES.items():
        windows = train.video if modality == "video" else train.audio
        test_windows = test.video if modality == "video" else test.audio
        assert windows is not None and test_windows is not None
        train_x = average_windows_plain(
            _features(model, modality, windows, batch_size), train.owner, len(train)
        )
        test_x = average_windows_plain(
            _features(model, modality, np.asarray(test_windows[keep]), batch_size),
            test_owner,
            len(single),
        )
        for label in labels:
            train_y = np.array([probe_label(r, label) for r in train.rows])
            test_y = np.array([probe_label(test.rows[i], label) for i in single])
            out[f"{modality}/{label}"] = linear_probe(train_x, train_y, test_x, test_y)
    return out


def average_windows_plain(h: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Per-item mean of backbone features over windows (no normalisation)."""
    total = np.zeros((n, h.shape[1]), dtype=np.float64)
    np.add.at(total, owner, h)
    return (total / np.bincount(owner, minlength=n)[:, None]).astype(np.float32)


def untrained_like(model: MMV, seed: int = 0) -> MMV:
    """The same architecture and vocabulary with fresh random weights (the floor)."""
    torch.manual_seed(seed)
    fresh = build_model(model.config, model.tokenizer, load_word_vectors=False)
    return fresh.to(model.device).eval()


# -- validation during training (no ground-truth attributes needed) -----------------------
def validate(
    model: MMV, dataset: ClipDataset, max_clips: int = 500, batch_size: int = 64
) -> dict[str, float]:
    """Quick retrieval on held-out clips from a training dataset: one centre window per
    clip (from the decode cache), text = the clip's whole transcript. Keys like
    "text->video/R@10". Works for corpora and user folders alike."""
    n = min(max_clips, len(dataset))
    samples = [dataset[(i, 0)] for i in range(n)]
    video = torch.stack([s["video"] for s in samples]).numpy()
    audio = torch.stack([s["audio"] for s in samples]).numpy()
    emb = {
        "video": in_batches(model.embed_video, video, batch_size),
        "audio": in_batches(model.embed_audio, audio, batch_size),
    }
    texts = [item.transcript.text if item.transcript else "" for item in dataset.items[:n]]
    narrated = np.array([i for i, t in enumerate(texts) if t])
    emb["text"] = embed_texts(model, texts)
    pairs = [("video", "audio"), ("audio", "video")]
    if len(narrated):
        pairs = [("text", "video"), ("text", "audio"), *pairs]
    table = retrieval(
        model.config.heads.space,
        emb,
        pairs,
        query_rows={"text": narrated} if len(narrated) else None,
    )
    out: dict[str, float] = {"candidates": n}
    for name, m in table.items():
        if m.get("space") is not None:
            for key in ("R@1", "R@5", "R@10", "median_rank"):
                out[f"{name}/{key}"] = m[key]
    return out


def evaluate_checkpoint(
    checkpoint: Path,
    corpus: Path,
    split: str = "test",
    candidates: int = DEFAULT_CANDIDATES,
    probe_train_clips: int = PROBE_TRAIN_CLIPS,
    baseline: bool = True,
    progress: bool = True,
    prepared: CorpusEval | None = None,
) -> dict[str, Any]:
    model = load_checkpoint(checkpoint)
    data = prepared or prepare_corpus_eval(
        corpus, model.config, split, candidates, probe_train_clips, progress
    )
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "space": model.config.heads.space,
        "data": {
            "corpus": str(corpus),
            "split": split,
            "candidates": len(data.clips),
            "windows": len(data.clips.owner),
        },
        "trained": evaluate(model, data, progress=progress),
    }
    if baseline:
        report["untrained"] = evaluate(untrained_like(model), data, progress=progress)
    return report


def record_in_metrics(checkpoint: Path, corpus: Path, report: dict[str, Any], name: str) -> None:
    """Keep this evaluation in the checkpoint's metrics.json under `name`, with what is
    needed to make the same corpus again (generator version, seed and counts)."""
    info = read_corpus_info(corpus)
    metrics = read_metrics(checkpoint)
    metrics[name] = {
        "corpus": {
            "generator_version": info["version"],
            "seed": info["seed"],
            "n": info["counts"]["clip"],
            "audio": info["counts"]["audio"],
            "stills": info["counts"]["still"],
        },
        "split": report["data"]["split"],
        "candidates": report["data"]["candidates"],
        "retrieval": report["trained"]["retrieval"],
        **{
            k: report["trained"][k]
            for k in ("retrieval_narration", "retrieval_sounds", "retrieval_stills", "probes")
            if k in report["trained"]
        },
    }
    if "untrained" in report:
        metrics[name]["untrained_retrieval"] = report["untrained"]["retrieval"]
    write_atomic(checkpoint / "metrics.json", json.dumps(metrics, indent=2) + "\n")
