"""What the review app's writes invalidate; connected in :meth:`ReviewConfig.ready`.

Today's reviews and the learning statistics of a user are cached under
``user:{user_id}:reviews`` (see the views), and every schedule or review of that user changes
them.
"""

from __future__ import annotations

from resee_perf import invalidate_on
from review.models import ReviewHistory, ReviewSchedule


def user_reviews(row: ReviewSchedule | ReviewHistory) -> list[str]:
    return [f"user:{row.user_id}:reviews"]


def connect() -> None:
    invalidate_on(ReviewSchedule, tags=user_reviews)
    invalidate_on(ReviewHistory, tags=user_reviews)
