"""Data-parallel set-up for training: torchrun environment, process group, cross-rank BN.

`python -m model.training` runs as one process, or as N under `torchrun --nproc_per_node N`
(gloo on CPU, NCCL on GPU). Batch norm must see the *global* batch, as the paper's
cross-replica BN does: on CUDA that is torch's SyncBatchNorm; torch's SyncBatchNorm
refuses CPU tensors, so on CPU the BN layers become `CrossRankBatchNorm`, which
all-reduces the per-channel statistics (with gradients) over gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from model.errors import ModelError


class DistributedError(ModelError, RuntimeError):
    """A data-parallel launch that cannot work (odd batch split, bad environment)."""


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | None = None) -> DistContext:
    """Read torchrun's environment; start the process group when there is more than one rank.

    device: "cpu", "cuda" or None (CUDA when available).
    """
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise DistributedError("device 'cuda' was asked for but torch sees no CUDA device")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    return DistContext(rank, local_rank, world_size, torch_device)


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(tensor)


class CrossRankBatchNorm(_BatchNorm):
    """Batch norm over the global batch of all ranks; plain BN with one rank or in eval mode.

    Two all-reduces per forward (sum and count, then squared deviations) give exact
    two-pass statistics, so two ranks with half the batch each match one rank with all
    of it to float precision.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, input.shape[1]] + [1] * (input.dim() - 2)
        x = input.float()
        local_count = x.new_tensor([x.numel() / x.shape[1]])
        sums = all_reduce_sum_with_grad(torch.cat([x.sum(dims), local_count]))
        count = sums[-1]
        mean = sums[:-1] / count
        centred = x - mean.view(shape)
        var = all_reduce_sum_with_grad((centred * centred).sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * count / torch.clamp(count - 1, min=1)
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.detach(), alpha=factor)
        out = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BN layer becomes global-batch BN: SyncBatchNorm on CUDA, CrossRankBatchNorm on CPU.

    Parameter and buffer names stay the same, so checkpoints load either way.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm) and not isinstance(module, CrossRankBatchNorm):
        converted = CrossRankBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        with torch.no_grad():
            if module.affine:
                converted.weight = module.weight
                converted.bias = module.bias
            if module.track_running_stats:
                converted.running_mean = module.running_mean
                converted.running_var = module.running_var
                converted.num_batches_tracked = module.num_batches_tracked
        converted.training = module.training
        return converted
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child))
    return module


def all_reduce_mean(value: float, ctx: DistContext) -> float:
    """Average a Python number over ranks (for logging only)."""
    if not ctx.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / ctx.world_size
