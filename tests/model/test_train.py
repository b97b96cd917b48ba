"""The trainer: schedule, batches, data parallel = one process, resume after a kill,
fine-tuning with a growing vocabulary."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from train_fixtures import FAST, REPO, run, train_command

from model import build_model, load_config, load_model, save_model
from model.tokenizer import Tokenizer
from model.training.errors import TrainError
from model.training.history import TrainingHistory
from model.training.loader import StepBatchSampler, default_loader_workers
from model.training.options import TrainOptions, apply_overrides, parse_args, parse_overrides
from model.training.resume import (
    STATE_FILE,
    STATE_VERSION,
    TRAINER_REVISION,
    discard_stale_state,
    run_fingerprint,
    save_state,
)
from model.training.schedule import lr_at, warmup_steps_for
from model.training.train import build_for_training, nonfinite_tensors, train


def loss_rows(out: Path) -> list[dict[str, float]]:
    lines = (out / "loss.csv").read_text().splitlines()
    keys = lines[0].split(",")
    return [dict(zip(keys, map(float, line.split(",")), strict=True)) for line in lines[1:]]


# -- fast unit tests -----------------------------------------------------------------------
def test_lr_warms_up_linearly_then_decays_by_half_cosine_to_zero() -> None:
    total, base, warmup = 100, 2e-3, 10
    lrs = [lr_at(s, total, base, warmup) for s in range(total)]
    assert lrs[0] == pytest.approx(base / warmup)
    assert lrs[warmup - 1] == pytest.approx(base)
    assert all(a < b for a, b in itertools.pairwise(lrs[:warmup]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[warmup:]))
    middle = warmup + (total - warmup) // 2
    assert lrs[middle] == pytest.approx(base / 2, rel=1e-6)
    assert lrs[-1] < base * 1e-3
    # A short run keeps the shape: the warm-up shrinks to a fifth of it.
    assert warmup_steps_for(20, 5000) == 4
    assert lr_at(3, 20, base, 5000) == pytest.approx(base)


def test_global_batch_is_split_in_contiguous_slices_and_resumes_mid_epoch() -> None:
    size, batch, seed = 50, 8, 3
    single = list(StepBatchSampler(size, batch, seed, 0, 12))
    ranks = [list(StepBatchSampler(size, batch, seed, 0, 12, r, 2)) for r in range(2)]
    for step, keys in enumerate(single):
        assert ranks[0][step] + ranks[1][step] == keys
        assert len({k[0] for k in keys}) == batch  # no clip twice in a batch
    # 6 steps per epoch: step 6 starts epoch 1 with a fresh permutation.
    assert {e for keys in single[:6] for _, e in keys} == {0}
    assert {e for keys in single[6:] for _, e in keys} == {1}
    assert list(StepBatchSampler(size, batch, seed, 7, 12)) == single[7:]
    with pytest.raises(TrainError, match="does not split"):
        StepBatchSampler(size, 9, seed, 0, 1, 0, 2)
    with pytest.raises(TrainError, match="cannot fill one batch"):
        StepBatchSampler(4, 8, seed, 0, 1)


def test_loader_runs_in_process_on_small_cpus_and_uses_spare_cores_on_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On 2 cores a loader process takes a core from the step's threads (bench/train.py).
    monkeypatch.setattr("model.training.loader.usable_cpus", lambda: 2)
    assert default_loader_workers(1, "cpu", 1) == 0
    assert default_loader_workers(1, "cuda", 1) == 1
    monkeypatch.setattr("model.training.loader.usable_cpus", lambda: 16)
    assert default_loader_workers(1, "cpu", 1) == 1
    assert default_loader_workers(1, "cpu", 8) == 0  # 8 ranks share 16 cores
    assert default_loader_workers(1, "cuda", 1) == 8
    assert default_loader_workers(1, "cuda", 2) == 7


def test_overrides_parse_values_and_reject_unknown_keys() -> None:
    overrides = parse_overrides(["heads.space=shared", "train.batch_size=16", "loss.lambda_vt=0"])
    assert overrides == {"heads.space": "shared", "train.batch_size": 16, "loss.lambda_vt": 0}
    cfg = apply_overrides(load_config("tiny"), overrides)
    assert (cfg.heads.space, cfg.train.batch_size, cfg.loss.lambda_vt) == ("shared", 16, 0)
    with pytest.raises(TrainError):
        parse_overrides(["batch_size=3"])
    with pytest.raises(ValueError):
        apply_overrides(load_config("tiny"), {"train.no_such_key": 1})


def test_no_calibration_flag_keeps_its_older_name(tmp_path: Path) -> None:
    base = ["--data", str(tmp_path), "--out", str(tmp_path / "run")]
    assert parse_args(base).calibrate
    assert not parse_args([*base, "--no-calibration"]).calibrate
    assert not parse_args([*base, "--no-image-calibration"]).calibrate


def test_refuses_to_continue_a_different_run(small_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    options = TrainOptions(
        data=small_corpus, out=out, steps=5, overrides=parse_overrides(FAST), progress=False
    )
    cfg = apply_overrides(load_config("tiny"), options.overrides)
    model = build_model(cfg, Tokenizer(["ball"]))
    other = run_fingerprint(cfg, TrainOptions(data=small_corpus, out=out, seed=1), 5, 1)
    save_state(
        out / STATE_FILE,
        model,
        torch.optim.Adam(model.parameters()),
        2,
        other,
        TrainingHistory(),
        {},
    )
    with pytest.raises(TrainError, match=r"different run.*seed"):
        train(options)
    # Steps of another trainer (here: one from before revisions were recorded) are not
    # continued by this one: the run's numbers would belong to neither.
    older = run_fingerprint(cfg, options, 5, 1)
    del older["trainer_revision"]
    save_state(
        out / STATE_FILE, model, torch.optim.Adam(model.parameters()), 2, older,
        TrainingHistory(), {},
    )  # fmt: skip
    with pytest.raises(TrainError, match=r"another trainer \(no revision recorded"):
        train(options)


def test_a_training_job_saved_by_another_trainer_trains_again_from_its_first_step(
    small_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The service's training process (service/worker/train_run.py) continues a released
    job from its saved state; after an upgrade that changed how the trainer learns, that
    state is the old trainer's. The trainer refuses it; the worker discards it before
    it starts the process (service/worker/job.py), and the job trains again instead of
    failing."""
    from service.worker import train_run
    from service.worker.training_set import SpecClip, TrainingSet

    clips: dict[str, list[SpecClip]] = {"train": [], "val": []}
    for line in (small_corpus / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["kind"] == "clip" and row["split"] in clips:
            vtt = (small_corpus / row["transcript"]).read_text() if row["transcript"] else None
            path = str(small_corpus / row["path"])
            clip = SpecClip(row["id"], path, row["id"], row["duration_s"], vtt)
            clips[row["split"]].append(clip)
    run_dir = tmp_path / "job"
    TrainingSet(clips["train"], clips["val"], last_seq=0).write(run_dir / "spec.json")
    run_spec = {
        "config": str(REPO / "model" / "configs" / "tiny.json"), "init": None, "steps": 2,
        "seed": 0, "overrides": parse_overrides(FAST), "device": "cpu",
        "cache_dir": str(tmp_path / "cache"), "max_duration_s": 60.0,
        "worker_pid": os.getpid(),
    }  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(run_spec))
    (run_dir / "model").mkdir()
    state = {"version": STATE_VERSION, "step": 1, "fingerprint": {"steps": 2, "seed": 0}}
    torch.save(state, run_dir / "model" / STATE_FILE)  # no trainer revision: an older one's

    assert train_run.main(run_dir) == 1
    assert "another trainer (no revision recorded" in capsys.readouterr().out
    assert discard_stale_state(run_dir / "model")
    assert not (run_dir / "model" / STATE_FILE).exists()
    assert not discard_stale_state(run_dir / "model")  # nothing there: nothing to do
    assert train_run.main(run_dir) == 0
    assert '"event": "done"' in capsys.readouterr().out
    metrics = json.loads((run_dir / "model" / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 2
    assert metrics["train"]["trainer_revision"] == TRAINER_REVISION


def test_a_run_saved_before_the_audio_bridge_resumes(small_corpus: Path, tmp_path: Path) -> None:
    """A run state written by the code before model/audio_bridge.py (no bridge in its
    weights) goes on from its step under the new code instead of failing to load."""
    out = tmp_path / "run"
    out.mkdir()
    options = TrainOptions(
        data=small_corpus,
        out=out,
        steps=4,
        overrides=parse_overrides(FAST),
        progress=False,
        num_workers=0,
        calibrate=False,
    )
    cfg = apply_overrides(load_config("tiny"), options.overrides)
    model = build_model(cfg, Tokenizer(["ball"]))
    del model.heads.audio_bridge  # the model as the older code built it
    fingerprint = run_fingerprint(cfg, options, 4, 1)
    optimizer = torch.optim.Adam(model.parameters())
    save_state(out / STATE_FILE, model, optimizer, 2, fingerprint, TrainingHistory(), {})
    result = train(options)
    assert result.steps == 4
    assert [row["step"] for row in loss_rows(out)] == [3.0, 4.0]  # steps 3 and 4 only
    assert not load_model(out).heads.audio_bridge.is_calibrated


def test_a_finished_run_is_reused_only_with_the_settings_it_was_trained_with(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    cfg = apply_overrides(load_config("tiny"), {"train.batch_size": 256})
    (out / "config.json").write_text(cfg.to_json())
    (out / "metrics.json").write_text(json.dumps({"train": {"steps": 5}}))
    same = {"train.batch_size": 256, "train.eval_every": 7}  # how often it validates: no matter
    assert train(TrainOptions(data=tmp_path, out=out, steps=5, overrides=same)).steps == 5
    with pytest.raises(TrainError, match=r"other settings \(train.batch_size 256 there, 32 now"):
        train(TrainOptions(data=tmp_path, out=out, steps=5))
    with pytest.raises(TrainError, match="trained for 5 steps"):
        train(TrainOptions(data=tmp_path, out=out, steps=6, overrides=same))
    (out / "config.json").unlink()
    with pytest.raises(TrainError, match=r"no config\.json"):
        train(TrainOptions(data=tmp_path, out=out, steps=5, overrides=same))


# -- data parallel -------------------------------------------------------------------------
@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(
    small_corpus: Path, tmp_path: Path
) -> None:
    """torchrun with 2 CPU processes (gloo), each half of a global batch of 8, against
    one process with all 8: the same loss (global negatives, cross-rank BN) and the same
    weights after one Adam step.

    Not bit-identical: summing in another order moves values by ~1e-7, and where that
    flips a ReLU input sitting on zero, the gradients behind it change by a few
    percent; Adam's first step is lr·sign(g), so a handful of near-zero gradient
    components step the other way (measured: ~0.1% of weights). A wrong gradient
    (no cross-rank BN, local negatives only) moves far more.

    In float32: bf16 kernels sum in blocks that depend on the batch size, and on a CPU
    with AMX a batch of 4 and one of 8 give losses 1e-3 apart (measured 5.4342 against
    5.4388), which says nothing about the gradient path this test is for.
    """
    steps = 1
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    float32 = ["train.precision=float32"]
    run(train_command(small_corpus, single, steps, overrides=float32))
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "model.training",
    ]
    run(torchrun + train_command(small_corpus, ddp, steps, overrides=float32)[3:])

    one, two = loss_rows(single)[0], loss_rows(ddp)[0]
    for key in ("loss", "nce_va", "mil_nce_vt"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    a, b = (
        load_file(str(single / "weights.safetensors")),
        load_file(str(ddp / "weights.safetensors")),
    )
    assert a.keys() == b.keys()
    lr = load_config("tiny").train.lr
    diffs = []
    for key in a:
        if a[key].dtype.kind != "f":
            continue
        diff = np.abs(a[key].astype(np.float64) - b[key])
        if "running" in key:  # BN statistics of the global batch, computed in the forward
            assert diff.max() <= 1e-4 * (1 + np.abs(a[key]).max()), key
        else:
            diffs.append(diff.ravel())
    diff = np.concatenate(diffs)
    assert diff.max() <= 2 * lr * 1.001
    assert (diff > 1e-6).mean() < 0.005


# -- resume after a kill -------------------------------------------------------------------
@pytest.mark.slow
def test_killed_run_resumes_from_its_last_save_and_ends_with_the_same_weights(
    small_corpus: Path, tmp_path: Path
) -> None:
    steps = 8
    extra = ["train.save_every=2"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run(train_command(small_corpus, whole, steps, overrides=extra))

    cmd = train_command(small_corpus, killed, steps, overrides=extra)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    state = killed / STATE_FILE
    deadline = time.monotonic() + 180
    while not state.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists(), "the run saved no state before it was killed"
    saved_step = torch.load(state, map_location="cpu", weights_only=False)["step"]
    assert 2 <= saved_step < steps
    assert not (killed / "weights.safetensors").exists()

    resumed = run(cmd)
    assert f"steps {saved_step}->{steps}" in resumed.stdout
    assert not state.exists()
    a = load_file(str(whole / "weights.safetensors"))
    b = load_file(str(killed / "weights.safetensors"))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert [r["loss"] for r in loss_rows(whole)] == [r["loss"] for r in loss_rows(killed)]

    again = run(cmd)  # a finished run is not trained again
    assert "nothing to do" in again.stdout


# -- fine-tuning ---------------------------------------------------------------------------
@pytest.mark.slow
def test_fine_tuning_grows_the_vocabulary_and_keeps_old_words(
    small_corpus: Path, tmp_path: Path
) -> None:
    cfg = apply_overrides(load_config("tiny"), parse_overrides(FAST))
    torch.manual_seed(0)
    old = build_model(cfg, Tokenizer(["ball", "zebra"], max_words=cfg.text.max_words))
    save_model(old, tmp_path / "init", {"note": "two words"})
    zebra = old.tokenizer.id_of("zebra")
    zebra_row = old.text_backbone.embedding.weight[zebra].detach().clone()

    result = train(
        TrainOptions(
            data=small_corpus,
            out=tmp_path / "tuned",
            steps=2,
            init=tmp_path / "init",
            overrides=parse_overrides(FAST),
            progress=False,
            calibrate=False,
        )
    )
    tuned = load_model(tmp_path / "tuned")
    assert tuned.tokenizer.vocabulary[:4] == ["<pad>", "<unk>", "ball", "zebra"]
    assert len(tuned.tokenizer) > 20
    assert result.metrics["train"]["vocabulary_before"] == 4
    assert result.metrics["train"]["words_added"] == len(tuned.tokenizer) - 4
    # "zebra" never occurs in the corpus: its row gets no gradient and stays as it was.
    assert torch.equal(tuned.text_backbone.embedding.weight[zebra], zebra_row)
    assert math.isfinite(result.metrics["train"]["final_loss"])


def test_fine_tuning_forgets_the_fits_of_the_weights_it_starts_from(tmp_path: Path) -> None:
    """The audio bridge and the deflated images' BN were fitted to the init weights: kept
    through the run, the validation's text → audio and image figures went through fits
    of weights no longer there."""
    cfg = load_config("tiny")
    old = build_model(cfg, Tokenizer(["ball"], max_words=cfg.text.max_words))
    bridge = old.heads.audio_bridge
    bridge.set({k: v.clone() for k, v in bridge.parameters_dict().items()})
    old.image_bn.calibrated.fill_(True)
    save_model(old, tmp_path / "init")
    assert load_model(tmp_path / "init").heads.audio_bridge.is_calibrated
    options = TrainOptions(data=tmp_path, out=tmp_path / "out", steps=1, init=tmp_path / "init")
    model, _ = build_for_training(cfg, options, ["a ball rolls"])
    assert not model.heads.audio_bridge.is_calibrated and not bool(model.image_bn.calibrated)


def test_weights_holding_nan_or_infinity_are_named() -> None:
    """The finish refuses to save such a model: its loss was checked before the last
    update only."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert nonfinite_tensors(net) == []
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    net[1].running_var[1] = float("inf")
    assert nonfinite_tensors(net) == ["0.weight", "1.running_var"]
