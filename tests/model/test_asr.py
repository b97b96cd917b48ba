"""model.asr: real pocketsphinx on espeak-ng speech and on the generated corpus.

The corpus test is the issue's acceptance check: the language model is built from
the train split's WebVTT transcripts, the test split's clips are decoded from their
mp4 files (narration mixed with object sounds and ambience) and recognised, and the
corpus WER must be at most 0.3 — and better than pocketsphinx's default model.
"""

from __future__ import annotations

import io
import math
import pickle
import subprocess
import threading
import wave
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from pocketsphinx import Decoder

from model.asr import (
    LanguageModel,
    LanguageModelError,
    SpeechRecognizer,
    WaveformError,
    WordErrors,
    build_language_model,
    corpus_word_error_rate,
    transcript_for,
    word_error_rate,
    word_errors,
)
from model.asr.__main__ import main as asr_main
from model.asr.evaluation import corpus_language_model, evaluate, narrated_clips
from model.asr.language_model import DICT_FILE, LM_FILE
from model.asr.pronunciation import ipa_to_arpabet
from model.transcripts import Segment, Transcript

MAX_WER = 0.3  # issue #3's target on the corpus test split
RATE = 22050  # espeak-ng's output rate: not the recognizer's, so resampling is exercised

SENTENCES = [
    "a small red ball bounces on a striped background",
    "the big blue cube slides back and forth",
    "okay so you can see a green star spinning around",
    "here we have a yellow ring floating up and down",
    "a purple triangle hovers in front of a checkered pattern",
]


def speak(text: str) -> np.ndarray:
    """espeak-ng speech as float32 mono at RATE, from its first sound to its last."""
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "--stdout", text], capture_output=True, check=True
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        assert w.getframerate() == RATE
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    audio = pcm.astype(np.float32) / 32768.0
    loud = np.flatnonzero(np.abs(audio) > 0.01)  # espeak-ng pads with silence: trim it
    return audio[loud[0] : loud[-1] + 1]


@pytest.fixture(scope="module")
def small_lm() -> LanguageModel:
    return build_language_model(SENTENCES)


@pytest.fixture(scope="module")
def recognizer(small_lm: LanguageModel) -> SpeechRecognizer:
    return SpeechRecognizer(small_lm)


@pytest.fixture(scope="module")
def two_sentences() -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Sentence 2 at 0.5 s, two seconds of silence, sentence 1; and their spans."""
    first, second = speak(SENTENCES[2]), speak(SENTENCES[1])
    gap = np.zeros(RATE * 2, np.float32)
    audio = np.concatenate([gap[: RATE // 2], first, gap, second, gap[: RATE // 2]])
    a0 = 0.5
    a1 = a0 + len(first) / RATE
    b0 = a1 + 2.0
    b1 = b0 + len(second) / RATE
    return audio, (a0, a1, b0, b1)


# -- word error rate ------------------------------------------------------------------


def test_wer_counts_substitutions_deletions_insertions() -> None:
    assert word_errors("a red ball", "a red ball") == WordErrors(0, 0, 0, 3)
    assert word_errors("a red ball", "a blue ball") == WordErrors(1, 0, 0, 3)
    assert word_errors("a red ball", "a ball") == WordErrors(0, 1, 0, 3)
    assert word_errors("a red ball", "a red red ball") == WordErrors(0, 0, 1, 3)
    assert word_error_rate("a red ball bounces", "red ball bounces up high") == pytest.approx(3 / 4)
    # Edits are minimal: one deletion beats substituting everything after it.
    assert word_errors("one two three four", "two three four").edits == 1


def test_wer_normalises_case_and_punctuation() -> None:
    assert (
        word_error_rate("Okay, a RED ball!  It's light-blue.", "okay a red ball it's light blue")
        == 0
    )
    assert word_error_rate("", "") == 0.0
    assert word_error_rate("", "anything") == 1.0  # output for silence is all wrong
    assert word_error_rate("two words", "") == 1.0


def test_curly_apostrophes_and_accented_letters_keep_their_words() -> None:
    """Captions write "don’t" and "café": they were split into "don t" and cut to "caf",
    so a language model built from users' transcripts learnt words nobody said."""
    assert word_error_rate("Don’t stop at the Café, ﬁsh!", "don't stop at the café fish") == 0
    assert word_error_rate("the café", "the caf") == 0.5


