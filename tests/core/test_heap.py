"""The heap during a sweep: memory freed in the middle of the C heap goes back to the OS when asked."""

from __future__ import annotations

import sys

import pytest

from llmlab.run.heap import _trim, release_free_memory


def _rss_anon_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))


@pytest.mark.skipif(not sys.platform.startswith("linux") or _trim is None, reason="glibc's malloc_trim")
def test_freed_pages_in_the_middle_of_the_heap_are_handed_back():
    # 40 MB in 64 KB blocks (under glibc's mmap threshold: on the heap), every other one freed: the holes
    # sit between live blocks, so glibc keeps them resident until trimmed
    blocks = [bytearray(b"x" * 65_000) for _ in range(640)]
    del blocks[::2]
    before = _rss_anon_kb()
    release_free_memory()
    assert before - _rss_anon_kb() > 10_000  # KB: most of the 20 MB freed
    assert sum(len(b) for b in blocks) == 320 * 65_000
