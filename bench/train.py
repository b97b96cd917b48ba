"""Training throughput of the tiny config on this machine: clips/s and where a step goes.

    python bench/train.py [--quick] [--data CORPUS] [--steps N] [--batch B]
                          [--config tiny] [--device cuda] [--workers W] [--synthetic]

Runs the real trainer (`model.training.train.train`) on a small generated corpus (decode cache
filled first, as the trainer does) and reads its per-step timings: data = waiting for
the next batch (from the loader processes, or made in the main process when the trainer
loads in-process), compute = forward + backward + Adam. Beside it, in the same run: the
trainer with one loader process when its default is in-process (the setting it replaced),
the same model on an in-memory batch (the compute-only ceiling), and that ceiling with
glibc's default malloc, measured first, before the trainer keeps freed memory for the
rest of the process (`model.training.cpu_allocator`; it cannot be undone in-process), and the
ResNet trunks on channels-last maps (inference's layout; training's is NCHW). Every row
computes as the trainer does (`train.precision`: bf16 autocast on CUDA and on CPUs with
native bf16); where that is bf16, compute only in float32 is measured beside it.
Target: data loading never the bottleneck, ≤ 20% of the step time (median).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model import MMVLoss, build_model, load_config  # noqa: E402
from model.backbones.resnet_v2 import set_trunk_memory_format  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.corpus import make_corpus  # noqa: E402
from model.tokenizer import Tokenizer  # noqa: E402
from model.training.batches import collate_batch  # noqa: E402
from model.training.corpus_dataset import CorpusDataset  # noqa: E402
from model.training.cpu_allocator import keep_freed_memory  # noqa: E402
from model.training.distributed import DistContext  # noqa: E402
from model.training.loader import default_loader_workers, fill_decode_cache  # noqa: E402
from model.training.options import TrainOptions  # noqa: E402
from model.training.precision import PRECISION_NAMES, autocast_for, training_dtype  # noqa: E402
from model.training.train import FORWARD_INPUTS, train, training_texts  # noqa: E402

DATA_SHARE_GOAL = 0.20


def trainer_timings(
    data: Path, out: Path, steps: int, batch: int, workers: int | None, config: str, device: str
) -> dict[str, float]:
    cfg = load_config(config)
    fill_decode_cache(
        CorpusDataset(data, cfg, "train", show_progress=False), DistContext(), progress=False
    )
    train(
        TrainOptions(
            data=data,
            out=out,
            config=config,
            device=device,
            steps=steps,
            num_workers=workers,
            progress=False,
            calibrate=False,
            overrides={"train.batch_size": batch, "train.eval_every": 0, "train.save_every": steps},
        )
    )
    with open(out / "loss.csv") as f:
        rows = list(csv.DictReader(f))[2:]  # the first steps pay for start-up
    step = statistics.median(float(r["step_s"]) for r in rows)
    data_s = statistics.median(float(r["data_s"]) for r in rows)
    return {
        "step_s": step,
        "data_s": data_s,
        "compute_s": step - data_s,
        "clips_per_s": batch / step,
        "data_share": data_s / step,
    }


def compute_only(
    data: Path,
    steps: int,
    batch: int,
    config: str,
    device: str,
    dtype: torch.dtype,
    layout: torch.memory_format = torch.contiguous_format,
) -> dict[str, float]:
    """The same model and loss on one batch held in memory (on the device): no loader.
    `layout`: the ResNet trunks' maps (NCHW as trained; channels-last, measured beside)."""
    cfg = load_config(config)
    dataset = CorpusDataset(data, cfg, "train", show_progress=False)
    torch.manual_seed(0)
    model = build_model(cfg, Tokenizer.build(training_texts(dataset), cfg.text.vocab_size))
    set_trunk_memory_format(model, layout)
    dev = torch.device(device)
    model.train().to(dev)
    samples = [dataset[(i % len(dataset), 0)] for i in range(batch)]
    b = collate_batch(samples, model.tokenizer, cfg.loss.num_positives)
    inputs = {k: b[k].to(dev) for k in FORWARD_INPUTS}
    return time_steps(model, cfg, inputs, steps, batch, dev, dtype)


