"""The ablation runner's bookkeeping: it refuses to mix budgets (a finished run of another
step count in the output folder would otherwise be reused silently in the new table),
reports finished runs without training (--table-only), keeps each finished run's result
where it outlives the machine (--keep), and keeps one doc section per budget."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from train_fixtures import FAST

from model.errors import ModelError
from model.training.ablation import main, run_ablation, run_order
from model.training.ablation_records import corpus_digest, kept_path, write_kept
from model.training.ablation_report import claims, doc_markers, markdown, summarise, update_doc
from model.training.resume import TRAINER_REVISION


def test_a_finished_run_of_another_budget_is_refused_before_any_work(tmp_path: Path) -> None:
    run = tmp_path / "ablation" / "fac-seed0"
    run.mkdir(parents=True)
    (run / "eval.json").write_text("{}")
    (run / "metrics.json").write_text(json.dumps({"train": {"steps": 300}}))
    # The corpus does not exist: the check must come before the evaluation set is made.
    with pytest.raises(ModelError, match="300 steps, not 600"):
        run_ablation(tmp_path / "no-corpus", tmp_path / "ablation", 600, [0], ["fac"])


def _finished_run(
    out: Path, name: str, seed: int, steps: int, t2v: float,
    revision: int | None = TRAINER_REVISION,
) -> None:  # fmt: skip
    run = out / f"{name}-seed{seed}"
    run.mkdir(parents=True)
    train = {"steps": steps, "trainer_revision": revision}
    (run / "metrics.json").write_text(json.dumps({"train": train}))
    result = {"candidates": 1000, "retrieval": {"text->video": {"R@10": t2v}}}
    (run / "eval.json").write_text(json.dumps(result))


def test_a_finished_run_of_another_trainer_is_refused_before_any_work(tmp_path: Path) -> None:
    """A run folder outlives the code that trained it: one trained before a change that
    made the trainer learn differently (the channels-last trunks) must not join a table
    of this trainer's runs."""
    out = tmp_path / "ablation"
    _finished_run(out, "fac", 0, 600, 0.5, revision=None)
    with pytest.raises(ModelError, match=r"another trainer \(no revision recorded"):
        run_ablation(tmp_path / "no-corpus", out, 600, [0], ["fac"], table_only=True)
    shutil.rmtree(out)
    _finished_run(out, "fac", 0, 600, 0.5, revision=TRAINER_REVISION - 1)
    with pytest.raises(ModelError, match=f"revision {TRAINER_REVISION - 1}, this one is"):
        run_ablation(tmp_path / "no-corpus", out, 600, [0], ["fac"])
    (out / "fac-seed0" / "eval.json").unlink()  # trained, killed before its evaluation
    with pytest.raises(ModelError, match=f"revision {TRAINER_REVISION - 1}, this one is"):
        run_ablation(tmp_path / "no-corpus", out, 600, [0], ["fac"])


def test_table_only_summarises_the_finished_runs_and_trains_nothing(tmp_path: Path) -> None:
    out = tmp_path / "ablation"
    _finished_run(out, "fac", 0, 2000, 0.5)
    _finished_run(out, "fac", 1, 2000, 0.7)
    _finished_run(out, "shared", 0, 2000, 0.4)
    # No corpus: table-only must not decode or train anything (disjoint has no runs yet).
    results = run_ablation(
        tmp_path / "no-corpus",
        out,
        2000,
        [0, 1, 2],
        ["fac", "shared", "disjoint"],
        table_only=True,
    )
    assert results["budget"]["seeds"] == [0, 1]
    assert results["summary"]["fac"]["text→video R@10"]["values"] == [0.5, 0.7]
    table = markdown(results["summary"], results["budget"])
    assert table.startswith("## 2,000 steps a run\n")
    assert "| fac | 2 | 0.600 ± 0.141 |" in table
    assert "| shared | 1 | 0.400 |" in table
    assert "| disjoint | 0 | n/a |" in table
    assert not (out / "disjoint-seed0").exists()
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_modality_variants_take_their_own_seeds(tmp_path: Path) -> None:
    """--pair-seeds: the default recipe's ablation runs fac-va/fac-vt at one seed while
    the space options run at two; a finished fac-va seed 1 is then not in the table."""
    out = tmp_path / "ablation"
    for seed in (0, 1):
        _finished_run(out, "fac", seed, 2500, 0.9 + seed / 100)
        _finished_run(out, "fac-va", seed, 2500, 0.5)
    results = run_ablation(
        tmp_path / "no-corpus",
        out,
        2500,
        [0, 1],
        ["fac", "fac-va"],
        table_only=True,
        pair_seeds=[0],
    )
    seeds = {(run["variant"], run["seed"]) for run in results["runs"]}
    assert seeds == {("fac", 0), ("fac", 1), ("fac-va", 0)}


