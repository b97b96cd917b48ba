"""The trainer: MMV from scratch (or fine-tuned), self-supervised, on narrated clips.

    python -m model.training --config tiny --data DIR --out DIR [--steps N] [--init CKPT]
    torchrun --nproc_per_node 2 -m model.training ...      # data parallel (gloo / NCCL)

Read top to bottom: set-up (ranks, data, model, optimiser, resume), the loop, the
finish (image-BN calibration, validation, checkpoint). The loss is
λ_va·NCE(video, audio) + λ_vt·MIL-NCE(video, narrations) over the global batch; clips
without narration take part in NCE only. Adam, linear warm-up then half-cosine decay.

Resumable (resume.py): every `train.save_every` steps the whole run state goes to
OUT/train_state.pt; the same command continues from it. Batches are a pure function of
(seed, step) (loader.py), so a resumed run ends with the same weights as an
uninterrupted one. OUT ends up a model checkpoint (`model.load_model(OUT)`) with
loss.csv / loss.png beside it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model.checkpoint import OPTIONAL_PREFIXES
from model.checkpoint import load as load_checkpoint
from model.checkpoint import save as save_checkpoint
from model.config import ModelConfig
from model.evaluation.evaluate import validate
from model.factory import build_model
from model.losses import MMVLoss
from model.media import VideoAugment
from model.mmv import MMV
from model.tokenizer import Tokenizer
from model.training import distributed
from model.training.calibration import calibrate
from model.training.clip_dataset import ClipDataset
from model.training.corpus_dataset import CorpusDataset
from model.training.cpu_allocator import keep_freed_memory
from model.training.errors import DatasetError, TrainError
from model.training.folder_dataset import FolderDataset
from model.training.history import TrainingHistory
from model.training.loader import (
    StepBatchSampler,
    default_loader_workers,
    fill_decode_cache,
    step_loader,
)
from model.training.options import TrainOptions, resolve_config
from model.training.precision import PRECISION_NAMES, autocast_for, training_dtype
from model.training.resume import (
    STATE_FILE,
    TRAINER_REVISION,
    finished_run,
    load_state,
    run_fingerprint,
    save_state,
)
from model.training.schedule import lr_at

# The paper's colour jitter, except hue: ±0.2 turns (±72°) turns red into yellow or
# purple, and colour is something narrations name ("a red ball"). ±0.02 turns keeps
# shades apart.
TRAIN_AUGMENT = VideoAugment(hue=0.02)
VAL_CLIPS = 500  # validation clips embedded at each evaluation during training
FORWARD_INPUTS = (
    "video",
    "audio",
    "text_ids",
    "text_mask",
    "positive_mask",
    "has_text",
    "has_audio",
)  # the batch fields MMV.forward takes


@dataclass
class TrainProgress:
    """What a caller (the service's training worker) is told after every step."""

    step: int  # steps done
    steps: int
    loss: float
    clips_per_s: float
    eta_s: float


@dataclass
class TrainResult:
    out: Path
    steps: int
    metrics: dict[str, Any]
    stopped: bool  # True when should_stop() ended the run early (state saved, no model)


# -- data ----------------------------------------------------------------------------------
def open_datasets(
    data: Path, cfg: ModelConfig, seed: int
) -> tuple[ClipDataset, ClipDataset | None]:
    """(train, validation) from a corpus folder or a user's folder of videos."""
    if (data / "manifest.jsonl").is_file():
        train = CorpusDataset(data, cfg, "train", seed=seed, augment=TRAIN_AUGMENT)
        try:
            val: ClipDataset | None = CorpusDataset(data, cfg, "val", seed=seed, augment=False)
        except DatasetError:
            val = None
        return train, val
    if not data.is_dir():
        raise TrainError(f"training data {data} is neither a corpus nor a folder")
    train = FolderDataset(data, cfg, split="train", seed=seed, augment=TRAIN_AUGMENT)
    try:
        val = FolderDataset(data, cfg, split="val", seed=seed, augment=False)
    except DatasetError:
        val = None
    return train, val


def training_texts(dataset: ClipDataset) -> list[str]:
    return [
        seg.text for item in dataset.items if item.transcript for seg in item.transcript.segments
    ]


# -- model ---------------------------------------------------------------------------------
def build_for_training(
    cfg: ModelConfig, options: TrainOptions, texts: list[str]
) -> tuple[MMV, dict[str, Any]]:
    """A new model with a vocabulary from the training narrations, or the init checkpoint
    with its vocabulary grown by the new words (within text.vocab_size)."""
    if options.init is None:
        tokenizer = Tokenizer.build(texts, cfg.text.vocab_size, cfg.text.max_words)
        torch.manual_seed(options.seed)
        return build_model(cfg, tokenizer), {"vocabulary": len(tokenizer)}
    model = load_checkpoint(options.init)
    model.config = cfg  # same architecture; this run's train and loss sections
    # Fits made for the init weights go stale at the first step: forgotten now, or the
    # validation curve's image and text → audio figures went through them all run long.
    model.image_bn.reset()
    if hasattr(model.heads, "audio_bridge"):
        model.heads.audio_bridge.reset()
    before = len(model.tokenizer)
    new_words = model.tokenizer.frequent_words(texts, limit=cfg.text.vocab_size)
    torch.manual_seed(options.seed)  # rows of new words
    added = model.grow_vocabulary(new_words)
    return model, {
        "vocabulary": len(model.tokenizer),
        "vocabulary_before": before,
        "words_added": len(added),
        "init": str(options.init),
    }


# -- the run -------------------------------------------------------------------------------
def nonfinite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the parameters and floating-point buffers holding NaN or infinity."""
    named = [*model.named_parameters(), *model.named_buffers()]
    return [n for n, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def train(
    options: TrainOptions,
    *,
    datasets: tuple[ClipDataset, ClipDataset | None] | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Run (or continue) one training run; see the module docstring.

    `datasets`: (train, val) to use instead of opening `options.data` (the service
    passes its stored clips). `should_stop`: polled every step; when it returns True
    the state is saved and the run returns with `stopped=True`.
    """
    ctx = distributed.setup(options.device)
    if ctx.device.type == "cpu":
        keep_freed_memory()  # steps reuse their activations' pages (cpu_allocator.py)
    try:
        return _train(ctx, options, datasets, on_progress, should_stop)
    finally:
        distributed.teardown(ctx)


def _train(
    ctx: distributed.DistContext,
    options: TrainOptions,
    datasets: tuple[ClipDataset, ClipDataset | None] | None,
    on_progress: Callable[[TrainProgress], None] | None,
    should_stop: Callable[[], bool] | None,
) -> TrainResult:
    started = time.perf_counter()
    cfg = resolve_config(options)
    steps = options.steps or cfg.train.steps
    global_batch = cfg.train.batch_size
    out = options.out
    state_path = out / STATE_FILE
    show = options.progress and ctx.is_main

    done = finished_run(out, steps, cfg)
    if done is not None:
        if ctx.is_main:
            print(f"{out} already holds the finished run ({steps} steps); nothing to do")
        return TrainResult(out, steps, done, stopped=False)

    # data
    train_data, val_data = datasets or open_datasets(options.data, cfg, options.seed)
    fingerprint = run_fingerprint(cfg, options, steps, ctx.world_size)
    out.mkdir(parents=True, exist_ok=True)

    # model, optimiser, resume
    resume = load_state(state_path, fingerprint) if state_path.is_file() else None
    if resume is None:
        model, extra = build_for_training(cfg, options, training_texts(train_data))
        start, history = 0, TrainingHistory()
    else:
        tokenizer = Tokenizer.from_dict(resume["vocabulary"])
        model = build_model(cfg, tokenizer, load_word_vectors=False)
        # A state saved before the audio bridge existed lacks it; it is fitted at the end.
        missing, unexpected = model.load_state_dict(resume["model"], strict=False)
        wrong = [k for k in missing if not k.startswith(OPTIONAL_PREFIXES)] + unexpected
        if wrong:
            raise TrainError(
                f"{state_path} does not fit this model (keys {wrong[:5]}): delete it to "
                "start the run again"
            )
        start, history, extra = resume["step"], TrainingHistory(resume["history"]), resume["extra"]
    model.to(ctx.device)
    model.train()
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
    )
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        torch.set_rng_state(resume["rng"]["torch"])
        np.random.set_state(resume["rng"]["numpy"])
    if ctx.enabled:
        distributed.convert_batchnorm(model, ctx.device)
        # A loss term switched off (λ = 0) leaves its branch out of the graph.
        unused = cfg.loss.lambda_va == 0 or cfg.loss.lambda_vt == 0
        net: torch.nn.Module = DistributedDataParallel(
            model,
            device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None,
            find_unused_parameters=unused,
        )
    else:
        net = model
    criterion = MMVLoss(cfg.loss)
    compute_dtype = training_dtype(cfg.train.precision, ctx.device)
    autocast = autocast_for(compute_dtype, ctx.device)

    fill_decode_cache(train_data, ctx, show)
    if val_data is not None:
        fill_decode_cache(val_data, ctx, show, limit=VAL_CLIPS)
    workers = default_loader_workers(cfg.train.num_workers, ctx.device.type, ctx.world_size)
    if options.num_workers is not None:
        workers = options.num_workers
    sampler = StepBatchSampler(
        len(train_data), global_batch, options.seed, start, steps, ctx.rank, ctx.world_size
    )
    loader = step_loader(
        train_data,
        sampler,
        model.tokenizer,
        cfg.loss.num_positives,
        workers,
        pin_memory=ctx.device.type == "cuda",
    )
    if ctx.is_main:
        print(
            f"training {cfg.name} ({cfg.heads.space}) on {len(train_data)} clips, "
            f"steps {start}->{steps}, global batch {global_batch} over {ctx.world_size} "
            f"process(es) ({torch.get_num_threads()} CPU thread(s) each) on {ctx.device} in "
            f"{PRECISION_NAMES[compute_dtype]}, "
            f"vocabulary {len(model.tokenizer)}"
        )

    # the loop
    batches = iter(loader)
    bar = tqdm(
        total=steps, initial=start, desc="train", unit="step", disable=not show, dynamic_ncols=True
    )
    stopped = False
    t_ready = time.perf_counter()
    for step in range(start, steps):
        lr = lr_at(step, steps, cfg.train.lr, cfg.train.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(options.seed * 1_000_003 + step)  # any randomness in the step

        batch = next(batches)
        t_data = time.perf_counter()
        inputs = {k: batch[k].to(ctx.device, non_blocking=True) for k in FORWARD_INPUTS}
        with autocast():
            loss, terms = criterion(net(**inputs))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())  # the global loss: the same on every rank
        if not math.isfinite(loss_value):
            raise TrainError(f"the loss became {loss_value} at step {step}; lower train.lr")
        t_done = time.perf_counter()

        data_s, step_s = t_data - t_ready, t_done - t_ready
        clips_per_s = global_batch / step_s
        history.add_step(
            step + 1,
            lr=lr,
            loss=loss_value,
            nce_va=float(terms["nce_va"].detach()),
            mil_nce_vt=float(terms["mil_nce_vt"].detach()),
            clips_per_s=clips_per_s,
            data_s=data_s,
            step_s=step_s,
        )
        bar.set_postfix(loss=f"{loss_value:.3f}", clips_s=f"{clips_per_s:.0f}", lr=f"{lr:.1e}")
        bar.update()
        if on_progress is not None:
            eta = history.mean_step_s() * (steps - step - 1)
            on_progress(TrainProgress(step + 1, steps, loss_value, clips_per_s, eta))

        last = step + 1 == steps
        stop_now = should_stop is not None and should_stop()
        if ctx.enabled and should_stop is not None:  # every rank must stop at the same step
            stop_now = distributed.all_reduce_mean(float(stop_now), ctx) > 0
        eval_every = cfg.train.eval_every
        if val_data is not None and eval_every and (step + 1) % eval_every == 0 and not last:
            _validate_during_training(ctx, model, val_data, history, step + 1)
        if ctx.is_main and ((step + 1) % cfg.train.save_every == 0 or last or stop_now):
            save_state(state_path, model, optimizer, step + 1, fingerprint, history, extra)
            history.write(out)
        if stop_now:
            stopped = True
            break
        t_ready = time.perf_counter()
    bar.close()
    del batches, loader  # stops the workers

    if stopped:
        return TrainResult(out, steps, {}, stopped=True)

    # the finish: image-mode BN, validation, checkpoint
    metrics: dict[str, Any] = {
        "train": {
            "steps": steps,
            "seed": options.seed,
            "data": str(options.data),
            "batch_size": global_batch,
            "world_size": ctx.world_size,
            "device": str(ctx.device),
            "precision": PRECISION_NAMES[compute_dtype],
            "final_loss": history.final_loss(),
            "clips_per_s": history.median("clips_per_s"),
            "step_s": history.median("step_s"),
            "data_s": history.median("data_s"),
            "minutes_this_session": round((time.perf_counter() - started) / 60, 2),
            "trainer_revision": TRAINER_REVISION,
            **extra,
        }
    }
    if ctx.is_main:
        model.eval()
        # Fits made for the weights before this run are stale now: forgotten, made again.
        model.image_bn.reset()
        if hasattr(model.heads, "audio_bridge"):
            model.heads.audio_bridge.reset()
        if options.calibrate:
            metrics.update(calibrate(model, train_data, seed=options.seed, progress=show))
        if val_data is not None:
            metrics["val"] = validate(model, val_data, max_clips=VAL_CLIPS)
            history.add_eval(steps, metrics["val"])
        history.write(out)
        if broken := nonfinite_tensors(model):
            # The loss is checked before each update, not after the last one (nor after
            # the calibration): weights that are NaN must not become a model.
            raise TrainError(
                f"training left NaN or infinity in {len(broken)} tensors of the model "
                f"({', '.join(broken[:3])}); lower train.lr"
            )
        save_checkpoint(model, out, metrics)
        state_path.unlink(missing_ok=True)  # the checkpoint now stands for the run
        print(f"saved {out} ({steps} steps, final loss {metrics['train']['final_loss']:.3f})")
    if ctx.enabled:
        torch.distributed.barrier()
    return TrainResult(out, steps, metrics, stopped=False)


def _validate_during_training(
    ctx: distributed.DistContext,
    model: MMV,
    val_data: ClipDataset,
    history: TrainingHistory,
    step: int,
) -> None:
    if ctx.is_main:
        history.add_eval(step, validate(model, val_data, max_clips=VAL_CLIPS))
        model.train()
    if ctx.enabled:
        torch.distributed.barrier()
