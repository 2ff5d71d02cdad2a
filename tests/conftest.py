"""Fixtures shared by the whole suite. Feature-specific fixtures live next to their tests."""

from __future__ import annotations
