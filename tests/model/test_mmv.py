"""The MMV API others build on: embeddings per space, inputs, training forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_fixtures import small_config, small_inputs
from torch import nn

from model import MMV, MMVLoss, ModelInputError, Tokenizer, build_model, space_for
from model.spaces import MODALITY_SPACES


def test_embeddings_per_space_are_unit_vectors(model_any_space: MMV) -> None:
    m = model_any_space
    option = m.config.heads.space
    video, audio = small_inputs(m.config, batch=3)
    outs = {
        "video": m.embed_video(video),
        "audio": m.embed_audio(audio),
        "image": m.embed_image(video[:, 0]),
        "text": m.embed_text(["a red ball", "the drum", "zebra"]),
    }
    for modality, out in outs.items():
        assert tuple(out) == MODALITY_SPACES[option][modality]
        for space, z in out.items():
            assert z.shape == (3, m.embedding_dims[space]) and z.dtype == torch.float32
            assert torch.allclose(z.norm(dim=-1), torch.ones(3), atol=1e-5)
    # every pair the service may ask for has its space in both modalities' outputs
    for q in outs:
        for t in outs:
            space = space_for(option, q, t)
            if space is not None:
                assert space in outs[q] and space in outs[t]
            else:
                assert option == "disjoint" and {q, t} == {"text", "audio"}


def test_batched_equals_one_at_a_time(fac_model: MMV) -> None:
    video, audio = small_inputs(fac_model.config, batch=3)
    texts = ["a red ball bounces", "drum", "the"]
    for fn, x in (
        (fac_model.embed_video, video),
        (fac_model.embed_audio, audio),
        (fac_model.embed_text, texts),
    ):
        batched = fn(x)
        for i in range(3):
            single = fn(x[i : i + 1])
            for space in batched:
                assert torch.allclose(batched[space][i], single[space][0], atol=1e-5)


def test_inputs_numpy_uint8_and_errors(fac_model: MMV) -> None:
    video, audio = small_inputs(fac_model.config, batch=2)
    as_uint8 = (video * 255).round().to(torch.uint8).numpy()
    a = fac_model.embed_video(as_uint8)
    b = fac_model.embed_video(torch.from_numpy(as_uint8).float() / 255)
    assert torch.allclose(a["va"], b["va"], atol=1e-6)
    assert fac_model.embed_audio(audio.numpy().astype(np.float64))["va"].shape[0] == 2
    with pytest.raises(ModelInputError, match="5 dimensions"):
        fac_model.embed_video(video[0])
    with pytest.raises(ModelInputError, match="RGB"):
        fac_model.embed_image(video[:, 0, :, :, :2])
    with pytest.raises(ModelInputError, match="no samples"):
        fac_model.embed_audio(torch.zeros(2, 0))
    with pytest.raises(ModelInputError, match="float"):
        fac_model.embed_audio(torch.zeros(2, 10, dtype=torch.long))
    assert fac_model.embed_text([])["vat"].shape == (0, fac_model.embedding_dims["vat"])


def test_embedding_keeps_training_mode(fac_model: MMV) -> None:
    fac_model.train()
    fac_model.embed_text(["ball"])
    assert fac_model.training and fac_model.heads.video_to_va.bn1.training
    fac_model.eval()


def test_training_forward_shapes_and_text_masks(fac_model: MMV, tokenizer: Tokenizer) -> None:
    cfg = fac_model.config
    video, audio = small_inputs(cfg, batch=4)
    ids, mask = tokenizer.encode(["red ball", "", "drum", "dog", "", "", "piano", "cat"])
    ids, mask = ids.view(4, 2, -1), mask.view(4, 2, -1)
    fac_model.train()
    batch = fac_model(video, audio, ids, mask, has_text=torch.tensor([1, 1, 0, 1]).bool())
    assert batch.video_va.shape == (4, cfg.heads.va_dim)
    assert batch.audio_va.shape == (4, cfg.heads.va_dim)
    assert batch.video_vt.shape == (4, cfg.heads.vat_dim)
    assert batch.text_vt is not None and batch.text_vt.shape == (4, 2, cfg.heads.vat_dim)
    assert batch.positive_mask is not None
    assert batch.positive_mask.tolist() == [
        [True, False],
        [True, True],
        [False, False],
        [True, True],
    ]
    total, terms = MMVLoss(cfg.loss)(batch)
    assert torch.isfinite(total)
    # no text at all: NCE only
    batch = fac_model(video, audio)
    total, terms = MMVLoss(cfg.loss)(batch)
    assert terms["mil_nce_vt"].item() == 0.0 and torch.equal(total, terms["nce_va"])
    # one narration per clip as [B, L]
    single = fac_model(video, audio, ids[:, 0], mask[:, 0])
    assert single.text_vt is not None and single.text_vt.shape[1] == 1
    fac_model.eval()


def test_fac_training_forward_keeps_audio_out_of_the_coarse_head(fac_model: MMV) -> None:
    """g_va->vat's BN statistics only see video in training (the official release)."""
    video, audio = small_inputs(fac_model.config, batch=4)
    state = {k: v.clone() for k, v in fac_model.state_dict().items()}
    bn = fac_model.heads.va_to_vat.bn
    fac_model.train()
    stats = []
    for sound in (audio, torch.flip(audio, dims=[0]) * 0.3):
        fac_model.load_state_dict(state)
        with torch.no_grad():
            fac_model(video, sound)
        stats.append((bn.running_mean.clone(), bn.running_var.clone()))
    fac_model.eval()
    assert not torch.equal(stats[0][0], state["heads.va_to_vat.bn.running_mean"])
    assert torch.equal(stats[0][0], stats[1][0]) and torch.equal(stats[0][1], stats[1][1])


