"""``Idempotency-Key`` on ``POST /api/review/complete/<id>/``: a retried completion records one
review, also when the retry races the first request (real threads, real PostgreSQL)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.test import APIClient

from review.models import CompletionKey, ReviewHistory, ReviewSchedule
from tests.example.conftest import ClientFor, MakeSchedule


def complete(
    client: APIClient, schedule: ReviewSchedule, result: str = "remembered", key: str | None = "k1"
) -> Any:
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post(
        f"/api/review/complete/{schedule.pk}/", {"result": result}, format="json", headers=headers
    )


def test_a_retry_with_the_same_key_replays_the_first_response(
    api: APIClient, user: User, make_schedule: MakeSchedule
) -> None:
    schedule = make_schedule(user)
    first = complete(api, schedule)
    retry = complete(api, schedule)
    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json()
    assert retry["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")
    assert ReviewHistory.objects.filter(user=user).count() == 1
    schedule.refresh_from_db()
    assert schedule.interval_index == first.json()["interval_index"]


def test_a_new_key_records_a_new_review(
    api: APIClient, user: User, make_schedule: MakeSchedule
) -> None:
    schedule = make_schedule(user)
    assert complete(api, schedule, key="k1").status_code == 200
    assert complete(api, schedule, key="k2").status_code == 200
    assert complete(api, schedule, key=None).status_code == 200
    assert ReviewHistory.objects.filter(user=user).count() == 3


def test_the_same_key_for_another_request_is_422(
    api: APIClient, user: User, make_schedule: MakeSchedule
) -> None:
    schedule, other = make_schedule(user), make_schedule(user)
    assert complete(api, schedule, "remembered").status_code == 200
    forgot = complete(api, schedule, "forgot")
    assert forgot.status_code == 422
    assert "another review completion" in forgot.json()["detail"]
    assert complete(api, other, "remembered").status_code == 422
    assert ReviewHistory.objects.filter(user=user).count() == 1


def test_keys_are_per_user(
    client_for: ClientFor, user: User, other_user: User, make_schedule: MakeSchedule
) -> None:
    assert complete(client_for(user), make_schedule(user)).status_code == 200
    theirs = complete(client_for(other_user), make_schedule(other_user))
    assert theirs.status_code == 200
    assert not theirs.has_header("Idempotent-Replayed")
    assert ReviewHistory.objects.count() == 2


def test_a_failed_request_does_not_use_up_its_key(
    api: APIClient, user: User, make_schedule: MakeSchedule
) -> None:
    schedule = make_schedule(user, is_active=False)
    assert complete(api, schedule).status_code == 404
    assert not CompletionKey.objects.exists()
    ReviewSchedule.objects.filter(pk=schedule.pk).update(is_active=True)
    assert complete(api, schedule).status_code == 200
    assert ReviewHistory.objects.filter(user=user).count() == 1


@pytest.mark.parametrize("key", ["", "a b", "k\x00", "é", "k" * 256])
def test_a_malformed_key_is_400(
    api: APIClient, user: User, make_schedule: MakeSchedule, key: str
) -> None:
    response = complete(api, make_schedule(user), key=key)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()
    assert not ReviewHistory.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_racing_retries_record_exactly_one_review(
    client_for: ClientFor, user: User, make_schedule: MakeSchedule
) -> None:
    """Eight requests with one key at once, each on its own connection: the unique constraint
    makes all but one wait for the first's transaction, then replay its response."""
    schedule = make_schedule(user)
    racers = 8
    barrier = threading.Barrier(racers)
    responses: list[Any] = []
    errors: list[BaseException] = []

    def race() -> None:
        client = client_for(user)
        try:
            barrier.wait(timeout=30)
            responses.append(complete(client, schedule, key="retry-after-timeout"))
        except BaseException as error:  # Reported below: a thread's exception is otherwise lost.
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert [response.status_code for response in responses] == [200] * racers
    first = responses[0].json()
    assert all(response.json() == first for response in responses)
    assert sum(response.has_header("Idempotent-Replayed") for response in responses) == racers - 1
    assert ReviewHistory.objects.filter(user=user).count() == 1
    schedule.refresh_from_db()
    assert schedule.interval_index == first["interval_index"]
