"""Freed memory goes back to the system between nodes (``ReleaseMemoryHook``)."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
import textwrap

import pytest

#: What both child scripts start with: the hook and the process's resident size.
PRELUDE = textwrap.dedent(
    """
    from histocluster.hooks import ReleaseMemoryHook

    def rss_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    """
)

SCRIPT = PRELUDE + textwrap.dedent(
    """


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


ARROW_SCRIPT = PRELUDE + textwrap.dedent(
    """
    import sys
    import pandas as pd
    import pyarrow.parquet  # its libraries are not what the test measures


    hook = ReleaseMemoryHook()
    base = rss_mib()
    table = pd.read_parquet(sys.argv[1])
    data = table.memory_usage(deep=True).sum() / 2**20
    loaded = rss_mib()
    hook.after_dataset_loaded(dataset_name="cells", data=table, node=None)
    print(data, loaded - base, rss_mib() - base)
    """
)


def test_arrow_memory_left_over_from_a_parquet_load_is_handed_back(tmp_path):
    import numpy as np
    import pandas as pd

    n = 300_000
    rng = np.random.default_rng(0)
    table = pd.DataFrame({f"m{k}": rng.normal(size=n) for k in range(20)})
    table["cell_id"] = [f"slide_t{k // 150:05d}_c{k:07d}" for k in range(n)]
    path = tmp_path / "cells.parquet"
    table.to_parquet(path)
    done = subprocess.run(
        [sys.executable, "-c", ARROW_SCRIPT, str(path)], capture_output=True, text=True, check=True
    )
    data, loaded, after = map(float, done.stdout.split())
    assert loaded > 3 * data, "Arrow kept nothing beyond the table (the premise of the hook)"
    assert after < 2 * data, f"{after:.0f} MiB held for a {data:.0f} MiB table after the hook"
