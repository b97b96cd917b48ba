"""An n-gram language model for pocketsphinx, built from the texts a model knows.

pocketsphinx's general English model (`en-us.lm.bin`, ~130k words) spreads its
probability over words our search model never saw, and on synthetic narration it
gets most words wrong. A small model over the training transcripts' words puts the
probability where the speech is: the narrations reuse a few hundred words in a few
sentence patterns.

Estimator: interpolated Witten-Bell smoothing, written as an ARPA backoff model.
For a context h with c(h) tokens after it and T(h) distinct words after it,

    p(w | h) = (c(h, w) + T(h) · p(w | h')) / (c(h) + T(h))      h' = h without its oldest word

and the unigram level interpolates with a uniform distribution over the
vocabulary, so every known word (vocabulary words never seen in a text too) keeps
some probability. A word unseen after h gets T(h) / (c(h) + T(h)) · p(w | h'): that
factor is exactly the ARPA backoff weight of h, so the interpolated model is stored
losslessly in the backoff format pocketsphinx reads.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from model.asr.errors import LanguageModelError
from model.asr.pronunciation import pronunciations
from model.asr.text import normalize_words

SENTENCE_START = "<s>"
SENTENCE_END = "</s>"
LM_FILE = "asr.lm"
DICT_FILE = "asr.dict"
_NEVER = -99.0  # log10 probability ARPA uses for "never predicted" (<s>)

NGram = tuple[str, ...]
Backoff = Callable[[NGram], float]


@dataclass
class LanguageModel:
    """An ARPA n-gram model plus the pronunciations of its words.

    `arpa` is the model as ARPA text, `pronunciations` maps each word to its phone
    strings, `left_out` lists words dropped for lack of a pronunciation.
    """

    arpa: str
    pronunciations: dict[str, tuple[str, ...]]
    left_out: list[str] = field(default_factory=list)

    @property
    def words(self) -> list[str]:
        return sorted(self.pronunciations)

    def dictionary_text(self) -> str:
        """The pocketsphinx dictionary: `word PH ONES`, variants as `word(2)`."""
        lines = []
        for word in self.words:
            for i, phones in enumerate(self.pronunciations[word], start=1):
                lines.append(f"{word if i == 1 else f'{word}({i})'} {phones}")
        return "\n".join(lines) + "\n"

    def save(self, directory: str | Path) -> Path:
        """Write asr.lm and asr.dict into `directory` (created if missing)."""
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / LM_FILE).write_text(self.arpa, encoding="utf-8")
            (directory / DICT_FILE).write_text(self.dictionary_text(), encoding="utf-8")
        except OSError as exc:
            raise LanguageModelError(
                f"cannot save the language model in {directory}: {exc}"
            ) from exc
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> LanguageModel:
        """Read a model written by `save` (or any ARPA file + dictionary so named)."""
        directory = Path(directory)
        try:
            arpa = (directory / LM_FILE).read_text(encoding="utf-8")
            dict_lines = (directory / DICT_FILE).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise LanguageModelError(
                f"no readable language model in {directory} (expected {LM_FILE} and "
                f"{DICT_FILE}): {exc}"
            ) from exc
        if not arpa.lstrip().startswith("\\data\\"):
            raise LanguageModelError(f"{directory / LM_FILE} is not an ARPA file")
        prons: dict[str, list[str]] = defaultdict(list)
        for line in dict_lines:
            word, _, phones = line.strip().partition(" ")
            if phones.strip():
                prons[word.split("(", 1)[0]].append(phones.strip())
        if not prons:
            raise LanguageModelError(f"{directory / DICT_FILE} lists no pronunciations")
        return cls(arpa, {w: tuple(p) for w, p in prons.items()})


def build_language_model(
    texts: Iterable[str], vocabulary: Iterable[str] | None = None, order: int = 3
) -> LanguageModel:
    """An `order`-gram model of `texts` over their words plus `vocabulary`.

    `texts` are utterances: each is one word sequence from <s> to </s>, its
    sentence punctuation ignored, because the recognizer decodes a stretch of speech
    (all the sentences between two pauses the endpointer hears) as one utterance;
    `vocabulary` adds words the search model knows that no text uses (they get
    unigram probability only). Tokens that are not words (`<unk>`, `[PAD]`) are
    ignored. Words without a pronunciation are dropped from the sentences and listed
    in `left_out`.
    """
    if order < 1:
        raise LanguageModelError(f"the n-gram order must be at least 1, not {order}")
    sentences = [words for words in map(normalize_words, texts) if words]
    words = {w for s in sentences for w in s}
    for entry in vocabulary or ():
        # A vocabulary entry is one word; bracketed specials normalise to nothing.
        if not entry.startswith(("<", "[")):
            words.update(normalize_words(entry))
    prons, left_out = pronunciations(words)
    if not prons:
        raise LanguageModelError(
            "no word to build a language model from: the texts and vocabulary are empty "
            "or no word has a pronunciation"
        )
    known = set(prons)
    sentences = [[w for w in s if w in known] for s in sentences]
    arpa = _witten_bell_arpa([s for s in sentences if s], sorted(known), order)
    return LanguageModel(arpa, prons, left_out)


def _witten_bell_arpa(sentences: list[list[str]], vocabulary: list[str], order: int) -> str:
    counts: list[Counter[NGram]] = [Counter() for _ in range(order + 1)]  # by length
    for sentence in sentences:
        padded = [SENTENCE_START, *sentence, SENTENCE_END]
        for n in range(1, order + 1):
            for i in range(len(padded) - n + 1):
                gram = tuple(padded[i : i + n])
                if gram != (SENTENCE_START,):  # <s> is given, never predicted
                    counts[n][gram] += 1
    # Per context: tokens seen after it, and distinct words seen after it.
    context_tokens: Counter[NGram] = Counter()
    context_types: Counter[NGram] = Counter()
    for n in range(2, order + 1):
        for gram, c in counts[n].items():
            context_tokens[gram[:-1]] += c
            context_types[gram[:-1]] += 1

    # Unigrams: Witten-Bell against uniform over the words and </s>.
    predicted = [*vocabulary, SENTENCE_END]
    uniform = 1.0 / len(predicted)
    total, types = sum(counts[1].values()), len(counts[1])
    prob: dict[NGram, float] = {}
    for word in predicted:
        c = counts[1][(word,)]
        prob[(word,)] = (c + types * uniform) / (total + types) if total else uniform

    def backoff(context: NGram) -> float:
        c, t = context_tokens[context], context_types[context]
        return t / (c + t) if t else 1.0

    for n in range(2, order + 1):
        for gram, c in counts[n].items():
            context = gram[:-1]
            lower = prob[gram[1:]]  # present: a seen n-gram's suffix was seen too
            prob[gram] = (c + context_types[context] * lower) / (
                context_tokens[context] + context_types[context]
            )

    sections: list[tuple[int, list[str]]] = []
    for n in range(1, order + 1):
        grams = [(w,) for w in predicted] if n == 1 else sorted(counts[n])
        with_bow = backoff if n < order else None  # the top order never backs off
        lines = [_arpa_line(math.log10(prob[g]), g, with_bow) for g in grams]
        if n == 1:
            lines.insert(0, _arpa_line(_NEVER, (SENTENCE_START,), with_bow))
        sections.append((n, lines))

    out = ["\\data\\"] + [f"ngram {n}={len(lines)}" for n, lines in sections] + [""]
    for n, lines in sections:
        out += [f"\\{n}-grams:", *lines, ""]
    out.append("\\end\\")
    return "\n".join(out) + "\n"


def _arpa_line(log_prob: float, gram: NGram, backoff: Backoff | None) -> str:
    line = f"{log_prob:.6f}\t{' '.join(gram)}"
    if backoff is not None and gram[-1] != SENTENCE_END:  # nothing follows </s>
        line += f"\t{math.log10(backoff(gram)):.6f}"
    return line
