"""The C allocator's handling of freed memory, for CPU training loops.

glibc's malloc serves large blocks (above a threshold that grows to at most 32 MiB) with fresh `mmap` pages and
hands them back on `free`, so a training step that allocates and frees the same gradient-sized tensors every
micro-batch page-faults through all of them again each time (the kernel zeroes every page). On the 2-core box
(2026-12-07, Qwen2-0.5B's shape, 1 thread) that made a third of an RLVR step's CPU time system time; keeping freed
memory in the heap for reuse (what the jemalloc/tcmalloc preload of PyTorch's CPU tuning guide also achieves) cut
the step by a fifth. The cost: the process keeps its peak heap instead of returning it to the OS.
"""

from __future__ import annotations

import ctypes
import platform
import sys

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_MAX = -4
_applied = False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve every block from the heap (no per-block `mmap`) and never trim it, so that freed
    memory stays mapped for later blocks (a block that fits a freed chunk takes no page faults; one that does not
    grows the heap once). Process-wide and idempotent; True when in effect, False where the C
    library is not glibc (macOS, Windows, musl), which is then left as it is."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    return _applied
