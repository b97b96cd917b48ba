"""The batches of a training run: which clips each step takes, and the processes that
load them.

Batches are a pure function of (seed, step): the order of clips comes from
(seed, epoch), each clip's augmentation from (seed, epoch, index) (ClipDataset), so a
resumed run, or one with another number of loader processes, sees the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from model.training.batches import TextEncoder, collate_batch
from model.training.clip_dataset import ClipDataset
from model.training.distributed import DistContext
from model.training.errors import TrainError
from model.usable_cpus import usable_cpus


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


def step_loader(
    dataset: ClipDataset,
    sampler: StepBatchSampler,
    tokenizer: TextEncoder,
    num_positives: int,
    workers: int,
    pin_memory: bool = False,
) -> DataLoader[dict[str, Any]]:
    """The batches of `sampler`'s steps, loaded by `workers` processes (0: in this one)."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=partial(collate_batch, tokenizer=tokenizer, num_positives=num_positives),
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
    )


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
    per_rank = usable_cpus() // max(1, world_size)
    if device == "cuda":
        return max(configured, min(8, per_rank - 1))
    if per_rank <= 2:
        return 0
    return configured


class _Uncached(Dataset[int]):
    """The clips of `dataset` not yet in its decode cache; loading one decodes it."""

    def __init__(self, dataset: ClipDataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> int:
        self.dataset[(self.indices[i], 0)]
        return 0


def fill_decode_cache(
    dataset: ClipDataset, ctx: DistContext, progress: bool, limit: int | None = None
) -> int:
    """Decode every clip not in the cache yet, on all cores, before training starts (the
    first epoch would otherwise wait on ffmpeg). Returns how many were decoded here."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    missing = [i for i in range(count) if not dataset.is_cached(i)]
    mine = missing[ctx.rank :: ctx.world_size]
    if mine:
        workers = max(1, usable_cpus() // ctx.world_size)
        loader = DataLoader(_Uncached(dataset, mine), batch_size=None, num_workers=workers)
        for _ in tqdm(
            loader, total=len(mine), desc="decoding clips", unit="clip", disable=not progress
        ):
            pass
    if ctx.enabled:
        torch.distributed.barrier()
    return len(mine)
