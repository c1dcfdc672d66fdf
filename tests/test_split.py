"""The contiguous split: the seed's formula, as properties over all sizes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opsctl_contract.split import contiguous_slice, slice_sizes

totals = st.integers(min_value=0, max_value=100_000)
sizes = st.integers(min_value=1, max_value=10_000)


def seed_formula(total: int, index: int, size: int) -> list[int]:
    """The seed's Python 2 code, where `/` on ints was floor division."""
    lower_bound = (total * index) // size
    upper_bound = (total * (index + 1)) // size
    return list(range(total))[lower_bound:upper_bound]


@given(total=totals, size=st.integers(min_value=1, max_value=300))
def test_slices_partition_every_index(total: int, size: int) -> None:
    slices = [contiguous_slice(total, i, size) for i in range(size)]
    covered = [k for s in slices for k in s]
    assert covered == list(range(total)), "disjoint, in order, and covering every index"
    lengths = [len(s) for s in slices]
    assert max(lengths) - min(lengths) <= 1
    assert (min(lengths), max(lengths)) == slice_sizes(total, size)


@given(total=totals, size=sizes, data=st.data())
def test_matches_the_seed(total: int, size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    assert list(contiguous_slice(total, index, size)) == seed_formula(total, index, size)


@given(total=st.integers(min_value=0, max_value=50), extra=st.integers(min_value=1, max_value=100))
def test_more_children_than_commands_gives_empty_slices(total: int, extra: int) -> None:
    size = total + extra
    empty = [i for i in range(size) if len(contiguous_slice(total, i, size)) == 0]
    assert len(empty) == extra


@pytest.mark.parametrize(("index", "size"), [(-1, 4), (4, 4), (0, 0)])
def test_rejects_impossible_children(index: int, size: int) -> None:
    with pytest.raises(ValueError, match="array"):
        contiguous_slice(10, index, size)
