"""The trainer: MMV from scratch (or fine-tuned), self-supervised, on narrated clips.

    python -m model.train --config tiny --data DIR --out DIR [--steps N] [--init CKPT]
    torchrun --nproc_per_node 2 -m model.train ...      # data parallel (gloo / NCCL)

Read top to bottom: options, set-up (ranks, data, model, optimiser, resume), the loop,
the finish (image-BN calibration, validation, checkpoint). The loss is
λ_va·NCE(video, audio) + λ_vt·MIL-NCE(video, narrations) over the global batch; clips
without narration take part in NCE only. Adam, linear warm-up then half-cosine decay.

Resumable: every `train.save_every` steps the whole run state (weights, optimiser,
history, vocabulary) goes to OUT/train_state.pt; the same command continues from it.
Batches are a pure function of (seed, step): the order of clips comes from
(seed, epoch), each clip's augmentation from (seed, epoch, index), so a resumed run ends
with the same weights as an uninterrupted one. OUT ends up a model checkpoint
(`model.load_model(OUT)`) with loss.csv / loss.png beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from model import distributed
from model.atomic_files import atomic_path
from model.checkpoint import load as load_checkpoint
from model.checkpoint import save as save_checkpoint
from model.config import ConfigError, ModelConfig, load_config
from model.cpu_allocator import keep_freed_memory
from model.data import ClipDataset, CorpusDataset, DatasetError, FolderDataset, collate_batch
from model.deflation import calibrate_image_bn
from model.errors import ModelError
from model.eval import validate
from model.factory import build_model
from model.losses import MMVLoss
from model.media import VideoAugment
from model.mmv import MMV
from model.precision import PRECISION_NAMES, autocast_for, training_dtype
from model.schedule import lr_at
from model.tokenizer import Tokenizer
from model.training_log import TrainingLog

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
STATE_VERSION = 1
# The paper's colour jitter, except hue: ±0.2 turns (±72°) turns red into yellow or
# purple, and colour is something narrations name ("a red ball"). ±0.02 turns keeps
# shades apart.
TRAIN_AUGMENT = VideoAugment(hue=0.02)
CALIBRATION_CLIPS = 256  # training clips whose middle frames calibrate the image-mode BN
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
ARCHITECTURE = ("video", "audio", "text", "heads")  # config sections a fine-tune keeps


class TrainError(ModelError):
    """A training run that cannot start or continue (bad options, mismatched resume)."""


# -- options -------------------------------------------------------------------------------
@dataclass
class TrainOptions:
    data: Path  # a corpus folder (manifest.jsonl) or a folder of videos with transcripts
    out: Path  # becomes the checkpoint; holds the resume state while training
    config: str | Path = "tiny"  # named config or JSON path (with --init: train/loss only)
    steps: int | None = None  # None: the config's train.steps
    init: Path | None = None  # fine-tune from this checkpoint
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)  # {"heads.space": "shared"}
    device: str | None = None  # None: CUDA when available
    num_workers: int | None = None  # None: default_loader_workers()
    progress: bool = True
    calibrate_images: bool = True


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


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["heads.space=shared", "train.batch_size=8"] -> {"heads.space": "shared", ...}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise TrainError(
                f"--set wants SECTION.KEY=VALUE (e.g. heads.space=shared), got '{item}'"
            )
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw  # a bare word: a string
    return out


def apply_overrides(cfg: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    sections: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        sections.setdefault(section, {})[name] = value
    try:
        return cfg.replace(**sections)
    except (TypeError, AttributeError) as exc:
        raise ConfigError(f"bad config override {overrides}: {exc}") from exc


def resolve_config(options: TrainOptions) -> ModelConfig:
    """The run's config: the init checkpoint's model with --config's train/loss sections,
    or --config itself; then the overrides."""
    run_cfg = load_config(options.config)
    if options.init is not None:
        config_path = options.init / "config.json"
        if not config_path.is_file():
            raise TrainError(f"--init {options.init} is not a checkpoint (no config.json)")
        init_cfg = load_config(config_path)
        run_cfg = init_cfg.replace(train=run_cfg.to_dict()["train"], loss=run_cfg.to_dict()["loss"])
        cfg = apply_overrides(run_cfg, options.overrides)
        changed = [s for s in ARCHITECTURE if getattr(cfg, s) != getattr(init_cfg, s)]
        if changed:
            raise TrainError(
                f"fine-tuning keeps the architecture of {options.init}: cannot change "
                f"{', '.join(changed)}"
            )
        return cfg
    return apply_overrides(run_cfg, options.overrides)


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


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """This rank's share of the global batch of every step in [start, steps).

    Global batch of step s: clips [p·B, (p+1)·B) of the permutation for epoch e, where
    (e, p) = divmod(s, steps_per_epoch) and the permutation comes from (seed, e). Rank r
    takes the r-th contiguous slice. Keys are (index, epoch), as ClipDataset wants.
    """

    def __init__(
        self,
        size: int,
        global_batch: int,
        seed: int,
        start: int,
        steps: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if global_batch % world_size:
            raise TrainError(
                f"batch size {global_batch} does not split over {world_size} processes"
            )
        if size < global_batch:
            raise TrainError(
                f"{size} training clips cannot fill one batch of {global_batch}: lower "
                "train.batch_size or add data"
            )
        self.size, self.global_batch, self.seed = size, global_batch, seed
        self.start, self.steps = start, steps
        self.rank, self.local = rank, global_batch // world_size
        self.steps_per_epoch = size // global_batch

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order, order_epoch = None, -1
        for step in range(self.start, self.steps):
            epoch, position = divmod(step, self.steps_per_epoch)
            if epoch != order_epoch:
                order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
                order_epoch = epoch
            assert order is not None
            first = position * self.global_batch + self.rank * self.local
            yield [(int(i), epoch) for i in order[first : first + self.local]]


class _Uncached(Dataset[int]):
    """The clips of `dataset` not yet in its decode cache; loading one decodes it."""

    def __init__(self, dataset: ClipDataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> int:
        self.dataset[(self.indices[i], 0)]
        return 0


def default_loader_workers(configured: int, device: str, world_size: int) -> int:
    """Loader processes per rank when the command line does not say.

    On CUDA the step is ~10x shorter than on a CPU: on an H100, tiny with 1 worker spent
    73% of each step waiting for data, with 4 workers 2%, so use the host's spare cores.
    On a CPU the step's threads already use every core, and with at most 2 cores a rank
    a loader process can only take one of them: every parallel region of the step then
    waits for its descheduled thread. Loading in the main process is faster there
    (tiny, batch 32, 2 cores: 215 clips/s in-process vs 172 with one worker;
    `bench/train.py --workers 0|1`).
    """
    per_rank = (os.cpu_count() or 1) // max(1, world_size)
    if device == "cuda":
        return max(configured, min(8, per_rank - 1))
    if per_rank <= 2:
        return 0
    return configured


def fill_decode_cache(
    dataset: ClipDataset, ctx: distributed.DistContext, progress: bool, limit: int | None = None
) -> int:
    """Decode every clip not in the cache yet, on all cores, before training starts (the
    first epoch would otherwise wait on ffmpeg). Returns how many were decoded here."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    missing = [i for i in range(count) if not (dataset.cache_path(i) / "meta.json").is_file()]
    mine = missing[ctx.rank :: ctx.world_size]
    if mine:
        workers = max(1, (os.cpu_count() or 1) // ctx.world_size)
        loader = DataLoader(_Uncached(dataset, mine), batch_size=None, num_workers=workers)
        for _ in tqdm(
            loader, total=len(mine), desc="decoding clips", unit="clip", disable=not progress
        ):
            pass
    if ctx.enabled:
        torch.distributed.barrier()
    return len(mine)


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


def run_fingerprint(
    cfg: ModelConfig, options: TrainOptions, steps: int, world_size: int
) -> dict[str, Any]:
    """What must match for a saved state to be continued by this command."""
    return {
        "config": cfg.to_dict(),
        "data": str(options.data.resolve()),
        "steps": steps,
        "seed": options.seed,
        "init": str(options.init) if options.init else None,
        "world_size": world_size,
    }


def save_state(
    path: Path,
    model: MMV,
    optimizer: torch.optim.Optimizer,
    step: int,
    fingerprint: dict[str, Any],
    history: TrainingLog,
    extra: dict[str, Any],
) -> None:
    """Atomically write the run state (temp file + rename: a kill never leaves half a file)."""
    state = {
        "version": STATE_VERSION,
        "step": step,
        "fingerprint": fingerprint,
        "vocabulary": model.tokenizer.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "history": history.rows,
        "extra": extra,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("version") != STATE_VERSION:
        raise TrainError(f"{path} was written by another trainer version; delete it to restart")
    differ = settings_differences(state["fingerprint"], fingerprint)
    if differ:
        raise TrainError(
            f"{path.parent} holds a different run (it differs in {', '.join(differ)}): use "
            "another --out, or delete it to start over"
        )
    return state


# -- the run -------------------------------------------------------------------------------
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
        keep_freed_memory()  # steps reuse their activations' pages (model/cpu_allocator.py)
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

    done = _finished_run(out, steps, cfg)
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
        start, history = 0, TrainingLog()
    else:
        tokenizer = Tokenizer.from_dict(resume["vocabulary"])
        model = build_model(cfg, tokenizer, load_word_vectors=False)
        model.load_state_dict(resume["model"])
        start, history, extra = resume["step"], TrainingLog(resume["history"]), resume["extra"]
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
    loader = DataLoader(
        train_data,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=partial(
            collate_batch, tokenizer=model.tokenizer, num_positives=cfg.loss.num_positives
        ),
        pin_memory=ctx.device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )
    if ctx.is_main:
        print(
            f"training {cfg.name} ({cfg.heads.space}) on {len(train_data)} clips, "
            f"steps {start}->{steps}, global batch {global_batch} over {ctx.world_size} "
            f"process(es) on {ctx.device} in {PRECISION_NAMES[compute_dtype]}, "
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
            **extra,
        }
    }
    if ctx.is_main:
        model.eval()
        model.image_bn.reset()  # γ/β learnt for the weights before this run are stale now
        if options.calibrate_images:
            frames = _calibration_frames(train_data, options.seed)
            report = calibrate_image_bn(model, frames, seed=options.seed, progress=show)
            metrics["image_bn"] = {
                "l1_before": report.l1_before,
                "l1_after": report.l1_after,
                "applied": report.applied,
            }
        if val_data is not None:
            metrics["val"] = validate(model, val_data, max_clips=VAL_CLIPS)
            history.add_eval(steps, metrics["val"])
        history.write(out)
        save_checkpoint(model, out, metrics)
        state_path.unlink(missing_ok=True)  # the checkpoint now stands for the run
        print(f"saved {out} ({steps} steps, final loss {metrics['train']['final_loss']:.3f})")
    if ctx.enabled:
        torch.distributed.barrier()
    return TrainResult(out, steps, metrics, stopped=False)


# Settings that change how a finished run was watched or described, not the model it made.
_BOOKKEEPING = frozenset(
    {"train.steps", "train.eval_every", "train.save_every", "train.num_workers", "notes"}
)


def _finished_run(out: Path, steps: int, cfg: ModelConfig) -> dict[str, Any] | None:
    """The metrics of a finished run of `steps` steps with `cfg` in `out`, else None."""
    metrics_path = out / "metrics.json"
    if (out / STATE_FILE).exists() or not metrics_path.is_file():
        return None
    metrics = json.loads(metrics_path.read_text())
    if metrics.get("train", {}).get("steps") != steps:
        raise TrainError(
            f"{out} already holds a model trained for {metrics.get('train', {}).get('steps')} "
            f"steps; choose another --out (or --init {out} to fine-tune it)"
        )
    saved_path = out / "config.json"
    if not saved_path.is_file():
        raise TrainError(
            f"{out} has a metrics.json but no config.json: it is not a finished run this "
            "trainer wrote; choose another --out"
        )
    saved, wanted = json.loads(saved_path.read_text()), cfg.to_dict()
    differ = settings_differences(saved, wanted, ignore=_BOOKKEEPING)
    if differ:
        flat_saved, flat_wanted = _flatten(saved), _flatten(wanted)
        shown = ", ".join(
            f"{k} {flat_saved.get(k)!r} there, {flat_wanted.get(k)!r} now" for k in differ[:4]
        )
        raise TrainError(
            f"{out} already holds a model trained with other settings ({shown}); "
            "choose another --out"
        )
    return metrics


def settings_differences(
    saved: dict[str, Any], wanted: dict[str, Any], ignore: frozenset[str] = frozenset()
) -> list[str]:
    """Dotted names of the settings that differ, nested sections flattened
    (["config.train.batch_size"]), leaving out those in `ignore`."""
    a, b = _flatten(saved), _flatten(wanted)
    return sorted(k for k in a.keys() | b.keys() if k not in ignore and a.get(k) != b.get(k))


def _flatten(sections: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 2e-3}} -> {"train.lr": 2e-3}, at any depth."""
    flat: dict[str, Any] = {}
    for name, value in sections.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _calibration_frames(dataset: ClipDataset, seed: int) -> torch.Tensor:
    """Middle frames of up to CALIBRATION_CLIPS training clips (seeded choice)."""
    order = np.random.default_rng([seed, 7]).permutation(len(dataset))[:CALIBRATION_CLIPS]
    clips = [dataset[(int(i), 0)]["video"] for i in order]
    return torch.stack([c[c.shape[0] // 2] for c in clips])


def _validate_during_training(
    ctx: distributed.DistContext, model: MMV, val_data: ClipDataset, history: TrainingLog, step: int
) -> None:
    if ctx.is_main:
        history.add_eval(step, validate(model, val_data, max_clips=VAL_CLIPS))
        model.train()
    if ctx.enabled:
        torch.distributed.barrier()


# -- command line --------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> TrainOptions:
    p = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="tiny", help="named config or JSON file (default tiny)")
    p.add_argument("--data", required=True, type=Path, help="corpus folder or folder of videos")
    p.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    p.add_argument("--steps", type=int, default=None, help="default: the config's train.steps")
    p.add_argument("--init", type=Path, default=None, help="checkpoint to fine-tune from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. --set heads.space=shared --set train.batch_size=16",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--workers", type=int, default=None, help="data-loading processes")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--no-image-calibration",
        action="store_true",
        help="skip learning the image-mode BN γ/β after training",
    )
    a = p.parse_args(argv)
    return TrainOptions(
        data=a.data,
        out=a.out,
        config=a.config,
        steps=a.steps,
        init=a.init,
        seed=a.seed,
        overrides=parse_overrides(a.overrides),
        device=a.device,
        num_workers=a.workers,
        progress=not a.no_progress,
        calibrate_images=not a.no_image_calibration,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        options = parse_args(argv)
        if options.steps is not None and options.steps < 1:
            raise TrainError("--steps must be at least 1")
        train(options)
    except (ModelError, ConfigError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
