"""Command line: `python -m model.corpus make|sheet|unseen ...` (see docs/corpus.md;
`unseen`: see model/corpus/unseen/__init__.py)."""

from __future__ import annotations

import argparse
import sys

from model.corpus.errors import CorpusError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model.corpus",
        description="Generate the narrated-clip corpus, or draw pictures of one.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    make = commands.add_parser("make", help="generate a corpus into a folder")
    make.add_argument("--out", required=True, help="output folder")
    make.add_argument("--n", type=int, required=True, help="number of narrated clips")
    make.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    make.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: all cores)"
    )
    make.add_argument("--audio", type=int, default=None, help="audio-only items (default n/5)")
    make.add_argument("--stills", type=int, default=None, help="still images (default n/5)")
    make.add_argument("--force", action="store_true", help="replace a corpus already there")
    make.add_argument("--quiet", action="store_true", help="no progress bar")

    sheet = commands.add_parser("sheet", help="contact sheet + spectrogram PNGs of a corpus")
    sheet.add_argument("--corpus", required=True, help="a generated corpus folder")
    sheet.add_argument("--out", required=True, help="folder for the PNGs (e.g. docs/img)")
    sheet.add_argument("--clips", type=int, default=6, help="clips on the contact sheet")

    unseen = commands.add_parser(
        "unseen", help="generate the unseen world (uploads, held-out tests, world.json)"
    )
    unseen.add_argument("--out", required=True, help="output folder")
    unseen.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    unseen.add_argument("--combinations", type=int, default=48, help="things, 1 to 48 (default 48)")
    unseen.add_argument("--uploads", type=int, default=4, help="upload clips per thing (default 4)")
    unseen.add_argument("--tests", type=int, default=1, help="held-out clips per thing (default 1)")
    unseen.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: all cores)"
    )
    unseen.add_argument("--force", action="store_true", help="replace a world already there")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "make":
            from model.corpus.generate import make_corpus

            summary = make_corpus(
                args.out,
                args.n,
                args.seed,
                workers=args.workers,
                progress=not args.quiet,
                n_audio=args.audio,
                n_stills=args.stills,
                overwrite=args.force,
            )
            counts = ", ".join(f"{v} {k}" for k, v in summary.counts.items())
            splits = ", ".join(f"{s} {sum(k.values())}" for s, k in summary.splits.items())
            print(f"wrote {counts} to {summary.out_dir} ({splits})")
            print(
                f"{summary.distinct_descriptions} distinct clip descriptions; "
                f"{summary.narrated} narrated clips, {summary.misaligned} misaligned"
            )
            print(
                f"{summary.seconds:.1f} s with {summary.workers} workers: "
                f"{summary.clips_per_s:.2f} clips/s"
            )
        elif args.command == "unseen":
            from model.corpus.unseen import make_unseen_world

            world = make_unseen_world(
                args.out,
                seed=args.seed,
                combinations=args.combinations,
                uploads_per_combination=args.uploads,
                tests_per_combination=args.tests,
                workers=args.workers,
                overwrite=args.force,
            )
            print(
                f"wrote {len(world.uploads)} uploads and {len(world.tests)} held-out clips of "
                f"{len(world.combinations)} things to {world.root} in {world.seconds:.1f} s"
            )
        else:
            from model.corpus.sheet import write_sheets

            for path in write_sheets(args.corpus, args.out, clips=args.clips):
                print(f"wrote {path}")
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
