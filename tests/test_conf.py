from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.test import override_settings

from resee_perf._replicas import routing_settings
from resee_perf.conf import OPTIONS, Snapshot, conf, derived, reset, snapshot
from resee_perf.metrics import report_cache


def test_defaults_when_unset() -> None:
    with override_settings(RESEE_PERF={}):
        assert conf.CACHE_ALIAS == "default"
        assert conf.KEY_PREFIX == "rp"
        assert conf.METRICS_ENABLED is True


def test_missing_setting_means_defaults(settings: object) -> None:
    del settings.RESEE_PERF  # type: ignore[attr-defined]
    assert conf.KEY_PREFIX == "rp"


def test_override_settings_is_seen_at_once() -> None:
    with override_settings(RESEE_PERF={"KEY_PREFIX": "first"}):
        assert conf.KEY_PREFIX == "first"
        with override_settings(RESEE_PERF={"KEY_PREFIX": "second"}):
            assert conf.KEY_PREFIX == "second"
        assert conf.KEY_PREFIX == "first"
    assert conf.KEY_PREFIX == "rp"


def test_every_option_has_a_typed_property_and_a_valid_default() -> None:
    for name, option in OPTIONS.items():
        assert option.validate(option.default), name
        assert getattr(conf, name) == option.default
        assert option.doc.strip()
        assert option.expected.strip()


def test_invalid_value_raises_improperly_configured_naming_the_key() -> None:
    with (
        override_settings(RESEE_PERF={"KEY_PREFIX": ""}),
        pytest.raises(ImproperlyConfigured, match=r"RESEE_PERF\['KEY_PREFIX'\] should be"),
    ):
        _ = conf.KEY_PREFIX


def test_non_dict_raises_improperly_configured() -> None:
    with (
        override_settings(RESEE_PERF=["KEY_PREFIX"]),
        pytest.raises(ImproperlyConfigured, match="should be a dict"),
    ):
        _ = conf.KEY_PREFIX


@pytest.mark.parametrize("value", [True, -1, float("nan"), float("inf"), "3", None])
def test_numbers_reject_bools_negatives_and_non_finite(value: object) -> None:
    from resee_perf._validators import non_negative_number

    assert not non_negative_number(value)


@pytest.mark.parametrize("value", [0, 0.5, 15])
def test_numbers_accept_non_negative(value: object) -> None:
    from resee_perf._validators import non_negative_number

    assert non_negative_number(value)


# -- The snapshot: one validated read of every value, dropped on setting_changed ---------------


def test_the_snapshot_has_one_field_per_option_and_the_signing_keys() -> None:
    fields = {field.name for field in dataclasses.fields(Snapshot)}
    assert fields == {*OPTIONS, "CACHE_SIGNING_KEYS"}


def test_the_snapshot_is_built_once_and_kept() -> None:
    assert snapshot() is snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot().KEY_PREFIX = "other"  # type: ignore[misc]


def test_override_settings_replaces_the_snapshot_at_once() -> None:
    before = snapshot()
    with override_settings(RESEE_PERF={"KEY_PREFIX": "first", "REPLICAS": ["replica"]}):
        assert snapshot().KEY_PREFIX == "first"
        assert snapshot().REPLICAS == ("replica",)
        with override_settings(RESEE_PERF={"METRICS_ENABLED": False}):
            assert snapshot().KEY_PREFIX == "rp"
            assert snapshot().METRICS_ENABLED is False
        assert snapshot().KEY_PREFIX == "first"
    assert snapshot() == before


def test_the_settings_fixture_replaces_the_snapshot(settings: Any) -> None:
    assert conf.STICKY_SECONDS == 15.0
    settings.RESEE_PERF = {"STICKY_SECONDS": 3}
    assert conf.STICKY_SECONDS == 3.0
    assert isinstance(snapshot().STICKY_SECONDS, float)


def test_a_bad_value_anywhere_fails_the_snapshot_naming_the_key() -> None:
    with override_settings(RESEE_PERF={"REPLICA_RETRY_SECONDS": -1}):
        with pytest.raises(ImproperlyConfigured, match=r"\['REPLICA_RETRY_SECONDS'\] should be"):
            snapshot()
        # The checks read one key at a time, and still see the good ones.
        assert conf.get("KEY_PREFIX") == "rp"
        with pytest.raises(ImproperlyConfigured, match="REPLICA_RETRY_SECONDS"):
            conf.get("REPLICA_RETRY_SECONDS")


def test_signing_keys_are_derived_in_the_snapshot() -> None:
    with override_settings(RESEE_PERF={"CACHE_SIGNING_KEY": ["new", b"old"]}):
        assert snapshot().CACHE_SIGNING_KEYS == (b"new", b"old")
    assert snapshot().CACHE_SIGNING_KEYS == ()


def _replica_count(settings: Snapshot) -> int:
    return len(settings.REPLICAS)


def test_derived_values_are_kept_until_the_settings_change() -> None:
    builds: list[Snapshot] = []

    def build(settings: Snapshot) -> list[Snapshot]:
        builds.append(settings)
        return builds

    assert derived(build) is derived(build)
    assert len(builds) == 1
    with override_settings(RESEE_PERF={"REPLICAS": ["replica"]}):
        assert derived(_replica_count) == 1
        assert routing_settings().replicas == ("replica",)
        derived(build)
        assert len(builds) == 2
    assert derived(_replica_count) == 0
    assert routing_settings().replicas == ()


def test_caches_and_databases_changes_drop_derived_values_too() -> None:
    builds: list[int] = []

    def build(settings: Snapshot) -> int:
        builds.append(1)
        return len(builds)

    assert derived(build) == 1
    with override_settings(CACHES=settings.CACHES):
        assert derived(build) == 2
    # override_settings(DATABASES=...) warns (Django's COMPLEX_OVERRIDE_SETTINGS): send the
    # signal as it would.
    setting_changed.send(sender=type(settings), setting="DATABASES", value={}, enter=False)
    assert derived(build) == 3
    with override_settings(USE_TZ=settings.USE_TZ):
        assert derived(build) == 3


def test_a_value_built_while_the_settings_change_is_not_kept() -> None:
    """The race the reset counter closes: a build that read the old settings finishes after
    setting_changed dropped everything; its caller gets it, nobody else does."""
    calls: list[int] = []

    def build_across_a_change(settings: Snapshot) -> int:
        calls.append(1)
        if len(calls) == 1:
            reset(setting="RESEE_PERF")
        return len(calls)

    assert derived(build_across_a_change) == 1
    assert derived(build_across_a_change) == 2
    assert derived(build_across_a_change) == 2


def cache_requests(result: str) -> float:
    from prometheus_client import REGISTRY

    labels = {"name": "test_conf", "result": result}
    return REGISTRY.get_sample_value("resee_perf_cache_requests_total", labels) or 0.0


def test_metrics_follow_an_override_of_metrics_enabled() -> None:
    before = cache_requests("hit")
    report_cache("test_conf", "hit")
    assert cache_requests("hit") == before + 1
    with override_settings(RESEE_PERF={"METRICS_ENABLED": False}):
        report_cache("test_conf", "hit")
        assert cache_requests("hit") == before + 1
    report_cache("test_conf", "hit")
    assert cache_requests("hit") == before + 2
