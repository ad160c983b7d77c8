"""`llmsm memory add|list|search|rm`: the notes the assistants keep through `llmsm mcp`
(remember / recall), from the terminal. The work is analytics/memory.py's."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from llmsm.cli.common import DbOption, JsonOption, console, fail, print_json, resolve_db

memory_app = typer.Typer(
    help="Notes kept for a project, shared with the assistants (llmsm mcp: remember, recall, search).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ProjectOption = Annotated[
    str | None,
    typer.Option("--project", "-p", metavar="DIR|NAME",
                 help="The project: a directory (its git root counts) or a bare name (every project of that name). "
                      "Default: the current directory's project.", show_default=False),
]


def register(app: typer.Typer) -> None:
    app.add_typer(memory_app, name="memory")


def _errors():
    from llmsm.analytics.memory import NoteError
    from llmsm.analytics.store import StoreError

    return NoteError, StoreError


def _when(value: Any) -> str:
    if not isinstance(value, datetime):
        return ""
    return value.astimezone().strftime("%Y-%m-%d %H:%M")


def _print_notes(notes: list[dict[str, Any]], *, with_project: bool) -> None:
    from rich.table import Table

    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    table.add_column("id", no_wrap=True)
    table.add_column("when", no_wrap=True)
    if with_project:
        table.add_column("project", overflow="fold")
    table.add_column("note", overflow="fold")
    for n in notes:
        cells = [n["id"], _when(n["created_at"])]
        if with_project:
            cells.append(n["project"])
        cells.append(n["note"])
        table.add_row(*cells)
    console.print(table)


@memory_app.command("add")
def add(
    note: Annotated[str, typer.Argument(help="The note (quote it).", show_default=False)],
    project: ProjectOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Keep a note for a project: a lesson, a decision, a pitfall. Secrets in it are redacted."""
    from llmsm.analytics.memory import add_note

    NoteError, StoreError = _errors()
    try:
        kept = add_note(resolve_db(db), note, project, source="cli")
    except (NoteError, StoreError) as exc:
        fail(str(exc))
    if as_json:
        print_json(kept)
        return
    console.print(f"kept note {kept['id']} for {kept['project']}", highlight=False, soft_wrap=True)


@memory_app.command("list")
def list_(
    project: ProjectOption = None,
    all_projects: Annotated[bool, typer.Option("--all", "-a", help="The notes of every project.")] = False,
    query: Annotated[str | None, typer.Option("--grep", "-g", metavar="WORDS", help="Only notes holding every word (any case).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=200, help="Most notes shown (the newest).")] = 50,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The notes of the current directory's project (or --project, or --all), newest first."""
    from llmsm.analytics.memory import list_notes, resolve_project

    if all_projects and project:
        fail("--all and --project do not go together", 2)
    NoteError, StoreError = _errors()
    try:
        notes = list_notes(resolve_db(db), project, query, limit, all_projects=all_projects)
    except (NoteError, StoreError) as exc:
        fail(str(exc))
    if as_json:
        print_json(notes)
        return
    if not notes:
        where = "any project" if all_projects else resolve_project(project)
        console.print(f"no notes for {where} (llmsm memory add \"...\")", style="dim", highlight=False, soft_wrap=True)
        return
    _print_notes(notes, with_project=all_projects or bool(project))


@memory_app.command("search")
def search_(
    query: Annotated[str, typer.Argument(help="Words to find (all of them, any case).", show_default=False)],
    project: Annotated[str | None, typer.Option("--project", "-p", metavar="DIR|NAME",
                                                help="Only this project's sessions and notes (default: every project).",
                                                show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=200, help="Most results.")] = 20,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Past sessions and notes that hold every word of QUERY, newest first.

    Sessions match by what their requests showed (goal, asks, files, commands, the assistant's last text), one result per session; notes by their text. Each with a snippet and its session id.
    """
    from llmsm.analytics.memory import search

    NoteError, StoreError = _errors()
    try:
        results = search(resolve_db(db), query, project=project, limit=limit)
    except (NoteError, StoreError) as exc:
        fail(str(exc))
    if as_json:
        print_json(results)
        return
    if not results:
        console.print(f"nothing found for {query!r}", style="dim", highlight=False)
        return
    from rich.table import Table

    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    table.add_column("when", no_wrap=True)
    table.add_column("what", no_wrap=True, overflow="ellipsis", max_width=40)
    table.add_column("field", no_wrap=True)
    table.add_column("snippet", overflow="fold")
    for r in results:
        if r["kind"] == "note":
            what = f"note {r['note_id']}"
        else:
            what = f"{r['label']} {r['session_id']}" if r["label"] else r["session_id"]
        table.add_row(_when(r["at"]), what, r["field"], r["snippet"])
    console.print(table)


@memory_app.command("rm")
def rm(
    note_id: Annotated[str, typer.Argument(metavar="ID", help="The note's id (or its first 4 characters or more).",
                                           show_default=False)],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove a note."""
    from llmsm.analytics.memory import remove_note

    NoteError, StoreError = _errors()
    try:
        gone = remove_note(resolve_db(db), note_id)
    except (NoteError, StoreError) as exc:
        fail(str(exc))
    if as_json:
        print_json(gone)
        return
    console.print(f"removed note {gone['id']} ({gone['project']}): {gone['note']}", highlight=False, soft_wrap=True)

