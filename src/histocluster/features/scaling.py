"""Standardising feature blocks and combining them into one embedding matrix, in place
where possible (10⁶ cells × 2048 floats must not be copied twice)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def standardise_within(
    x: np.ndarray, groups: np.ndarray | None, clip: float = 5.0, inplace: bool = False
) -> np.ndarray:
    """:func:`standardise` within each group (slide) first, then over all rows. Groups
    stored as contiguous rows (as the cell table is, slide after slide) are done in place;
    with one group (or ``groups`` None) this is plain :func:`standardise`."""
    x = writeable_float32(x, inplace)
    if groups is not None and len(pd.unique(groups)) > 1:
        for _, index in pd.Series(groups).groupby(np.asarray(groups), sort=False).indices.items():
            if index[-1] - index[0] + 1 == len(index):
                standardise(x[index[0] : index[-1] + 1], clip, inplace=True)
            else:
                x[index] = standardise(x[index], clip)
    return standardise(x, clip, inplace=True)


def writeable_float32(x: np.ndarray, inplace: bool) -> np.ndarray:
    """``x`` itself when it may be changed in place (writeable float32), else a float32 copy."""
    if inplace and isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.writeable:
        return x
    return np.array(x, dtype=np.float32)


def standardise(x: np.ndarray, clip: float = 5.0, inplace: bool = False, chunk: int = 65_536) -> np.ndarray:
    """Columns to zero mean and unit variance (float32), clipped to ±clip; constant
    columns and non-finite values become 0. With ``inplace``, a writeable float32 ``x``
    (a column slice of a larger matrix too) is changed and returned; otherwise ``x`` is
    left as is. Works through ``chunk`` rows at a time, so in place it needs no memory
    beyond one chunk whatever the matrix's size."""
    x = writeable_float32(x, inplace)
    n, d = x.shape
    count, total, squares = np.zeros(d), np.zeros(d), np.zeros(d)
    for start in range(0, n, chunk):
        part = x[start : start + chunk].astype(np.float64)
        finite = np.isfinite(part)
        part[~finite] = 0.0
        count += finite.sum(axis=0)
        total += part.sum(axis=0)
        squares += (part**2).sum(axis=0)
    mean = np.divide(total, count, out=np.zeros(d), where=count > 0)
    var = np.divide(squares, count, out=np.zeros(d), where=count > 0) - mean**2
    std = np.sqrt(np.maximum(var, 0.0))
    scale = np.where(std > 1e-6 * np.maximum(np.abs(mean), 1e-6), std, np.inf).astype(np.float32)
    mean = mean.astype(np.float32)
    for start in range(0, n, chunk):
        part = x[start : start + chunk]
        with np.errstate(invalid="ignore"):  # inf - inf: non-finite inputs become 0 below
            part -= mean
            part /= scale
        np.nan_to_num(part, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        np.clip(part, -clip, clip, out=part)
    return x


def combine(blocks: list[tuple[np.ndarray, float]], out: np.ndarray | None = None) -> np.ndarray:
    """Standardised blocks side by side, block ``b`` scaled by ``weight_b / sqrt(dim_b)``,
    written into ``out`` (allocated here when not given). A block that already is a view
    of ``out`` at its place is scaled in place, not copied."""
    n = len(blocks[0][0])
    total = sum(block.shape[1] for block, _ in blocks)
    if out is None:
        out = np.empty((n, total), dtype=np.float32)
    start = 0
    for block, weight in blocks:
        d = block.shape[1]
        target = out[:, start : start + d]
        if not np.shares_memory(target, block):
            target[...] = block
        target *= weight / np.sqrt(d)
        start += d
    return out


def keep_rows(matrix: np.ndarray, keep: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """The rows of ``matrix`` where ``keep`` is true, moved up in place (no second copy
    of the matrix); returns a view of the first ``keep.sum()`` rows."""
    index = np.flatnonzero(keep)
    for start in range(0, len(index), chunk):
        # Sources index[i] >= i: later sources are never overwritten by earlier moves.
        matrix[start : start + chunk] = matrix[index[start : start + chunk]]
    return matrix[: len(index)]
