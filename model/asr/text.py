"""Word normalisation shared by the language-model builder and the WER scorer.

Both must see the same words: "Red, circle!" and "red circle" are two identical
word sequences, and "light-blue" is the two words "light blue" (that is how a
recognizer writes them).
"""

from __future__ import annotations

import re
import unicodedata

# Letters (accented ones too: "café"), digits and in-word apostrophes survive ("it's");
# everything else splits words.
_NON_WORD = re.compile(r"[^\w']+|_")
# Captions and typed transcripts write "don’t": the same word as "don't", not "don t".
_APOSTROPHES = str.maketrans(dict.fromkeys("\u2019\u2018\u02bc\uff07", "'"))


def normalize_words(text: str) -> list[str]:
    """Lowercase words without punctuation, in order."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    words = (w.strip("'") for w in _NON_WORD.split(text))
    return [w for w in words if w]
