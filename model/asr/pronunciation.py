"""Pronunciations for a language model's words, in the acoustic model's phones.

Words come from pocketsphinx's bundled CMU dictionary (all listed variants). A
word the dictionary lacks (a name, a coined word, a digit string) gets a derived
pronunciation: espeak-ng's IPA phonemes mapped to ARPAbet. espeak-ng's letter-to-
sound rules are good for English, and the corpus narrations are espeak-ng speech,
so the derived form matches what is actually said. A word that espeak-ng is
missing for, or whose phonemes do not map, is left out and reported.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from pocketsphinx import get_model_path

# espeak-ng's en-us IPA phonemes (stress marks removed) -> the ARPAbet phones of
# the en-us acoustic model. Multi-letter keys are single espeak phonemes; r-coloured
# vowels and syllabic consonants become two ARPAbet phones, as CMUdict writes them.
_IPA_TO_ARPABET: dict[str, str] = {
    # vowels and diphthongs
    "ɑ": "AA", "ɑː": "AA", "a": "AA", "ɒ": "AA", "æ": "AE", "ʌ": "AH", "ə": "AH",
    "ɐ": "AH", "ɔ": "AO", "ɔː": "AO", "aʊ": "AW", "aɪ": "AY", "ɛ": "EH", "e": "EH",
    "ɚ": "ER", "ɜː": "ER", "ɜ": "ER", "ɝ": "ER", "eɪ": "EY", "ɪ": "IH", "ᵻ": "IH",
    "i": "IY", "iː": "IY", "oʊ": "OW", "əʊ": "OW", "o": "OW", "oː": "OW", "ɔɪ": "OY",
    "ʊ": "UH", "u": "UW", "uː": "UW",
    # r-coloured vowels, vowel sequences and syllabic consonants
    "ɑːɹ": "AA R", "ɔːɹ": "AO R", "oːɹ": "AO R", "ɛɹ": "EH R", "ɪɹ": "IH R",
    "ʊɹ": "UH R", "aɪɚ": "AY ER", "aɪə": "AY AH", "iə": "IY AH", "əl": "AH L",
    "l̩": "AH L", "n̩": "AH N", "m̩": "AH M",
    # consonants
    "b": "B", "tʃ": "CH", "d": "D", "ð": "DH", "f": "F", "ɡ": "G", "g": "G", "h": "HH",
    "dʒ": "JH", "k": "K", "x": "K", "l": "L", "ɬ": "L", "m": "M", "n": "N", "ŋ": "NG",
    "p": "P", "ɹ": "R", "r": "R", "s": "S", "ʃ": "SH", "t": "T", "ʔ": "T",
    "ɾ": "T", "θ": "TH", "v": "V", "w": "W", "ʍ": "W", "j": "Y", "z": "Z", "ʒ": "ZH",
}  # fmt: skip
_STRESS = str.maketrans("", "", "ˈˌ")


def cmudict_path() -> Path:
    return Path(get_model_path("en-us/cmudict-en-us.dict"))


@lru_cache(maxsize=1)
def load_cmudict() -> dict[str, tuple[str, ...]]:
    """word -> its pronunciations ("R EH D"), variants "word(2)" folded in."""
    entries: dict[str, list[str]] = {}
    with cmudict_path().open(encoding="utf-8") as f:
        for line in f:
            word, _, phones = line.strip().partition(" ")
            if not phones:
                continue
            base = word.split("(", 1)[0]
            entries.setdefault(base, []).append(phones.strip())
    return {word: tuple(prons) for word, prons in entries.items()}


def ipa_to_arpabet(ipa: str) -> str | None:
    """espeak-ng IPA phonemes separated by '_' -> ARPAbet, or None if one doesn't map."""
    phones: list[str] = []
    for phoneme in ipa.translate(_STRESS).replace(" ", "_").split("_"):
        if not phoneme:
            continue
        arpabet = _IPA_TO_ARPABET.get(phoneme)
        if arpabet is None:
            return None
        phones.append(arpabet)
    return " ".join(phones) or None


def espeak_pronunciations(words: Iterable[str]) -> dict[str, str]:
    """Derived pronunciations of `words` (those espeak-ng and the mapping can do)."""
    words = list(words)
    espeak = shutil.which("espeak-ng")
    if not words or espeak is None:
        return {}
    # One process for all words: on stdin espeak-ng answers line by line.
    result = subprocess.run(
        [espeak, "-q", "--ipa", "--sep=_", "-v", "en-us"],
        input="\n".join(words) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or len(lines) != len(words):
        return {}
    derived = {}
    for word, ipa in zip(words, lines, strict=True):
        phones = ipa_to_arpabet(ipa)
        if phones is not None:
            derived[word] = phones
    return derived


def pronunciations(words: Iterable[str]) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """(word -> pronunciations, words left out) for the given normalised words."""
    cmudict = load_cmudict()
    found: dict[str, tuple[str, ...]] = {}
    missing: list[str] = []
    for word in sorted(set(words)):
        if word in cmudict:
            found[word] = cmudict[word]
        else:
            missing.append(word)
    derived = espeak_pronunciations(missing)
    found.update({word: (phones,) for word, phones in derived.items()})
    return found, [word for word in missing if word not in derived]