def test_a_language_model_from_captions_recognises_their_words() -> None:
    lm = build_language_model(["the café is open", "don’t stop the café", "a naïve fish"])
    assert {"café", "don't", "naïve"} <= set(lm.words) and not {"caf", "don", "t"} & set(lm.words)
    heard = SpeechRecognizer(lm).transcribe(speak("don't stop the café"), RATE).text
    assert heard == "don't stop the café"


def test_corpus_wer_is_total_edits_over_total_words() -> None:
    pairs = [("a b c d e f g h i j", "a b c d e f g h i j"), ("x", "y")]
    # Per-pair rates average to 0.5; the corpus rate counts words: 1 edit in 11.
    assert corpus_word_error_rate(pairs) == pytest.approx(1 / 11)


# -- language model -----------------------------------------------------------------


def read_arpa(text: str) -> dict[tuple[str, ...], tuple[float, float]]:
    """ARPA n-grams -> (log10 p, log10 backoff), checking the header counts."""
    declared: dict[int, int] = {}
    grams: dict[tuple[str, ...], tuple[float, float]] = {}
    seen: dict[int, int] = defaultdict(int)
    order = 0
    lines = text.splitlines()
    assert lines[0] == "\\data\\" and lines[-1] == "\\end\\"
    for line in lines[1:-1]:
        if line.startswith("ngram "):
            n, count = line[6:].split("=")
            declared[int(n)] = int(count)
        elif line.startswith("\\") and line.endswith("-grams:"):
            order = int(line[1:].split("-")[0])
        elif line.strip():
            fields = line.split("\t")
            gram = tuple(fields[1].split())
            assert len(gram) == order
            grams[gram] = (float(fields[0]), float(fields[2]) if len(fields) > 2 else 0.0)
            seen[order] += 1
    assert dict(seen) == declared
    return grams


def test_arpa_probabilities_sum_to_one_in_every_context(small_lm: LanguageModel) -> None:
    grams = read_arpa(small_lm.arpa)
    predicted = [g[0] for g in grams if len(g) == 1 and g[0] != "<s>"]

    def log_p(word: str, history: tuple[str, ...]) -> float:
        if (*history, word) in grams:
            return grams[(*history, word)][0]
        return grams.get(history, (0.0, 0.0))[1] + log_p(word, history[1:])

    contexts = [g for g in grams if len(g) < 3 and g[-1] != "</s>"] + [()]
    for history in contexts:
        total = sum(10 ** log_p(w, history) for w in predicted)
        assert total == pytest.approx(1.0, abs=1e-4), history
    # Seen continuations are likelier than unseen ones in the same context.
    assert log_p("ball", ("small", "red")) > log_p("cube", ("small", "red"))


def test_pocketsphinx_loads_the_saved_model(small_lm: LanguageModel, tmp_path: Path) -> None:
    small_lm.save(tmp_path)
    assert (tmp_path / LM_FILE).is_file() and (tmp_path / DICT_FILE).is_file()
    decoder = Decoder(lm=str(tmp_path / LM_FILE), dict=str(tmp_path / DICT_FILE), loglevel="FATAL")
    assert decoder.lookup_word("striped") is not None
    assert decoder.lookup_word("hello") is None  # the dictionary is only the LM's words

    loaded = LanguageModel.load(tmp_path)
    assert loaded.arpa == small_lm.arpa
    assert loaded.pronunciations == small_lm.pronunciations
    with pytest.raises(LanguageModelError, match="no readable language model"):
        LanguageModel.load(tmp_path / "missing")


