"""The session list of `llmsm watch`: a fixed title row over rows that scroll, one per session,
a cursor row, keyboard and mouse.

Drawn with Textual's line API, each row's line kept until one of its cells changes. A refresh
every second changes a few cells (ages, burn); re-rendering only those rows keeps it at a few
milliseconds. (Textual's DataTable renders every visible cell again when any cell changes:
~140 ms per refresh for 20 rows here.)
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.events import Click
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

PAD = 1  # blank cells on each side of a column


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: Text
    width: int
    right: bool = False  # numbers: right-aligned


class SessionList(ScrollView, can_focus=True):
    """Rows keyed by session id; `cursor_row` is an index into the rows as shown."""

    COMPONENT_CLASSES = {"session-list--header", "session-list--cursor"}
    DEFAULT_CSS = """
    SessionList {
        background: $surface;
        color: $foreground;
        overflow-x: hidden;
        overflow-y: auto;
        &:focus { background-tint: $foreground 5%; }
        &:focus > .session-list--header { background-tint: $foreground 5%; }
        & > .session-list--header { background: $panel; color: $foreground; text-style: bold; }
        &:ansi > .session-list--header { background: ansi_bright_blue; color: ansi_default; }
        & > .session-list--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
        }
        &:focus > .session-list--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """
    BINDINGS = [
        Binding("up,k", "cursor_up", "up", show=False),
        Binding("down,j", "cursor_down", "down", show=False),
        Binding("pageup", "page_up", "page up", show=False),
        Binding("pagedown", "page_down", "page down", show=False),
        Binding("home", "first", "first", show=False),
        Binding("end", "last", "last", show=False),
        Binding("enter", "select", "open", show=False),
    ]

    cursor_row: reactive[int] = reactive(0, always_update=False, repaint=False)

    class RowSelected(Message):
        """Enter on a row, or a click on the cursor row."""

        def __init__(self, session_id: str) -> None:
            super().__init__()
            self.session_id = session_id

    class HeaderSelected(Message):
        """A click on a column's title."""

        def __init__(self, column: str) -> None:
            super().__init__()
            self.column = column

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns: list[Column] = []
        self.keys: list[str] = []  # session ids, in the order shown
        self.cells: dict[str, list[Text]] = {}
        self._lines: dict[tuple[str, bool], Strip] = {}  # (session id, is the cursor row) -> its line
        self._header: Strip | None = None
        self._styles: tuple[Style, Style, Style] | None = None  # base, header, cursor: costly to resolve
        self.renders = 0  # rows rendered since the start: for tests and benchmarks

    # ------------------------------------------------------------------ content

    @property
    def row_count(self) -> int:
        return len(self.keys)

    def set_columns(self, columns: list[Column]) -> None:
        """New columns (or widths): every line is drawn again."""
        self.columns = list(columns)
        self.cells = {}
        self.keys = []
        self._lines.clear()
        self._header = None
        self._resize()
        self.refresh()

    def set_rows(self, rows: dict[str, list[Text]], *, keep: str | None = None) -> None:
        """Show `rows` (session id -> its cells, one per column) in that order. A row whose cells
        are as before keeps its line; the cursor stays on `keep` when it is still shown."""
        changed = [sid for sid, values in rows.items() if self.cells.get(sid) != values]
        for sid in [*changed, *(self.cells.keys() - rows.keys())]:
            self._lines.pop((sid, False), None)
            self._lines.pop((sid, True), None)
        same_order = self.keys == list(rows)
        self.cells = dict(rows)
        if not same_order:
            self.keys = list(rows)
            self._resize()
        before = (self.cursor_row, int(self.scroll_y))
        if keep is not None and keep in self.cells:
            self.move_cursor(row=self.keys.index(keep), animate=False)
        else:
            self.move_cursor(row=min(self.cursor_row, max(0, len(self.keys) - 1)), animate=False)
        if same_order and before == (self.cursor_row, int(self.scroll_y)):
            self._refresh_rows(self.keys.index(sid) for sid in changed)  # the usual refresh: a few lines
        else:
            self.refresh()

    def clear(self) -> None:
        self.set_rows({})

    def selected(self) -> str | None:
        return self.keys[self.cursor_row] if 0 <= self.cursor_row < len(self.keys) else None

    def _resize(self) -> None:
        size = Size(sum(c.width + 2 * PAD for c in self.columns), len(self.keys) + 1)
        if size != self.virtual_size:
            self.virtual_size = size

    def _refresh_rows(self, rows) -> None:
        """Repaint the lines of these rows (indices) where they are on the screen."""
        top, height, width = int(self.scroll_y), self.scrollable_content_region.height, self.size.width
        regions = [Region(0, y, width, 1) for y in (row - top + 1 for row in rows) if 1 <= y < height]
        if regions:
            self.refresh(*regions)

    # ------------------------------------------------------------------ cursor

    def move_cursor(self, *, row: int, animate: bool = False) -> None:
        row = max(0, min(row, len(self.keys) - 1)) if self.keys else 0
        before = (self.cursor_row, int(self.scroll_y))
        self.cursor_row = row
        self.scroll_to_cursor(animate=animate)
        if int(self.scroll_y) == before[1]:
            self._refresh_rows({before[0], row})  # the old cursor line and the new one
        else:
            self.refresh()

    def scroll_to_cursor(self, animate: bool = False) -> None:
        visible = max(1, self.scrollable_content_region.height - 1)  # under the title row
        top = int(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=animate, immediate=True)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=animate, immediate=True)

    def action_cursor_up(self) -> None:
        self.move_cursor(row=self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(row=self.cursor_row + 1)

    def action_page_up(self) -> None:
        self.move_cursor(row=self.cursor_row - max(1, self.scrollable_content_region.height - 1))

    def action_page_down(self) -> None:
        self.move_cursor(row=self.cursor_row + max(1, self.scrollable_content_region.height - 1))

    def action_first(self) -> None:
        self.move_cursor(row=0)

    def action_last(self) -> None:
        self.move_cursor(row=len(self.keys) - 1)

    def action_select(self) -> None:
        sid = self.selected()
        if sid is not None:
            self.post_message(self.RowSelected(sid))

    def on_click(self, event: Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            column = self._column_at(offset.x + int(self.scroll_x))
            if column is not None:
                self.post_message(self.HeaderSelected(column))
            return
        row = int(self.scroll_y) + offset.y - 1
        if 0 <= row < len(self.keys):
            if row == self.cursor_row:
                self.action_select()
            else:
                self.move_cursor(row=row)

    def _column_at(self, x: int) -> str | None:
        for c in self.columns:
            w = c.width + 2 * PAD
            if x < w:
                return c.key
            x -= w
        return None

    # ------------------------------------------------------------------ drawing

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._restyle()

    def _on_focus(self, event) -> None:
        self._restyle()

    def _on_blur(self, event) -> None:
        self._restyle()

    def _restyle(self) -> None:
        """A theme or focus change: every line is drawn again in the new styles."""
        self._styles = None
        self._lines.clear()
        self._header = None
        self.refresh()

    def _resolved(self) -> tuple[Style, Style, Style]:
        if self._styles is None:
            base = self.rich_style
            self._styles = (base, base + self.get_component_rich_style("session-list--header"),
                            base + self.get_component_rich_style("session-list--cursor"))
        return self._styles

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base, header, cursor = self._resolved()
        if y == 0:
            if self._header is None:
                self._header = self._strip([c.title for c in self.columns], header)
            return self._header.crop_extend(int(self.scroll_x), int(self.scroll_x) + width, header)
        row = int(self.scroll_y) + y - 1
        if not 0 <= row < len(self.keys):
            return Strip.blank(width, base)
        sid = self.keys[row]
        key = (sid, row == self.cursor_row)
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = self._strip(self.cells[sid], cursor if key[1] else base)
            self.renders += 1
        return line.crop_extend(int(self.scroll_x), int(self.scroll_x) + width, cursor if key[1] else base)

    def _strip(self, values: list[Text], style: Style) -> Strip:
        """One line: each value fitted to its column (cut with an ellipsis, aligned), padded."""
        line = Text(no_wrap=True, end="")
        pad = " " * PAD
        for column, value in zip(self.columns, values):
            cell = value.copy()
            cell.overflow = "ellipsis"
            cell.align("right" if column.right else "left", column.width)
            line.append(pad)
            line.append_text(cell)
            line.append(pad)
        # The row's style under the cells' own (a status keeps its colour on the cursor row).
        segments = list(Segment.apply_style(line.render(self.app.console), style))
        return Strip(segments, line.cell_len)
