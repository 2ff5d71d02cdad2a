"""Plain-text tables of the budget and of the servers' verdicts, for the command and str()."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    # Types only: the budget renders itself with this module, which is a leaf at run time.
    from resee_perf._budget import ConnectionBudget
    from resee_perf._servers import ServerVerdict

_NUMERIC_COLUMNS = frozenset(
    {"connections", "needed", "max_connections", "reserved", "usable", "others", "spare"}
)


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = {i for i, title in enumerate(rows[0]) if title in _NUMERIC_COLUMNS}
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def budget_text(budget: ConnectionBudget) -> str:
    """The itemised budget table, then its notes."""
    rows: list[tuple[str, ...]] = [("server", "alias", "client", "connections", "how")]
    for server in budget.servers:
        first = True
        for item in budget.contributions:
            if item.server != server.server:
                continue
            label = f"{server.server} ({server.kind})" if first else ""
            rows.append((label, item.alias, item.client, str(item.connections), item.how))
            first = False
        if first:
            rows.append((f"{server.server} ({server.kind})", "", "", "0", "nothing"))
        rows.append(("", "", "subtotal", str(server.subtotal), ""))
        rows.append(
            (
                "",
                "",
                f"+{budget.headroom:.0%} headroom",
                str(server.needed - server.subtotal),
                "rounded up",
            )
        )
        rows.append(("", "", "needed", str(server.needed), ""))
    lines = [table(rows), f"total needed: {budget.total} connections"]
    lines.extend(f"note: {note}" for note in budget.notes)
    return "\n".join(lines)


def verdict_table(verdicts: Sequence[ServerVerdict]) -> str:
    rows: list[tuple[str, ...]] = [
        ("server", "needed", "max_connections", "reserved", "usable", "others", "spare", "verdict")
    ]
    for verdict in verdicts:
        status = verdict.status
        reserved = (
            str(status.superuser_reserved_connections + status.reserved_connections)
            if status
            else ""
        )
        if verdict.fits is None:
            outcome = f"unknown: {verdict.error or 'no max_connections given'}"
        else:
            outcome = (
                "fits"
                if verdict.fits
                else f"OVER BUDGET by {-cast(int, verdict.spare)} connections"
            )
        rows.append(
            (
                verdict.server,
                str(verdict.needed),
                str(status.max_connections) if status else "",
                reserved,
                "" if verdict.usable is None else str(verdict.usable),
                str(verdict.in_use_by_others),
                "" if verdict.spare is None else str(verdict.spare),
                f"{outcome} ({verdict.source})",
            )
        )
    return table(rows)
