"""The example project's invalidation wiring, through its API, on the real PostgreSQL and Redis:
each write invalidates the tags of the user it concerns, and of those only the ones whose views
it changes (a new content misses the list, not today's reviews or the statistics)."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django.db import transaction
from django.utils import timezone
from prometheus_client import REGISTRY
from rest_framework.test import APIClient, APIRequestFactory

from analytics.views import StatsView
from content.models import Category, Content
from content.views import ContentViewSet
from resee_perf.profiling import forbid_nplusone, profile_queries
from review import ladder
from review.models import ReviewHistory, ReviewSchedule
from review.views import TodayView
from tests.example.conftest import ClientFor, MakeContent, MakeSchedule, MakeUser
from tests.test_invalidation import bumped, start

# Invalidation runs after commit: the tests must commit.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _clean_cache() -> Iterator[None]:
    caches["default"].clear()  # our own Redis database (REDIS_URL)
    yield
    caches["default"].clear()


def history(user: User) -> str:
    return f"user:{user.pk}:history"


def due(user: User, days: int = 0) -> str:
    """The tag of the user's due list ``days`` after today."""
    return f"user:{user.pk}:due:{timezone.localdate() + datetime.timedelta(days=days)}"


def contents(user: User) -> str:
    return f"user:{user.pk}:contents"


def edits(user: User) -> str:
    return f"user:{user.pk}:content-edits"


def tags_of(user: User) -> tuple[str, ...]:
    return (history(user), due(user, -1), due(user), due(user, 1), contents(user), edits(user))


def all_tags(*users: User) -> dict[str, int]:
    return start(*(tag for user in users for tag in tags_of(user)))


def test_completing_a_review_invalidates_that_users_due_lists_and_history_only(
    api: APIClient, user: User, other_user: User, make_schedule: MakeSchedule
) -> None:
    schedule = make_schedule(user)  # due today
    make_schedule(other_user)
    before = all_tags(user, other_user)

    response = api.post(f"/api/review/complete/{schedule.pk}/", {"result": "remembered"})

    assert response.status_code == 200
    # It left the lists of today and tomorrow (it is due in 3 days now); yesterday's never had it.
    assert bumped(before) == {history(user), due(user), due(user, 1)}


def test_forgetting_a_review_overdue_since_yesterday_moves_it_to_tomorrow(
    api: APIClient, user: User, make_schedule: MakeSchedule
) -> None:
    yesterday = timezone.localdate() - datetime.timedelta(days=1)
    schedule = make_schedule(user, next_review_date=yesterday, interval_index=2)
    before = all_tags(user)

    response = api.post(f"/api/review/complete/{schedule.pk}/", {"result": "forgot"})

    assert response.status_code == 200
    # Out of yesterday's and today's lists, still in tomorrow's (with another step shown).
    assert bumped(before) == {history(user), due(user, -1), due(user), due(user, 1)}


def test_a_schedule_due_next_week_changes_no_cached_list(
    user: User, make_schedule: MakeSchedule
) -> None:
    later = timezone.localdate() + datetime.timedelta(days=7)
    schedule = make_schedule(user, next_review_date=later)
    before = all_tags(user)

    schedule.next_review_date = later + datetime.timedelta(days=7)
    schedule.save()
    schedule.delete()

    assert bumped(before) == set()


