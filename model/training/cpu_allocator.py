"""Keep freed tensor memory in the process on CPU (glibc), rather than giving it back.

A training step allocates and frees the same activations every step. glibc serves any
block over its mmap threshold (at most 32 MiB) with a fresh `mmap` and returns it to
the kernel on `free`, so every step faults in and zeroes those pages again: at batch
256 of the tiny config the trainer spent a fifth of its CPU time in the kernel and ran
at half the speed it does with the memory kept (bench/train.py, docs/training.md).

`keep_freed_memory()` tells glibc to serve large blocks from its heap and never trim
it: the pages stay mapped and are reused next step. The cost is that the process keeps
its peak memory (2.8 GB against 2.2 GB at batch 256). It changes no numbers, only where
the bytes come from.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse; True if it now does (False elsewhere,
    e.g. musl or macOS, where nothing changes). Safe to call more than once."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    # mallopt returns 1 on success. No mmap for large blocks; never trim the heap top
    # (setting the threshold also stops glibc from adjusting it on its own).
    no_mmap = libc.mallopt(_M_MMAP_MAX, 0) == 1
    no_trim = libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1)) == 1
    _applied = no_mmap and no_trim
    return _applied
