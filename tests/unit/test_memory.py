"""keep_freed_memory: on glibc, large blocks come from the heap (reused after free) instead of fresh mmap pages."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from posttrain_probe.utils.memory import keep_freed_memory

glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# run in a fresh interpreter: the setting is process-wide, and this test process may have it on already
PROBE = """
import ctypes, json, torch
from posttrain_probe.utils.memory import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mapped_by(block_bytes):
    before = libc.mallinfo2().hblkhd  # bytes in blocks glibc serves by mmap
    x = torch.empty(block_bytes // 4)
    return libc.mallinfo2().hblkhd - before

out = {"default": mapped_by(64 * 2**20), "kept": keep_freed_memory(), "again": keep_freed_memory()}
out["after"] = mapped_by(64 * 2**20)
print(json.dumps(out))
"""


@pytest.mark.skipif(not glibc, reason="glibc's mallopt only")
def test_large_blocks_come_from_the_heap_once_freed_memory_is_kept():
    out = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout)
    assert out["default"] >= 64 * 2**20  # glibc's default: a fresh mapping, unmapped again on free
    assert out["kept"] and out["again"]  # in effect, and idempotent
    assert out["after"] == 0  # from the heap: its pages stay mapped for the next block


@pytest.mark.skipif(glibc, reason="on glibc it applies")
def test_other_c_libraries_are_left_alone():
    assert keep_freed_memory() is False
