"""
What the commands print: the API's JSON as it is (C{--json}), or tables
(rich) for a person.  A listing is one row per item; a resource is one row
per field, its C{actions} as the names of what can be done now.
"""

from __future__ import annotations

import json
import time

from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Fields a table leaves out of a listing (the JSON keeps them).
_HIDDEN = ("href", "actions")
_TIMES = ("created", "updated", "time")


def print_json(console: Console, data) -> None:
    console.out(json.dumps(data, indent=2, ensure_ascii=False), highlight=False)


def cell(key: str, value) -> str:
    """
    A field's text in a table.  Tables are given it as L{Text}, never as a
    string rich would read markup (C{[bold]}) or emoji codes in: a MAC
    C{52:54:00:ab:cd:ef} holds C{:ab:}, which rich drew as an emoji.
    """
    if value is None:
        return "-"
    if key == "actions" and isinstance(value, dict):
        return ", ".join(value) or "-"
    if key in _TIMES and isinstance(value, int) and not isinstance(value, bool):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def listing(console: Console, items: list, columns: tuple[str, ...] | None = None) -> None:
    """One row per item, in C{columns} (default: every field but C{href} and C{actions})."""
    console.print(table(items, columns))


def table(items: list, columns: tuple[str, ...] | None = None):
    """What L{listing} prints (a renderable: C{--watch} redraws it)."""
    if not items:
        return Text("(none)", style="dim")
    if columns is None:
        columns = tuple(dict.fromkeys(k for item in items for k in item if k not in _HIDDEN))
    grid = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        grid.add_column(column.upper(), overflow="fold")
    for item in items:
        grid.add_row(*(Text(cell(c, item.get(c))) for c in columns))
    return grid


def resource(console: Console, item: dict) -> None:
    """One row per field."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in item.items():
        table.add_row(Text(key), Text(cell(key, value)))
    console.print(table)
