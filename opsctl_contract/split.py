"""Which commands each array child runs: the contiguous slice, and the dynamic split's claim order.

The operator side (the plan shown by `opsctl validate`, bench/balance.py's ideal schedule) and
the worker both call this module, so what the plan predicts is exactly what the children do.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator


def contiguous_slice(total: int, index: int, size: int) -> range:
    """Commands `[total*i//n, total*(i+1)//n)` for child `i` of `n`.

    This is the seed pipeline's formula with the integer division its Python 2 code relied on:
    slices are disjoint, cover every command, and differ in length by at most one. When there are
    more children than commands some slices are empty, and those children simply exit 0.
    """
    if size < 1:
        raise ValueError(f"array size must be >= 1, got {size}")
    if not 0 <= index < size:
        raise ValueError(f"array index must be in 0..{size - 1}, got {index}")
    return range(total * index // size, total * (index + 1) // size)


def slice_sizes(total: int, size: int) -> tuple[int, int]:
    """Smallest and largest number of commands a child gets (for the plan)."""
    # Slice lengths only take the values floor(total/size) and ceil(total/size).
    low = total // size
    high = -(-total // size)
    return low, high


def claim_order(index: int, size: int, total: int) -> Iterator[int]:
    """The order in which child `index` of `size` tries to claim commands 0..total-1.

    First its own stride, i, i+n, i+2n…: children advancing together never collide, and the
    list is consumed front to back as from one shared queue. Then whatever is left, in list
    order. (Starting at the child's share, total*i//n, leaves each child a long stretch whose
    tail others must steal; trying i, i+1, … makes every child race every other for each next
    command. bench/balance.py simulates this order without overheads.)
    """
    own = range(index, total, size)
    return itertools.chain(own, (k for k in range(total) if k % size != index))
