"""Text backbone: word embeddings -> per-word linear -> ReLU -> max over words.

Word ids `[N, L]` with a mask `[N, L]` -> `[N, hidden_dim]`. The embedding table is
learned, or loaded from a word-vector file and frozen (the paper: GoogleNews word2vec,
frozen). With `ignore_unknown` (the shipped configs) only known words count: an
unknown word (UNK) adds nothing, so a query with words the model never learned is its
known words' vector. A text with no words left gets the zero vector.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.config import TextConfig
from model.tokenizer import UNK_ID


class TextEncoder(nn.Module):
    def __init__(
        self, num_words: int, config: TextConfig, embeddings: Tensor | None = None
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_words, config.embed_dim)
        if embeddings is not None:
            if tuple(embeddings.shape) != (num_words, config.embed_dim):
                raise ValueError(
                    f"word embeddings have shape {tuple(embeddings.shape)}, expected "
                    f"({num_words}, {config.embed_dim})"
                )
            with torch.no_grad():
                self.embedding.weight.copy_(embeddings)
        else:
            with torch.no_grad():
                self.embedding.weight[0].zero_()  # PAD
        self.embedding.weight.requires_grad_(not config.freeze_embeddings)
        self.word_linear = nn.Linear(config.embed_dim, config.hidden_dim)
        self.output_dim = config.hidden_dim
        self.ignore_unknown = config.ignore_unknown

    @property
    def frozen(self) -> bool:
        return not self.embedding.weight.requires_grad

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        words = torch.relu(self.word_linear(self.embedding(ids)))  # [N, L, H]
        # Unknown words are left out: the UNK row is never trained where the vocabulary
        # holds every training word, and even a zero row adds ReLU(bias), which pulled
        # every query with a word outside the vocabulary towards one fixed direction.
        known = mask & (ids != UNK_ID) if self.ignore_unknown else mask
        # After ReLU every value is >= 0, so zeroing left-out words leaves the max of the
        # known words unchanged and gives 0 for a text without any.
        words = words * known.unsqueeze(-1).to(words.dtype)
        return words.amax(dim=1)

    def grow(self, new_rows: Tensor) -> None:
        """Append rows to the embedding table, keeping the old rows (and frozenness)."""
        old = self.embedding.weight
        table = torch.cat((old.detach(), new_rows.to(old.device, old.dtype)), dim=0)
        embedding = nn.Embedding(table.shape[0], table.shape[1], device=old.device, dtype=old.dtype)
        with torch.no_grad():
            embedding.weight.copy_(table)
        embedding.weight.requires_grad_(old.requires_grad)
        self.embedding = embedding
