"""Projection heads: the forms of docs/mmv.md's table, and their output spaces."""

from __future__ import annotations

import torch
from torch import nn

from model.config import HeadConfig
from model.heads import DisjointHeads, FACHeads, LinearBNHead, MLPHead, SharedHeads, build_heads


def test_fac_head_forms_at_paper_size() -> None:
    heads = build_heads(HeadConfig(space="fac", va_dim=512, vat_dim=256), 2048, 2048, 2048)
    assert isinstance(heads, FACHeads)
    # g_v->va: Linear 512 -> BN -> ReLU -> Linear 512 (no bias) -> BN
    g_v = heads.video_to_va
    assert isinstance(g_v, MLPHead)
    assert g_v.fc1.weight.shape == (512, 2048) and g_v.fc1.bias is not None
    assert g_v.fc2.weight.shape == (512, 512) and g_v.fc2.bias is None
    assert isinstance(g_v.bn1, nn.BatchNorm1d) and isinstance(g_v.bn2, nn.BatchNorm1d)
    # g_a->va: linear, no BN
    assert isinstance(heads.audio_to_va, nn.Linear) and heads.audio_to_va.out_features == 512
    # g_va->vat: ReLU, Linear 256, BN
    g_vat = heads.va_to_vat
    assert isinstance(g_vat, LinearBNHead) and g_vat.relu_first
    assert g_vat.fc.weight.shape == (256, 512) and isinstance(g_vat.bn, nn.BatchNorm1d)
    # g_t->vat: linear
    assert isinstance(heads.text_to_vat, nn.Linear) and heads.text_to_vat.out_features == 256
    assert heads.spaces == ("va", "vat")
    assert heads.video_to_va.bn1.momentum == 0.1 and heads.video_to_va.bn1.eps == 1e-5


def test_fac_audio_reaches_vat_through_the_video_head() -> None:
    torch.manual_seed(0)
    heads = build_heads(HeadConfig(space="fac", va_dim=16, vat_dim=8), 32, 24, 12).eval()
    h = torch.randn(5, 24)
    out = heads.audio(h)
    assert set(out) == {"va", "vat"}
    assert torch.equal(out["vat"], heads.va_to_vat(heads.audio_to_va(h)))
    assert set(heads.audio(h, coarse=False)) == {"va"}  # the training path


def test_shared_and_disjoint_spaces() -> None:
    cfg = HeadConfig(va_dim=16, vat_dim=8)
    shared = build_heads(HeadConfig(space="shared", va_dim=16), 32, 24, 12).eval()
    assert isinstance(shared, SharedHeads)
    x = torch.randn(3, 32)
    assert {k: v.shape[1] for k, v in shared.video(x).items()} == {"vat": 16}
    assert shared.text(torch.randn(3, 12))["vat"].shape == (3, 16)
    disjoint = build_heads(HeadConfig(space="disjoint", va_dim=16, vat_dim=8), 32, 24, 12)
    assert isinstance(disjoint, DisjointHeads) and cfg.vat_dim == 8
    disjoint.eval()
    assert {k: v.shape[1] for k, v in disjoint.video(x).items()} == {"va": 16, "vt": 8}
    assert set(disjoint.audio(torch.randn(3, 24))) == {"va"}
    assert set(disjoint.text(torch.randn(3, 12))) == {"vt"}
