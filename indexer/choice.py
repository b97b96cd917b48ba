"""Which FAISS index to build, from the number of vectors, their dimension and a memory budget.

The rules (in the spirit of autofaiss and the FAISS wiki's "Guidelines to choose an index"):

1. Exact (``IDMap2,Flat``) while ``n * d`` is at most ``policy.exact_max_floats`` (default
   2**22, i.e. 16k vectors of 256-d): one query then costs about a millisecond on one core,
   results are exact and there is nothing to train or tune.
2. Above that an inverted file, ``IVF{nlist},{codec}`` with ``nlist`` the power of two
   nearest ``4 * sqrt(n)`` (and at most ``n / 39`` so k-means has its 39 points per
   centroid), trained on ``40 * nlist`` sampled vectors. The codec is the most precise
   that fits the memory budget: ``Flat`` (4 d bytes a vector), ``SQfp16`` (2 d),
   ``SQ8`` (d), then ``PQ{d/4}``, ``PQ{d/8}``, ``PQ{d/16}`` (d/4 ... d/16 bytes).
   IVF supports ``remove_ids``, so deletes are real.
3. HNSW (``IDMap2,HNSW32,Flat``) only when the caller allows it (``allow_hnsw``): it
   cannot remove vectors (deletes are tombstones until a rebuild), builds ~3.5x slower
   than IVF here and its recall stalls near 0.93 on tightly clustered embeddings.
4. For a whole index set the budget is shared: every index starts at its best choice and
   the largest one is stepped down the codec ladder until the set fits.

``policy.factory`` forces one FAISS factory string for every index (tests, experts).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from indexer.errors import IndexBuildError

GIB = 1 << 30
# Bytes per entry of the id -> position hash map of IndexIDMap2 (an unordered_map node).
ID_MAP2_BYTES = 48
IVF_ID_BYTES = 8
Kind = Literal["flat", "ivf", "hnsw"]


@dataclass(frozen=True)
class IndexPolicy:
    """How indexes are chosen, tuned, kept and served. Configuration data, no behaviour."""

    memory_budget_bytes: int = 2 * GIB  # CPU memory for all indexes of one model version
    exact_max_floats: int = 1 << 22  # exact search while n * d <= this
    recall_target: float = 0.95  # recall@k the tuner must reach against exact search
    recall_k: int = 10
    # The target is measured at these k too (up to the API's largest): a search for
    # more than recall_k results probes as many more lists as those measures say.
    wide_ks: tuple[int, ...] = (100, 1000)
    tuning_queries: int = 500  # held-out (leave-one-out) queries to tune and measure recall
    allow_hnsw: bool = False  # HNSW cannot delete: only for append-mostly sets
    hnsw_m: int = 32
    factory: str | None = None  # force one FAISS factory string for every index
    use_gpu: bool = True  # serve from GPUs when faiss-gpu sees any
    gpu_shard: Literal["auto", "always", "never"] = "auto"
    # On a GPU, search exactly while the vectors take at most this many bytes (and half
    # the GPU's free memory); 0: always a copy of the CPU index (gpu_choice.py).
    gpu_exact_max_bytes: int = 4 << 30
    compact_fraction: float = 0.01  # physically remove tombstones past this share of n ...
    compact_max: int = 4096  # ... or past this many, whichever comes first
    reconcile_max_fraction: float = 0.2  # at open, patch a stale index up to this share
    regrow_factor: float = 4.0  # rebuild when n moved this factor away from build time
    hnsw_tombstone_fraction: float = 0.1  # rebuild an HNSW index past this share deleted
    add_batch: int = 65_536  # vectors fetched from the source and added per step
    kmeans_iterations: int = 10  # IVF k-means (FAISS's IVF default; 25 gave the same recall)
    seed: int = 0


@dataclass(frozen=True)
class IndexChoice:
    """One decision: the factory string and what follows from it."""

    factory: str  # FAISS index_factory string (ids included)
    kind: Kind
    param: str | None  # the search parameter the tuner sets: nprobe | efSearch | None
    candidates: tuple[int, ...]  # values the tuner tries, cheapest first
    train_size: int  # vectors sampled for training (0: nothing to train)
    bytes_estimate: int
    reason: str = field(compare=False)


def nlist_for(n: int) -> int:
    """Power of two nearest 4*sqrt(n), at least 16, at most n/39 (k-means needs 39 per list)."""
    if n < 39 * 16:
        return max(1, 2 ** int(math.log2(max(1, n // 39)))) if n >= 39 else 1
    target = 4.0 * math.sqrt(n)
    nlist = 2 ** round(math.log2(target))
    ceiling = 2 ** int(math.log2(n // 39))
    return int(max(16, min(nlist, ceiling, 1 << 16)))


def ivf_codecs(d: int) -> list[str]:
    """Codecs for IVF lists, most precise (and largest) first."""
    codecs = ["Flat", "SQfp16", "SQ8"]
    for div in (4, 8, 16):
        m = d // div
        if m >= 1 and d % m == 0:
            codecs.append(f"PQ{m}")
    return codecs


def code_bytes(codec: str, d: int) -> int:
    if codec == "Flat":
        return 4 * d
    if codec == "SQfp16":
        return 2 * d
    if codec == "SQ8":
        return d
    match = re.fullmatch(r"PQ(\d+)(?:x(\d+))?", codec)
    if match:
        m, nbits = int(match.group(1)), int(match.group(2) or 8)
        return math.ceil(m * nbits / 8)
    raise IndexBuildError(f"unknown codec {codec!r}")


def estimate_bytes(
    kind: Kind, n: int, d: int, codec: str = "Flat", nlist: int = 0, hnsw_m: int = 32
) -> int:
    """Memory a CPU index of this kind holds for n vectors (data, ids, coarse centroids)."""
    if kind == "flat":
        return n * (4 * d + 8 + ID_MAP2_BYTES)
    if kind == "hnsw":
        # level 0 keeps 2M neighbours, upper levels add ~1/M of that; 4 bytes per link
        links = int(2 * hnsw_m * 4 * (1 + 1 / hnsw_m))
        return n * (4 * d + links + 8 + 4 + 8 + ID_MAP2_BYTES)
    return n * (code_bytes(codec, d) + IVF_ID_BYTES) + nlist * d * 4


def exact_choice(n: int, d: int, policy: IndexPolicy) -> IndexChoice:
    return IndexChoice(
        factory="IDMap2,Flat",
        kind="flat",
        param=None,
        candidates=(),
        train_size=0,
        bytes_estimate=estimate_bytes("flat", n, d),
        reason=f"exact: {n:,} x {d} = {n * d:,} floats <= {policy.exact_max_floats:,}",
    )


def _ivf(n: int, d: int, codec: str) -> IndexChoice:
    nlist = nlist_for(n)
    train = min(n, 40 * nlist)
    if codec.startswith("PQ"):
        train = min(n, max(train, 256 * 40))  # PQ's 256 centroids per sub-quantizer
    candidates = tuple(2**i for i in range(int(math.log2(nlist)) + 1))
    return IndexChoice(
        factory=f"IVF{nlist},{codec}",
        kind="ivf",
        param="nprobe",
        candidates=candidates,
        train_size=train,
        bytes_estimate=estimate_bytes("ivf", n, d, codec, nlist),
        reason=f"IVF{nlist},{codec}: {n:,} vectors above the exact limit; ",
    )


def _hnsw(n: int, d: int, m: int) -> IndexChoice:
    return IndexChoice(
        factory=f"IDMap2,HNSW{m},Flat",
        kind="hnsw",
        param="efSearch",
        candidates=(16, 32, 64, 128, 256, 512, 1024),
        train_size=0,
        bytes_estimate=estimate_bytes("hnsw", n, d, hnsw_m=m),
        reason=f"HNSW{m}: allowed by policy (append-mostly set), fits the budget",
    )


def choice_from_factory(factory: str, n: int, d: int) -> IndexChoice:
    """The choice for a factory string given by hand; ids are added where FAISS lacks them.

    Only families that keep ids and honour id selectors in search are accepted: Flat,
    IVF (any codec) and HNSW over Flat or SQ storage."""
    text = factory.strip()
    body = text.split(",", 1)[1] if text.startswith("IDMap") else text
    supported = (
        body == "Flat"
        or re.fullmatch(r"IVF\d+(,.+)?", body)
        or re.fullmatch(r"HNSW\d+(,(Flat|SQ\w+))?", body)
    )
    if not supported:
        raise IndexBuildError(
            f"factory {factory!r} is not supported: use Flat, IVF<n>,<codec> or "
            "HNSW<m>,Flat|SQ8 (the families whose search honours id selectors)"
        )
    ivf = re.match(r"(?:IDMap2?,)?IVF(\d+)", text)
    if ivf:
        nlist = int(ivf.group(1))
        text = text.split(",", 1)[1] if text.startswith("IDMap") else text
        codec = text.split(",", 1)[1] if "," in text else "Flat"
        try:
            size = estimate_bytes("ivf", n, d, codec, nlist)
        except IndexBuildError:
            size = estimate_bytes("ivf", n, d, "Flat", nlist)
        train = min(n, max(40 * nlist, 256 * 40 if "PQ" in codec else 0))
        cands = tuple(2**i for i in range(int(math.log2(nlist)) + 1))
        if cands[-1] != nlist:  # IVF1000: 512 was the most it tried, never all 1000
            cands += (nlist,)
        return IndexChoice(text, "ivf", "nprobe", cands, train, size, f"forced: {factory}")
    if not text.startswith("IDMap"):
        text = f"IDMap2,{text}"
    hnsw = re.search(r"HNSW(\d+)", text)
    if hnsw:
        choice = _hnsw(n, d, int(hnsw.group(1)))
        # SQ storage learns each dimension's range: it needs vectors to train on.
        train = min(n, 256 * 40) if ",SQ" in text else 0
        return replace(choice, factory=text, train_size=train, reason=f"forced: {factory}")
    kind: Kind = "flat"
    train = 0 if text.endswith(",Flat") else min(n, 256 * 40)
    return IndexChoice(
        text, kind, None, (), train, estimate_bytes("flat", n, d), f"forced: {factory}"
    )


def ladder(n: int, d: int, policy: IndexPolicy) -> list[IndexChoice]:
    """Every choice for one index, best (largest) first; the set-level rule walks down it."""
    if policy.factory:
        return [choice_from_factory(policy.factory, n, d)]
    if n * d <= policy.exact_max_floats:
        return [exact_choice(n, d, policy)]
    steps: list[IndexChoice] = []
    if policy.allow_hnsw:
        steps.append(_hnsw(n, d, policy.hnsw_m))
    steps.extend(_ivf(n, d, codec) for codec in ivf_codecs(d))
    return steps


def choose_index(
    n: int, d: int, policy: IndexPolicy, budget_bytes: int | None = None
) -> IndexChoice:
    """The best choice for one index whose memory must stay under budget_bytes."""
    return choose_for_set({("", ""): (n, d)}, policy, budget_bytes)[("", "")]


def choose_for_set(
    sizes: Mapping[tuple[str, str], tuple[int, int]],
    policy: IndexPolicy,
    budget_bytes: int | None = None,
) -> dict[tuple[str, str], IndexChoice]:
    """Choices for every index of a set so that together they fit the memory budget.

    sizes maps (space, modality) to (n, d). Each index starts at its most precise choice;
    while the total is over budget the largest index that can still shrink steps down.
    """
    budget = policy.memory_budget_bytes if budget_bytes is None else budget_bytes
    ladders = {key: ladder(n, d, policy) for key, (n, d) in sizes.items()}
    step = dict.fromkeys(ladders, 0)

    def total() -> int:
        return sum(ladders[k][step[k]].bytes_estimate for k in ladders)

    while total() > budget:
        shrinkable = [k for k in ladders if step[k] + 1 < len(ladders[k])]
        if not shrinkable:
            break
        biggest = max(shrinkable, key=lambda k: ladders[k][step[k]].bytes_estimate)
        step[biggest] += 1

    over = total() > budget
    chosen: dict[tuple[str, str], IndexChoice] = {}
    for key, options in ladders.items():
        pick = options[step[key]]
        if pick.kind == "ivf" and not policy.factory:
            best = options[0]
            if step[key] == 0:
                why = "fits the budget"
            else:
                why = (
                    f"{best.factory} would need {best.bytes_estimate / GIB:.2f} GiB; "
                    f"the set's budget is {budget / GIB:.2f} GiB"
                )
            pick = replace(pick, reason=pick.reason + why)
        if over:
            pick = replace(
                pick,
                reason=pick.reason + f" (OVER the {budget / GIB:.2f} GiB "
                "budget even at the smallest codec)",
            )
        chosen[key] = pick
    return chosen
