"""Evaluation: retrieval metrics, linear probes, and train → eval end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from train_fixtures import run, train_command

from model.config import load_config
from model.embedding import average_windows
from model.evaluation.errors import EvalError, MetricsError
from model.evaluation.eval_sets import prepare_corpus_eval
from model.evaluation.evaluate import PROBES, probe_label
from model.evaluation.linear_probe import linear_probe
from model.evaluation.reports import markdown_report
from model.evaluation.retrieval_metrics import ranks_of_positives, retrieval_metrics


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_a_model_that_embeds_nan_finds_nothing() -> None:
    """NaN scores ranked every positive 0: R@1 1.0, and the worker switched to the model."""
    rng = np.random.default_rng(0)
    good = rng.standard_normal((20, 4))
    nan = np.full((20, 4), np.nan)
    for queries, candidates in ((nan, good), (good, nan), (nan, nan)):
        metrics = retrieval_metrics(queries, candidates)
        assert metrics["R@10"] == 0.0 and metrics["median_rank"] == 20
    some = good.copy()
    some[:10] = np.nan  # half the queries broken: only the other half can be hits
    assert retrieval_metrics(some, good)["R@1"] <= 0.5


def test_ranks_count_ties_against_the_query() -> None:
    similarity = np.array([[0.9, 0.1, 0.3], [0.5, 0.5, 0.2], [0.7, 0.7, 0.7]])
    assert ranks_of_positives(similarity).tolist() == [1, 2, 3]
    # A collapsed model (every score equal) ranks every positive last: chance, not 1.0.
    assert retrieval_metrics(np.ones((5, 4)), np.ones((5, 4)))["R@1"] == 0.0


@pytest.mark.parametrize("split", ["all", "train"])
def test_probes_are_not_scored_on_the_clips_they_are_fitted_on(tmp_path: Path, split: str) -> None:
    # Refused before any corpus is read: the folder does not even exist.
    with pytest.raises(EvalError, match="--probe-train 0"):
        prepare_corpus_eval(tmp_path / "none", load_config("tiny"), split, 10, 100, False)


def test_recall_and_median_rank_of_known_rankings() -> None:
    rng = np.random.default_rng(0)
    candidates = unit(rng.normal(size=(20, 8)))
    perfect = retrieval_metrics(candidates, candidates)
    assert (perfect["R@1"], perfect["R@10"], perfect["median_rank"]) == (1.0, 1.0, 1.0)
    # Queries that match candidate (i + 1) mod 20: the own clip is never first.
    shifted = retrieval_metrics(np.roll(candidates, -1, axis=0), candidates)
    assert shifted["R@1"] == 0.0 and shifted["median_rank"] > 1
    some = retrieval_metrics(candidates[:3], candidates, positive=np.array([0, 1, 2]))
    assert some["queries"] == 3 and some["candidates"] == 20 and some["R@1"] == 1.0
    with pytest.raises(MetricsError):
        retrieval_metrics(candidates, candidates[:, :4])


def test_probes_read_the_objects_attributes_and_the_clips_background() -> None:
    row = {"attributes": {"background": "wavy", "objects": [{"shape": "star", "size": "big"}]}}
    assert probe_label(row, "background") == "wavy"
    assert probe_label(row, "shape") == "star"
    # The background is both seen and heard, so both backbones are probed for it.
    assert all("background" in labels for labels in PROBES.values())


def test_linear_probe_reads_separable_classes_and_not_random_labels() -> None:
    rng = np.random.default_rng(1)
    labels = np.array(["ball", "cube", "ring"])
    centres = rng.normal(size=(3, 16)) * 4
    y_train, y_test = rng.integers(0, 3, 150), rng.integers(0, 3, 60)
    x_train = centres[y_train] + rng.normal(size=(150, 16))
    x_test = centres[y_test] + rng.normal(size=(60, 16))
    separable = linear_probe(x_train, labels[y_train], x_test, labels[y_test])
    assert separable["accuracy"] > 0.95 and separable["classes"] == 3
    noise = linear_probe(
        rng.normal(size=(150, 16)), labels[y_train], rng.normal(size=(60, 16)), labels[y_test]
    )
    assert noise["accuracy"] < 0.6
    with pytest.raises(MetricsError):
        linear_probe(x_train, np.array(["ball"] * 150), x_test, labels[y_test])


def test_window_embeddings_are_averaged_per_clip_and_renormalised() -> None:
    z = unit(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    out = average_windows(z, np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(out, [[2**-0.5, 2**-0.5], [2**-0.5, 2**-0.5]], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~1.5 min on 2 idle cores; leave room for a busy machine
def test_train_then_eval_beats_the_untrained_model(small_corpus: Path, tmp_path: Path) -> None:
    """A short run on the small corpus, evaluated with `python -m model.evaluation` on its
    held-out test clips against the same architecture untrained."""
    ckpt = tmp_path / "model"
    run(
        train_command(
            small_corpus, ckpt, 300, overrides=["train.batch_size=16", "train.warmup_steps=30"]
        )
    )
    report_path = tmp_path / "report" / "eval.json"
    eval_command = [
        sys.executable,
        "-m",
        "model.evaluation",
        str(ckpt),
        "--data",
        str(small_corpus),
    ]
    done = run([*eval_command, "--json", str(report_path), "--candidates", "10", "--no-progress"])
    assert "Zero-shot retrieval" in done.stdout
    assert "Text → audio through g_va→vat alone" in done.stdout
    for suffix in (".json", ".md", ".png"):
        assert report_path.with_suffix(suffix).stat().st_size > 0
    report = json.loads(report_path.read_text())
    assert markdown_report(report) == report_path.with_suffix(".md").read_text()
    trained, untrained = report["trained"]["retrieval"], report["untrained"]["retrieval"]
    assert set(trained) == {
        "text->video",
        "text->audio",
        "video->audio",
        "audio->video",
        "image->video",
    }
    directions = ("text->video", "text->audio", "video->audio", "audio->video")

    def mean_rank(result: dict) -> float:
        return float(np.mean([result[d]["median_rank"] for d in directions]))

    assert mean_rank(trained) < mean_rank(untrained) - 1.0
    assert trained["text->video"]["R@5"] > untrained["text->video"]["R@5"]
    # text → audio by the paper's protocol too: through g_va→vat, without the audio
    # bridge fitted after training against the narrations.
    zero_shot = report["trained"]["retrieval_through_g"]["text->audio"]
    assert zero_shot["space"] == "vat" and 0.0 <= zero_shot["R@10"] <= 1.0


def test_eval_windows_with_one_probe_equal_a_probe_per_file(
    small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import model.corpus.clip_info as clip_info_module
    from model.config import load_config
    from model.corpus import read_manifest
    from model.evaluation.eval_sets import load_eval_set
    from model.media import load_windows, read_media_info

    corpus = tmp_path / "corpus"  # a copy whose eval cache starts empty
    corpus.mkdir()
    for name in ("manifest.jsonl", "corpus.json"):
        shutil.copy(small_corpus / name, corpus)
    (corpus / "clips").symlink_to(small_corpus / "clips")
    cfg = load_config("tiny")
    rows = read_manifest(corpus, kind="clip", split="val")
    calls: list[Path] = []
    monkeypatch.setattr(
        clip_info_module,
        "read_media_info",
        lambda path, limits=None: calls.append(path) or read_media_info(path, limits),
    )
    got = load_eval_set(corpus, cfg, rows, "val", n_windows=2, progress=False)
    assert 1 <= len(calls) <= 4 < len(rows)  # one per decoding thread at most
    for i, row in enumerate(rows):
        want = load_windows(corpus / row["path"], cfg, 2, read_media_info(corpus / row["path"]))
        assert got.video is not None and got.audio is not None
        assert np.array_equal(got.video[got.owner == i], want.video)
        assert np.array_equal(got.audio[got.owner == i], want.audio)
