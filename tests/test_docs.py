"""The docs stay true: every setting, check id and metric the code defines is documented,
and the docs name none that the code does not define."""

from __future__ import annotations

import re
from pathlib import Path

from resee_perf import checks, metrics
from resee_perf.conf import OPTIONS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def table_first_column(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        match = re.match(r"\|\s*`([^`]+)`\s*\|", line)
        if match:
            names.add(match.group(1))
    return names


def test_settings_reference_matches_conf() -> None:
    assert table_first_column(DOCS / "reference" / "settings.md") == set(OPTIONS)


def test_settings_reference_gives_each_default() -> None:
    text = (DOCS / "reference" / "settings.md").read_text()
    for name, option in OPTIONS.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}`"))
        default = repr(option.default).replace("'", '"')
        assert f"`{default}`" in row, f"{name}: default {default} not in {row!r}"


def test_check_reference_matches_the_ids_in_the_code() -> None:
    package = Path(checks.__file__).parent
    source = "\n".join(path.read_text() for path in package.rglob("*.py"))
    in_code = set(re.findall(r'id="(resee_perf\.[EW]\d{3})"', source))
    assert in_code
    assert table_first_column(DOCS / "reference" / "checks.md") == in_code


def test_metrics_reference_matches_metrics_module() -> None:
    assert table_first_column(DOCS / "metrics.md") == set(metrics.DEFINED)