def test_unknown_words_vocabulary_and_specials() -> None:
    lm = build_language_model(["the zorbly wug bounces"], vocabulary=["<unk>", "<pad>", "Green"])
    # Not in CMUdict: pronounced through espeak-ng's phonemes mapped to ARPAbet.
    assert "zorbly" in lm.words and lm.pronunciations["zorbly"][0].startswith("Z ")
    assert "green" in lm.words  # a vocabulary word no text uses
    assert not any(w.startswith("<") or "unk" in w for w in lm.words)
    assert lm.left_out == []
    grams = read_arpa(lm.arpa)
    assert ("green",) in grams and ("the", "zorbly") in grams
    assert ipa_to_arpabet("ɹ_ˈɛ_d") == "R EH D"
    assert ipa_to_arpabet("q_ʘ") is None  # a click has no ARPAbet phone: word left out
    with pytest.raises(LanguageModelError, match="no word"):
        build_language_model([], vocabulary=["<unk>"])


# -- recognition ----------------------------------------------------------------------


def test_recognises_espeak_speech_with_timed_segments(
    recognizer: SpeechRecognizer, two_sentences: tuple[np.ndarray, tuple[float, ...]]
) -> None:
    audio, (a0, a1, b0, b1) = two_sentences
    transcript = recognizer.transcribe(audio, RATE)
    assert transcript.source == "asr"
    assert word_error_rate(f"{SENTENCES[2]} {SENTENCES[1]}", transcript.text) <= 0.2
    # Two seconds of silence split the speech into two segments at the right times.
    assert len(transcript.segments) == 2
    first, second = transcript.segments
    assert abs(first.start - a0) < 0.3 and abs(first.end - a1) < 0.3
    assert abs(second.start - b0) < 0.3 and abs(second.end - b1) < 0.3


