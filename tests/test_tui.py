"""`llmsm watch` as a Textual app, driven by Textual's pilot over a database the real gateway
wrote: a Claude Code session (its digest: project, files, commands, todos) and an SDK session.
Navigation, sort, filter, the session screen and its charts, and the actions: a budget really
set in the database, a note really kept, a handoff that really runs a child command."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

import anthropic
import pytest

from llmsm.cli.tui.app import WatchApp
from llmsm.analytics.dashboard import read_session_view
from llmsm.cli.tui.session_screen import SessionScreen, context_chart, quota_block
from tests.conftest import TEST_KEYS, Gateway
from tests.test_digest_gateway import _claude_code_session

SIZE = (160, 45)


@pytest.fixture(scope="module")
def gw(upstream, tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("tui"), upstream.url).start()
    cc = _claude_code_session(g, TEST_KEYS["anthropic"])
    label = f"calm-{uuid.uuid4().hex[:6]}"
    sdk = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{g.url}/anthropic", max_retries=0,
                              default_headers={"x-llmsm-session": label})
    history: list[dict] = []
    reset = int(time.time()) + 7200  # a new 5-hour window: the SDK session's responses are all of it
    for i, util in enumerate(("0.30", "0.36", "0.40")):
        history = history + [{"role": "user", "content": f"step {i}"}]
        sdk.messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=history,
                            extra_headers={"x-fake": f"util={util},reset={reset}"})
        history.append({"role": "assistant", "content": "ok"})
    g.wait_rows(3, f"session_id = '{label}'")
    yield g, cc, label
    g.stop()


def run(coro):
    return asyncio.run(coro)


async def settle(app, pilot, until=lambda: True, tries: int = 100) -> None:
    """Let the app work (threads, workers) until `until()` holds."""
    for _ in range(tries):
        await pilot.pause()
        await app.workers.wait_for_complete()
        if until():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the app did not get there")


def test_list_navigation_sort_filter_and_the_session_screen(gw):
    g, cc, label = gw

    async def go():
        app = WatchApp(g.db)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot, lambda: len(app.rows) == 2)
            ids = [r.session_id for r in app.rows]
            assert set(ids) == {cc, label}
            assert app.selected_id() == ids[0]
            await pilot.press("j")
            assert app.selected_id() == ids[1]
            await pilot.press("k")
            assert app.selected_id() == ids[0]
            await pilot.press("down")
            assert app.selected_id() == ids[1]

            await pilot.press("s")  # health -> cost
            assert app.sort == "cost"
            costs = [r.cost_usd or 0 for r in app.rows]
            assert costs == sorted(costs, reverse=True)
            await pilot.press("s", "s", "s")
            assert app.sort == "health"
            titles = app.query_one("#sessions")  # a click on the cost column's title sorts by it
            x = 0
            for column in titles.columns:
                if column.key == "cost":
                    break
                x += column.width + 2
            else:
                raise AssertionError("no cost column")
            await pilot.click("#sessions", offset=(x + 1, 0))
            assert app.sort == "cost"
            await pilot.press("s", "s", "s")  # cost -> burn -> last -> health
            assert app.sort == "health"

            await pilot.press("slash", *"shop")  # the Claude Code session's project
            await settle(app, pilot, lambda: len(app.rows) == 1)
            assert app.rows[0].session_id == cc and app.rows[0].project == "/home/u/shop"
            await pilot.press("enter")  # keeps the filter, back to the table
            assert app.query_text == "shop" and app.focused.id == "sessions"
            await pilot.press("escape")  # clears it
            await settle(app, pilot, lambda: len(app.rows) == 2)
            await pilot.press("slash", *"client:claude-code status:healthy", "enter")
            await settle(app, pilot, lambda: [r.session_id for r in app.rows] == [cc])
            await pilot.press("escape")
            await settle(app, pilot, lambda: len(app.rows) == 2)

            app.query_one("#sessions").move_cursor(row=[r.session_id for r in app.rows].index(cc))
            await pilot.press("enter")
            await settle(app, pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.view is not None)
            view = app.screen.view
            assert view.detail.row.session_id == cc
            assert view.digest["goal"].startswith("Make the CSV importer accept semicolons")
            assert [c["command"] for c in view.digest["commands"]] == ["pytest -q tests/test_importer.py", "ruff check src"]
            # three turns of the work and two side calls (haiku): the dips are no compaction
            assert len(view.turns) == 5 and all(t["fill"] is not None for t in view.turns)
            assert not any(t["compaction"] for t in view.turns)
            shot = app.export_screenshot()
            for text in ("context per turn", "src/importer.py", "detect the delimiter", "timeline"):
                assert text.replace(" ", "&#160;") in shot or text in shot, text
            await pilot.press("escape")
            assert not isinstance(app.screen, SessionScreen)
            await pilot.press("q")
        assert app.return_code in (0, None)

    run(go())


def test_the_session_screen_shows_its_share_of_the_quota_window(gw):
    g, cc, label = gw
    view = read_session_view(g.db, label)
    [window] = view.quota_share
    assert window["window"] == "5h" and window["share_pct"] == 40.0 and not window["estimated"]
    assert "5h" in str(quota_block(view)[1]) and "40.0 of its 40% used" in str(quota_block(view)[1])
    assert read_session_view(g.db, cc).quota_share == []  # its window was reset since: none of the new one


def test_context_chart_marks_the_window_and_the_compactions():
    from datetime import datetime, timedelta, timezone

    t0 = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
    turns = [{"started_at": t0 + timedelta(minutes=i), "model": "m", "prompt_tokens": 0, "context_window": 200_000,
              "fill": f, "compaction": i == 3} for i, f in enumerate([0.2, 0.5, 0.9, 0.1, 0.3])]
    text = context_chart(turns, 64, 12).plain
    lines = text.splitlines()
    assert "▲ 1 compaction" in lines[0] and "of 200k" in lines[0]
    assert "╌" in lines[1] and "100% ┤" in text and "0% ┤" in text
    mark_line = next(ln for ln in lines if "▲" in ln and "compaction" not in ln)
    bars = lines[-3]  # the 0% row: one column per turn
    assert mark_line.index("▲") == bars.index("┤") + 1 + 3  # under the fourth turn
    assert all(len(ln) <= 64 for ln in lines)


def test_budget_note_and_handoff_actions(gw, tmp_path, monkeypatch):
    g, cc, label = gw
    out = tmp_path / "child.json"
    child = [sys.executable, "-c",
             f"import json, os, sys; open({str(out)!r}, 'w').write(json.dumps({{'argv': sys.argv[1:], "
             f"'session': os.environ.get('LLMSM_SESSION')}}))"]
    monkeypatch.chdir(tmp_path)

    async def go() -> str:
        app = WatchApp(g.db, handoff_command=child)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot, lambda: len(app.rows) == 2)
            app.query_one("#sessions").move_cursor(row=[r.session_id for r in app.rows].index(cc))

            await pilot.press("b", *"500k", "enter")
            await settle(app, pilot, lambda: any(b["scope"] == "session" for b in app.selected_row().budgets))
            await pilot.press("b", *"$2.50", "enter")  # raises the dollar limit, keeps the token one
            await settle(app, pilot, lambda: any(b.get("max_usd") for b in app.selected_row().budgets))
            await pilot.press("b", *"lots", "enter")  # not a limit: said, nothing changes
            await settle(app, pilot)

            await pilot.press("n", *"the importer tests need LANG=C", "enter")
            await settle(app, pilot, lambda: bool(g.query("SELECT * FROM notes")))

            await pilot.press("h")
            await settle(app, pilot, lambda: type(app.screen).__name__ == "HandoffScreen")
            brief = app.screen.brief.text
            assert brief.startswith("# Handoff")
            await pilot.press("w")
            written = app.screen.written
            assert written is not None and written.read_text().strip() == brief.strip()
            await pilot.press("s")  # the fresh session: the child command, with the brief last
            await settle(app, pilot, lambda: out.exists() and type(app.screen).__name__ != "HandoffScreen")
            await pilot.press("q")
        return brief

    brief = run(go())
    rows = g.query(f"SELECT scope, target, max_tokens, max_usd FROM budgets WHERE target = '{cc}'")
    assert rows == [{"scope": "session", "target": cc, "max_tokens": 500_000, "max_usd": 2.5}]
    notes = g.query("SELECT project, note, source, session_id FROM notes")
    assert notes == [{"project": "/home/u/shop", "note": "the importer tests need LANG=C", "source": "watch",
                      "session_id": cc}]
    seen = json.loads(out.read_text())
    assert seen["argv"][-1].strip() == brief.strip() and seen["session"]
    runs = g.query(f"SELECT parent_session FROM runs WHERE session_id = '{seen['session']}'")
    assert runs == [{"parent_session": cc}]
