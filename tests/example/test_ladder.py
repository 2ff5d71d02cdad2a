from __future__ import annotations

import datetime

import pytest

from review import ladder

DAY = datetime.date(2024, 2, 27)


def test_intervals() -> None:
    assert ladder.INTERVALS == (1, 3, 7, 14, 30)
    assert (ladder.FIRST_STEP, ladder.LAST_STEP) == (0, 4)


@pytest.mark.parametrize(
    ("index", "remembered", "expected"),
    [
        (0, True, 1),
        (1, True, 2),
        (2, True, 3),
        (3, True, 4),
        (4, True, 4),
        (0, False, 0),
        (2, False, 0),
        (4, False, 0),
    ],
)
def test_next_index(index: int, remembered: bool, expected: int) -> None:
    assert ladder.next_index(index, remembered=remembered) == expected


@pytest.mark.parametrize(
    ("index", "remembered", "expected"),
    [
        (0, True, ladder.Step(1, datetime.date(2024, 3, 1))),  # across a leap day
        (3, True, ladder.Step(4, datetime.date(2024, 3, 28))),
        (4, True, ladder.Step(4, datetime.date(2024, 3, 28))),
        (3, False, ladder.Step(0, datetime.date(2024, 2, 28))),
    ],
)
def test_review(index: int, remembered: bool, expected: ladder.Step) -> None:
    assert ladder.review(index, remembered=remembered, on=DAY) == expected


def test_climbing_the_whole_ladder() -> None:
    index, day, dates = 0, DAY, []
    for _ in range(6):
        index, day = ladder.review(index, remembered=True, on=day)
        dates.append((day - DAY).days)
    assert index == ladder.LAST_STEP
    assert dates == [3, 10, 24, 54, 84, 114]


@pytest.mark.parametrize("index", [-1, 5, 100])
def test_steps_outside_the_ladder_are_errors(index: int) -> None:
    with pytest.raises(ValueError, match=f"Ladder step {index} does not exist"):
        ladder.interval_days(index)
    with pytest.raises(ValueError, match="does not exist"):
        ladder.next_index(index, remembered=True)


def test_first_review_is_the_next_day() -> None:
    assert ladder.first_review_date(DAY) == datetime.date(2024, 2, 28)
    assert ladder.first_review_date(datetime.date(2024, 12, 31)) == datetime.date(2025, 1, 1)
