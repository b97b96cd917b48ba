"""MMV: the multimodal versatile network (Alayrac et al. 2020) as one nn.Module.

Inference: `embed_video`, `embed_audio`, `embed_image`, `embed_text` return
`{space: [B, D]}` with L2-normalised rows, in eval mode under `torch.no_grad()` (bf16
autocast on CUDA). Training: `forward(...)` returns a `ContrastiveBatch` for `MMVLoss`.
Build one with `model.factory.build_model`, save/load with `model.checkpoint`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.backbones import AudioResNet, TextEncoder, build_video_backbone
from model.config import ConfigError, ModelConfig
from model.deflation import ImageBatchNorm, deflated_features
from model.errors import ModelInputError
from model.heads import build_heads
from model.losses import ContrastiveBatch
from model.spaces import LOSS_SPACES, SPACES, spaces_of
from model.tokenizer import Tokenizer
from model.word_vectors import WordVectors, WordVectorsError, read_word_vectors


def l2_normalize(x: Tensor) -> Tensor:
    return F.normalize(x.float(), dim=-1)


def _as_float_tensor(x: Any, name: str, ndim: int, device: torch.device) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise ModelInputError(f"{name} must be a torch.Tensor or numpy array, got {type(x)}")
    if x.ndim != ndim:
        raise ModelInputError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.is_floating_point():
        raise ModelInputError(f"{name} must be float (or uint8), got {x.dtype}")
    return x.to(device=device, dtype=torch.float32)


class MMV(nn.Module):
    def __init__(
        self, config: ModelConfig, tokenizer: Tokenizer, word_embeddings: Tensor | None = None
    ) -> None:
        super().__init__()
        if tokenizer.max_words != config.text.max_words:
            raise ConfigError(
                f"tokenizer keeps {tokenizer.max_words} words but the config says "
                f"text.max_words={config.text.max_words}"
            )
        self.config = config
        self.tokenizer = tokenizer
        self.video_backbone = build_video_backbone(config.video)
        self.audio_backbone = AudioResNet(config.audio)
        self.text_backbone = TextEncoder(len(tokenizer), config.text, word_embeddings)
        self.heads = build_heads(
            config.heads,
            self.video_backbone.output_dim,
            self.audio_backbone.output_dim,
            self.text_backbone.output_dim,
        )
        self.image_bn = ImageBatchNorm(self.video_backbone)

    # -- facts ------------------------------------------------------------------------
    @property
    def spaces(self) -> tuple[str, ...]:
        return SPACES[self.config.heads.space]

    def spaces_of(self, modality: str) -> tuple[str, ...]:
        return spaces_of(self.config.heads.space, modality)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def embedding_dims(self) -> dict[str, int]:
        h = self.config.heads
        dims = {
            "fac": {"va": h.va_dim, "vat": h.vat_dim},
            "shared": {"vat": h.va_dim},
            "disjoint": {"va": h.va_dim, "vt": h.vat_dim},
        }
        return dims[h.space]

    # -- inference --------------------------------------------------------------------
    @contextmanager
    def _inference(self) -> Iterator[None]:
        was_training = self.training
        if was_training:  # train()/eval() walk every module: skip when already in eval
            self.eval()
        device = self.device
        try:
            with (
                torch.no_grad(),
                torch.autocast(
                    device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
                ),
            ):
                yield
        finally:
            if was_training:
                self.train()

    @staticmethod
    def _normalized(z: dict[str, Tensor]) -> dict[str, Tensor]:
        return {space: l2_normalize(v) for space, v in z.items()}

    def _video(self, video: Any) -> Tensor:
        x = _as_float_tensor(video, "video [B, T, H, W, 3]", 5, self.device)
        if x.shape[-1] != 3:
            raise ModelInputError(f"video must be RGB [B, T, H, W, 3], got {tuple(x.shape)}")
        return x

    def _image(self, image: Any) -> Tensor:
        x = _as_float_tensor(image, "image [B, H, W, 3]", 4, self.device)
        if x.shape[-1] != 3:
            raise ModelInputError(f"image must be RGB [B, H, W, 3], got {tuple(x.shape)}")
        return x

    def _audio(self, audio: Any) -> Tensor:
        x = _as_float_tensor(audio, "audio [B, S]", 2, self.device)
        if x.shape[1] == 0:
            raise ModelInputError("audio has no samples")
        return x

    def embed_video(self, video: Any) -> dict[str, Tensor]:
        """Video `[B, T, H, W, 3]` in [0, 1] -> {space: [B, D]} (all video spaces)."""
        x = self._video(video)
        with self._inference():
            return self._normalized(self.heads.video(self.video_backbone(x)))

    def embed_audio(self, audio: Any) -> dict[str, Tensor]:
        """Waveform `[B, S]` at cfg.audio.sample_rate -> {space: [B, D]}. FAC audio
        reaches `vat` through g_va->vat."""
        x = self._audio(audio)
        with self._inference():
            return self._normalized(self.heads.audio(self.audio_backbone(x), coarse=True))

    def embed_image(self, image: Any) -> dict[str, Tensor]:
        """Images `[B, H, W, 3]` in [0, 1] -> {space: [B, D]} through the deflated video
        network (with the calibrated BN γ/β once `calibrate_image_bn` has run)."""
        x = self._image(image)
        with self._inference():
            h = deflated_features(self.video_backbone, x, self.image_bn.overrides())
            return self._normalized(self.heads.video(h))

    def embed_text(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Raw strings -> {space: [B, D]}; unknown words are UNK, empty texts allowed."""
        ids, mask = self.tokenizer.encode(list(texts) if not isinstance(texts, str) else texts)
        with self._inference():
            h = self.text_backbone(ids.to(self.device), mask.to(self.device))
            return self._normalized(self.heads.text(h))

    def backbone_features(self, modality: str, inputs: Any) -> Tensor:
        """Pooled backbone representation `[B, d]` (for linear evaluation), eval mode."""
        with self._inference():
            if modality == "video":
                return self.video_backbone(self._video(inputs)).float()
            if modality == "image":
                h = deflated_features(
                    self.video_backbone, self._image(inputs), self.image_bn.overrides()
                )
                return h.float()
            if modality == "audio":
                return self.audio_backbone(self._audio(inputs)).float()
            if modality == "text":
                ids, mask = self.tokenizer.encode(inputs)
                return self.text_backbone(ids.to(self.device), mask.to(self.device)).float()
        raise ModelInputError(f"unknown modality '{modality}'")

    # -- training ---------------------------------------------------------------------
    def forward(
        self,
        video: Tensor,
        audio: Tensor,
        text_ids: Tensor | None = None,
        text_mask: Tensor | None = None,
        positive_mask: Tensor | None = None,
        has_text: Tensor | None = None,
        has_audio: Tensor | None = None,
    ) -> ContrastiveBatch:
        """Training forward: video `[B, T, H, W, 3]`, audio `[B, S]`, narrations
        `text_ids`/`text_mask` `[B, K, L]` (or `[B, L]` for one each), `positive_mask`
        `[B, K]` (default: slots with at least one word), `has_text`/`has_audio` `[B]`
        (default: all True). The FAC audio -> vat path is not used here (see heads.py).
        """
        b = video.shape[0]
        device = video.device
        option = self.config.heads.space
        va_space, vt_space = LOSS_SPACES[option]
        z_video = self.heads.video(self.video_backbone(video))
        z_audio = self.heads.audio(self.audio_backbone(audio), coarse=False)

        text_vt = None
        if text_ids is not None:
            if text_mask is None:
                raise ModelInputError("text_ids given without text_mask")
            if text_ids.ndim == 2:
                text_ids, text_mask = text_ids[:, None], text_mask[:, None]
            k, length = text_ids.shape[1], text_ids.shape[2]
            h_text = self.text_backbone(
                text_ids.reshape(b * k, length), text_mask.reshape(b * k, length)
            )
            text_vt = l2_normalize(self.heads.text(h_text)[vt_space]).view(b, k, -1)
            if positive_mask is None:
                positive_mask = text_mask.any(dim=-1)
            if positive_mask.ndim == 1:
                positive_mask = positive_mask[:, None]
        if has_text is None:
            has_text = torch.full((b,), text_vt is not None, dtype=torch.bool, device=device)
        if has_audio is None:
            has_audio = torch.ones(b, dtype=torch.bool, device=device)
        return ContrastiveBatch(
            video_va=l2_normalize(z_video[va_space]),
            audio_va=l2_normalize(z_audio[va_space]),
            video_vt=l2_normalize(z_video[vt_space]),
            text_vt=text_vt,
            positive_mask=positive_mask,
            has_text=has_text.bool(),
            has_audio=has_audio.bool(),
        )

    # -- vocabulary -------------------------------------------------------------------
    def grow_vocabulary(
        self, words: Iterable[str], word_vectors: WordVectors | str | Path | None = None
    ) -> list[str]:
        """Add new words (in the order given, up to `text.vocab_size` entries in all) for
        fine-tuning; returns the words added. Old rows are kept. Where a word-vector
        source is known (`word_vectors`, else `config.text.word_vectors`) new words get
        their vectors; with frozen embeddings words missing from it are not added (they
        stay UNK) and the table stays frozen. Build the optimiser *after* this call:
        the embedding parameter is replaced.
        """
        room = self.config.text.vocab_size - len(self.tokenizer)
        candidates = list(
            dict.fromkeys(w for w in words if isinstance(w, str) and w and w not in self.tokenizer)
        )
        if room <= 0 or not candidates:
            return []
        source = word_vectors if word_vectors is not None else self.config.text.word_vectors
        frozen = self.text_backbone.frozen
        if frozen and source is None:
            raise WordVectorsError(
                "the word embeddings are frozen pre-trained vectors: growing the vocabulary "
                "needs the word-vector file (pass word_vectors=...)"
            )
        found: dict[str, np.ndarray] = {}
        if source is not None:
            vectors = (
                source
                if isinstance(source, WordVectors)
                else read_word_vectors(source, keep=set(candidates))
            )
            index = vectors.index()
            if vectors.dim != self.config.text.embed_dim:
                raise WordVectorsError(
                    f"word vectors are {vectors.dim}-d, the model's embeddings "
                    f"{self.config.text.embed_dim}-d"
                )
            found = {w: vectors.vectors[index[w]] for w in candidates if w in index}
        if frozen:
            candidates = [w for w in candidates if w in found]
        candidates = candidates[:room]
        if not candidates:
            return []
        rows = torch.randn(len(candidates), self.config.text.embed_dim)
        for i, w in enumerate(candidates):
            if w in found:
                rows[i] = torch.from_numpy(np.asarray(found[w], dtype=np.float32))
        added = self.tokenizer.add_words(candidates)
        self.text_backbone.grow(rows)
        return added

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts per part (what docs/model.md reports)."""
        parts = {
            "video": self.video_backbone,
            "audio": self.audio_backbone,
            "text": self.text_backbone,
            "heads": self.heads,
        }
        out = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()}
        out["total"] = sum(out.values())
        return out
