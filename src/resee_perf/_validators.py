"""Validators of setting values: leaf helpers shared by :mod:`resee_perf.conf` and the
deployment setting (``_deployment``), which would otherwise import each other."""

from __future__ import annotations

import ipaddress
import itertools
import math
from collections.abc import Callable
from typing import Any


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    # bool is an int subclass; True as a TTL is a mistake, not a 1.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def non_negative_number(value: Any) -> bool:
    return _is_number(value) and value >= 0


def positive_number(value: Any) -> bool:
    return _is_number(value) and value > 0


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def non_negative_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def non_empty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def boolean(value: Any) -> bool:
    return isinstance(value, bool)


def str_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(non_empty_str(item) for item in value)


def str_keyed_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(non_empty_str(key) for key in value)


def optional(validate: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return value is None or validate(value)

    return check


def cidr_list(value: Any) -> bool:
    if not isinstance(value, list | tuple):
        return False
    for item in value:
        try:
            ipaddress.ip_network(item)
        except (TypeError, ValueError):
            return False
    return True


def increasing_numbers(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(positive_number(item) for item in value)
        and all(a < b for a, b in itertools.pairwise(value))
    )
