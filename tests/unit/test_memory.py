"""keep_freed_memory: on glibc, a freed large block is reused without page faults."""

from __future__ import annotations

import platform
import resource
import sys

import pytest
import torch

from posttrain_probe.utils.memory import keep_freed_memory

glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _faults_of_a_64mib_tensor() -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(16 * 2**20).fill_(1.0)  # 64 MiB: above glibc's largest mmap threshold
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not glibc, reason="glibc's mallopt only")
def test_freed_memory_is_reused_without_page_faults():
    assert keep_freed_memory() and keep_freed_memory()  # in effect, and idempotent
    _faults_of_a_64mib_tensor()  # the heap grows once
    pages = 64 * 2**20 // resource.getpagesize()
    assert _faults_of_a_64mib_tensor() < pages // 20  # fresh mmap pages would fault on every one of them


@pytest.mark.skipif(glibc, reason="on glibc it applies")
def test_other_c_libraries_are_left_alone():
    assert keep_freed_memory() is False
