"""Text for people from plain JSON-ready dicts, with the standard library alone: the bead table (`bead ready`,
`bead list`) and the town status. The typer commands and the quick read path (`quick`) both print through
here, so the two give the same text for the same data.

Tables are drawn the way the rest of the CLI's (rich) tables are: a heavy rule under a bold header, columns
as wide as their widest cell, shrunk and wrapped to the width when too wide: $COLUMNS, else the terminal's, else
(not a terminal) 80. Styles (bold, colours) only go to a terminal, and never with $NO_COLOR
set or TERM=dumb; $FORCE_COLOR forces them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

STATUS_STYLE = {"open": "36", "in_progress": "33", "blocked": "31", "done": "32", "cancelled": "2"}
BOLD, DIM, ITALIC, RED = "1", "2", "3", "31"


@dataclass(frozen=True)
class Out:
    """Where text goes: its width in columns and whether it takes styles."""

    width: int = 80
    color: bool = False

    @classmethod
    def of(cls, stream: TextIO) -> Out:
        env = os.environ
        tty = stream.isatty()
        columns = env.get("COLUMNS", "")
        width = 80
        if columns.isdigit() and int(columns) > 0:
            width = int(columns)
        elif tty:
            with contextlib.suppress(OSError, ValueError):
                width = os.get_terminal_size(stream.fileno()).columns or 80
        color = bool(env.get("FORCE_COLOR")) or (tty and "NO_COLOR" not in env and env.get("TERM") != "dumb")
        return cls(width=width, color=color)

    def style(self, text: str, code: str | None) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and code and text else text


@dataclass
class Cell:
    text: str
    style: str | None = None


@dataclass
class Column:
    header: str
    right: bool = False  # justified right (numbers)
    wrap: bool = True  # may shrink and wrap to fit the width


@dataclass
class Table:
    columns: list[Column]
    title: str | None = None
    edge: bool = False
    rows: list[list[Cell]] = field(default_factory=list)

    def add(self, *cells: str | Cell) -> None:
        self.rows.append([c if isinstance(c, Cell) else Cell(c) for c in cells])

    def render(self, out: Out) -> list[str]:
        widths = [max([cells(c.header), *(cells(r[i].text) for r in self.rows)]) for i, c in enumerate(self.columns)]
        _fit(widths, [c.wrap for c in self.columns], out.width - (2 if self.edge else 0) - 3 * len(widths) + 1)
        total = sum(widths) + 3 * len(widths) - 1 + (2 if self.edge else 0)
        lines = []
        if self.title:
            spare = max(total - cells(self.title), 0)
            lines.append(" " * (spare // 2) + out.style(self.title, ITALIC) + " " * (spare - spare // 2))
        if self.edge:
            lines.append("┏" + "┳".join("━" * (w + 2) for w in widths) + "┓")
        lines += self._row([Cell(c.header, BOLD) for c in self.columns], widths, "┃", out)
        lines.append(_edge("┡", "╇", "┩", widths, "━") if self.edge else "╇".join("━" * (w + 2) for w in widths))
        for row in self.rows:
            lines += self._row(row, widths, "│", out)
        if self.edge:
            lines.append(_edge("└", "┴", "┘", widths, "─"))
        return lines

    def _row(self, row: Sequence[Cell], widths: list[int], bar: str, out: Out) -> list[str]:
        wrapped = [_wrap(cell.text, w) for cell, w in zip(row, widths, strict=True)]
        lines = []
        for n in range(max(len(w) for w in wrapped)):
            parts = []
            for cell, column, width, text in zip(row, self.columns, widths, wrapped, strict=True):
                piece = text[n] if n < len(text) else ""
                pad = " " * (width - cells(piece))
                styled = out.style(piece, cell.style)
                parts.append(f" {pad}{styled} " if column.right else f" {styled}{pad} ")
            line = bar.join(parts)
            lines.append(f"{bar}{line}{bar}" if self.edge else line)
        return lines


def _edge(left: str, mid: str, right: str, widths: list[int], rule: str) -> str:
    return left + mid.join(rule * (w + 2) for w in widths) + right


def _fit(widths: list[int], wrap: list[bool], room: int) -> None:
    """Shrink the widest wrapping columns, one column at a time, until the table fits `room` (or cannot)."""
    while sum(widths) > room:
        shrinkable = [i for i, w in enumerate(widths) if wrap[i] and w > 1]
        if not shrinkable:
            return
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1


def _wrap(text: str, width: int) -> list[str]:
    if cells(text) <= width:
        return [text]
    import textwrap  # only for a table too wide for its terminal

    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def cells(text: str) -> int:
    """Terminal columns `text` takes (wide East Asian characters take two)."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


