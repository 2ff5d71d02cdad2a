from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from resee_perf.conf import OPTIONS, conf


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