def test_the_doc_gets_the_table_and_its_figure(tmp_path: Path) -> None:
    out, doc = tmp_path / "ablation", tmp_path / "docs" / "ablation.md"
    doc.parent.mkdir()
    doc.write_text("# Ablation\n")
    _finished_run(out, "fac", 0, 2000, 0.5)
    _finished_run(out, "fac", 1, 2000, 0.7)
    argv = ["--data", str(tmp_path / "c"), "--out", str(out), "--steps", "2000"]
    assert main([*argv, "--variants", "fac", "--table-only", "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert "![the ablation at 2,000 steps" in text and "(img/ablation-2000.png)" in text
    assert (doc.parent / "img" / "ablation-2000.png").read_bytes()[:4] == b"\x89PNG"


def test_table_only_with_nothing_finished_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no finished runs .* in .*/a: `make ablation`"):
        run_ablation(tmp_path / "c", tmp_path / "a", 2000, [0], ["fac"], table_only=True)


def test_each_budget_keeps_its_own_section_of_the_doc(tmp_path: Path) -> None:
    doc = tmp_path / "ablation.md"
    doc.write_text("# Ablation\n\nIntro.\n")
    update_doc(doc, "table 300 v1", 300)
    update_doc(doc, "table 2000", 2000)
    update_doc(doc, "table 300 v2", 300)  # replaced in place, the other budget kept
    text = doc.read_text()
    assert "table 300 v1" not in text
    assert text.count("table 300 v2") == 1 and text.count("table 2000") == 1
    # The newer budget's section came first; the intro is untouched.
    assert text.index("Intro.") < text.index("table 2000") < text.index("table 300 v2")
    begin, end = doc_markers(2000)
    assert text.index(begin) < text.index("table 2000") < text.index(end)


def _summary(figures: dict[str, list[float]], label: str = "text→video R@10") -> dict:
    runs = [
        {"variant": name, "seed": seed, "result": {"retrieval": {"text->video": {"R@10": v}}}}
        for name, values in figures.items()
        for seed, v in enumerate(values)
    ]
    return summarise(runs, list(figures))


def _claim(summary: dict, start: str) -> str:
    (line,) = [line for line in claims(summary) if line.startswith(start)]
    return line


def test_a_claim_holds_only_when_the_margin_exceeds_the_seeds_spread() -> None:
    start = "- FAC best on video–text"
    clear = _summary({"fac": [0.90, 0.91, 0.92], "shared": [0.80, 0.81, 0.79]})
    assert "(text→video R@10): holds —" in _claim(clear, start)
    assert "seeds with fac ahead: 3 of 3 against shared" in _claim(clear, start)
    # Same means' order, but the seeds scatter more than the margin: not separated.
    noisy = _summary({"fac": [0.95, 0.80, 0.90], "shared": [0.85, 0.86, 0.84]})
    assert "not separated" in _claim(noisy, start)
    assert "2 of 3 against shared" in _claim(noisy, start)
    # FAC clearly behind one of the others: does not hold, whatever the third does.
    behind = _summary(
        {"fac": [0.80, 0.81, 0.82], "shared": [0.70, 0.75, 0.72], "disjoint": [0.9, 0.91, 0.9]}
    )
    assert "): does not hold —" in _claim(behind, start)


def test_a_comparison_not_separated_is_not_hidden_by_a_one_seed_one() -> None:
    start = "- FAC best on video–text"
    mixed = _summary({"fac": [0.90, 0.92], "shared": [0.89, 0.93], "disjoint": [0.5]})
    assert "(text→video R@10): not separated —" in _claim(mixed, start)


def test_video_audio_is_judged_on_the_linear_probes_too() -> None:
    """The paper's video–audio tasks are linear probes of the frozen towers (UCF101,
    HMDB51, ESC-50), not retrieval, which saturates at this corpus's scale."""
    runs = [
        {"variant": name, "seed": seed, "result": {
            "retrieval": {"video->audio": {"R@10": 0.97 + 0.01 * seed}},
            "probes": {"video/shape": {"accuracy": probe + 0.01 * seed}},
        }}
        for name, probe in (("fac", 0.95), ("shared", 0.30))
        for seed in (0, 1)
    ]  # fmt: skip
    summary = summarise(runs, ["fac", "shared"])
    assert "not separated" in _claim(summary, "- FAC best on video–audio (video→audio R@10)")
    assert "): holds —" in _claim(summary, "- FAC best on video–audio (probe video/shape)")


def test_with_one_seed_a_claim_is_judged_on_the_means_and_says_so() -> None:
    line = _claim(_summary({"fac": [0.9], "fac-vt": [0.7]}), "- three modalities")
    assert "holds on the means (one seed: no spread to judge by)" in line
    assert "seeds with three ahead: 1 of 1" in line


def test_runs_go_seed_by_seed_and_the_two_modality_variants_last() -> None:
    """In pieces, the three spaces are compared at one seed before any has a second."""
    order = run_order(["fac", "shared", "disjoint", "fac-va", "fac-vt"], [0, 1], [0])
    assert order == [
        ("fac", 0), ("shared", 0), ("disjoint", 0),
        ("fac", 1), ("shared", 1), ("disjoint", 1),
        ("fac-va", 0), ("fac-vt", 0),
    ]  # fmt: skip
    assert run_order(["fac", "fac-va"], [0, 1], None) == [
        ("fac", 0), ("fac", 1), ("fac-va", 0), ("fac-va", 1),
    ]  # fmt: skip


def _kept(
    keep: Path, name: str, seed: int, t2v: float, digest: str | None = "c0ffee",
    lr: float | None = None, **budget: object,
) -> None:  # fmt: skip
    overrides: dict[str, object] = {"train.batch_size": 256, "heads.space": name}
    if lr is not None:
        overrides["train.lr"] = lr
    write_kept(
        kept_path(keep, name, seed), name, seed,
        {"steps": 2500, "batch_size": 256, "config": "tiny", **budget}, overrides, digest,
        {"candidates": 1000, "retrieval": {"text->video": {"R@10": t2v}}},
    )  # fmt: skip


def _corpus(folder: Path) -> str:
    """A corpus folder (its manifest is all the digest reads); returns its digest."""
    folder.mkdir()
    (folder / "manifest.jsonl").write_text('{"id": "clip-000000"}\n')
    digest = corpus_digest(folder)
    assert digest is not None
    return digest


def test_kept_results_make_the_table_on_a_machine_without_the_runs(tmp_path: Path) -> None:
    """A fresh machine has no data/: the runs kept in git are the finished ones."""
    keep = tmp_path / "docs" / "ablation-runs" / "2500"
    _kept(keep, "fac", 0, 0.9)
    _kept(keep, "fac", 1, 0.8)
    results = run_ablation(
        tmp_path / "no-corpus", tmp_path / "ablation", 2500, [0, 1], ["fac", "shared"],
        overrides={"train.batch_size": 256}, table_only=True, keep=keep,
    )  # fmt: skip
    assert results["summary"]["fac"]["text→video R@10"]["values"] == [0.9, 0.8]
    assert results["summary"]["shared"]["text→video R@10"]["values"] == []


def test_a_run_finished_before_results_were_kept_is_kept_with_its_corpus(tmp_path: Path) -> None:
    keep, corpus = tmp_path / "keep", tmp_path / "corpus"
    _finished_run(tmp_path / "ablation", "shared", 0, 2500, 0.5)
    ask = dict(overrides={"train.batch_size": 256}, table_only=True, keep=keep)
    # Without its corpus nobody can tell which corpus it was trained on: not kept.
    run_ablation(corpus, tmp_path / "ablation", 2500, [0], ["shared"], **ask)  # type: ignore[arg-type]
    assert not kept_path(keep, "shared", 0).exists()
    digest = _corpus(corpus)
    run_ablation(corpus, tmp_path / "ablation", 2500, [0], ["shared"], **ask)  # type: ignore[arg-type]
    shared = json.loads(kept_path(keep, "shared", 0).read_text())
    assert shared["budget"] == {"steps": 2500, "batch_size": 256, "config": "tiny"}
    assert shared["overrides"] == {"train.batch_size": 256, "heads.space": "shared"}
    assert shared["corpus_sha256"] == digest
    assert shared["result"]["retrieval"]["text->video"]["R@10"] == 0.5


def test_a_kept_result_of_another_budget_settings_corpus_or_trainer_is_refused(
    tmp_path: Path,
) -> None:
    keep, corpus = tmp_path / "keep", tmp_path / "corpus"
    ask = dict(overrides={"train.batch_size": 256}, keep=keep)

    def refused(match: str) -> None:
        with pytest.raises(ModelError, match=match):
            run_ablation(corpus, tmp_path / "a", 2500, [0], ["fac"], **ask)  # type: ignore[arg-type]

    _kept(keep, "fac", 0, 0.9, batch_size=32)
    refused("batch_size=32, not 256")
    _kept(keep, "fac", 0, 0.9, lr=1e-4)  # any --set changes the result
    refused(r"other settings \(train.lr")
    digest = _corpus(corpus)
    _kept(keep, "fac", 0, 0.9)  # the budget and settings match, the corpus does not
    refused("another corpus")
    _kept(keep, "fac", 0, 0.9, digest=None)  # kept without its corpus: unknowable
    refused("another corpus")
    _kept(keep, "fac", 0, 0.9, digest=digest)
    record = json.loads(kept_path(keep, "fac", 0).read_text())
    assert record["trainer_revision"] == TRAINER_REVISION
    for older in (None, TRAINER_REVISION - 1):  # kept by another trainer
        kept_path(keep, "fac", 0).write_text(json.dumps({**record, "trainer_revision": older}))
        refused("another trainer")
    kept_path(keep, "fac", 0).write_text(json.dumps(record))
    results = run_ablation(corpus, tmp_path / "a", 2500, [0], ["fac"], table_only=True, **ask)  # type: ignore[arg-type]
    assert results["summary"]["fac"]["text→video R@10"]["values"] == [0.9]


def test_an_ablation_trains_evaluates_and_reuses_its_finished_runs(
    small_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real path: a variant trained and evaluated on the corpus test split, its
    training minutes summed from loss.csv; run again, it is not trained twice."""
    out = tmp_path / "ablation"
    argv = ["--data", str(small_corpus), "--out", str(out), "--steps", "2", "--seeds", "0"]
    argv += ["--variants", "fac", "--candidates", "10", "--probe-train", "0", "--no-progress"]
    argv += [arg for kv in FAST for arg in ("--set", kv)]
    assert main(argv) == 0
    assert "training tiny (fac)" in capsys.readouterr().out
    report = out / "fac-seed0" / "eval.json"
    result = json.loads(report.read_text())
    assert result["candidates"] == 10
    with (out / "fac-seed0" / "loss.csv").open(newline="") as f:
        step_s = [float(row["step_s"]) for row in csv.DictReader(f)]
    assert len(step_s) == 2 and result["train_minutes"] == round(sum(step_s) / 60, 2)
    stamp = report.stat().st_mtime_ns
    assert main(argv) == 0
    assert "training tiny" not in capsys.readouterr().out
    assert report.stat().st_mtime_ns == stamp
    assert set(json.loads((out / "ablation.json").read_text())["summary"]) == {"fac"}

    # Kept in git (--keep): a machine without the run folder trains nothing either.
    keep = tmp_path / "keep"
    assert main([*argv, "--keep", str(keep)]) == 0
    kept = json.loads(kept_path(keep, "fac", 0).read_text())
    assert kept["result"] == result and kept["corpus_sha256"] == corpus_digest(small_corpus)
    assert kept["overrides"]["heads.space"] == "fac"
    assert kept["trainer_revision"] == TRAINER_REVISION
    metrics = json.loads((out / "fac-seed0" / "metrics.json").read_text())
    assert metrics["train"]["trainer_revision"] == TRAINER_REVISION
    shutil.rmtree(out)
    capsys.readouterr()
    assert main([*argv, "--keep", str(keep)]) == 0
    assert "training tiny" not in capsys.readouterr().out
    assert not (out / "fac-seed0").exists()


def test_text_to_audio_is_judged_by_the_papers_protocol_and_with_the_bridge() -> None:
    """FAC's audio bridge is fitted against the clips' narrations: its text → audio is
    no longer zero-shot, which shared's is. The claim is judged both ways; a shared run
    kept before the zero-shot figure existed has it (it has no bridge to leave out)."""

    def run(variant: str, seed: int, bridged: float, through_g: float | None) -> dict:
        result: dict = {"retrieval": {"text->audio": {"R@10": bridged}}}
        if through_g is not None:
            result["retrieval_through_g"] = {"text->audio": {"R@10": through_g}}
        return {"variant": variant, "seed": seed, "result": result}

    runs = [run("fac", 0, 0.88, 0.60), run("fac", 1, 0.87, 0.62),
            run("shared", 0, 0.53, None), run("shared", 1, 0.55, None)]  # fmt: skip
    summary = summarise(runs, ["fac", "shared"])
    assert summary["shared"]["text→audio R@10 through g"]["values"] == [0.53, 0.55]
    zero_shot = _claim(summary, "- FAC above shared on text→audio R@10, zero-shot")
    assert "holds" in zero_shot and "fac 0.610 ± 0.014, shared 0.540 ± 0.014" in zero_shot
    bridged = _claim(summary, "- FAC above shared on text→audio R@10, FAC with its audio bridge")
    assert "fac 0.875 ± 0.007" in bridged
    # A FAC run kept before the zero-shot figure: not filled in from the bridged one.
    old = summarise([run("fac", 0, 0.88, None)], ["fac"])
    assert old["fac"]["text→audio R@10 through g"]["values"] == []
