"""build_model: a named config (or a ModelConfig) -> an MMV ready to train or embed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.config import ConfigError, ModelConfig, load_config
from model.mmv import MMV
from model.tokenizer import Tokenizer
from model.word_vectors import WordVectorsError, read_word_vectors


def resolve_config(config: str | Path | ModelConfig) -> ModelConfig:
    return config if isinstance(config, ModelConfig) else load_config(config)


def build_model(
    config: str | Path | ModelConfig = "tiny",
    tokenizer: Tokenizer | None = None,
    *,
    load_word_vectors: bool = True,
) -> MMV:
    """A freshly initialised MMV.

    `tokenizer`: the vocabulary (e.g. `Tokenizer.build(texts, cfg.text.vocab_size)`);
    default: an empty one (PAD and UNK only), or — when `config.text.word_vectors` names
    a file — the file's first `vocab_size - 2` words. With a word-vector file the
    embedding rows come from it; with `text.freeze_embeddings` words the file lacks are
    dropped from the vocabulary (they become UNK). `load_word_vectors=False` skips the
    file (checkpoint loading: the rows come from the weights).
    """
    cfg = resolve_config(config)
    tok = tokenizer if tokenizer is not None else Tokenizer(max_words=cfg.text.max_words)
    if len(tok) > cfg.text.vocab_size:
        raise ConfigError(
            f"the vocabulary has {len(tok)} entries, more than text.vocab_size="
            f"{cfg.text.vocab_size}"
        )
    embeddings = None
    if cfg.text.word_vectors and load_word_vectors:
        tok, embeddings = _embeddings_from_file(cfg, tok)
    return MMV(cfg, tok, embeddings)


def _embeddings_from_file(cfg: ModelConfig, tok: Tokenizer) -> tuple[Tokenizer, torch.Tensor]:
    path = cfg.text.word_vectors
    assert path is not None
    if tok.words:
        vectors = read_word_vectors(path, keep=set(tok.words))
    else:
        vectors = read_word_vectors(path, limit=cfg.text.vocab_size - 2)
    if vectors.dim != cfg.text.embed_dim:
        raise WordVectorsError(
            f"{path} holds {vectors.dim}-d vectors but text.embed_dim={cfg.text.embed_dim}"
        )
    index = vectors.index()
    if tok.words:
        words = (
            tok.words if not cfg.text.freeze_embeddings else [w for w in tok.words if w in index]
        )
    else:
        words = vectors.words
    out = Tokenizer(words, max_words=tok.max_words, stop_words=tok.stop_words)
    table = torch.randn(len(out), cfg.text.embed_dim)
    table[:2] = 0.0  # PAD and UNK: zero, so an unknown word adds nothing under max-pool
    for i, w in enumerate(out.words, start=2):
        if w in index:
            table[i] = torch.from_numpy(np.asarray(vectors.vectors[index[w]]))
    return out, table
