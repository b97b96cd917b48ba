"""Word error rate: Levenshtein distance over normalised words.

WER = (substitutions + deletions + insertions) / reference words. A corpus WER
adds the edits and the reference words of every pair before dividing, so long
references weigh more than short ones (the usual definition, not a mean of rates).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from model.asr.text import normalize_words


@dataclass(frozen=True)
class WordErrors:
    """Edit counts of one hypothesis against one reference (or sums of many)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_words: int = 0

    @property
    def edits(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Edits per reference word; an empty reference scores 0 if the hypothesis
        is empty too and 1 otherwise (any output for silence is all wrong)."""
        if self.reference_words == 0:
            return 0.0 if self.edits == 0 else 1.0
        return self.edits / self.reference_words

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_words + other.reference_words,
        )


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    """Minimal edits turning the reference words into the hypothesis words."""
    ref = normalize_words(reference)
    hyp = normalize_words(hypothesis)
    # One row of the edit-distance table at a time; each cell carries (cost, S, D, I)
    # so the split of the minimum into its kinds comes out with it.
    row = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i, ref_word in enumerate(ref, start=1):
        new_row = [(i, 0, i, 0)]
        for j, hyp_word in enumerate(hyp, start=1):
            cost, s, d, ins = row[j - 1]
            diagonal = (cost, s, d, ins) if ref_word == hyp_word else (cost + 1, s + 1, d, ins)
            cost, s, d, ins = row[j]
            deletion = (cost + 1, s, d + 1, ins)
            cost, s, d, ins = new_row[j - 1]
            insertion = (cost + 1, s, d, ins + 1)
            new_row.append(min(diagonal, deletion, insertion))
        row = new_row
    _, s, d, ins = row[-1]
    return WordErrors(s, d, ins, len(ref))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER of one hypothesis: edits / reference words, after normalisation."""
    return word_errors(reference, hypothesis).rate


def corpus_word_error_rate(pairs: Iterable[tuple[str, str]]) -> float:
    """Total edits over total reference words of (reference, hypothesis) pairs."""
    return sum((word_errors(ref, hyp) for ref, hyp in pairs), WordErrors()).rate
