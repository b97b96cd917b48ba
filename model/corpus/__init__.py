"""The narrated-clip corpus: a generated world that stands in for HowTo100M + AudioSet.

    python -m model.corpus make --out DIR --n N --seed S
    python -m model.corpus sheet --corpus DIR --out docs/img

See docs/corpus.md for what the world contains and docs/architecture.md for the layout.
"""

from model.corpus.errors import CorpusError, ManifestError, ToolError
from model.corpus.generate import CorpusSummary, make_corpus
from model.corpus.manifest import iter_manifest, read_corpus_info, read_manifest
from model.corpus.world import GENERATOR_VERSION

__all__ = [
    "GENERATOR_VERSION",
    "CorpusError",
    "CorpusSummary",
    "ManifestError",
    "ToolError",
    "iter_manifest",
    "make_corpus",
    "read_corpus_info",
    "read_manifest",
]
