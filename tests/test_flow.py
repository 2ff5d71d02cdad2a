"""The recompute policy (resee_perf._flow) stepped by hand: the generator yields what it needs
(run the body, sleep, spawn a refresh, a cache operation) and the test plays the driver,
running the cache operations (Io) as the sync driver does. Pure: no services (a
locmem cache, a fake clock)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.core.cache import caches

from resee_perf import testing
from resee_perf._flow import (
    RUN,
    Call,
    Flow,
    Instruction,
    Io,
    Policy,
    Sleep,
    Spawn,
    Unreachable,
    drive,
)
from resee_perf._keys import ENTRY, LOCK, epoch_key, family_key
from resee_perf._options import Options
from resee_perf._store import DjangoStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    fake = Clock()
    testing.set_clock(fake)
    testing.set_random(lambda: 0.5)
    yield fake
    testing.restore_time()


def past_io(flow: Flow, instruction: Instruction) -> Instruction:
    """Run the cache operations the flow yields, up to its next other instruction."""
    while isinstance(instruction, Io):
        try:
            result = instruction.operation(*instruction.args)
        except Exception as error:
            instruction = flow.throw(error)
        else:
            instruction = flow.send(result)
    return instruction


def first(flow: Flow) -> Instruction:
    return past_io(flow, next(flow))


def send(flow: Flow, value: object) -> Instruction:
    return past_io(flow, flow.send(value))


def new_call(store: DjangoStore) -> Call:
    body = uuid.uuid4().hex
    return Call(
        family_key("p", ENTRY, body),
        family_key("p", LOCK, body),
        (),
        (epoch_key("p"),),
        store,
    )


def policy(**options: object) -> Policy:
    return Policy("tests.flow", Options.validated("tests.flow", **{**DEFAULTS, **options}))


DEFAULTS: dict[str, object] = {
    "ttl": 10,
    "beta": 0,
    "lock": True,
    "stale_ttl": None,
    "cache": None,
    "version": 1,
    "lock_timeout": 5,
    "background": None,
}


@pytest.fixture
def store() -> DjangoStore:
    return DjangoStore("locmem", caches["locmem"])


def test_a_miss_runs_the_body_once_and_stores_what_it_returned(
    clock: Clock, store: DjangoStore
) -> None:
    miss, call = policy(), new_call(store)
    flow = miss.flow(call, miss.first_read(call))
    assert first(flow) is RUN
    with pytest.raises(StopIteration) as done:
        send(flow, "value")
    assert done.value.value == "value"
    # The next call reads the entry: a hit, served without the generator yielding anything.
    again = new_call(store)
    again.key, again.lock_key = call.key, call.lock_key
    hit = miss.flow(again, miss.first_read(again))
    with pytest.raises(StopIteration) as served:
        first(hit)
    assert served.value.value == "value"


def test_a_waiter_sleeps_while_another_caller_holds_the_lock(
    clock: Clock, store: DjangoStore
) -> None:
    holder, call = policy(), new_call(store)
    store.acquire(call.lock_key, "someone-else", 5)
    flow = holder.flow(call, holder.first_read(call))
    sleep = first(flow)
    assert isinstance(sleep, Sleep)
    assert 0 < sleep.seconds <= 0.02
    # The holder stores its entry meanwhile: the waiter's next re-read serves it.
    writer = policy(lock=False)
    other = new_call(store)
    other.key, other.lock_key = call.key, call.lock_key
    assert drive(writer.flow(other, writer.first_read(other)), lambda: "theirs") == "theirs"
    with pytest.raises(StopIteration) as done:
        send(flow, None)
    assert done.value.value == "theirs"


def test_a_stale_entry_is_served_while_a_refresh_is_spawned(
    clock: Clock, store: DjangoStore
) -> None:
    stale = policy(stale_ttl=30, background=True)
    call = new_call(store)
    assert drive(stale.flow(call, stale.first_read(call)), lambda: "old") == "old"
    clock.now += 11  # past the ttl, inside stale_ttl
    again = new_call(store)
    again.key, again.lock_key = call.key, call.lock_key
    flow = stale.flow(again, stale.first_read(again))
    spawn = first(flow)
    assert isinstance(spawn, Spawn)
    with pytest.raises(StopIteration) as served:
        send(flow, None)
    assert served.value.value == "old"
    # The spawned refresh is a flow of its own: it runs the body and stores the new value.
    assert drive(spawn.flow, lambda: "new") == "new"
    third = new_call(store)
    third.key, third.lock_key = call.key, call.lock_key
    assert drive(stale.flow(third, stale.first_read(third)), lambda: "unused") == "new"


def test_an_unreachable_cache_runs_the_body_without_storing(store: DjangoStore) -> None:
    flow = policy().flow(new_call(store), Unreachable())
    assert first(flow) is RUN
    with pytest.raises(StopIteration) as done:
        send(flow, "direct")
    assert done.value.value == "direct"


def test_a_body_that_raises_releases_the_lock(clock: Clock, store: DjangoStore) -> None:
    failing, call = policy(), new_call(store)
    flow = failing.flow(call, failing.first_read(call))
    assert first(flow) is RUN
    with pytest.raises(ValueError, match="boom"):
        past_io(flow, flow.throw(ValueError("boom")))
    assert store.acquire(call.lock_key, "next", 5)  # free again


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, 1.0),
        ({"stale_ttl": 30}, 0.0),
        ({"beta": 1.0, "stale_ttl": 30}, 1.0),
        ({"beta": 0.5}, 0.5),
    ],
    ids=["no-stale-default", "stale-default", "stale-explicit", "no-stale-explicit"],
)
def test_beta_defaults_to_no_early_refresh_only_with_stale_ttl(
    given: dict[str, object], expected: float
) -> None:
    # With stale_ttl, serving stale already keeps readers from waiting at expiry; an explicit
    # beta, even the 1.0 that is the default without stale_ttl, is the caller's choice.
    options = {**DEFAULTS, "beta": None, **given}
    assert Options.validated("tests.flow", **options).beta == expected