def test_a_completion_that_fails_midway_invalidates_nothing(
    api: APIClient,
    user: User,
    make_schedule: MakeSchedule,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schedule = make_schedule(user)
    before = all_tags(user)

    def broken_ladder(*args: object, **kwargs: object) -> ladder.Step:
        raise RuntimeError("after the ReviewHistory insert, before the schedule update")

    monkeypatch.setattr(ladder, "review", broken_ladder)
    with pytest.raises(RuntimeError):
        api.post(f"/api/review/complete/{schedule.pk}/", {"result": "remembered"})

    assert not ReviewHistory.objects.exists()  # rolled back...
    assert bumped(before) == set()  # ...and nothing invalidated


def test_creating_content_invalidates_the_authors_list_and_tomorrows_reviews_only(
    api: APIClient, user: User, other_user: User, category: Category
) -> None:
    before = all_tags(user, other_user)

    response = api.post(
        "/api/content/", {"title": "Generators", "body": "yield", "category": category.pk}
    )

    assert response.status_code == 201
    schedule = ReviewSchedule.objects.get(user=user)
    assert schedule.next_review_date == timezone.localdate() + datetime.timedelta(days=1)
    # Not today's reviews nor the statistics: neither shows a content due tomorrow, unreviewed.
    assert bumped(before) == {contents(user), due(user, 1)}


def test_editing_content_invalidates_the_list_and_what_shows_existing_contents(
    api: APIClient, user: User, other_user: User, make_content: MakeContent
) -> None:
    content = make_content(user)
    before = all_tags(user, other_user)

    response = api.patch(f"/api/content/{content.pk}/", {"title": "Yield"}, format="json")

    assert response.status_code == 200
    assert bumped(before) == {contents(user), edits(user)}


def test_deleting_content_invalidates_its_schedule_and_history_too(
    api: APIClient, user: User, other_user: User, make_schedule: MakeSchedule
) -> None:
    schedule = make_schedule(user)
    ReviewHistory.objects.create(user=user, content_id=schedule.content_id, result="forgot")
    before = all_tags(user, other_user)

    response = api.delete(f"/api/content/{schedule.content_id}/")

    assert response.status_code == 204
    assert bumped(before) == {contents(user), edits(user), due(user), due(user, 1), history(user)}


def test_renaming_a_category_invalidates_the_content_pages_of_its_authors(
    user: User, make_user: MakeUser, make_content: MakeContent, category: Category
) -> None:
    elsewhere = make_user("carol")
    make_content(user)
    make_content(user)
    make_content(elsewhere, category=Category.objects.create(name="Go", slug="go"))
    before = all_tags(user, elsewhere)

    category.name = "Python 3"
    category.save()

    assert bumped(before) == {contents(user), edits(user)}


def test_renaming_many_categories_finds_their_authors_in_one_query(
    user: User, make_user: MakeUser, make_content: MakeContent
) -> None:
    """Saving a category used to ask for its authors at once, one query per category: an N+1
    in any request that saves several. Now one query after the commit, for all of them."""
    authors = [user, *(make_user(f"author{index}") for index in range(5))]
    renamed = [Category.objects.create(name=f"c{index}", slug=f"c{index}") for index in range(6)]
    for author, category in zip(authors, renamed, strict=True):
        make_content(author, category=category)
    untouched = make_user("untouched")
    make_content(untouched, category=Category.objects.create(name="other", slug="other"))
    before = all_tags(*authors, untouched)

    with forbid_nplusone(), profile_queries() as profile, transaction.atomic():
        for category in renamed:
            category.name += " (renamed)"
            category.save()

    author_reads = [
        stats for stats in profile.shapes.values() if 'FROM "content_content"' in stats.shape
    ]
    assert [stats.count for stats in author_reads] == [1]
    assert profile.queries == len(renamed) + 1  # the six UPDATEs and the one read
    assert bumped(before) == {
        tag for author in authors for tag in (contents(author), edits(author))
    }


def test_a_rolled_back_rename_invalidates_nothing(
    user: User, make_content: MakeContent, category: Category
) -> None:
    make_content(user, category=category)
    before = all_tags(user)

    def rename_then_fail() -> None:
        with transaction.atomic():
            category.name = "never"
            category.save()
            raise RuntimeError

    with pytest.raises(RuntimeError):
        rename_then_fail()
    with transaction.atomic():
        Category.objects.create(name="new", slug="new")  # creating needs no read

    assert bumped(before) == set()


def test_another_users_writes_leave_this_users_tags_alone(
    client_for: ClientFor, user: User, other_user: User, make_schedule: MakeSchedule
) -> None:
    theirs = make_schedule(other_user)
    before = all_tags(user)

    client_for(other_user).post(f"/api/review/complete/{theirs.pk}/", {"result": "forgot"})
    client_for(other_user).patch(
        f"/api/content/{theirs.content_id}/", {"title": "x"}, format="json"
    )

    assert bumped(before) == set()
    assert Content.objects.get(pk=theirs.content_id).title == "x"


# --- the cached endpoints ---------------------------------------------------------------------


def hits(name: str) -> float:
    labels = {"name": name, "result": "hit"}
    return REGISTRY.get_sample_value("resee_perf_cache_requests_total", labels) or 0.0


def entry(cached: Any, **arguments: Any) -> bytes | None:
    """The raw Redis value of a cache_aside entry: compared, it shows whether it was rewritten."""
    cache = caches["default"]
    client = cache.client.get_client(write=True)  # type: ignore[attr-defined]
    # A view's key varies on the request too: the test client's (http://testserver).
    request = APIRequestFactory().get("/")
    value: bytes | None = client.get(cache.make_key(cached.cache_key(request=request, **arguments)))
    return value


TODAY, STATS = "review.views.TodayView.due_on", "analytics.views.StatsView.for_day"


def test_after_completing_a_review_today_and_stats_reflect_it_and_others_stay_cached(
    client_for: ClientFor,
    user: User,
    other_user: User,
    make_schedule: MakeSchedule,
    django_assert_num_queries: Any,
) -> None:
    mine, theirs = client_for(user), client_for(other_user)
    schedule = make_schedule(user)
    make_schedule(other_user)
    pages = {
        who: (client.get("/api/review/today/").json(), client.get("/api/analytics/stats/").json())
        for who, client in (("mine", mine), ("theirs", theirs))
    }
    assert pages["mine"][0]["count"] == 1
    assert pages["mine"][1]["total_reviews"] == 0
    their_entries = (
        entry(TodayView.due_on, user_id=other_user.pk, day=timezone.localdate()),
        entry(StatsView.for_day, user_id=other_user.pk, day=timezone.localdate()),
    )
    assert None not in their_entries

    response = mine.post(f"/api/review/complete/{schedule.pk}/", {"result": "remembered"})
    assert response.status_code == 200

    today, stats = mine.get("/api/review/today/").json(), mine.get("/api/analytics/stats/").json()
    assert today["count"] == 0  # the schedule moved on to a later day
    assert stats["total_reviews"] == 1
    assert stats["remembered"] == 1

    hits_before = hits(TODAY), hits(STATS)
    with django_assert_num_queries(0):  # served from the cache, not recomputed
        assert theirs.get("/api/review/today/").json() == pages["theirs"][0]
        assert theirs.get("/api/analytics/stats/").json() == pages["theirs"][1]
    assert (hits(TODAY), hits(STATS)) == (hits_before[0] + 1, hits_before[1] + 1)
    assert (
        entry(TodayView.due_on, user_id=other_user.pk, day=timezone.localdate()),
        entry(StatsView.for_day, user_id=other_user.pk, day=timezone.localdate()),
    ) == their_entries


def test_after_editing_content_the_list_reflects_it_and_others_stay_cached(
    client_for: ClientFor,
    user: User,
    other_user: User,
    make_content: MakeContent,
    django_assert_num_queries: Any,
) -> None:
    mine, theirs = client_for(user), client_for(other_user)
    content = make_content(user, title="Before")
    make_content(other_user, title="Theirs")
    assert mine.get("/api/content/").json()["results"][0]["title"] == "Before"
    their_list = theirs.get("/api/content/").json()
    their_entry = entry(ContentViewSet.list, user_id=other_user.pk, page=None)
    assert their_entry is not None

    mine.patch(f"/api/content/{content.pk}/", {"title": "After"}, format="json")

    assert mine.get("/api/content/").json()["results"][0]["title"] == "After"
    with django_assert_num_queries(0):
        assert theirs.get("/api/content/").json() == their_list
    assert entry(ContentViewSet.list, user_id=other_user.pk, page=None) == their_entry
