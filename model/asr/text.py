"""Word normalisation shared by the language-model builder and the WER scorer.

Both must see the same words: "Red, circle!" and "red circle" are two identical
word sequences, and "light-blue" is the two words "light blue" (that is how a
recognizer writes them).
"""

from __future__ import annotations

import re

# Letters, digits and in-word apostrophes survive ("it's"); everything else splits words.
_NON_WORD = re.compile(r"[^a-z0-9']+")


def normalize_words(text: str) -> list[str]:
    """Lowercase words without punctuation, in order."""
    words = (w.strip("'") for w in _NON_WORD.split(text.lower()))
    return [w for w in words if w]
