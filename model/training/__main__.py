"""`python -m model.training`: the trainer's command line (see train.py)."""

from __future__ import annotations

import logging
import sys

from model.errors import ModelError
from model.training.options import parse_args
from model.training.train import train


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        train(parse_args(argv))
    except ModelError as exc:  # ConfigError, DatasetError and TrainError among them
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
