"""Which embedding space compares which modalities: the one rule, in one place.

Space names: FAC -> `va` (fine) and `vat` (coarse); shared -> `vat`; disjoint -> `va`
and `vt`. Images live wherever video lives (they go through the deflated video net).
"""

from __future__ import annotations

import functools

from model.config import MODALITIES

SPACES: dict[str, tuple[str, ...]] = {
    "fac": ("va", "vat"),
    "shared": ("vat",),
    "disjoint": ("va", "vt"),
}

# option -> modality -> the spaces that modality is embedded into
MODALITY_SPACES: dict[str, dict[str, tuple[str, ...]]] = {
    "fac": {
        "video": ("va", "vat"),
        "image": ("va", "vat"),
        "audio": ("va", "vat"),
        "text": ("vat",),
    },
    "shared": {"video": ("vat",), "image": ("vat",), "audio": ("vat",), "text": ("vat",)},
    "disjoint": {"video": ("va", "vt"), "image": ("va", "vt"), "audio": ("va",), "text": ("vt",)},
}

# Where the losses live: (space of the video-audio NCE, space of the video-text MIL-NCE).
LOSS_SPACES: dict[str, tuple[str, str]] = {
    "fac": ("va", "vat"),
    "shared": ("vat", "vat"),
    "disjoint": ("va", "vt"),
}


def _check(option: str, *modalities: str) -> None:
    if option not in SPACES:
        raise ValueError(f"unknown space option '{option}': expected one of {sorted(SPACES)}")
    for m in modalities:
        if m not in MODALITIES:
            raise ValueError(f"unknown modality '{m}': expected one of {list(MODALITIES)}")


def spaces_of(option: str, modality: str) -> tuple[str, ...]:
    """The spaces a modality is embedded into under a space option."""
    _check(option, modality)
    return MODALITY_SPACES[option][modality]


@functools.cache  # pure, and asked once per search query
def space_for(option: str, query_modality: str, target_modality: str) -> str | None:
    """The space in which `query_modality` is compared with `target_modality`.

    When both are video/audio/image the fine space wins (`va`) where it exists; any
    pair with text uses the text space. `None` when no space holds both (disjoint
    text <-> audio).
    """
    _check(option, query_modality, target_modality)
    shared = [
        s
        for s in SPACES[option]
        if s in MODALITY_SPACES[option][query_modality]
        and s in MODALITY_SPACES[option][target_modality]
    ]
    # SPACES lists the fine space first, so the first shared one is the finest.
    return shared[0] if shared else None
