"""`llmsm handoff SESSION`: a brief a fresh session can start from (analytics/handoff.py), and
with --start, that fresh session itself, run the way `llmsm run` runs a command."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from llmsm.cli.common import DbOption, JsonOption, err_console, fail, print_json, resolve_db

# How each client starts an interactive session with a first prompt (the brief comes last).
INTERACTIVE = {
    "claude-code": ["claude"],
    "codex": ["codex"],
    "gemini-cli": ["gemini", "-i"],
}


COMMAND_ENV = "LLMSM_HANDOFF_COMMAND"  # the command a fresh session starts with, instead of the client's


def interactive_argv(client: str | None) -> list[str] | None:
    """The command a fresh session of `client` starts with (the brief is added last): the
    LLMSM_HANDOFF_COMMAND environment variable when set (split like a shell line, run without a
    shell), else the client's interactive form; None when neither is known."""
    override = os.environ.get(COMMAND_ENV, "").strip()
    if override:
        return shlex.split(override)
    base = INTERACTIVE.get(client or "")
    return list(base) if base is not None else None


def register(app: typer.Typer) -> None:
    app.command(
        "handoff",
        context_settings={"allow_extra_args": True},
    )(handoff)


def handoff(
    ctx: typer.Context,
    session: Annotated[str, typer.Argument(help="Session id, a unique prefix of one, or its label; with --start, the COMMAND to run.", show_default=False)],
    goal: Annotated[str | None, typer.Option("--goal", "-g", metavar="TEXT", help="What the next session should do: the brief is written toward it.")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", metavar="N", min=100, help="Longest brief, in tokens (tiktoken): the least important parts go first.")] = 2000,
    summarize: Annotated[bool, typer.Option("--summarize", help="Have a model write the brief (through the running gateway, recorded as session handoff-<id>).")] = False,
    model: Annotated[str | None, typer.Option("--model", "-m", metavar="NAME", help="Model for --summarize (default: a small one of the session's provider).")] = None,
    start: Annotated[bool, typer.Option("--start", help="Start the fresh session with the brief as its prompt, like `llmsm run`, in the old session's project directory.")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write a handoff brief for SESSION: what a fresh session needs to carry on its work.

    From what llmsm saw on the wire (the session's goal, latest requests, files read and changed, commands and their failures, todo list, errors, the assistant's last message, usage and context fill) and, where the client's own transcript is on this machine, its latest compaction summary. Markdown by default; --json for the llmsm.handoff/1 document (everything, plus the brief). The brief leads with --goal and fits --max-tokens by dropping the least important parts first. Secrets are redacted.

    --start runs the fresh session through the gateway as a labelled, recorded session whose parent is SESSION: COMMAND with the brief as its last argument, or without COMMAND the command in LLMSM_HANDOFF_COMMAND when set, else the old session's client (claude, codex, gemini -i).
    """
    argv = list(ctx.args)
    if argv and not start:
        fail(f"unexpected argument {argv[0]!r}: a COMMAND after -- needs --start", 2)
    if start and as_json:
        fail("--json and --start do not go together: the fresh session takes the terminal", 2)
    if model is not None and not summarize:
        fail("--model is for --summarize", 2)

    from llmsm.analytics.handoff import Brief, compose_brief, handoff_json, load_handoff
    from llmsm.analytics.store import DatabaseBusy, DatabaseMissing, StoreError, open_db
    from llmsm.cli.dashboard import resolve_session

    path = resolve_db(db)
    try:
        with open_db(path) as con:
            sid = resolve_session(con, session, None)
            h = load_handoff(con, sid, goal=goal)
    except (DatabaseMissing, DatabaseBusy) as exc:
        fail(str(exc))
    except StoreError as exc:  # e.g. a database of an older llmsm that could not be migrated just now
        fail(f"cannot read session {session!r} from {path}: {exc}")

    summarized_by = None
    if summarize:
        text, summarized_by = _summarize(h, path, max_tokens, model)
        brief = Brief(text=text, max_tokens=max_tokens, model=h.model)
    else:
        brief = compose_brief(h, max_tokens)

    if start:
        raise typer.Exit(start_fresh(h, brief.text, argv, db))
    if as_json:
        print_json(handoff_json(h, brief, summarized_by=summarized_by))
        return
    sys.stdout.write(brief.text if brief.text.endswith("\n") else brief.text + "\n")


def _summarize(h, db_path: Path, max_tokens: int, model: str | None) -> tuple[str, str]:
    from llmsm.analytics.summarize import SummarizeError, summarize
    from llmsm.cli.run import _client_host, _running_gateway

    found = _running_gateway(db_path.absolute())
    if found is None:
        fail(f"--summarize needs the gateway running for {db_path} (start it with `llmsm proxy`, or any `llmsm run`)")
    state, _ = found
    base = f"http://{_client_host(str(state.get('host') or '127.0.0.1'))}:{state['port']}"
    try:
        return summarize(h, base, max_tokens=max_tokens, model=model)
    except SummarizeError as exc:
        fail(str(exc))


def start_fresh(h, brief: str, argv: list[str], db: Path | None) -> int:
    """Run the fresh session of handoff `h` (`llmsm handoff --start`, `llmsm watch`'s h): argv
    (default: interactive_argv) with the brief last, in the old session's directory, as `llmsm run`
    runs it; returns its exit code. fail()s (typer.Exit) when it cannot start."""
    from llmsm.cli.run import _warn, launch

    if not argv:
        base = interactive_argv(h.client)
        if base is None:
            fail(f"session {h.session_id} ran {h.client or 'an unknown client'}, which has no known interactive form: "
                 f"give the command to start, e.g. llmsm handoff {h.session_id} --start -- claude "
                 f"(or set {COMMAND_ENV})", 2)
        argv = base
    cwd = (h.project or {}).get("cwd")
    if cwd and not os.path.isdir(cwd):
        _warn(f"the old session's directory {cwd} is not here; starting in {os.getcwd()}")
        cwd = None
    shown = shlex.join(argv) + f" <handoff brief of {h.session_id}>"
    if err_console.is_terminal:
        err_console.print(f"[dim]llmsm: handing off session {h.session_id} ({len(brief)} characters of brief)[/]", highlight=False)
    return launch([*argv, brief], db=db, parent=h.session_id, cwd=cwd, shown=shown)
