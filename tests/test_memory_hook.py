"""Freed memory goes back to the system between nodes (``ReleaseMemoryHook``)."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    from histocluster.hooks import ReleaseMemoryHook

    def rss_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    hook = ReleaseMemoryHook()
    base = rss_mib()
    # ~300 MB in 1 kB blocks from malloc's heap (too large for Python's own allocator),
    # then one block after them, so the heap's top cannot shrink when they are freed.
    blocks = [bytes(1000) + bytes([i % 256]) for i in range(300_000)]
    pin = bytes(2000) + b"x"
    del blocks
    freed = rss_mib()
    hook.before_node_run(node=None, catalog=None, inputs={})
    print(base, freed, rss_mib())
    """
)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not ctypes.util.find_library("c"), reason="glibc on Linux"
)
def test_memory_freed_by_a_node_is_handed_back_before_the_next():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    base, freed, after = map(float, done.stdout.split())
    assert freed - base > 200, "the allocator kept the freed blocks (the premise of the hook)"
    assert after - base < 100, f"{after - base:.0f} MiB still held after the hook"