def test_same_words_at_any_sample_rate(
    recognizer: SpeechRecognizer, two_sentences: tuple[np.ndarray, tuple[float, ...]]
) -> None:
    audio, _ = two_sentences
    at_16k = np.interp(
        np.arange(0, len(audio) * 16000 // RATE) * RATE / 16000, np.arange(len(audio)), audio
    ).astype(np.float32)
    assert recognizer.transcribe(at_16k, 16000).text == recognizer.transcribe(audio, RATE).text


def test_silence_and_empty_audio_give_an_empty_transcript(recognizer: SpeechRecognizer) -> None:
    for audio in (
        np.zeros(0, np.float32),
        np.zeros(RATE * 2, np.float32),
        np.zeros(10, np.float32),
    ):
        transcript = recognizer.transcribe(audio, RATE)
        assert transcript.segments == [] and not transcript and transcript.source == "asr"


def test_tones_without_speech_give_an_empty_transcript(recognizer: SpeechRecognizer) -> None:
    """Pure tones with a tremolo: the decoder finds no hypothesis at all for some of them
    (its word segmentation is None, not empty); each must come back as no words."""
    t = np.arange(4 * 16000) / 16000
    for frequency, tremolo in ((400, 13), (600, 13), (1200, 13), (2800, 9), (2800, 13)):
        tone = (
            0.6
            * np.sin(2 * np.pi * frequency * t)
            * (0.75 + 0.25 * np.sin(2 * np.pi * tremolo * t))
        )
        transcript = recognizer.transcribe(tone.astype(np.float32), 16000)
        assert transcript.source == "asr", (frequency, tremolo)
        assert all(s.text for s in transcript.segments), (frequency, tremolo)


def test_rejects_what_is_not_a_mono_float_waveform(recognizer: SpeechRecognizer) -> None:
    with pytest.raises(WaveformError, match="mono"):
        recognizer.transcribe(np.zeros((2, 100), np.float32), 16000)
    with pytest.raises(WaveformError, match="floats"):
        recognizer.transcribe(np.zeros(100, np.int16), 16000)
    with pytest.raises(WaveformError, match="sample rate"):
        recognizer.transcribe(np.zeros(100, np.float32), 0)


def test_concurrent_calls_and_pickling_give_the_serial_result(
    recognizer: SpeechRecognizer, two_sentences: tuple[np.ndarray, tuple[float, ...]]
) -> None:
    audio, _ = two_sentences
    expected = recognizer.transcribe(audio, RATE).segments
    results: list[list[Segment]] = []
    threads = [
        threading.Thread(target=lambda: results.append(recognizer.transcribe(audio, RATE).segments))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 2
    clone = pickle.loads(pickle.dumps(recognizer))  # what a process pool does
    assert clone.transcribe(audio, RATE).segments == expected


def test_user_transcript_always_wins(
    recognizer: SpeechRecognizer, two_sentences: tuple[np.ndarray, tuple[float, ...]]
) -> None:
    audio, _ = two_sentences
    mine = Transcript([Segment(0.0, 1.0, "my own words")], source="upload")
    assert transcript_for(mine, audio, RATE, recognizer) is mine
    asr = transcript_for(Transcript([]), audio, RATE, recognizer)
    assert asr is not None and asr.source == "asr" and "cube" in asr.text
    assert transcript_for(None, None, RATE, recognizer) is None  # no sound track


# -- the corpus: issue #3's acceptance test -----------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.corpus import make_corpus

    out = tmp_path_factory.mktemp("asr-corpus")
    # 150 clips: 120 train transcripts for the LM, 15 test clips to recognise.
    make_corpus(out, 150, seed=3, progress=False, n_audio=0, n_stills=0)
    return out


@pytest.mark.slow
def test_corpus_wer_with_the_built_language_model(corpus: Path) -> None:
    lm = corpus_language_model(corpus, split="train")
    clips = narrated_clips(corpus, "test")
    assert len(clips) >= 10
    train_ids = {clip.id for clip in narrated_clips(corpus, "train")}
    assert train_ids and not train_ids & {clip.id for clip in clips}

    built = evaluate({"built LM": SpeechRecognizer(lm)}, clips, progress=False)["built LM"]
    # The default model is slow (~1x real time): compare both on the first clips.
    few = clips[:3]
    side_by_side = evaluate(
        {"default LM": SpeechRecognizer(), "built LM": SpeechRecognizer(lm)}, few, progress=False
    )
    default_few, built_few = side_by_side["default LM"], side_by_side["built LM"]
    print(
        f"\ncorpus test split: built LM WER {built.wer:.3f} on {built.clips} clips "
        f"({built.errors.reference_words} words, {built.real_time_factor:.2f}x real time); "
        f"on the first {len(few)} clips: default LM {default_few.wer:.3f}, "
        f"built LM {built_few.wer:.3f}"
    )
    assert built.errors.reference_words >= 100
    assert built.wer <= MAX_WER
    assert default_few.wer > built_few.wer
    assert default_few.wer > MAX_WER  # the reason the built model exists


@pytest.mark.slow  # shares the corpus fixture
def test_cli_prints_wer_and_transcribes(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        asr_main(
            [
                "wer",
                "--corpus",
                str(corpus),
                "--limit",
                "2",
                "--only-built",
                "--save-lm",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "built LM" in out and "2 clips" in out
    wer_row = next(line for line in out.splitlines() if line.startswith("built LM"))
    assert 0.0 <= float(wer_row.split()[2]) <= 1.0

    clip = narrated_clips(corpus, "test")[0]
    assert asr_main(["transcribe", str(clip.media), "--lm", str(tmp_path), "--vtt"]) == 0
    vtt = capsys.readouterr().out
    assert vtt.startswith("WEBVTT") and "-->" in vtt
    assert asr_main(["transcribe", str(tmp_path / "nothing.mp4")]) == 1
    assert "error" in capsys.readouterr().err


def test_wer_helpers_are_consistent() -> None:
    assert math.isclose(
        corpus_word_error_rate([("a b", "a c"), ("d", "d")]),
        (word_errors("a b", "a c") + word_errors("d", "d")).rate,
    )