def test_sync_batchnorm_conversion(fac_model: MMV) -> None:
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(fac_model)
    assert not any(
        type(mod) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d) for mod in converted.modules()
    )
    assert any(isinstance(mod, nn.SyncBatchNorm) for mod in converted.modules())
    video, _ = small_inputs(fac_model.config, batch=2)
    converted.eval()
    assert converted.embed_image(video[:, 0])["va"].shape[0] == 2  # eval works on CPU
    assert set(converted.image_bn.names) == {
        n
        for n, mod in converted.video_backbone.named_modules()
        if isinstance(mod, nn.SyncBatchNorm)
    }


def test_bf16_autocast_training_step(tokenizer: Tokenizer) -> None:
    """The CUDA path runs under bf16 autocast; the CPU autocast exercises the same code."""
    cfg = small_config()
    m = build_model(cfg, tokenizer).train()
    video, audio = small_inputs(cfg, batch=3)
    ids, mask = tokenizer.encode(["red ball", "drum", "dog"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        batch = m(video, audio, ids[:, None], mask[:, None])
        total, _ = MMVLoss(cfg.loss)(batch)
    assert total.dtype == torch.float32 and torch.isfinite(total)
    total.backward()
    assert m.heads.text_to_vat.weight.grad is not None


def test_grow_vocabulary_then_optimise(tokenizer: Tokenizer) -> None:
    cfg = small_config()
    m = build_model(cfg, Tokenizer(tokenizer.words))
    before = m.embed_text(["red ball"])["vat"]
    added = m.grow_vocabulary(m.tokenizer.frequent_words(["a purple kite", "kite flies"]))
    assert added == ["kite", "flies", "purple"]
    assert torch.equal(m.embed_text(["red ball"])["vat"], before)  # old words unchanged
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    m.train()
    video, audio = small_inputs(cfg, batch=2)
    ids, mask = m.tokenizer.encode(["purple kite", "red ball"])
    total, _ = MMVLoss(cfg.loss)(m(video, audio, ids[:, None], mask[:, None]))
    total.backward()
    row = m.tokenizer.id_of("kite")
    assert m.text_backbone.embedding.weight.grad[row].abs().sum() > 0
    opt.step()


def test_parameter_counts_are_reported(fac_model: MMV) -> None:
    counts = fac_model.num_parameters()
    assert counts["total"] == sum(p.numel() for p in fac_model.parameters())
    assert set(counts) == {"video", "audio", "text", "heads", "total"}


def test_package_exports_resolve() -> None:
    import model

    assert sorted(model.__all__) == sorted(model._EXPORTS)
    for name in model.__all__:
        assert getattr(model, name) is not None
