"""The session list of `llmsm watch`: live, sortable, filterable; Enter opens a session."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.style import Style
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Input, Static

from llmsm.cli.dashboard import (
    EMPTY_HINT,
    STATUS_STYLE,
    _cells,
    _local,
    _quota_lines,
    _Reader,
    fill_bar,
    table_layout,
    totals_line,
)
from llmsm.cli.tui import actions
from llmsm.cli.tui.model import SORT_ORDER, SORTS, sort_for_column, visible
from llmsm.cli.tui.widgets.session_list import Column, SessionList

if TYPE_CHECKING:  # pragma: no cover
    from llmsm.analytics.dashboard import Frame, SessionRow

UTC = timezone.utc
_RIGHT = {"score", "tokens", "cost", "burn", "req", "err", "age", "last"}


class WatchApp(actions.SessionActions, App):
    """`llmsm watch`: one row per session, the most urgent first."""

    TITLE = "llmsm watch"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    Screen { layout: vertical; }
    #header { height: 1; padding: 0 1; }
    #sessions { height: 1fr; }
    #below { height: auto; padding: 0 1; }
    #filter { dock: bottom; display: none; height: 3; }
    #filter.shown { display: block; }
    """
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
        Binding("slash", "filter", "filter", key_display="/"),
        Binding("s", "sort", "sort"),
        Binding("escape", "clear_filter", "clear", show=False),
        Binding("h", "handoff", "handoff"),
        Binding("b", "budget", "budget"),
        Binding("n", "note", "note"),
        Binding("question_mark", "keys", "keys", key_display="?"),
    ]

    def __init__(self, db_path: Path, *, at: datetime | None = None, window: float | None = 60.0,
                 interval: float = 1.0, handoff_command: list[str] | None = None) -> None:
        super().__init__()
        self.db_path = Path(db_path)
        self.at = at
        self.window = window
        self.interval = interval
        self.handoff_command = handoff_command  # None: LLMSM_HANDOFF_COMMAND, else the client's own
        self.reader = _Reader(self.db_path, at, window)
        self.sort = "health"
        self.query_text = ""
        self.rows: list[SessionRow] = []  # as shown
        self._layout_key: tuple | None = None
        self._statics: dict[str, Text] = {}  # what #header and #below show
        self._refreshing = False
        self.refresh_ms = 0.0  # the last refresh: read + table update

    # ---------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield Static(id="header")
        yield SessionList(id="sessions")
        yield Static(id="below")
        yield Input(placeholder="filter: project, client, label or status (field:word); Enter keeps it, Esc clears",
                    id="filter")
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one(SessionList).focus()
        await self.refresh_now()
        if self.at is None:  # --at shows one moment: nothing changes
            self.set_interval(self.interval, self._tick)

    async def _tick(self) -> None:
        if not self._refreshing and self.screen is not None:
            await self.refresh_now()

    async def refresh_now(self) -> None:
        """Read a frame (in a thread: the database is opened and closed for it) and show it."""
        self._refreshing = True
        t0 = time.perf_counter()
        try:
            await asyncio.to_thread(self.reader.refresh)
            self.show_frame()
            refresh = getattr(self.screen, "refresh_view", None)
            if refresh is not None:
                await refresh()
        finally:
            self._refreshing = False
            self.refresh_ms = (time.perf_counter() - t0) * 1000

    def on_resize(self) -> None:
        self.show_frame()

    # ---------------------------------------------------------------- the frame

    @property
    def frame(self) -> Frame | None:
        return self.reader.frame

    def _header(self, width: int) -> Text:
        frame = self.frame
        at = frame.at if frame is not None else datetime.now(UTC)
        compact = width < 120
        t = Text()
        t.append("llmsm watch", style="bold")
        if frame is None or frame.live:
            t.append(f"  {_local(at, datetime.now(UTC))}")
        else:
            t.append(f"  as of {at.astimezone():%Y-%m-%d %H:%M:%S}", style="magenta")
        if frame is not None:
            tot = frame.totals()
            shown = len(self.rows)
            n = f"{shown} of {tot['sessions']}" if shown != tot["sessions"] else str(tot["sessions"])
            scope = "" if compact else (" (all)" if frame.window_minutes is None else f" (last {frame.window_minutes:g} min)")
            t.append(f"  {n} sessions{scope}, {tot['active']} active")
            if tot["critical"]:
                t.append(f"  {tot['critical']} critical", style=STATUS_STYLE["critical"])
            if tot["degraded"]:
                t.append(f"  {tot['degraded']} degraded", style=STATUS_STYLE["degraded"])
        t.append(f"  sort: {self.sort}", style="cyan")
        if self.query_text.strip():
            t.append(f"  filter: {self.query_text.strip()}", style="cyan")
        if self.reader.note:
            t.append(f"  [{self.reader.note}]", style="reverse yellow")
        t.truncate(max(1, width - 2), overflow="ellipsis")
        return t

    def show_frame(self) -> None:
        """Draw the frame: columns chosen for the width (kept while they fit); the list draws
        again only the rows whose cells changed (no flicker) and keeps the cursor on its session."""
        try:
            table = self.query_one(SessionList)
        except Exception:  # not mounted yet
            return
        width = max(20, self.size.width)
        frame = self.frame
        self.rows = visible(frame.sessions, self.sort, self.query_text) if frame is not None else []
        self._update("#header", self._header(width))
        if frame is None or not frame.sessions:
            if self.reader.missing:
                msg = f"no database yet at {self.db_path}: {EMPTY_HINT}"
            elif frame is not None and frame.window_minutes is not None:
                msg = f"no active sessions in the last {frame.window_minutes:g} min: {EMPTY_HINT}; `--all` includes older sessions"
            else:
                msg = f"no sessions recorded yet: {EMPTY_HINT}"
            self._update("#below", Text(msg, style="dim"))
        else:
            lines = [totals_line(frame, width - 2, timing=frame.live)]
            lines += _quota_lines(frame, width - 2)
            self._update("#below", Text("\n").join(lines))

        at = frame.at if frame is not None else datetime.now(UTC)
        wide = width >= 140
        cells = [_cells(r, at, wide) for r in self.rows]
        avail = width - 2  # the scroll bar
        order, natural, reason_width = table_layout(cells or [_EMPTY_CELLS], avail - 2, gap=2)
        widths = {k: (reason_width if k == "reason" else natural[k]) for k, _, _ in order}
        key = tuple((k, widths[k]) for k, _, _ in order)
        if key != self._layout_key:
            columns = []
            for k, title, _ in order:
                if k == "ctx" and natural["ctx"] == 4:
                    title = "ctx"
                label = Text(title)
                if k in SORTS[self.sort][1][:1] or (self.sort != "health" and k == self.sort):
                    label.stylize("underline")
                columns.append(Column(k, label, widths[k], right=k in _RIGHT))
            selected = self.selected_id()
            table.set_columns(columns)
            self._layout_key = key
        else:
            selected = self.selected_id()
        table.set_rows(self._row_cells(cells, order, widths), keep=selected)

    def _update(self, selector: str, text: Text) -> None:
        """A Static's new text, if it is new: an update lays the screen out again."""
        if self.no_color:
            text = monochrome(text)
        if self._statics.get(selector) != text:
            self._statics[selector] = text
            self.query_one(selector, Static).update(text)

    def _row_cells(self, cells: list[dict[str, Any]], order: list, widths: dict[str, int]) -> dict[str, list[Text]]:
        rows: dict[str, list[Text]] = {}
        for r, c in zip(self.rows, cells):
            values = []
            for k, _, _ in order:
                v = c[k]
                if k == "ctx":
                    v = fill_bar(v, widths["ctx"])
                v = v if isinstance(v, Text) else Text(str(v))
                values.append(monochrome(v) if self.no_color else v)
            rows[r.session_id] = values
        return rows

    def selected_id(self) -> str | None:
        try:
            return self.query_one(SessionList).selected()
        except Exception:  # not mounted yet
            return None

    def selected_row(self) -> SessionRow | None:
        sid = self.selected_id()
        return next((r for r in self.rows if r.session_id == sid), None)

    # ---------------------------------------------------------------- keys

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The list's own keys (filter, sort) only on the list."""
        if action in ("filter", "sort", "clear_filter") and len(self.screen_stack) > 1:
            return False
        return True

    def action_sort(self) -> None:
        self.sort = SORT_ORDER[(SORT_ORDER.index(self.sort) + 1) % len(SORT_ORDER)]
        self._layout_key = None
        self.show_frame()
        self.query_one(SessionList).move_cursor(row=0, animate=False)

    def on_session_list_header_selected(self, event: SessionList.HeaderSelected) -> None:
        how = sort_for_column(event.column)
        if how is not None:
            self.sort = how
            self._layout_key = None
            self.show_frame()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.value = self.query_text
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.query_text = event.value
            self.show_frame()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            event.input.remove_class("shown")
            self.query_one(SessionList).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.remove_class("shown")
        if self.query_text:
            self.query_text = ""
            box.value = ""
            self.show_frame()
        self.query_one(SessionList).focus()

    def on_session_list_row_selected(self, event: SessionList.RowSelected) -> None:
        self.open_session(event.session_id)

    def open_session(self, session_id: str) -> None:
        from llmsm.cli.tui.session_screen import SessionScreen

        self.push_screen(SessionScreen(session_id))

    def current_session(self) -> SessionRow | None:
        return self.selected_row()


def monochrome(text: Text) -> Text:
    """`text` for NO_COLOR: what was red is bold and reversed, other colours bold, the rest as
    it was. (Textual's monochrome filter turns colours into greys: red text became a dark grey
    on the dark grey background, next to unreadable.)"""
    def plain(style: str | Style) -> Style:
        style = Style.parse(style) if isinstance(style, str) else style
        if style.color is None and style.bgcolor is None:
            return style
        red = style.color is not None and "red" in style.color.name
        return Style(bold=True, reverse=True if red else None, italic=style.italic, underline=style.underline)

    out = Text(text.plain, style=plain(text.style), justify=text.justify, overflow=text.overflow,
               no_wrap=text.no_wrap, end=text.end)
    for span in text.spans:
        out.stylize(plain(span.style), span.start, span.end)
    return out


_EMPTY_CELLS: dict[str, Any] = {k: "" for k in (
    "session", "project", "status", "score", "ctx", "last", "tokens", "cost", "burn", "req", "err", "model", "age",
    "client", "reason")}
