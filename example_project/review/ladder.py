"""The spaced-repetition ladder: how far away the next review of a content is.

A schedule stands on one step of :data:`INTERVALS`. Remembering it moves it up one step
(staying on the last step once there); forgetting it sends it back to the first step. The
next review is due the step's interval after the day of the review. Pure functions, no
database.
"""

from __future__ import annotations

import datetime
from typing import Final, NamedTuple

INTERVALS: Final[tuple[int, ...]] = (1, 3, 7, 14, 30)
"""Days until the next review, per step."""

FIRST_STEP: Final = 0
LAST_STEP: Final = len(INTERVALS) - 1


class Step(NamedTuple):
    interval_index: int
    next_review_date: datetime.date


def interval_days(index: int) -> int:
    """The interval of step ``index``; ``ValueError`` if there is no such step."""
    if not FIRST_STEP <= index <= LAST_STEP:
        raise ValueError(f"Ladder step {index} does not exist; steps are 0 to {LAST_STEP}.")
    return INTERVALS[index]


def next_index(index: int, *, remembered: bool) -> int:
    interval_days(index)  # validates index
    if not remembered:
        return FIRST_STEP
    return min(index + 1, LAST_STEP)


def review(index: int, *, remembered: bool, on: datetime.date) -> Step:
    """Where a schedule on step ``index`` goes after a review on day ``on``."""
    new_index = next_index(index, remembered=remembered)
    return Step(new_index, on + datetime.timedelta(days=interval_days(new_index)))


def first_review_date(created_on: datetime.date) -> datetime.date:
    """When a new content is first due: the first step's interval after its creation."""
    return created_on + datetime.timedelta(days=INTERVALS[FIRST_STEP])
