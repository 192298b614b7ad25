"""Segmented scans: sequential recurrences over many independent sequences as array passes.

A batch holds many short sequences (one per patient, or per patient and channel), stored
contiguously; `segment_start[i]` is the index where element i's sequence begins. A recurrence
whose steps compose associatively is computed by doubling: after pass k every element has
combined the 2**k elements before it in its own sequence, so a sequence of n elements costs
log2(n) passes over the whole batch, never a Python loop over elements.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

Arrays = tuple[npt.NDArray[Any], ...]
_Num = TypeVar("_Num", np.int64, np.float64)


def segment_starts(key: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
    """For an array sorted by `key`, the index where each element's run of equal keys begins."""
    n = key.shape[0]
    new = np.ones(n, dtype=bool)
    new[1:] = key[1:] != key[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(n), 0)).astype(np.intp)


def segmented_scan(values: Arrays, combine: Callable[[Arrays, Arrays], Arrays],
                   segment_start: npt.NDArray[np.intp]) -> Arrays:
    """Inclusive scan of `values` within segments; `combine(earlier, later)` must be
    associative. Arrays may have extra trailing dimensions."""
    n = segment_start.shape[0]
    index = np.arange(n)
    current = tuple(v.copy() for v in values)
    step = 1
    longest = int((index - segment_start).max(initial=0)) + 1
    while step < longest:
        reach = index - step >= segment_start
        source = np.flatnonzero(reach)
        earlier = tuple(v[source - step] for v in current)
        later = tuple(v[source] for v in current)
        for target, combined in zip(current, combine(earlier, later), strict=True):
            target[source] = combined
        step *= 2
    return current


def segmented_cummax(x: npt.NDArray[_Num], segment_start: npt.NDArray[np.intp]
                     ) -> npt.NDArray[_Num]:
    """Running maximum of `x` within segments, in `x`'s dtype."""
    (out,) = segmented_scan((x,), lambda a, b: (np.maximum(a[0], b[0]),), segment_start)
    return out.astype(x.dtype)


def linear_recurrence(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64],
                      initial: npt.NDArray[np.float64],
                      segment_start: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    """y_k = a_k * y_(k-1) + b_k within each segment, with y before the segment = `initial`
    (given per element; only its value at the segment start matters)."""
    def compose(earlier: Arrays, later: Arrays) -> Arrays:
        a1, b1 = earlier
        a2, b2 = later
        return a1 * a2, a2 * b1 + b2

    big_a, big_b = segmented_scan((a, b), compose, segment_start)
    start_value = initial[segment_start]
    # 0 * initial must be 0 even where the initial value is unknown (NaN): the first reading
    # of a never-observed channel has a = 0 and sets the value by itself.
    result: npt.NDArray[np.float64] = (
        np.where(big_a == 0.0, 0.0, big_a * np.nan_to_num(start_value)) + big_b)
    return result
