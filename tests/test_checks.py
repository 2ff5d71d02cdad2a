from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from django.core.checks import CheckMessage
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from resee_perf.checks import check_settings

ROOT = Path(__file__).resolve().parent.parent


def ids(messages: Sequence[CheckMessage]) -> list[str]:
    return [str(m.id) for m in messages]


def test_valid_settings_pass() -> None:
    with override_settings(RESEE_PERF={"KEY_PREFIX": "x", "METRICS_ENABLED": False}):
        assert check_settings() == []


def test_e001_not_a_dict() -> None:
    with override_settings(RESEE_PERF="KEY_PREFIX=x"):
        [error] = check_settings()
    assert error.id == "resee_perf.E001"
    assert "should be a dict" in error.msg


def test_e002_wrong_type_names_the_setting_and_hints_the_default() -> None:
    with override_settings(RESEE_PERF={"METRICS_ENABLED": "yes"}):
        [error] = check_settings()
    assert error.id == "resee_perf.E002"
    assert error.msg == "RESEE_PERF['METRICS_ENABLED'] should be True or False, not 'yes'."
    assert error.hint is not None
    assert "Default: True" in error.hint


def test_e003_unknown_key_suggests_the_close_one() -> None:
    with override_settings(RESEE_PERF={"KEY_PERFIX": "x"}):
        [error] = check_settings()
    assert error.id == "resee_perf.E003"
    assert error.hint == "Did you mean 'KEY_PREFIX'?"


def test_e003_unknown_key_without_a_close_match_lists_known_keys() -> None:
    with override_settings(RESEE_PERF={"ZZZ": 1}):
        [error] = check_settings()
    assert error.hint is not None
    assert "KEY_PREFIX" in error.hint


def test_e004_cache_alias_must_exist() -> None:
    with override_settings(RESEE_PERF={"CACHE_ALIAS": "nope"}):
        [error] = check_settings()
    assert error.id == "resee_perf.E004"
    assert "'nope'" in error.msg


def test_all_problems_are_reported_at_once() -> None:
    with override_settings(RESEE_PERF={"KEY_PREFIX": 1, "METRICS_ENABLED": 0, "X": 1}):
        assert sorted(ids(check_settings())) == [
            "resee_perf.E002",
            "resee_perf.E002",
            "resee_perf.E003",
        ]


def test_checks_are_registered_with_django() -> None:
    with override_settings(RESEE_PERF={"KEY_PREFIX": ""}), pytest.raises(SystemCheckError):
        call_command("check")


def test_manage_py_check_fails_on_a_bad_setting() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings_bad"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "example_project")])
    result = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "resee_perf.E002" in result.stderr
    assert "RESEE_PERF['KEY_PREFIX'] should be a non-empty string, not 42." in result.stderr
    assert "resee_perf.E003" in result.stderr


# -- The checks package: one module per feature ------------------------------------------------


def test_the_package_docstring_lists_every_id_under_its_module() -> None:
    """checks/__init__.py's docstring is the map of ids: each id under the module that has
    it, none missing, none extra."""
    import re

    from resee_perf import checks

    listed: dict[str, str] = {}
    module = ""
    for line in (checks.__doc__ or "").splitlines():
        heading = re.match(r"``(\w+)`` -- ", line)
        if heading:
            module = heading.group(1)
        for number in re.findall(r"``([EW]\d{3})``", line):
            listed[f"resee_perf.{number}"] = module
    in_code = {}
    for path in Path(checks.__file__).parent.glob("*.py"):
        for check_id in re.findall(r'id="(resee_perf\.[EW]\d{3})"', path.read_text()):
            in_code[check_id] = path.stem
    assert listed == in_code


def test_every_check_function_is_registered_once() -> None:
    from django.core.checks.registry import registry

    from resee_perf import checks

    exported = {name for name in checks.__all__ if name.startswith("check_")}
    registered = [
        getattr(check, "__name__", "")
        for check in registry.get_checks(include_deployment_checks=True)
        if getattr(check, "__module__", "").startswith("resee_perf.checks.")
    ]
    assert sorted(registered) == sorted(exported)
