"""Embedding throughput of the tiny config: video clips/s, audio clips/s, texts/s.

Each modality through the public API (`MMV.embed_*`: input checks, eval mode,
no_grad, L2 normalisation, tokenisation for text), batched and one at a time.
Measured beside, in the same run, the baseline: the same network called directly
(backbone + heads on ready tensors, text already tokenised) — the ratio API / raw
shows what the API costs on top of the network; and batched video and audio with the
ResNet trunks on NCHW maps, the layout before channels-last.

Targets (issue #2, tiny on 2 cores): ≥ 20 video clips/s, ≥ 100 audio clips/s and
≥ 2,000 texts/s batched. docs/benchmarks.md measured ≈ 250 / 500 / 25k for a tiny MMV.

    .venv/bin/python bench/embed.py [--quick] [--threads N] [--config tiny] [--device cuda]

With `--device cuda` the inputs start on the GPU and every timed call ends with a
synchronise, so the figures are the network's (bf16 autocast) and not the copy's. The
targets are for tiny on 2 CPU cores; other configs and devices are reported, not judged.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model import MMV, Tokenizer, build_model, load_config
from model.backbones.resnet_v2 import set_trunk_memory_format

GOALS = {"video": 20.0, "audio": 100.0, "text": 2000.0}  # items/s, batched
_WORDS_TEXT = """
red green blue yellow ball drum dog cat piano guitar bounces rolls barks jumps plays slowly
loudly quietly water splashes pool box floor table kitchen street car engine bird sings
wind blows door opens closes hammer knocks bell rings
"""
WORDS = _WORDS_TEXT.split()


def make_texts(n: int) -> list[str]:
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(len(WORDS), (n, 10), generator=g).tolist()
    return ["the " + " ".join(WORDS[i] for i in row) + " in a room" for row in idx]


def rate(
    fn: Callable[[], object], items: int, seconds: float, sync: Callable[[], None] = lambda: None
) -> tuple[float, float, float]:
    """(median items/s, median ms per call, median items per CPU-second) over repeated
    calls after a warm-up. The CPU-time figure barely moves when other processes share
    the cores; the wall-clock one is what a caller sees."""
    for _ in range(3):
        fn()
    sync()
    times: list[float] = []
    cpu: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    med = statistics.median(times)
    return items / med, med * 1000, items / max(statistics.median(cpu), 1e-9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs (about 10 s in all)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: as set)")
    p.add_argument("--config", default="tiny", help="named config or JSON file")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch", type=int, default=32, help="video and audio clips per call")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seconds = 0.5 if args.quick else 3.0
    batch, text_batch = args.batch, 256
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    judged = args.config == "tiny" and device.type == "cpu"

    cfg = load_config(args.config)
    texts = make_texts(text_batch)
    torch.manual_seed(0)
    m: MMV = build_model(cfg, Tokenizer.build([*texts, " ".join(WORDS)], cfg.text.vocab_size))
    m.eval().to(device)
    v = cfg.video
    video = torch.rand(batch, v.frames, v.crop_size, v.crop_size, 3, device=device)
    audio = torch.rand(batch, cfg.audio_samples, device=device) * 2 - 1
    ids, mask = (t.to(device) for t in m.tokenizer.encode(texts))
    autocast = torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
    )

    @torch.no_grad()
    def raw_video(x: torch.Tensor) -> object:
        with autocast:
            return m.heads.video(m.video_backbone(x))

    @torch.no_grad()
    def raw_audio(x: torch.Tensor) -> object:
        with autocast:
            return m.heads.audio(m.audio_backbone(x))

    @torch.no_grad()
    def raw_text(i: torch.Tensor, k: torch.Tensor) -> object:
        with autocast:
            return m.heads.text(m.text_backbone(i, k))

    cases = [
        ("video", "batched", batch, lambda: m.embed_video(video), lambda: raw_video(video)),
        ("video", "one", 1, lambda: m.embed_video(video[:1]), lambda: raw_video(video[:1])),
        ("audio", "batched", batch, lambda: m.embed_audio(audio), lambda: raw_audio(audio)),
        ("audio", "one", 1, lambda: m.embed_audio(audio[:1]), lambda: raw_audio(audio[:1])),
        ("text", "batched", text_batch, lambda: m.embed_text(texts),
         lambda: raw_text(ids, mask)),
        ("text", "one", 1, lambda: m.embed_text(texts[:1]),
         lambda: raw_text(ids[:1], mask[:1])),
    ]  # fmt: skip

    print(
        f"machine: {os.cpu_count()} cores, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}, "
        f"{platform.processor() or platform.machine()}"
    )
    print(
        f"model: {cfg.name} — video {v.frames}x{v.crop_size}² frames, audio "
        f"{cfg.clip_seconds:g} s at {cfg.audio.sample_rate} Hz, text ≤ {cfg.text.max_words} "
        f"words; {m.num_parameters()['total'] / 1e6:.2f}M parameters"
    )
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    header = f"{'modality':<9}{'mode':<9}{'batch':>6}{'items/s':>11}{'ms/call':>10}"
    header += f"{'items/CPU-s':>13}{'raw items/s':>13}{'API/raw':>9}"
    print(header)
    print("-" * len(header))
    results: dict[tuple[str, str], float] = {}
    for modality, mode, n, api, raw in cases:
        api_rate, api_ms, api_cpu = rate(api, n, seconds, sync)
        raw_rate, _, _ = rate(raw, n, seconds, sync)
        results[(modality, mode)] = api_rate
        print(
            f"{modality:<9}{mode:<9}{n:>6}{api_rate:>11,.0f}{api_ms:>10.2f}"
            f"{api_cpu:>13,.0f}{raw_rate:>13,.0f}{api_rate / raw_rate:>9.2f}"
        )
    # The layout the ResNet trunks ran on before channels-last, measured beside it.
    speedups = []
    for modality, fn in (
        ("video", lambda: m.embed_video(video)),
        ("audio", lambda: m.embed_audio(audio)),
    ):
        set_trunk_memory_format(m, torch.contiguous_format)
        nchw_rate, _, _ = rate(fn, batch, seconds, sync)
        set_trunk_memory_format(m, torch.channels_last)
        last_rate, _, _ = rate(fn, batch, seconds, sync)
        speedups.append(
            f"{modality} {last_rate:,.0f} / {nchw_rate:,.0f} = {last_rate / nchw_rate:.2f}"
        )
    print("batched items/s, channels-last / NCHW maps: " + ", ".join(speedups))
    print(
        f"load average at end: {os.getloadavg()[0]:.1f} (above ~2, other processes "
        "share the 2 cores and wall-clock rates drop; items/CPU-s much less)"
    )
    if not judged:
        print(f"targets are for tiny on CPU; {cfg.name} on {device.type} is reported only")
        return
    for modality, goal in GOALS.items():
        got = results[(modality, "batched")]
        verdict = "HOLDS" if got >= goal else "MISSES"
        unit = "clips/s" if modality != "text" else "texts/s"
        print(f"target {modality}_batched: {got:,.0f} {unit} (goal ≥ {goal:,.0f}) {verdict}")


if __name__ == "__main__":
    main()