# -- what the commands print -----------------------------------------------------------------------------
def bead_table(beads: Sequence[Mapping[str, Any]], out: Out) -> str:
    """Beads (`BeadSummary` as JSON) as a table, or "no beads"."""
    if not beads:
        return out.style("no beads", DIM) + "\n"
    columns = [
        Column("id", wrap=False),
        Column("p", right=True),
        Column("status", wrap=False),
        Column("assignee", wrap=False),
        Column("title"),
    ]
    table = Table(columns)
    for b in beads:
        status = b["status"]
        table.add(b["id"], str(b["priority"]), Cell(status, STATUS_STYLE.get(status)), b["assignee"] or "", b["title"])
    return _text(table.render(out))


def status_text(data: Mapping[str, Any], out: Out) -> str:
    """The town status as `gastown status --json` gives it (status, budgets, usage, model errors), for people."""
    lines = []
    estop = data["estop"]
    if estop:
        lines.append(f"{out.style('EMERGENCY STOP', RED)} by {estop.get('by')}: {estop.get('reason')} (`gastown thaw`)")
    lines.append(
        f"{out.style('town ', DIM)}{out.style(data['town'], BOLD)}{out.style('  prefix ' + data['prefix'], DIM)}"
    )
    beads = Table([Column("status"), Column("count", right=True)], title="beads")
    for name, n in sorted(data["beads_by_status"].items()):
        beads.add(Cell(name, STATUS_STYLE.get(name)), str(n))
    beads.add(Cell("ready", BOLD), str(data["ready"]))
    agents = Table([Column("role"), Column("count", right=True)], title="agents")
    for name, n in sorted(data["agents_by_role"].items()):
        agents.add(name, str(n))
    agents.add(Cell("active", BOLD), str(data["agents_active"]))
    agents.add(Cell("pending nudges", BOLD), str(data["pending_nudges"]))
    lines += ["", *beads.render(out), "", *agents.render(out)]
    if data["budgets"]:
        columns = ["budget", "tokens spent / limit", "USD spent / limit", "exhausted"]
        budgets = Table([Column(c) for c in columns], title="budgets", edge=True)
        for b in data["budgets"]:
            budgets.add(
                f"{b['scope']} {b['name']}",
                f"{b['tokens_spent']:,} / {_num(b['token_limit'])}",
                f"${b['usd_spent']:.4f} / {_num(b['usd_limit'], '$')}",
                "yes" if b["exhausted"] else "",
            )
        lines += budgets.render(out)
    usage = data["usage"]
    if usage:
        spent = sum(u["cost_usd"] for u in usage)
        kinds = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens")
        tokens = sum(u[k] for u in usage for k in kinds)
        lines.append(f"model spend: {tokens:,} tokens, ${spent:.4f} over {len(usage)} agents (`gastown usage`)")
    for f in data["model_errors"]:
        text = error_text(f["failures"], f["status"], f["error"])
        lines.append(f"{out.style('model calls failing', RED)} {f['agent']}: {text}")
    return _text(lines)


def error_text(failures: int, status: int, error: str) -> str:
    """A failing agent's model errors in one short line."""
    text = f"{failures}x {status}: {error}"
    return text if len(text) <= 100 else text[:97] + "..."


def _num(value: float | int | None, unit: str = "") -> str:
    return "no limit" if value is None else f"{unit}{value:,}"


def _text(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
