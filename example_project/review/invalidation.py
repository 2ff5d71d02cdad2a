"""What the review app's writes invalidate; connected in :meth:`ReviewConfig.ready`.

Each cached view carries the tags of exactly what it shows (see the views), so that a write
misses only the entries it changes:

- ``user:{user_id}:history``: the learning statistics, which count the user's reviews. Every
  review recorded (or deleted) bumps it; a schedule does not, the statistics do not show them.
- ``user:{user_id}:due:{day}``: today's reviews of the user on ``day``, the active schedules
  due on or before it. A schedule write bumps the tag of each day whose list the row is in
  before or after the write (``track`` gives the old due date). Only a day near today can
  have a cached list (its key holds the day it was read on), so only yesterday, today and
  tomorrow are considered: a completion (due today, moved to a later day) bumps today's list,
  a new content's first schedule (due tomorrow) only tomorrow's, which is read from midnight
  on, after its commit.
"""

from __future__ import annotations

import datetime

from django.utils import timezone

from resee_perf import invalidate_on
from review.models import ReviewHistory, ReviewSchedule

#: The days around today whose list a schedule write may change: every day a cached key can
#: hold. Yesterday and tomorrow as well as today: a write at midnight, committed after it.
CACHED_DAYS = (-1, 0, 1)


def user_history(row: ReviewHistory) -> list[str]:
    return [f"user:{row.user_id}:history"]


def due_days(row: ReviewSchedule) -> list[str]:
    """The due lists ``row`` is in, among the days that may be cached."""
    if not row.is_active:
        return []
    today = timezone.localdate()
    days = (today + datetime.timedelta(days=offset) for offset in CACHED_DAYS)
    return [f"user:{row.user_id}:due:{day}" for day in days if row.next_review_date <= day]


def connect() -> None:
    invalidate_on(ReviewHistory, tags=user_history)
    # With the old values: a completion moves a schedule out of today's list.
    invalidate_on(ReviewSchedule, tags=due_days, track=["next_review_date", "is_active"])
