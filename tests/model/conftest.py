"""Fixtures for the model tests: a vocabulary and small warmed-up models."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import TEXTS, small_config, warm_batch_norm

from model import MMV, Tokenizer, build_model


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return Tokenizer.build(TEXTS, max_size=64)


@pytest.fixture(params=["fac", "shared", "disjoint"])
def model_any_space(request: pytest.FixtureRequest, tokenizer: Tokenizer) -> MMV:
    torch.manual_seed(0)
    cfg = small_config(request.param)
    m = build_model(cfg, tokenizer)
    warm_batch_norm(m, cfg)
    return m


@pytest.fixture
def fac_model(tokenizer: Tokenizer) -> MMV:
    torch.manual_seed(0)
    cfg = small_config("fac")
    m = build_model(cfg, tokenizer)
    warm_batch_norm(m, cfg)
    return m


# Media files for test_media / test_datasets / test_decode_cache (made once per session by ffmpeg).
from media_fixtures import media_files, narrated_clips  # noqa: E402, F401

# A small generated corpus for the trainer / evaluation / default-model tests.
from train_fixtures import small_corpus  # noqa: E402, F401
