import numpy as np
import pytest

from onerec.data.ragged import Ragged


@pytest.fixture
def rows() -> Ragged:
    return Ragged.from_lists([[1, 2, 3], [], [4, 5], [6]])


def test_rows_and_lengths(rows: Ragged) -> None:
    assert len(rows) == 4
    assert rows.tolist() == [[1, 2, 3], [], [4, 5], [6]]
    assert rows.lengths.tolist() == [3, 0, 2, 1]
    assert rows.row_ids.tolist() == [0, 0, 0, 2, 2, 3]


def test_take_head_tail_drop_last(rows: Ragged) -> None:
    assert rows.take(np.array([3, 0, 0])).tolist() == [[6], [1, 2, 3], [1, 2, 3]]
    assert rows.head(2).tolist() == [[1, 2], [], [4, 5], [6]]
    assert rows.tail(2).tolist() == [[2, 3], [], [4, 5], [6]]
    assert rows.drop_last(1).tolist() == [[1, 2], [], [4], []]
    assert rows.drop_last(np.array([0, 0, 2, 1])).tolist() == [[1, 2, 3], [], [], []]


def test_padding(rows: Ragged) -> None:
    right = rows.to_padded(2, align="right")
    assert right.tolist() == [[2, 3], [-1, -1], [4, 5], [-1, 6]]
    left = rows.to_padded(2, pad=0)
    assert left.tolist() == [[1, 2], [0, 0], [4, 5], [6, 0]]


def test_last_and_errors(rows: Ragged) -> None:
    assert Ragged.from_lists([[1, 2], [3]]).last().tolist() == [2, 3]
    with pytest.raises(ValueError):
        rows.last()
    with pytest.raises(ValueError):
        Ragged(np.arange(3), np.array([0, 2]))
