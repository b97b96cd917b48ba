"""Speech recognition with pocketsphinx: a waveform in, a timed Transcript out.

Audio is resampled to 16 kHz int16 (what the en-us acoustic model was trained on),
split into speech regions by pocketsphinx's voice-activity endpointer, and each
region is decoded as one utterance; word timings come from the decoder's word
segmentation. Words in one region that follow each other without a long pause
form one transcript segment.

Limits: one call runs under a CPU-time budget proportional to the sound's length (with
a floor) and a cap on the transcript's size (ASRLimits), checked between utterances
(each at most `max_utterance_s` of sound), so a track that would keep the decoder busy
for hours or make it hear megabytes of words ends with ASRLimitExceeded.

Thread safety: a pocketsphinx Decoder holds per-utterance state, so one decoder
serves one call at a time. The recognizer keeps a pool of idle decoders and makes
a new one when every decoder is busy, so a worker pool of N threads ends up with N
decoders and no call waits on another. Pickling (for process pools) drops the
decoders; each process builds its own.
"""

from __future__ import annotations

import math
import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pocketsphinx import Decoder, Endpointer, Vad
from scipy.signal import resample_poly

from model.asr.errors import ASRError, ASRTimeout, TranscriptTooLong, WaveformError
from model.asr.language_model import DICT_FILE, LM_FILE, LanguageModel
from model.transcripts import Segment, Transcript

SAMPLE_RATE = 16000  # the en-us acoustic model's rate
FRAMES_PER_SECOND = 100  # pocketsphinx's default feature frame rate (-frate)
_NOT_WORDS = {"<s>", "</s>", "<sil>"}
_DITHER_LSB = 2


@dataclass(frozen=True)
class RecognizerSettings:
    """Decoding knobs. The search knobs left at None keep pocketsphinx's own values."""

    vad_mode: int = Vad.LOOSE  # 0 (keeps most audio) .. 3 (drops most)
    vad_window_s: float = 0.3  # endpointer decision window
    vad_ratio: float = 0.9  # share of the window that must agree to switch state
    vad_padding_s: float = 0.3  # audio kept on each side of a detected speech region
    pause_s: float = 0.6  # a pause this long between words starts a new segment
    max_segment_s: float = 8.0  # longer runs of words are split into several segments
    # A longer speech region (continuous sound never lets the endpointer close one) is
    # cut into pieces of at most this length: decoding time and lattice memory grow
    # with the utterance, and a word cut at a boundary costs less than a stalled call.
    max_utterance_s: float = 30.0
    language_weight: float | None = None  # -lw: LM score scale (pocketsphinx: 6.5)
    word_insertion_penalty: float | None = None  # -wip: per-word factor (pocketsphinx: 0.65)
    silence_probability: float | None = None  # -silprob (pocketsphinx: 0.005)
    filler_probability: float | None = None  # -fillprob, for [NOISE] (pocketsphinx: 1e-8)

    def decoder_options(self) -> dict[str, float]:
        names = {
            "lw": self.language_weight,
            "wip": self.word_insertion_penalty,
            "silprob": self.silence_probability,
            "fillprob": self.filler_probability,
        }
        return {name: value for name, value in names.items() if value is not None}


@dataclass(frozen=True)
class ASRLimits:
    """Bounds of one `transcribe` call.

    The budget is CPU time of the calling thread (not wall time: a busy machine slows a
    decode down without making it costlier): `cpu_per_audio_s` seconds per second of
    sound, at least `min_cpu_s`. Measured on this project's 2-core machine, the general
    English model needs 0.3–0.5 s per second of speech or noise and a checkpoint's own
    language model ~0.05 s, so the defaults leave the slow case twice its time.
    `max_text_bytes`: most UTF-8 bytes of transcript text (an hour of speech is ~60 KB).
    """

    min_cpu_s: float = 60.0
    cpu_per_audio_s: float = 1.0
    max_text_bytes: int = 1 << 20

    def budget_s(self, audio_s: float) -> float:
        return max(self.min_cpu_s, self.cpu_per_audio_s * audio_s)


DEFAULT_ASR_LIMITS = ASRLimits()


@dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds from the start of the waveform
    end: float


