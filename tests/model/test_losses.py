"""NCE and MIL-NCE against a loop-by-loop transcription of the formulas in docs/mmv.md."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from model_fixtures import small_config, small_inputs

from model import ContrastiveBatch, MMVLoss, Tokenizer, build_model, mil_nce, nce
from model.config import LossConfig


def unit(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def sim(x: torch.Tensor, y: torch.Tensor, tau: float) -> float:
    return float(sum(float(a) * float(b) for a, b in zip(x, y, strict=True))) / tau


def nce_loop(v: torch.Tensor, a: torch.Tensor, tau: float) -> float:
    """-log(e^{s(v_i,a_i)} / (e^{s(v_i,a_i)} + Σ_N e^s)), N = (v_i,a_j), (v_j,a_i), j≠i."""
    n = v.shape[0]
    total = 0.0
    for i in range(n):
        pos = math.exp(sim(v[i], a[i], tau))
        neg = 0.0
        for j in range(n):
            if j != i:
                neg += math.exp(sim(v[i], a[j], tau))
                neg += math.exp(sim(v[j], a[i], tau))
        total += -math.log(pos / (pos + neg))
    return total / n


def mil_nce_loop(v: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, tau: float) -> float:
    """-log(Σ_P e^s / (Σ_P e^s + Σ_N e^s)); P = valid narrations of clip i; N = (v_i, t)
    for valid t of clips j≠i, and (v_j, t) for valid t of clip i, j≠i."""
    n, k = mask.shape
    total = 0.0
    for i in range(n):
        pos = sum(math.exp(sim(v[i], t[i, p], tau)) for p in range(k) if mask[i, p])
        neg = 0.0
        for j in range(n):
            if j == i:
                continue
            for p in range(k):
                if mask[j, p]:
                    neg += math.exp(sim(v[i], t[j, p], tau))
                if mask[i, p]:
                    neg += math.exp(sim(v[j], t[i, p], tau))
        total += -math.log(pos / (pos + neg))
    return total / n


@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_nce_matches_loop(tau: float) -> None:
    v, a = unit(7, 16, seed=1), unit(7, 16, seed=2)
    got = float(nce(v, a, tau))
    want = nce_loop(v, a, tau)
    assert abs(got - want) / abs(want) <= 1e-5


@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_mil_nce_matches_loop_with_padding(tau: float) -> None:
    n, k = 6, 3
    v, t = unit(n, 16, seed=3), unit(n, k, 16, seed=4)
    mask = torch.tensor(
        [[1, 1, 1], [1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=torch.bool
    )
    got = float(mil_nce(v, t, mask, tau))
    want = mil_nce_loop(v, t, mask, tau)
    assert abs(got - want) / abs(want) <= 1e-5


def test_mil_nce_with_one_positive_equals_nce() -> None:
    v, a = unit(9, 32, seed=5), unit(9, 32, seed=6)
    one = torch.ones(9, 1, dtype=torch.bool)
    assert torch.allclose(mil_nce(v, a[:, None], one, 0.07), nce(v, a, 0.07), rtol=1e-12)


def test_padded_narrations_do_not_change_mil_nce() -> None:
    v, t = unit(5, 8, seed=7), unit(5, 2, 8, seed=8)
    mask = torch.tensor([[1, 0], [1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    t2 = t.clone()
    t2[~mask] = unit(int((~mask).sum()), 8, seed=9)  # change only the padded slots
    assert torch.equal(mil_nce(v, t, mask, 0.07), mil_nce(v, t2, mask, 0.07))


def test_losses_finite_for_extreme_logits() -> None:
    v, a = unit(8, 16, seed=10), unit(8, 16, seed=11)
    a[0] = -v[0]  # worst positive, at a tiny temperature: logits of ±1e4
    mask = torch.ones(8, 2, dtype=torch.bool)
    for x in (v.float(), v):
        for tau in (1e-4, 1e4):
            n = nce(x, a.to(x.dtype), tau)
            m = mil_nce(x, torch.stack((a, -a), 1).to(x.dtype), mask, tau)
            assert torch.isfinite(n) and torch.isfinite(m)
    x = v.float().requires_grad_(True)
    nce(x, a.float(), 1e-4).backward()
    assert torch.isfinite(x.grad).all()


def test_clips_without_text_only_enter_nce(tokenizer: Tokenizer) -> None:
    cfg = small_config("fac")
    loss = MMVLoss(cfg.loss)
    v, a, vt, t = (
        unit(4, 8, seed=12),
        unit(4, 8, seed=13),
        unit(4, 8, seed=14),
        unit(4, 2, 8, seed=15),
    )
    mask = torch.ones(4, 2, dtype=torch.bool)
    has_text = torch.tensor([True, True, False, True])
    batch = ContrastiveBatch(v, a, vt, t, mask, has_text, torch.ones(4, dtype=torch.bool))
    _, terms = loss(batch)
    keep = has_text
    assert torch.allclose(terms["mil_nce_vt"], mil_nce(vt[keep], t[keep], mask[keep], 0.07))
    assert torch.allclose(terms["nce_va"], nce(v, a, 0.07))
    # The text-less clip's narrations and coarse video embedding do not matter.
    t2, vt2 = t.clone(), vt.clone()
    t2[2], vt2[2] = -t[2], -vt[2]
    _, terms2 = loss(ContrastiveBatch(v, a, vt2, t2, mask, has_text, batch.has_audio))
    assert torch.equal(terms["mil_nce_vt"], terms2["mil_nce_vt"])


def test_weights_and_total() -> None:
    v, a, t = unit(5, 8, seed=16), unit(5, 8, seed=17), unit(5, 1, 8, seed=18)
    ones = torch.ones(5, dtype=torch.bool)
    batch = ContrastiveBatch(v, a, v, t, torch.ones(5, 1, dtype=torch.bool), ones, ones)
    total, terms = MMVLoss(LossConfig(lambda_va=10.0, lambda_vt=1.0))(batch)
    assert torch.allclose(total, 10 * terms["nce_va"] + terms["mil_nce_vt"])


def test_gradients_reach_every_head(tokenizer: Tokenizer) -> None:
    for space in ("fac", "shared", "disjoint"):
        torch.manual_seed(0)
        cfg = small_config(space)
        m = build_model(cfg, tokenizer)
        m.train()
        video, audio = small_inputs(cfg, batch=4)
        ids, mask = tokenizer.encode(
            ["red ball", "drum", "dog barks", "piano", "cat box", "water pool", "", "blue ball"]
        )
        total, _ = MMVLoss(cfg.loss)(m(video, audio, ids.view(4, 2, -1), mask.view(4, 2, -1)))
        total.backward()
        for name, p in m.named_parameters():
            if name.startswith(
                (
                    "heads.",
                    "video_backbone.stem",
                    "audio_backbone.trunk.stem",
                    "text_backbone.word_linear",
                )
            ):
                assert p.grad is not None and p.grad.abs().sum() > 0, f"{space}: no grad {name}"


# -- DDP: the global batch via all-gather with gradients --------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(
    rank: int,
    world: int,
    port: int,
    v: torch.Tensor,
    a: torch.Tensor,
    t: torch.Tensor,
    mask: torch.Tensor,
    has_text: torch.Tensor,
    out: dict,
) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rows = slice(rank * 2, rank * 2 + 2)
        lv = v[rows].clone().requires_grad_(True)
        la = a[rows].clone().requires_grad_(True)
        lt = t[rows].clone().requires_grad_(True)
        batch = ContrastiveBatch(
            lv, la, lv, lt, mask[rows], has_text[rows], torch.ones(2, dtype=torch.bool)
        )
        total, _ = MMVLoss(LossConfig())(batch)
        total.backward()
        # DDP averages gradients over ranks: mimic it.
        grads = [lv.grad / world, la.grad / world, lt.grad / world]
        out[rank] = (float(total), [g.clone() for g in grads])
    finally:
        dist.destroy_process_group()


def test_global_batch_under_distributed_matches_single_process() -> None:
    v, a, t = (
        unit(4, 8, seed=20).float(),
        unit(4, 8, seed=21).float(),
        unit(4, 2, 8, seed=22).float(),
    )
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [0, 1]], dtype=torch.bool)
    has_text = torch.tensor([True, True, False, True])
    # Reference: one process holding the whole batch.
    rv, ra, rt = (x.clone().requires_grad_(True) for x in (v, a, t))
    ref_total, _ = MMVLoss(LossConfig())(
        ContrastiveBatch(rv, ra, rv, rt, mask, has_text, torch.ones(4, dtype=torch.bool))
    )
    ref_total.backward()
    ref_total = ref_total.detach()

    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_ddp_worker, args=(2, _free_port(), v, a, t, mask, has_text, out), nprocs=2)
    for rank in range(2):
        total, (gv, ga, gt) = out[rank]
        assert abs(total - ref_total.item()) < 1e-5
        rows = slice(rank * 2, rank * 2 + 2)
        # Each rank's parameters see the gradient of the global loss w.r.t. its own clips
        # (summed over ranks by the all-gather backward, averaged by DDP).
        assert torch.allclose(gv, rv.grad[rows], atol=1e-6)
        assert torch.allclose(ga, ra.grad[rows], atol=1e-6)
        assert torch.allclose(gt, rt.grad[rows], atol=1e-6)


def test_every_head_gets_a_gradient_even_without_text(tokenizer: Tokenizer) -> None:
    """DDP without find_unused_parameters needs a gradient for every parameter."""
    cfg = small_config("fac")
    m = build_model(cfg, tokenizer).train()
    video, audio = small_inputs(cfg, batch=3)
    ids, mask = tokenizer.encode(["red ball", "drum", "dog"])
    no_text = torch.zeros(3, dtype=torch.bool)
    total, terms = MMVLoss(cfg.loss)(m(video, audio, ids[:, None], mask[:, None], None, no_text))
    assert terms["mil_nce_vt"].item() == 0.0
    total.backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
