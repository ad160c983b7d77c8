"""Small bar charts drawn on rich Text (eighth blocks, one column per turn or per group of
turns): the context fill per turn against the window, with the compaction points, and the
tokens or cost of each turn. `ChartWidget` redraws one for its size."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from rich.text import Text
from textual.widget import Widget

BLOCKS = " ▁▂▃▄▅▆▇█"


def _buckets(n: int, columns: int) -> list[range]:
    """Split n items, in order, into at most `columns` consecutive groups."""
    if n <= columns:
        return [range(i, i + 1) for i in range(n)]
    out = []
    for c in range(columns):
        lo, hi = c * n // columns, (c + 1) * n // columns
        out.append(range(lo, max(hi, lo + 1)))
    return out


def bar_chart(
    values: Sequence[float | None],
    *,
    width: int,
    height: int,
    top: float,
    label: Callable[[float], str],
    style: Callable[[float], str] | str = "cyan",
    line_at: float | None = None,
    marks: set[int] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Text:
    """Bars of `values` (None: a gap) scaled to 0..`top` over `height` rows, `width` columns
    wide with the axis (several values per column: the largest). `line_at`: a dashed line at
    that value (the context window) where no bar covers it, a row of its own when it is the
    top; `marks`: indices of values marked with ▲ under the chart (compactions); `start` and
    `end`: the times under the first and last columns."""
    height = max(2, height)
    top = top if top > 0 else 1.0
    labels = {0: label(top), height // 2: label(top / 2), height - 1: label(0)}
    axis = max(len(t) for t in labels.values()) + 2  # "100% ┤"
    cols = max(4, width - axis)
    groups = _buckets(len(values), cols)
    col_values: list[float | None] = []
    col_marks: list[bool] = []
    for g in groups:
        vs = [values[i] for i in g if values[i] is not None]
        col_values.append(max(vs) if vs else None)
        col_marks.append(bool(marks) and any(i in marks for i in g))
    line_row = None
    out = Text(no_wrap=True, overflow="crop")
    if line_at is not None and 0 < line_at <= top:
        line_row = height - round(line_at / top * height)  # the row whose top edge is line_at
        if line_row <= 0:  # the top of the chart: a row of its own above it
            out.append(" " * (axis - 1) + "┼" + "╌" * len(col_values) + "\n", style="dim")
            line_row = None
    step = top / height
    for r in range(height):
        lo = (height - 1 - r) * step
        text = labels.get(r)
        out.append(f"{text:>{axis - 2}} ┤" if text is not None else " " * (axis - 1) + "│", style="dim")
        for v in col_values:
            if v is None:
                out.append(" ")
                continue
            fill = (v - lo) / step
            cell = "█" if fill >= 1 else BLOCKS[max(0, min(8, round(fill * 8)))] if fill > 0 else " "
            if cell == " " and r == line_row:
                out.append("╌", style="dim")
                continue
            out.append(cell, style=style(v) if callable(style) else style)
        out.append("\n")
    if marks:
        out.append(" " * axis)
        for m in col_marks:
            out.append("▲" if m else " ", style="magenta")
        out.append("\n")
    if start is not None and end is not None and col_values:
        first = start.astimezone().strftime("%H:%M")
        last = end.astimezone().strftime("%H:%M")
        gap = max(1, len(col_values) - len(first) - len(last))
        out.append(" " * axis + first + " " * gap + last, style="dim")
    out.rstrip()
    return out


def pct_label(v: float) -> str:
    return f"{v:.0%}"


class ChartWidget(Widget):
    """A chart drawn for the widget's size by `draw(width, height) -> Text`."""

    DEFAULT_CSS = "ChartWidget { height: 10; }"

    def __init__(self, draw: Callable[[int, int], Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._draw = draw

    def set_draw(self, draw: Callable[[int, int], Any] | None) -> None:
        self._draw = draw
        self.refresh()

    def render(self) -> Any:
        if self._draw is None:
            return Text("")
        return self._draw(self.size.width, self.size.height)
