"""Command line: corpus WER with and without the built language model, or one file.

python -m model.asr wer --corpus DIR [--split test] [--limit N] [--save-lm DIR]
python -m model.asr transcribe FILE [--lm DIR] [--vtt]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from model.asr.errors import ASRError
from model.asr.evaluation import (
    corpus_language_model,
    evaluate,
    load_sound,
    narrated_clips,
)
from model.asr.language_model import LanguageModel
from model.asr.recognizer import SAMPLE_RATE, SpeechRecognizer
from model.errors import ModelError
from model.media import MediaError


def _wer(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    lm = corpus_language_model(args.corpus, split="train", order=args.order)
    print(
        f"language model: {len(lm.words)} words from the train split's transcripts "
        f"({time.perf_counter() - started:.1f} s)"
        + (f"; left out (no pronunciation): {', '.join(lm.left_out)}" if lm.left_out else "")
    )
    if args.save_lm:
        print(f"saved to {lm.save(args.save_lm)}")
    clips = narrated_clips(args.corpus, args.split)[: args.limit]
    if not clips:
        raise ASRError(f"the {args.split} split of {args.corpus} has no narrated clips")
    recognizers = {"default LM": SpeechRecognizer(), "built LM": SpeechRecognizer(lm)}
    if args.only_built:
        del recognizers["default LM"]
    reports = evaluate(recognizers, clips)

    words = next(iter(reports.values())).errors.reference_words
    print(f"\n{args.split} split: {len(clips)} clips, {words} reference words")
    header = f"{'language model':<16}{'WER':>7}{'subst':>7}{'del':>6}{'ins':>6}{'x real time':>13}"
    print(header)
    print("-" * len(header))
    for name, report in reports.items():
        e = report.errors
        print(
            f"{name:<16}{report.wer:>7.3f}{e.substitutions:>7}{e.deletions:>6}"
            f"{e.insertions:>6}{report.real_time_factor:>13.2f}"
        )
    return 0


def _transcribe(args: argparse.Namespace) -> int:
    lm = LanguageModel.load(args.lm) if args.lm else None
    transcript = SpeechRecognizer(lm).transcribe(load_sound(args.file), SAMPLE_RATE)
    if args.vtt:
        print(transcript.to_vtt())
    else:
        for segment in transcript.segments:
            print(f"{segment.start:7.2f} {segment.end:7.2f}  {segment.text}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model.asr",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    wer = commands.add_parser("wer", help="word error rate on a corpus split")
    wer.add_argument("--corpus", type=Path, required=True, help="corpus folder (manifest.jsonl)")
    wer.add_argument("--split", default="test", choices=("train", "val", "test"))
    wer.add_argument("--limit", type=int, default=None, help="first N narrated clips only")
    wer.add_argument("--order", type=int, default=3, help="n-gram order of the built LM")
    wer.add_argument("--save-lm", type=Path, default=None, help="also save the built LM here")
    wer.add_argument(
        "--only-built", action="store_true", help="skip the (slow) default-LM baseline"
    )
    wer.set_defaults(run=_wer)

    transcribe = commands.add_parser("transcribe", help="recognise the speech in one file")
    transcribe.add_argument("file", type=Path)
    transcribe.add_argument(
        "--lm",
        type=Path,
        default=None,
        help="folder with asr.lm + asr.dict (default: pocketsphinx's LM)",
    )
    transcribe.add_argument("--vtt", action="store_true", help="print WebVTT")
    transcribe.set_defaults(run=_transcribe)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ModelError, MediaError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
