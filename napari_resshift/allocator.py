"""Keep freed tensor memory in the process (glibc only) instead of handing it back to the OS after every tensor.

glibc maps each allocation above its mmap threshold afresh and gives freed heap tops back to the OS, so on the CPU
every large activation of every denoiser pass page-faults its memory in again (measured: about a tenth of a
256x256 -> 1024x1024 upscale on 2 cores). Raising both thresholds lets freed blocks be reused, as jemalloc and
tcmalloc do. Process-wide and harmless elsewhere: a no-op off glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 64 << 20  # blocks up to this size come from the heap and are reused
TRIM_THRESHOLD = 128 << 20  # free memory at the heap top kept before any is given back


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True where they are set."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False
