"""Learning-rate schedule: linear warm-up, then half a cosine period down to zero.

The paper trains with Adam at 2e-3, 5k warm-up steps and a half-period cosine decay
over ~500k steps. Short runs keep the shape: the warm-up is the config's
`train.warmup_steps`, capped at a fifth of the run so a 50-step run still decays.
"""

from __future__ import annotations

import math


def warmup_steps_for(total_steps: int, warmup_steps: int) -> int:
    """The warm-up actually used: the configured one, at most a fifth of the run."""
    return max(0, min(warmup_steps, total_steps // 5))


def lr_at(step: int, total_steps: int, base_lr: float, warmup_steps: int) -> float:
    """Learning rate for optimiser step `step` (0-based) of `total_steps`.

    Steps 0..warmup-1 rise linearly to `base_lr` (step 0 already gets a small,
    non-zero rate); the rest follow 0.5·(1 + cos(π·progress)) down towards 0, which it
    would reach at step `total_steps`, one past the last (so no step is spent at rate 0).
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup = warmup_steps_for(total_steps, warmup_steps)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    decay_steps = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