def synthetic(
    steps: int,
    batch: int,
    config: str,
    device: str,
    dtype: torch.dtype,
    layout: torch.memory_format = torch.contiguous_format,
) -> dict[str, float]:
    """Compute only on random inputs of the config's shapes: for configs whose decode
    cache is too big to make here (the paper's 32 frames of 200² at 48 kHz)."""
    cfg = load_config(config)
    torch.manual_seed(0)
    words = [f"word{i}" for i in range(500)]
    model = build_model(cfg, Tokenizer.build([" ".join(words)], cfg.text.vocab_size))
    set_trunk_memory_format(model, layout)
    dev = torch.device(device)
    model.train().to(dev)
    v, k, n = cfg.video, cfg.loss.num_positives, cfg.text.max_words
    inputs = {
        "video": torch.rand(batch, v.frames, v.crop_size, v.crop_size, 3, device=dev),
        "audio": torch.rand(batch, cfg.audio_samples, device=dev) * 2 - 1,
        "text_ids": torch.randint(2, len(model.tokenizer), (batch, k, n), device=dev),
        "text_mask": torch.ones(batch, k, n, dtype=torch.bool, device=dev),
        "positive_mask": torch.ones(batch, k, dtype=torch.bool, device=dev),
        "has_text": torch.ones(batch, dtype=torch.bool, device=dev),
        "has_audio": torch.ones(batch, dtype=torch.bool, device=dev),
    }
    return time_steps(model, cfg, inputs, steps, batch, dev, dtype)


