"""Which commands each array child runs on the contiguous split: the seed's slices.

The operator side (the plan shown by `opsctl validate`, the work packs of opsctl_contract/work.py)
calls this module, so what the plan predicts is exactly what the children do.
"""

from __future__ import annotations


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
