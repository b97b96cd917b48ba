"""Evaluation, the paper's way: zero-shot retrieval, linear probes, images via deflation.

    python -m model.eval CKPT --data CORPUS [--json OUT] [--candidates 1000]

On the corpus test split (the first `--candidates` clips, 1,000 by default):
- zero-shot retrieval text→video, text→audio, video→audio, audio→video and
  image→video: R@1/5/10 and median rank. A query's own clip is its only positive.
  Text queries are the clips' canonical descriptions, as a user would type them
  (and, reported beside, their spoken narrations). Video and audio embeddings are
  averaged over uniformly spaced windows covering each clip (the paper's protocol);
  an image query is the middle frame of its clip, embedded by the deflated network.
  text→sound: the descriptions of the test split's sound files (no colour named),
  against those sound files;
- linear probes on frozen backbone features (UCF101 / ESC-50 protocol): standardise,
  linear SVM fitted on train-split clips, accuracy on the test clips, labels from the
  manifest's attributes (single-object clips, so each label is unambiguous);
- the same for an untrained model of the same architecture, as the floor.

Decoded windows are cached under CORPUS/cache/eval/ (decoding is the slow part), so
evaluating many models on one corpus decodes it once. Writes OUT (JSON) and, beside
it, OUT.md (the tables) and OUT.png (the figure); OUT defaults to CKPT/eval.json.
Attributes and descriptions are read here only; training never sees them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model.atomic_files import publish_dir, write_atomic
from model.checkpoint import load as load_checkpoint
from model.checkpoint import read_metrics
from model.config import ModelConfig
from model.corpus import read_corpus_info, read_manifest
from model.corpus.clip_info import CorpusClipInfo
from model.embedding import embed_texts, embed_windows, in_batches
from model.errors import ModelError
from model.factory import build_model
from model.media import MediaError, load_windows
from model.metrics import chance_recall, linear_probe, retrieval_metrics
from model.mmv import MMV
from model.spaces import space_for
from model.training.clip_dataset import ClipDataset

EVAL_CACHE_VERSION = 1
DEFAULT_CANDIDATES = 1000
PROBE_TRAIN_CLIPS = 2000  # single-object train clips the probes are fitted on
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


class EvalError(ModelError):
    """A corpus or checkpoint that cannot be evaluated as asked."""


# -- decoded windows, cached on disk -------------------------------------------------------
@dataclass
class EvalSet:
    """Decoded windows of some corpus items. Window w belongs to item owner[w].

    video uint8 [W, T, H, W, 3] or None; audio float32 [W, S] or None (memory-mapped).
    """

    rows: list[dict[str, Any]]
    video: np.ndarray | None
    audio: np.ndarray | None
    owner: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def middle_frames(self) -> np.ndarray:
        """uint8 [N, H, W, 3]: the middle frame of each item's middle window."""
        assert self.video is not None
        firsts = np.searchsorted(self.owner, np.arange(len(self.rows)))
        counts = np.bincount(self.owner, minlength=len(self.rows))
        middle = firsts + counts // 2
        return np.asarray(self.video[middle, self.video.shape[1] // 2])


def load_eval_set(
    corpus: Path,
    cfg: ModelConfig,
    rows: list[dict[str, Any]],
    name: str,
    n_windows: int | None = None,
    progress: bool = True,
) -> EvalSet:
    """Windows of `rows` at `cfg`'s preprocessing; decoded once, then read from the cache.

    n_windows None: enough windows to cover each file (at most 10, the paper's count).
    """
    v = cfg.video
    key_source = json.dumps(
        [
            EVAL_CACHE_VERSION,
            [r["id"] for r in rows],
            n_windows,
            v.fps,
            v.frames,
            v.crop_size,
            cfg.audio.sample_rate,
            cfg.clip_seconds,
        ],
    ).encode()
    key = hashlib.sha256(key_source).hexdigest()[:16]
    folder = corpus / "cache" / "eval" / f"{name}-{len(rows)}-{key}"
    if not (folder / "owner.npy").is_file():
        _decode_eval_set(corpus, cfg, rows, n_windows, folder, progress)
    video = (
        np.load(folder / "video.npy", mmap_mode="r") if (folder / "video.npy").is_file() else None
    )
    audio = (
        np.load(folder / "audio.npy", mmap_mode="r") if (folder / "audio.npy").is_file() else None
    )
    return EvalSet(rows=rows, video=video, audio=audio, owner=np.load(folder / "owner.npy"))


def _decode_eval_set(
    corpus: Path,
    cfg: ModelConfig,
    rows: list[dict[str, Any]],
    n_windows: int | None,
    folder: Path,
    progress: bool,
) -> None:
    clip_info = CorpusClipInfo(corpus)  # the corpus's clips need one ffprobe, not one each

    def one(row: dict[str, Any]) -> Any:
        path = corpus / row["path"]
        try:
            info = clip_info(path, row.get("duration_s")) if row["kind"] == "clip" else None
            return load_windows(path, cfg, n_windows, info, parallel=1)
        except MediaError as exc:
            raise EvalError(f"cannot decode {row['path']} for evaluation: {exc}") from exc

    workers = min(4, max(1, len(os.sched_getaffinity(0))))
    with ThreadPoolExecutor(workers) as pool:  # ffmpeg runs in its own processes
        windows = list(
            tqdm(
                pool.map(one, rows),
                total=len(rows),
                desc=f"decoding {folder.name}",
                unit="file",
                disable=not progress,
            )
        )

    def write(tmp: Path) -> None:
        owner = np.concatenate([np.full(len(w), i) for i, w in enumerate(windows)])
        np.save(tmp / "owner.npy", owner)
        if all(w.video is not None for w in windows):
            np.save(tmp / "video.npy", np.concatenate([w.video for w in windows]))
        if all(w.audio is not None for w in windows):
            np.save(tmp / "audio.npy", np.concatenate([w.audio for w in windows]))

    publish_dir(folder, write)


@dataclass
class CorpusEval:
    """Everything one corpus contributes to an evaluation (shared by many models)."""

    corpus: Path
    split: str
    clips: EvalSet  # the retrieval candidates
    probe_train: EvalSet | None
    sounds: EvalSet | None


def prepare_corpus_eval(
    corpus: Path,
    cfg: ModelConfig,
    split: str = "test",
    candidates: int = DEFAULT_CANDIDATES,
    probe_train_clips: int = PROBE_TRAIN_CLIPS,
    progress: bool = True,
) -> CorpusEval:
    which = None if split == "all" else split
    if probe_train_clips > 0 and split in ("train", "all"):
        # The probes are fitted on training clips: scoring them on those would overstate them.
        raise EvalError(
            f"linear probes are fitted on training clips, so they cannot be scored on split "
            f"'{split}': evaluate on 'test' or 'val', or pass --probe-train 0"
        )
    clip_rows = read_manifest(corpus, kind="clip", split=which)
    if len(clip_rows) < candidates:
        raise EvalError(
            f"{corpus} has {len(clip_rows)} clips in split '{split}', fewer than the "
            f"{candidates} candidates asked for: generate a larger corpus or pass --candidates"
        )
    clips = load_eval_set(corpus, cfg, clip_rows[:candidates], f"{split}-clips", None, progress)
    probe_train = None
    if probe_train_clips > 0:
        train_rows = [
            r
            for r in read_manifest(corpus, kind="clip", split="train")
            if r["attributes"]["n_objects"] == 1
        ][:probe_train_clips]
        if train_rows:
            probe_train = load_eval_set(corpus, cfg, train_rows, "probe-train", 1, progress)
    sound_rows = read_manifest(corpus, kind="audio", split=which)
    sounds = None
    if len(sound_rows) >= 2:  # one sound alone would be found every time
        sounds = load_eval_set(corpus, cfg, sound_rows, f"{split}-sounds", None, progress)
    return CorpusEval(corpus, split, clips, probe_train, sounds)


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
    stages.update()
    if data.probe_train is not None:
        result["probes"] = linear_probes(model, data.probe_train, clips, batch_size)
    stages.update()
    stages.close()
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


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


# -- reports -------------------------------------------------------------------------------
def markdown_report(report: dict[str, Any]) -> str:
    """The tables of an evaluation report (trained model, and the untrained floor if present)."""
    lines = [f"# Evaluation of `{report['checkpoint']}`", ""]
    lines.append(
        f"Corpus `{report['data']['corpus']}`, split `{report['data']['split']}`, "
        f"{report['trained']['candidates']} candidates (chance R@10 = "
        f"{report['trained']['chance']['R@10']:.3f}). Text queries: the clips' canonical "
        "descriptions; embeddings averaged over uniformly spaced windows."
    )
    ceiling = report["trained"].get("description_ceiling")
    if ceiling:
        lines.append(
            f"Only {ceiling['unique_share']:.0%} of the descriptions are unique among the "
            f"candidates: a model that told every clip with the same description apart "
            f"from none could reach at most R@1 {ceiling['R@1']:.3f}, R@10 "
            f"{ceiling['R@10']:.3f} for text queries."
        )
    lines.append("")
    models = [("trained", report["trained"])]
    if "untrained" in report:
        models.append(("untrained", report["untrained"]))
    for title, key in (
        ("Zero-shot retrieval", "retrieval"),
        ("Retrieval with the spoken narration as the query", "retrieval_narration"),
        ("Text → sound files", "retrieval_sounds"),
    ):
        if key not in report["trained"]:
            continue
        lines += [
            f"## {title}",
            "",
            "| direction | model | space | R@1 | R@5 | R@10 | median rank |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in report["trained"][key]:
            for label, res in models:
                m = res.get(key, {}).get(name)
                if m is None:
                    continue
                if m.get("space") is None:
                    lines.append(f"| {name} | {label} | — | n/a | n/a | n/a | n/a |")
                    continue
                lines.append(
                    f"| {name} | {label} | {m['space']} | {m['R@1']:.3f} | {m['R@5']:.3f} | "
                    f"{m['R@10']:.3f} | {m['median_rank']:g} |"
                )
        lines.append("")
    if report["trained"].get("probes"):
        lines += [
            "## Linear probes on frozen backbone features (single-object clips)",
            "",
            "| features / label | model | accuracy | chance (majority) | classes |",
            "|---|---|---|---|---|",
        ]
        for name in report["trained"]["probes"]:
            for label, res in models:
                p = res.get("probes", {}).get(name)
                if p:
                    lines.append(
                        f"| {name} | {label} | {p['accuracy']:.3f} | {p['chance']:.3f} | "
                        f"{p['classes']} |"
                    )
        lines.append("")
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = report["trained"]
    names = [n for n, m in trained["retrieval"].items() if m.get("space")]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    width = 0.38 if "untrained" in report else 0.6
    xs = np.arange(len(names))
    ax.bar(
        xs - (width / 2 if "untrained" in report else 0),
        [trained["retrieval"][n]["R@10"] for n in names],
        width,
        label="trained",
    )
    if "untrained" in report:
        ax.bar(
            xs + width / 2,
            [report["untrained"]["retrieval"][n]["R@10"] for n in names],
            width,
            label="untrained",
        )
    ax.axhline(trained["chance"]["R@10"], color="grey", linestyle="--", label="chance")
    ax.set_xticks(xs, names)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"R@10 among {trained['candidates']}")
    ax.set_title(f"zero-shot retrieval — {Path(report['checkpoint']).name}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: dict[str, Any], json_path: Path) -> None:
    """OUT (JSON), OUT.md (tables), OUT.png (figure)."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    json_path.with_suffix(".md").write_text(markdown_report(report))
    plot_report(report, json_path.with_suffix(".png"))


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
            for k in ("retrieval_narration", "retrieval_sounds", "probes")
            if k in report["trained"]
        },
    }
    if "untrained" in report:
        metrics[name]["untrained_retrieval"] = report["untrained"]["retrieval"]
    write_atomic(checkpoint / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.eval", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data", required=True, type=Path, help="corpus folder")
    p.add_argument("--json", type=Path, default=None, help="report path (default CKPT/eval.json)")
    p.add_argument(
        "--split",
        default="test",
        choices=("test", "val", "all"),
        help="which clips are candidates (all: every split; for check sets)",
    )
    p.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES)
    p.add_argument(
        "--probe-train",
        type=int,
        default=PROBE_TRAIN_CLIPS,
        help="train clips for the linear probes (0: no probes)",
    )
    p.add_argument("--no-baseline", action="store_true", help="skip the untrained model")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--record",
        metavar="NAME",
        default=None,
        help="also store the figures in CKPT/metrics.json under NAME (make model "
        "records 'test' and 'check'; tests/model/test_default_model.py "
        "reproduces 'check')",
    )
    a = p.parse_args(argv)
    try:
        report = evaluate_checkpoint(
            a.checkpoint,
            a.data,
            a.split,
            a.candidates,
            a.probe_train,
            baseline=not a.no_baseline,
            progress=not a.no_progress,
        )
    except (ModelError, MediaError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.record:
        record_in_metrics(a.checkpoint, a.data, report, a.record)
    out = a.json or a.checkpoint / "eval.json"
    write_report(report, out)
    print(markdown_report(report))
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
