"""What `llmsm watch` does to the selected session: h hand it off, b set or raise its budget,
n keep a note for its project, ? the keys. Shared by the session list and the session screen
(each says which session is selected: `current_session()`)."""

from __future__ import annotations

import asyncio
import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from llmsm.cli.format import human_tokens

if TYPE_CHECKING:  # pragma: no cover
    from llmsm.analytics.dashboard import SessionRow

KEYS = (
    ("↑ ↓  j k", "move (the mouse too: a click selects, a second click opens)"),
    ("Enter", "open the session's screen"),
    ("Esc", "back; clear the filter"),
    ("/", "filter by project, client, label or status (field:word for one field)"),
    ("s", "sort: health, cost, burn, last activity (or click a column title)"),
    ("h", "hand the session off: its brief; then w writes it to a file, s starts the fresh session"),
    ("b", "set or raise the session's budget: dollars (5, $2.50) or tokens (500k, 2M)"),
    ("n", "keep a note for the session's project (llmsm memory)"),
    ("?", "these keys"),
    ("q", "quit (Ctrl-C too)"),
)


class KeysScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,enter", "dismiss", "close")]
    DEFAULT_CSS = """
    KeysScreen { align: center middle; }
    KeysScreen > Static { width: auto; max-width: 100%; height: auto; border: round $accent; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        t = Text("llmsm watch: keys\n\n", style="bold")
        for key, what in KEYS:
            t.append(f"{key:>9}  ", style="bold cyan")
            t.append(what + "\n")
        t.append("\nAny of Esc, q, ? closes this.", style="dim")
        yield Static(t)


class AskScreen(ModalScreen[str | None]):
    """One line of input: Enter gives it, Esc gives None."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = """
    AskScreen { align: center middle; }
    AskScreen > Vertical { width: 90%; max-width: 100; height: auto; border: round $accent; padding: 0 1; }
    AskScreen Static { height: auto; }
    """

    def __init__(self, title: str, hint: str, *, placeholder: str = "") -> None:
        super().__init__()
        self._title, self._hint, self._placeholder = title, hint, placeholder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self._title, style="bold"))
            yield Static(Text(self._hint, style="dim"))
            yield Input(placeholder=self._placeholder, id="answer")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


@contextmanager
def suspended(app: Any) -> Iterator[bool]:
    """The app suspended (the terminal given back) while the block runs; where it cannot be
    (headless, Textual web) the block runs anyway. Yields whether it was."""
    from textual.app import SuspendNotSupported

    cm = app.suspend()
    try:
        cm.__enter__()
    except SuspendNotSupported:
        yield False
        return
    try:
        yield True
    finally:
        cm.__exit__(None, None, None)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:40] or "session"


def brief_path(name: str, directory: Path | None = None) -> Path:
    """handoff-NAME.md in `directory` (default: the working one), -2, -3... when taken."""
    directory = Path.cwd() if directory is None else directory
    base = f"handoff-{_safe_name(name)}"
    path = directory / f"{base}.md"
    n = 2
    while path.exists():
        path = directory / f"{base}-{n}.md"
        n += 1
    return path


class HandoffScreen(ModalScreen[None]):
    """The handoff brief of one session: w writes it to a file, s starts the fresh session."""

    BINDINGS = [
        Binding("escape,q", "dismiss", "close"),
        Binding("w", "write", "write to a file"),
        Binding("s", "start", "start the fresh session"),
    ]
    DEFAULT_CSS = """
    HandoffScreen { align: center middle; }
    HandoffScreen > Vertical { width: 95%; height: 90%; border: round $accent; }
    HandoffScreen #brief-title { height: auto; padding: 0 1; }
    HandoffScreen VerticalScroll { height: 1fr; padding: 0 1; }
    """

    def __init__(self, handoff: Any, brief: Any) -> None:
        super().__init__()
        self.handoff, self.brief = handoff, brief
        self.written: Path | None = None
        self.exit_code: int | None = None

    def compose(self) -> ComposeResult:
        t = Text(f"handoff of {self.handoff.name}", style="bold")
        t.append(f"  {human_tokens(self.brief.tokens)} tokens of brief · w write it to a file · s start the fresh "
                 "session · Esc close", style="dim")
        with Vertical():
            yield Static(t, id="brief-title")
            with VerticalScroll():
                yield Static(Text(self.brief.text), id="brief")

    def action_write(self) -> None:
        path = brief_path(self.handoff.name)
        try:
            path.write_text(self.brief.text if self.brief.text.endswith("\n") else self.brief.text + "\n")
        except OSError as exc:
            self.app.notify(f"cannot write {path}: {exc.strerror or exc}", severity="error")
            return
        self.written = path
        self.app.notify(f"brief written to {path}")

    async def action_start(self) -> None:
        import typer

        from llmsm.cli.handoff import start_fresh

        app = self.app
        argv = list(getattr(app, "handoff_command", None) or [])
        try:
            with suspended(app):
                code = start_fresh(self.handoff, self.brief.text, argv, getattr(app, "db_path", None))
        except (typer.Exit, SystemExit) as exc:
            code = getattr(exc, "exit_code", None)
            if code is None:
                code = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1
            self.exit_code = code
            app.notify(f"the fresh session could not start (exit {code}): see the message above the app "
                       "after quitting, or run `llmsm handoff --start`", severity="error", timeout=10)
            return
        self.exit_code = code
        app.notify(f"the fresh session of {self.handoff.name} ended (exit {code})",
                   severity="information" if code == 0 else "warning")
        self.dismiss()
        refresh = getattr(app, "refresh_now", None)
        if refresh is not None:
            await refresh()


class SessionActions:
    """h, b, n and ? for whichever session `current_session()` returns."""

    def current_session(self) -> SessionRow | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _session_or_say(self) -> SessionRow | None:
        row = self.current_session()
        if row is None:
            self.app.notify("no session selected", severity="warning")
        return row

    def action_keys(self) -> None:
        self.app.push_screen(KeysScreen())

    async def action_handoff(self) -> None:
        row = self._session_or_say()
        if row is None:
            return
        app = self.app
        try:
            handoff, brief = await asyncio.to_thread(_load_brief, app.db_path, row.session_id)
        except Exception as exc:  # noqa: BLE001 - a busy database costs the brief, not the app
            app.notify(f"no brief: {exc}", severity="error")
            return
        await app.push_screen(HandoffScreen(handoff, brief))

    def action_budget(self) -> None:
        row = self._session_or_say()
        if row is None:
            return
        b = next((b for b in row.budgets if b["scope"] == "session"), None)
        now = ""
        if b is not None:
            limits = [f"{human_tokens(b['max_tokens'])} tokens" if b.get("max_tokens") else "",
                      f"${float(b['max_usd']):,.2f}" if b.get("max_usd") else ""]
            now = f" (now {' and '.join(x for x in limits if x)}, {b['pct']:.0f}% used)"
        ask = AskScreen(f"budget of session {row.name}{now}",
                        "the limit: dollars (5, $2.50) or tokens with a suffix (500k, 2M); a token limit leaves a "
                        "dollar limit as it is, and the other way round", placeholder="5 or 500k")

        def done(answer: str | None) -> None:
            if answer is not None and answer.strip():
                self.app.run_worker(self._set_budget(row, answer.strip()), group="action")

        self.app.push_screen(ask, done)

    async def _set_budget(self, row: SessionRow, answer: str) -> None:
        from llmsm.analytics.budgets import parse_limit

        app = self.app
        try:
            max_tokens, max_usd = parse_limit(answer)
        except ValueError as exc:
            app.notify(str(exc), severity="error")
            return
        try:
            budget, created, state = await asyncio.to_thread(_set_budget, app.db_path, row.session_id, max_tokens, max_usd)
        except Exception as exc:  # noqa: BLE001 - e.g. the database busy for 5 s
            app.notify(f"budget not set: {exc}", severity="error")
            return
        what = f"{human_tokens(max_tokens)} tokens" if max_tokens is not None else f"${max_usd:,.2f}"
        used = f", {state['pct']:.0f}% used ({state['state']})" if state else ""
        app.notify(f"budget {budget.id} {'set' if created else 'updated'}: session {row.name}, {what}{used}")
        await app.refresh_now()

    def action_note(self) -> None:
        row = self._session_or_say()
        if row is None:
            return
        if not row.project:
            self.app.notify(f"session {row.name} showed no project directory: keep the note with "
                            "`llmsm memory add NOTE --project DIR`", severity="warning")
            return
        ask = AskScreen(f"note for project {row.project}",
                        "kept in llmsm's memory for the project (llmsm memory list; assistants read it through "
                        "llmsm mcp); secrets are scrubbed", placeholder="e.g. the tests need LLMSM_DB unset")

        def done(answer: str | None) -> None:
            if answer is not None and answer.strip():
                self.app.run_worker(self._add_note(row, answer.strip()), group="action")

        self.app.push_screen(ask, done)

    async def _add_note(self, row: SessionRow, text: str) -> None:
        from llmsm.analytics.memory import add_note

        app = self.app
        try:
            note = await asyncio.to_thread(add_note, app.db_path, text, row.project, source="watch",
                                           session_id=row.session_id)
        except Exception as exc:  # noqa: BLE001 - NoteError, StoreError
            app.notify(f"note not kept: {exc}", severity="error")
            return
        app.notify(f"note {note['id']} kept for {note['project']}")


def _load_brief(db_path: Path, session_id: str) -> tuple[Any, Any]:
    from llmsm.analytics.handoff import compose_brief, load_handoff
    from llmsm.analytics.store import open_db

    with open_db(db_path, timeout=2.0) as con:
        h = load_handoff(con, session_id)
    return h, compose_brief(h)


def _set_budget(db_path: Path, session_id: str, max_tokens: int | None, max_usd: float | None):
    from llmsm.analytics import budgets
    from llmsm.analytics.store import open_db

    with open_db(db_path, write=True, timeout=5.0) as con:
        budget, created = budgets.set_budget(con, "session", session_id, max_tokens=max_tokens, max_usd=max_usd)
        state = next((r for r in budgets.status(con) if r["id"] == budget.id), None)
    return budget, created, state
