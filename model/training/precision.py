"""The float type training computes in: bf16 autocast where the hardware runs it natively.

`train.precision` in a config: "auto" (the default) trains under bf16 autocast on CUDA
and on CPUs with native bf16 instructions (AVX512-BF16 or AMX), and in float32
elsewhere: oneDNN emulates bf16 on older CPUs, slower than float32. "bf16" and
"float32" force one. Autocast runs convolutions and matrix products in bf16 (so the
activations after them are bf16 too); the weights, the optimiser state and the loss's
similarities stay float32 (model/losses.py). `tiny` at batch 256 on 2 Zen 4 cores,
compute only: 0.63 s a step against 0.87-0.90 s in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Literal, get_args

import torch

from model.config import ConfigError

PrecisionOption = Literal["auto", "float32", "bf16"]
PRECISION_NAMES: dict[torch.dtype, str] = {torch.float32: "float32", torch.bfloat16: "bf16"}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX tiles)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    # Private helpers of torch.cpu (present since 2.1); absent means "don't know": no.
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def training_dtype(setting: str, device: torch.device) -> torch.dtype:
    """`train.precision` resolved for `device`: torch.bfloat16 or torch.float32."""
    if setting not in get_args(PrecisionOption):
        raise ConfigError(
            f"train.precision must be one of {list(get_args(PrecisionOption))}, got {setting!r}"
        )
    if setting == "float32":
        return torch.float32
    if setting == "bf16" or device.type == "cuda":
        return torch.bfloat16
    native = device.type == "cpu" and cpu_has_native_bf16()
    return torch.bfloat16 if native else torch.float32


def autocast_for(
    dtype: torch.dtype, device: torch.device
) -> Callable[[], AbstractContextManager[object]]:
    """A factory of autocast regions in `dtype` on `device` (no-op regions for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)
