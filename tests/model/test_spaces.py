"""space_for answers design.md's table; every option puts each modality where it should."""

from __future__ import annotations

import itertools

import pytest

from model import space_for, spaces_of
from model.config import MODALITIES

PAIRS = list(itertools.product(MODALITIES, MODALITIES))


@pytest.mark.parametrize(("q", "t"), PAIRS)
def test_fac_follows_the_design_table(q: str, t: str) -> None:
    want = "vat" if "text" in (q, t) else "va"
    assert space_for("fac", q, t) == want


@pytest.mark.parametrize(("q", "t"), PAIRS)
def test_shared_has_one_space(q: str, t: str) -> None:
    assert space_for("shared", q, t) == "vat"


@pytest.mark.parametrize(("q", "t"), PAIRS)
def test_disjoint_has_no_text_audio_path(q: str, t: str) -> None:
    got = space_for("disjoint", q, t)
    if {q, t} == {"text", "audio"}:
        assert got is None
    elif "text" in (q, t):
        assert got == "vt"
    else:
        assert got == "va"


def test_modality_spaces_match_the_architecture_table() -> None:
    assert spaces_of("fac", "audio") == ("va", "vat")
    assert spaces_of("fac", "text") == ("vat",)
    assert spaces_of("disjoint", "image") == ("va", "vt")
    assert spaces_of("disjoint", "audio") == ("va",)
    assert spaces_of("shared", "video") == ("vat",)


def test_unknown_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="space option"):
        space_for("joint", "text", "audio")
    with pytest.raises(ValueError, match="modality"):
        space_for("fac", "smell", "audio")
