"""Imports point down (docs: house style): the settings and replica modules import only the
layers below them, at run time or inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "resee_perf"

# module -> the resee_perf modules it may import
ALLOWED = {
    "_validators": set(),
    "_lsn": set(),
    "_replica_check": {"_lsn"},
    "_settings_options": {"_validators"},
    "conf": {"_deployment", "_settings_options"},
    "metrics": {"conf"},
    "_replicas": {"_lsn", "_replica_check", "conf", "metrics"},
}


def imported(module: str) -> set[str]:
    tree = ast.parse((SRC / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "resee_perf":
                names.update(alias.name for alias in node.names)
            elif node.module.startswith("resee_perf."):
                names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(
                alias.name.split(".")[1]
                for alias in node.names
                if alias.name.startswith("resee_perf.")
            )
    return names


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_imports_point_down(module: str) -> None:
    assert imported(module) <= ALLOWED[module]
