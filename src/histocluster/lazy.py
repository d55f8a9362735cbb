"""Values that may still be lazy: a partition of a Kedro ``PartitionedDataset`` loads as a
function that returns the value, while the same value passed in memory is the value."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def materialise(item: T | Callable[[], T]) -> T:
    """``item()`` for a lazy partition, ``item`` itself otherwise."""
    return item() if callable(item) else item
