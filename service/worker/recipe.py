"""How a training job trains: batch size, steps and learning rate for the data it has.

The default model was pre-trained at batch 256 for 2,500 steps at lr 2e-3 on 8,000
generated clips; a user's collection is usually far smaller, and fine-tuning starts
from weights that already work. So (measured on the unseen world, docs/training.md):
- batch: the largest power of two not above the model's own batch size, nor above half
  the training clips (so an epoch has at least two different batches), nor below 8;
- learning rate: FINETUNE_LR from the active model (half of pre-training's), the
  config's own from scratch;
- steps, when the job does not say: EPOCHS passes over the training clips, at least
  MIN_STEPS and at most MAX_STEPS.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from model.config import ModelConfig

FINETUNE_LR = 1e-3  # docs/training.md: 300 steps at 1e-3 beat 600 at 5e-4
EPOCHS = 100
MIN_STEPS = 100
MAX_STEPS = 3000
MIN_BATCH = 8


@dataclass(frozen=True)
class Recipe:
    batch_size: int
    steps: int
    lr: float
    warmup_steps: int
    init: str  # "active" | "scratch"
    steps_rule: str  # how `steps` was chosen, for the job's record

    def overrides(self) -> dict[str, Any]:
        """The trainer's config overrides for this recipe."""
        return {
            "train.batch_size": self.batch_size,
            "train.lr": self.lr,
            "train.warmup_steps": self.warmup_steps,
            "train.eval_every": 0,  # the job evaluates before and after itself
            "train.save_every": max(10, min(100, self.steps // 10)),
        }

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def batch_size_for(train_clips: int, configured: int) -> int:
    cap = max(MIN_BATCH, min(configured, train_clips // 2))
    return 2 ** int(math.log2(cap))


def choose_recipe(config: ModelConfig, train_clips: int, init: str, steps: int | None) -> Recipe:
    batch = batch_size_for(train_clips, config.train.batch_size)
    lr = FINETUNE_LR if init == "active" else config.train.lr
    if steps is None:
        epochs_steps = math.ceil(EPOCHS * train_clips / batch)
        chosen = min(MAX_STEPS, max(MIN_STEPS, epochs_steps))
        rule = (
            f"{EPOCHS} epochs of {train_clips} clips at batch {batch} = {epochs_steps} steps, "
            f"kept within {MIN_STEPS}..{MAX_STEPS}"
        )
    else:
        chosen, rule = steps, "asked for by the job"
    return Recipe(batch, chosen, lr, min(100, max(1, chosen // 10)), init, rule)
