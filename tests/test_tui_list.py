"""The session list of `llmsm watch` (cli/tui/widgets/session_list.py) under Textual's pilot: a
refresh draws again only the rows whose cells changed, the cursor follows its session when rows
reorder and stays visible when it moves past the screen, titles and rows answer the mouse."""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual.app import App, ComposeResult

from llmsm.cli.tui.widgets.session_list import Column, SessionList

COLUMNS = [Column("session", Text("session"), 10), Column("cost", Text("cost"), 6, right=True)]


def rows(n: int, cost_of=lambda i: f"${i}.00") -> dict[str, list[Text]]:
    return {f"s-{i:03d}": [Text(f"s-{i:03d}"), Text(cost_of(i))] for i in range(n)}


class Host(App):
    def __init__(self) -> None:
        super().__init__()
        self.selected: list[str] = []
        self.titles: list[str] = []

    def compose(self) -> ComposeResult:
        yield SessionList(id="list")

    def on_mount(self) -> None:
        self.query_one(SessionList).focus()

    def on_session_list_row_selected(self, event: SessionList.RowSelected) -> None:
        self.selected.append(event.session_id)

    def on_session_list_header_selected(self, event: SessionList.HeaderSelected) -> None:
        self.titles.append(event.column)


def run(coro):
    return asyncio.run(coro)


async def shown(app: Host, pilot, n: int) -> SessionList:
    """The host's list with COLUMNS and n rows, drawn."""
    sl = app.query_one(SessionList)
    sl.set_columns(COLUMNS)
    sl.set_rows(rows(n))
    await pilot.pause()
    return sl


def test_a_refresh_draws_again_only_the_rows_that_changed():
    async def go():
        app = Host()
        async with app.run_test(size=(40, 12)) as pilot:
            sl = await shown(app, pilot, 8)
            assert sl.renders == 8  # every row once
            screen = app.export_screenshot()
            assert "s-007" in screen and "$7.00" in screen

            sl.set_rows(rows(8))  # the same cells: nothing drawn again
            await pilot.pause()
            assert sl.renders == 8
            sl.set_rows(rows(8, lambda i: "$9.99" if i == 3 else f"${i}.00"))
            await pilot.pause()
            assert sl.renders == 9  # only s-003
            assert "$9.99" in app.export_screenshot()

            await pilot.press("down")  # the cursor leaves s-000 for s-001: those two again
            assert sl.renders == 11 and sl.selected() == "s-001"

    run(go())


def test_the_cursor_follows_its_session_and_stays_in_view():
    async def go():
        app = Host()
        async with app.run_test(size=(40, 12)) as pilot:
            sl = await shown(app, pilot, 50)
            sl.move_cursor(row=5)
            reordered = dict(reversed(list(rows(50).items())))
            sl.set_rows(reordered, keep="s-005")
            assert sl.selected() == "s-005" and sl.cursor_row == 44
            await pilot.pause()
            visible = sl.scrollable_content_region.height - 1  # under the title row
            assert sl.scroll_y <= sl.cursor_row < sl.scroll_y + visible
            await pilot.press("home")
            assert sl.cursor_row == 0 and sl.scroll_y == 0
            for _ in range(visible + 3):
                await pilot.press("j")
            assert sl.cursor_row == visible + 3
            assert sl.scroll_y <= sl.cursor_row < sl.scroll_y + visible
            await pilot.press("end")
            assert sl.selected() == "s-000" and sl.scroll_y + visible >= 50
            sl.set_rows(rows(3))  # fewer rows than the cursor's place: the last one
            assert sl.cursor_row == 2

    run(go())


def test_titles_and_rows_answer_the_mouse_and_enter():
    async def go():
        app = Host()
        async with app.run_test(size=(40, 12)) as pilot:
            sl = await shown(app, pilot, 5)
            await pilot.click(SessionList, offset=(14, 0))  # the "cost" title (session is 12 wide)
            await pilot.click(SessionList, offset=(2, 0))
            assert app.titles == ["cost", "session"]
            await pilot.click(SessionList, offset=(2, 3))  # the third row: the cursor goes there
            assert sl.selected() == "s-002" and app.selected == []
            await pilot.click(SessionList, offset=(2, 3))  # on the cursor row: opens it
            assert app.selected == ["s-002"]
            await pilot.press("down", "enter")
            assert app.selected == ["s-002", "s-003"]

    run(go())


def test_no_color_keeps_what_colour_said_readable():
    """NO_COLOR: Textual turns colours into greys (red on the dark background: unreadable), so
    the app's cells say it with attributes instead: red is bold and reversed, other colours bold."""
    from llmsm.cli.tui.app import monochrome

    critical = monochrome(Text("critical", style="bold red"))
    assert critical.plain == "critical" and critical.style.reverse and critical.style.bold and critical.style.color is None
    reason = Text("2 errors: ")
    reason.append("overloaded", style="yellow")
    reason.append(" (529)", style="underline")
    mono = monochrome(reason)
    styles = {mono.plain[s.start:s.end]: s.style for s in mono.spans}
    assert styles["overloaded"].bold and styles["overloaded"].color is None and not styles["overloaded"].reverse
    assert styles[" (529)"].underline
    assert monochrome(Text("plain")) == Text("plain")