def time_steps(
    model: torch.nn.Module,
    cfg: ModelConfig,
    inputs: dict[str, torch.Tensor],
    steps: int,
    batch: int,
    dev: torch.device,
    dtype: torch.dtype,
) -> dict[str, float]:
    """Median time of forward + backward + Adam (autocast in `dtype`) after 2 warm-ups."""
    criterion = MMVLoss(cfg.loss)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    on_cuda = dev.type == "cuda"
    autocast = autocast_for(dtype, dev)
    times = []
    for i in range(steps):
        t = time.perf_counter()
        with autocast():
            loss, _ = criterion(model(**inputs))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_cuda:
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    step = statistics.median(times)
    return {
        "step_s": step,
        "data_s": 0.0,
        "compute_s": step,
        "clips_per_s": batch / step,
        "data_share": 0.0,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer clips and steps")
    p.add_argument("--data", type=Path, default=None, help="an existing corpus (else generated)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument(
        "--workers", type=int, default=None, help="loader processes (default: the trainer's)"
    )
    p.add_argument("--config", default="tiny", help="named config or JSON file")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--synthetic", action="store_true", help="compute only, random inputs (no corpus)"
    )
    a = p.parse_args()
    steps = a.steps or (12 if a.quick else 40)
    torch.set_num_threads(os.cpu_count() or 1)  # as `make model` trains: every core
    cfg = load_config(a.config)
    workers = a.workers
    if workers is None:
        workers = default_loader_workers(cfg.train.num_workers, a.device, 1)
    # As the trainer computes (train.precision); float32 beside it when that is bf16.
    dtype = training_dtype(cfg.train.precision, torch.device(a.device))
    before = "compute only, glibc's own malloc"  # measured before keep_freed_memory()
    f32 = "compute only, float32"
    cl = "compute only, channels-last maps"  # inference's layout; training is on NCHW
    if a.synthetic:
        rows = {before: synthetic(steps, a.batch, a.config, a.device, dtype)}
        keep_freed_memory()
        rows["compute only (random inputs)"] = synthetic(steps, a.batch, a.config, a.device, dtype)
        if dtype != torch.float32:
            rows[f32] = synthetic(steps, a.batch, a.config, a.device, torch.float32)
        rows[cl] = synthetic(steps, a.batch, a.config, a.device, dtype, torch.channels_last)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
            data = a.data
            if data is None:
                data = Path(tmp) / "corpus"
                n = 48 if a.quick else 96
                print(f"generating a {n}-clip corpus ...", flush=True)
                make_corpus(data, n, seed=3, progress=False, n_audio=0, n_stills=0)
            compute_steps = max(5, steps // 2)
            rows = {before: compute_only(data, compute_steps, a.batch, a.config, a.device, dtype)}
            rows |= {
                "trainer (loader + compute)": trainer_timings(
                    data, Path(tmp) / "run", steps, a.batch, workers, a.config, a.device
                ),
            }
            if workers == 0:
                rows["trainer, 1 loader process"] = trainer_timings(
                    data, Path(tmp) / "run-1", steps, a.batch, 1, a.config, a.device
                )
            rows |= {
                "compute only (batch in memory)": compute_only(
                    data, compute_steps, a.batch, a.config, a.device, dtype
                ),
            }
            if dtype != torch.float32:
                rows[f32] = compute_only(
                    data, compute_steps, a.batch, a.config, a.device, torch.float32
                )
            rows[cl] = compute_only(
                data, compute_steps, a.batch, a.config, a.device, dtype, torch.channels_last
            )
    gpu = f" ({torch.cuda.get_device_name()})" if a.device == "cuda" else ""
    print(
        f"\nmachine: {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {a.device}{gpu}, "
        f"computing in {PRECISION_NAMES[dtype]} (train.precision {cfg.train.precision}); "
        f"config {a.config}, batch {a.batch}"
        + ("" if a.synthetic else ", trainer loads with ")
        + ("" if a.synthetic else f"{workers} process(es)" if workers else "the main process")
        + ", medians over steps"
    )
    print(f"| {'run':32} | clips/s | step s | data s | compute s | data share |")
    print(f"|{'-' * 34}|---------|--------|--------|-----------|------------|")
    for name, r in rows.items():
        print(
            f"| {name:32} | {r['clips_per_s']:7.1f} | {r['step_s']:6.3f} | {r['data_s']:6.3f} "
            f"| {r['compute_s']:9.3f} | {r['data_share']:10.1%} |"
        )
    kept = rows["compute only (random inputs)" if a.synthetic else "compute only (batch in memory)"]
    changed = keep_freed_memory()  # already applied by now: this asks whether it took effect
    print(
        "\ncompute throughput, freed memory kept / glibc's own malloc: "
        f"{kept['clips_per_s'] / rows[before]['clips_per_s']:.2f}"
        + ("" if changed else " (not glibc: nothing was changed)")
    )
    print(
        "compute throughput, channels-last / NCHW maps: "
        f"{rows[cl]['clips_per_s'] / kept['clips_per_s']:.2f}"
    )
    if f32 in rows:
        print(
            f"compute throughput, {PRECISION_NAMES[dtype]} / float32: "
            f"{kept['clips_per_s'] / rows[f32]['clips_per_s']:.2f}"
        )
    if a.synthetic:
        print("synthetic: no loader, so no target is judged")
        return 0
    real, ceiling = rows["trainer (loader + compute)"], rows["compute only (batch in memory)"]
    print(f"trainer / compute-only throughput: {real['clips_per_s'] / ceiling['clips_per_s']:.2f}")
    if "trainer, 1 loader process" in rows:
        one = rows["trainer, 1 loader process"]
        ratio = real["clips_per_s"] / one["clips_per_s"]
        print(f"in-process / 1 loader process throughput: {ratio:.2f}")
    share = real["data_share"]
    verdict = "HOLDS" if share <= DATA_SHARE_GOAL else "MISSES"
    print(
        f"target data-loading share of the step: {share:.1%} (goal <= {DATA_SHARE_GOAL:.0%}) "
        f"{verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
