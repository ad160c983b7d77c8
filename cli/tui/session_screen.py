"""One session's screen in `llmsm watch` (Enter on a row): charts of context fill per turn and
of tokens or cost per turn, the digest (goal, files, commands, todos, collisions), and the
story `llmsm show` tells (timeline, errors, budgets, health reasons with their advice)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from llmsm.cli.dashboard import STATE_STYLE, _local, fill_style, render_session
from llmsm.cli.format import human_tokens, human_usd, short_path
from llmsm.cli.tui.actions import SessionActions
from llmsm.cli.tui.widgets.chart import ChartWidget, bar_chart, pct_label

if TYPE_CHECKING:  # pragma: no cover
    from llmsm.analytics.dashboard import SessionRow, SessionView

WIDE = 150  # from this many columns on, two columns side by side
TODO_MARK = {"completed": "[x]", "in_progress": "[>]", "pending": "[ ]"}


def context_chart(turns: list[dict[str, Any]], width: int, height: int) -> Text:
    """Context fill per main turn against the window (the dashed line), ▲ under compactions."""
    fills = [t["fill"] for t in turns]
    known = [f for f in fills if f is not None]
    title = Text("context per turn", style="bold")
    if not known:
        title.append("  no turn with usage and a known window yet", style="dim")
        return title
    window = next((t["context_window"] for t in reversed(turns) if t["context_window"]), None)
    points = {i for i, t in enumerate(turns) if t["compaction"]}
    title.append(f"  now {known[-1]:.0%}", style="dim")
    if window:
        title.append(f" of {human_tokens(window)}", style="dim")
    title.append("  ╌ window", style="dim")
    if points:
        title.append(f"  ▲ {len(points)} compaction{'s' if len(points) != 1 else ''}", style="magenta")
    title.append(f"  ({len(turns)} turns)", style="dim")
    title.truncate(width, overflow="ellipsis")
    rows = max(3, height - 4)
    chart = bar_chart(fills, width=width, height=rows, top=max(1.0, max(known)), label=pct_label, style=fill_style,
                      line_at=1.0, marks=points or None,
                      start=turns[0]["started_at"], end=turns[-1]["started_at"])
    return Text("\n").join([title, chart])


def spend_chart(spend: list[dict[str, Any]], width: int, height: int) -> Text:
    """Cost per turn where prices are known, else tokens per turn (subagents' turns included)."""
    priced = [s["cost_usd"] for s in spend if s["cost_usd"] is not None]
    if priced:
        values = [s["cost_usd"] for s in spend]
        title = Text("cost per turn", style="bold")
        title.append(f"  {len(spend)} turns · {human_usd(sum(priced))}", style="dim")
        if len(priced) < len(spend):
            title.append(f" ({len(spend) - len(priced)} not priced: gaps)", style="yellow")
        label = human_usd
    else:
        values = [float(s["tokens"]) for s in spend]
        title = Text("tokens per turn", style="bold")
        title.append(f"  {len(spend)} turns · {human_tokens(sum(s['tokens'] for s in spend))}", style="dim")
        label = human_tokens
    known = [v for v in values if v is not None]
    if not known:
        title.append("  nothing yet", style="dim")
        return title
    title.truncate(width, overflow="ellipsis")
    rows = max(3, height - 3)
    chart = bar_chart(values, width=width, height=rows, top=max(known), label=label, style="cyan",
                      start=spend[0]["started_at"], end=spend[-1]["started_at"])
    return Text("\n").join([title, chart])


def digest_block(view: SessionView, width: int) -> Group:
    """Goal, files, commands, todos, collisions, from the session's digest (scrubbed)."""
    d = view.digest or {}
    at = view.detail.at
    out: list[Any] = []
    goal = d.get("goal")
    line = Text("goal  ", style="bold")
    line.append(goal or "not seen", style="" if goal else "dim")
    out.append(line)
    project = (d.get("project") or {}).get("cwd") or view.detail.row.project
    if project:
        line = Text("project  ", style="bold")
        line.append(project)
        branch = (d.get("project") or {}).get("branch")
        if branch:
            line.append(f"  ({branch})", style="dim")
        out.append(line)
    files = list(d.get("files") or [])
    out.append(Text(f"\nfiles ({len(files)})" if files else "\nfiles: none seen", style="bold" if files else "dim"))
    for f in files[-8:][::-1]:
        t = Text(f"  {f['path']}", no_wrap=True, overflow="ellipsis")
        t.append(f"  {', '.join(f.get('actions') or [f.get('action', '')])}", style="dim")
        out.append(t)
    commands = list(d.get("commands") or [])
    out.append(Text(f"\ncommands ({len(commands)})" if commands else "\ncommands: none seen",
                    style="bold" if commands else "dim"))
    for c in commands[-6:]:
        t = Text("  $ ", style="dim")
        t.append(c["command"].splitlines()[0][: max(10, width - 14)], style="red" if c.get("failed") else "")
        if c.get("failed"):
            t.append("  failed", style="red")
        out.append(t)
    todos = d.get("todos")
    if todos:
        done = sum(1 for t in todos if t["status"] == "completed")
        out.append(Text(f"\ntodos ({done} of {len(todos)} done)", style="bold"))
        for item in todos[:10]:
            style = "dim" if item["status"] == "completed" else "bold" if item["status"] == "in_progress" else ""
            out.append(Text(f"  {TODO_MARK.get(item['status'], '[ ]')} {item['content']}", style=style))
    if view.conflicts:
        out.append(Text(f"\ncollisions ({len(view.conflicts)})", style="bold yellow"))
        for c in view.conflicts[:6]:
            who = c.get("other_label") or (c.get("other_session") or "")[:12]
            t = Text(f"  {c['path']}", style="yellow")
            t.append(f"  also edited by {who}", style="")
            if c.get("other_at") is not None:
                t.append(f" at {_local(c['other_at'], at)}", style="dim")
            out.append(t)
    else:
        out.append(Text("\ncollisions: none", style="dim"))
    out.extend(quota_block(view))
    return Group(*out)


def quota_block(view: SessionView) -> list[Any]:
    """The session's share of each quota window it used (as `llmsm quota --by session`)."""
    if not view.quota_share:
        return []
    out: list[Any] = [Text("\nquota share", style="bold")]
    for q in view.quota_share:
        t = Text(f"  {q['window']} ({q['account'] or 'no account'}): ")
        t.append(f"{q['share_pct']:.1f}{'~' if q['estimated'] else ''}", style="bold")
        t.append(f" of its {q['used_pct']:.0f}% used")
        if q["estimated"]:
            t.append("  ~ an estimate: requests overlapped another session's", style="dim")
        out.append(t)
    return out


class SessionScreen(SessionActions, Screen):
    """One session, live: Esc goes back to the list."""

    BINDINGS = [
        Binding("escape", "back", "back"),
        Binding("q", "app.quit", "quit"),
        Binding("h", "handoff", "handoff"),
        Binding("b", "budget", "budget"),
        Binding("n", "note", "note"),
        Binding("question_mark", "keys", "keys", key_display="?"),
        Binding("j", "scroll_down", "down", show=False),
        Binding("k", "scroll_up", "up", show=False),
    ]
    DEFAULT_CSS = """
    SessionScreen #title { height: 1; padding: 0 1; }
    SessionScreen #cols { height: auto; }
    SessionScreen #charts, SessionScreen #story { width: 1fr; height: auto; padding: 0 1; }
    SessionScreen #ctx-chart { height: 14; }
    SessionScreen #spend-chart { height: 9; margin-top: 1; }
    SessionScreen #digest, SessionScreen #story-text { height: auto; }
    SessionScreen #digest { margin-top: 1; }
    SessionScreen.narrow #cols { layout: vertical; }
    SessionScreen.narrow #charts, SessionScreen.narrow #story { width: 100%; }
    """

    def __init__(self, session_id: str) -> None:
        super().__init__()
        self.session_id = session_id
        self.view: SessionView | None = None
        self.note: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text(f"session {self.session_id}: reading…", style="dim"), id="title")
        with VerticalScroll(id="body"):
            with Horizontal(id="cols"):
                with Vertical(id="charts"):
                    yield ChartWidget(id="ctx-chart")
                    yield ChartWidget(id="spend-chart")
                    yield Static(id="digest")
                with Vertical(id="story"):
                    yield Static(id="story-text")
        yield Footer()

    async def on_mount(self) -> None:
        self._set_narrow()
        self.query_one("#body").focus()
        await self.refresh_view()

    def on_resize(self) -> None:
        self._set_narrow()
        self.draw()

    def _set_narrow(self) -> None:
        self.set_class(self.app.size.width < WIDE, "narrow")

    async def refresh_view(self) -> None:
        """Read the session again (in a thread; the database is opened and closed for it)."""
        from llmsm.analytics.dashboard import read_session_view
        from llmsm.analytics.store import DatabaseBusy, StoreError

        app = self.app
        try:
            view = await asyncio.to_thread(read_session_view, app.db_path, self.session_id, at=app.at)
            self.note = None
        except DatabaseBusy:
            self.note = "db busy"
            view = self.view
        except StoreError as exc:
            self.note = str(exc)
            view = self.view
        if view is not None:
            self.view = view
        self.draw()

    def current_session(self) -> SessionRow | None:
        return self.view.detail.row if self.view is not None else None

    def draw(self) -> None:
        from textual.css.query import NoMatches

        try:
            title = self.query_one("#title", Static)
        except NoMatches:  # closed while it was being read
            return
        view = self.view
        if view is None:
            title.update(Text(f"session {self.session_id}: {self.note or 'no requests'}", style="dim"))
            return
        row = view.detail.row
        width = self.app.size.width
        col = width - 4 if width < WIDE else width // 2 - 3
        t = Text(row.name, style="bold")
        if row.label:
            t.append(f"  {row.session_id}", style="dim")
        t.append(f"  {row.state}", style=STATE_STYLE.get(row.state, "") or "")
        t.append(f"  {row.status} {row.score}", style={"critical": "bold red", "degraded": "yellow"}.get(row.status, "green"))
        if row.project:
            t.append(f"  {short_path(row.project)}")
        if self.note:
            t.append(f"  [{self.note}]", style="reverse yellow")
        t.append("  Esc back", style="dim")
        t.truncate(max(1, width - 2), overflow="ellipsis")
        title.update(t)
        turns, spend = view.turns, view.spend
        self.query_one("#ctx-chart", ChartWidget).set_draw(lambda w, h: context_chart(turns, w, h))
        self.query_one("#spend-chart", ChartWidget).set_draw(lambda w, h: spend_chart(spend, w, h))
        self.query_one("#digest", Static).update(digest_block(view, col))
        self.query_one("#story-text", Static).update(render_session(view.detail, width=col, live=app_live(self.app)))

    def action_back(self) -> None:
        self.app.pop_screen()


def app_live(app: Any) -> bool:
    return getattr(app, "at", None) is None
