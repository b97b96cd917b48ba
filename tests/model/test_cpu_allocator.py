"""keep_freed_memory: a large tensor freed and allocated again reuses its pages instead
of faulting them in afresh (what made batch 256 train at half speed on CPU)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from train_fixtures import REPO

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="keep_freed_memory only changes glibc's malloc"
)

# A child process, since the setting is process-wide and cannot be undone. 64 MiB is
# over glibc's largest mmap threshold (32 MiB), as a batch-256 step's activations are.
CYCLES = 40
PROBE = f"""
import resource, sys
import torch
if sys.argv[1] == "keep":
    from model.training.cpu_allocator import keep_freed_memory
    assert keep_freed_memory() and keep_freed_memory()

def cycle():
    block = torch.ones(16 * 2**20)
    del block

before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({CYCLES}):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_PER_CYCLE = 64 * 2**20 // 4096


def page_faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        cwd=REPO,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(out.stdout.split()[-1])


def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    # glibc by default maps and faults in every cycle's 64 MiB afresh.
    assert page_faults("default") > CYCLES * PAGES_PER_CYCLE * 0.9
    # Kept: the heap grows for the first few cycles (freed blocks coalesce until one
    # fits the next request), then every cycle reuses it.
    assert page_faults("keep") < CYCLES * PAGES_PER_CYCLE * 0.4