class SpeechRecognizer:
    """English speech to text; `language_model=None` uses pocketsphinx's general model.

    >>> recognizer = SpeechRecognizer(LanguageModel.load("models/default"))
    >>> recognizer.transcribe(waveform, sample_rate=16000).text
    """

    def __init__(
        self,
        language_model: LanguageModel | None = None,
        settings: RecognizerSettings | None = None,
    ) -> None:
        self.language_model = language_model
        self.settings = settings or RecognizerSettings()
        self._files: tempfile.TemporaryDirectory[str] | None = None
        self._idle: queue.SimpleQueue[Decoder] = queue.SimpleQueue()
        self._lock = threading.Lock()

    # -- public API ---------------------------------------------------------------

    def transcribe(
        self, waveform: np.ndarray, sample_rate: int, limits: ASRLimits | None = None
    ) -> Transcript:
        """Recognise speech in a mono waveform (float in [-1, 1], any rate).

        Returns a Transcript with source "asr"; silence or noise without speech
        gives an empty one. Raises ASRTimeout when the CPU budget of `limits` is used
        up with utterances left to decode, TranscriptTooLong past its text cap.
        """
        limits = limits or DEFAULT_ASR_LIMITS
        started = time.thread_time()
        pcm = to_pcm16(waveform, sample_rate)
        budget = limits.budget_s(len(pcm) / SAMPLE_RATE)
        words: list[Word] = []
        text_bytes = 0
        stopped: ASRError | None = None
        with self._decoder() as decoder:
            for start_s, end_s in speech_spans(pcm, self.settings):
                used = time.thread_time() - started
                if used > budget:
                    stopped = ASRTimeout(
                        f"speech recognition used its {budget:g} s of CPU time at "
                        f"{start_s:.0f} s of {len(pcm) / SAMPLE_RATE:.0f} s of sound"
                    )
                    break
                region = pcm[round(start_s * SAMPLE_RATE) : round(end_s * SAMPLE_RATE)]
                heard = _decode_region(decoder, region, start_s)
                words += heard
                text_bytes += sum(len(w.text.encode("utf-8")) + 1 for w in heard)
                if text_bytes > limits.max_text_bytes:
                    stopped = TranscriptTooLong(
                        f"speech recognition heard more than {limits.max_text_bytes} bytes "
                        f"of text by {end_s:.0f} s of sound"
                    )
                    break
        # Raised here, outside the block: between utterances the decoder is idle and
        # clean, so it goes back to the pool.
        if stopped is not None:
            raise stopped
        return Transcript(group_words(words, self.settings), source="asr")

    def warm_up(self) -> None:
        """Build one decoder now (loading the models takes ~0.3–1 s) instead of on
        the first call."""
        with self._decoder():
            pass

    # -- decoders -----------------------------------------------------------------

    @contextmanager
    def _decoder(self) -> Iterator[Decoder]:
        try:
            decoder = self._idle.get_nowait()
        except queue.Empty:
            decoder = self._new_decoder()
        yield decoder
        # Not reached when the call raised: a decoder that failed mid-utterance may be
        # in any state, so it is dropped rather than reused.
        self._idle.put(decoder)

    def _new_decoder(self) -> Decoder:
        options: dict[str, Any] = {"loglevel": "FATAL", "samprate": SAMPLE_RATE}
        options.update(self.settings.decoder_options())
        if self.language_model is not None:
            directory = self._language_model_files()
            options["lm"] = str(directory / LM_FILE)
            options["dict"] = str(directory / DICT_FILE)
        try:
            return Decoder(**options)
        except (RuntimeError, ValueError) as exc:
            raise ASRError(f"pocketsphinx could not load its models: {exc}") from exc

    def _language_model_files(self) -> Path:
        """pocketsphinx reads models from files: write ours once, keep them while we live."""
        assert self.language_model is not None
        with self._lock:
            if self._files is None:
                self._files = tempfile.TemporaryDirectory(prefix="asr-lm-")
                self.language_model.save(self._files.name)
            return Path(self._files.name)

    def __getstate__(self) -> dict[str, Any]:
        return {"language_model": self.language_model, "settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["language_model"], state["settings"])  # type: ignore[misc]


def to_pcm16(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """A mono float waveform at any rate -> int16 at 16 kHz."""
    audio = np.asarray(waveform)
    if audio.ndim != 1:
        raise WaveformError(
            f"speech recognition needs a mono waveform (1-D), got shape {audio.shape}"
        )
    if not np.issubdtype(audio.dtype, np.floating):
        raise WaveformError(f"the waveform must hold floats in [-1, 1], got {audio.dtype}")
    if sample_rate <= 0:
        raise WaveformError(f"sample rate must be positive, got {sample_rate}")
    audio = np.nan_to_num(audio.astype(np.float32, copy=False))
    if sample_rate != SAMPLE_RATE and audio.size:
        g = math.gcd(int(sample_rate), SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // g, int(sample_rate) // g).astype(np.float32)
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int32)
    # Digital silence (exact zeros, common in edited video) has log energy -inf; it
    # drags the utterance's cepstral mean far from the speech and whole words are
    # lost. A few LSB of noise (about -80 dB) fixes that; a fixed seed keeps the
    # result of the same audio the same.
    pcm += np.random.default_rng(0).integers(-_DITHER_LSB, _DITHER_LSB + 1, pcm.size)
    return np.clip(pcm, -32768, 32767).astype(np.int16)


def speech_spans(pcm: np.ndarray, settings: RecognizerSettings) -> list[tuple[float, float]]:
    """(start, end) seconds of the regions the endpointer hears speech in, widened by
    `vad_padding_s` on each side (the endpointer clips soft word edges) and merged
    where the widened spans touch."""
    endpointer = Endpointer(
        window=settings.vad_window_s,
        ratio=settings.vad_ratio,
        vad_mode=settings.vad_mode,
        sample_rate=SAMPLE_RATE,
    )
    frame = endpointer.frame_bytes // 2  # samples per endpointer frame
    duration = len(pcm) / SAMPLE_RATE
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for i in range(len(pcm) // frame):
        speech = endpointer.process(pcm[i * frame : (i + 1) * frame].tobytes())
        if speech is not None and start is None:
            start = endpointer.speech_start
        if start is not None and not endpointer.in_speech:
            spans.append((start, endpointer.speech_end))
            start = None
    if start is not None:  # speech runs to the end of the audio
        spans.append((start, duration))

    merged: list[tuple[float, float]] = []
    pad = settings.vad_padding_s
    for a, b in spans:
        a, b = max(0.0, a - pad), min(duration, b + pad)
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    pieces: list[tuple[float, float]] = []
    for a, b in merged:
        n = max(1, math.ceil((b - a) / settings.max_utterance_s))
        pieces += [(a + (b - a) * i / n, a + (b - a) * (i + 1) / n) for i in range(n)]
    return pieces


def _decode_region(decoder: Decoder, pcm: np.ndarray, offset_s: float) -> list[Word]:
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
    decoder.end_utt()
    words: list[Word] = []
    # seg() is None, not empty, when the search ends with no hypothesis at all (a pure
    # tone can do that): such a region holds no words.
    for seg in decoder.seg() or ():
        if seg.word in _NOT_WORDS or seg.word.startswith("["):  # silence, [NOISE]
            continue
        words.append(
            Word(
                text=seg.word.split("(", 1)[0],  # "a(2)" is a pronunciation variant of "a"
                start=offset_s + seg.start_frame / FRAMES_PER_SECOND,
                end=offset_s + (seg.end_frame + 1) / FRAMES_PER_SECOND,
            )
        )
    return words


def group_words(words: list[Word], settings: RecognizerSettings) -> list[Segment]:
    """Timed words -> caption-like segments, split at pauses and at a maximum length."""
    segments: list[Segment] = []
    current: list[Word] = []
    for word in words:
        if current and (
            word.start - current[-1].end >= settings.pause_s
            or word.end - current[0].start > settings.max_segment_s
        ):
            segments.append(_segment(current))
            current = []
        current.append(word)
    if current:
        segments.append(_segment(current))
    return segments


def _segment(words: list[Word]) -> Segment:
    return Segment(
        round(words[0].start, 3), round(words[-1].end, 3), " ".join(w.text for w in words)
    )


def transcript_for(
    uploaded: Transcript | None,
    waveform: np.ndarray | None,
    sample_rate: int,
    recognizer: SpeechRecognizer,
    limits: ASRLimits | None = None,
) -> Transcript | None:
    """The transcript an item gets: the user's own whenever it has text (it always
    wins over ASR, which is then not run), else ASR of the sound track, else None
    (no sound to listen to)."""
    if uploaded:
        return uploaded
    if waveform is None:
        return None
    return recognizer.transcribe(waveform, sample_rate, limits)
