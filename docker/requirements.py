"""Print the project's Python dependencies, one a line, as pyproject.toml lists them.

    python docker/requirements.py pyproject.toml [EXTRA ...]

The image installs these before it copies the code (so the dependency layer is cached
until pyproject.toml changes), then installs the project itself with --no-deps. The
lists live in pyproject.toml alone; nothing here repeats them.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"no extra {unknown[0]!r} in {pyproject}; it has {sorted(optional)}")
    lines = list(project["dependencies"])
    for extra in extras:
        lines += optional[extra]
    return lines


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print("\n".join(requirements(Path(sys.argv[1]), sys.argv[2:])))
