"""`llmsm import claude-code` and `llmsm import codex`: assistants' own logs as historical rows.

The work is in `llmsm.analytics.transcripts` (shared, incremental) and its format modules
`transcripts_claude` and `transcripts_codex`; this module parses options, shows a progress bar
on a terminal and prints the summary (or --json). See docs/reports.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from llmsm.cli.common import DbOption, JsonOption, console, err_console, fail, print_json, resolve_db

FullOption = Annotated[
    bool,
    typer.Option("--full", help="Read every file from the start, not only what was appended since the last import."),
]


def register(app: typer.Typer) -> None:
    import_app = typer.Typer(
        name="import",
        help="Bring in usage recorded before llmsm ran, or without it.",
        no_args_is_help=True,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    import_app.command(
        "claude-code",
        help="Import Claude Code's JSONL transcripts (default ~/.claude/projects) as usage_source='transcript' rows. "
        "Safe to run again: only what was appended since the last import is read.",
    )(import_claude_code)
    import_app.command(
        "codex",
        help="Import Codex's rollout files (default ~/.codex/sessions, or $CODEX_HOME/sessions) as "
        "usage_source='transcript' rows, one per model response. Safe to run again.",
    )(import_codex)
    app.add_typer(import_app, name="import")


def _run(do_import: Callable[..., Any], db: Path | None, root: Path, full: bool, show_progress: bool) -> Any:
    from llmsm.analytics.store import StoreError

    try:
        if not show_progress:
            return do_import(resolve_db(db), root, full=full, workers=None)
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(
            TextColumn("reading"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
            console=err_console, transient=True,
        ) as bar:
            task = bar.add_task("read", total=None)
            return do_import(
                resolve_db(db), root, full=full, workers=None,
                on_total=lambda n: bar.update(task, total=n),
                progress=lambda n: bar.advance(task, n),
            )
    except StoreError as exc:
        fail(str(exc))


def _report(stats: Any, root: Path, as_json: bool, what: str) -> None:
    from rich.markup import escape

    if as_json:
        print_json({"path": str(root), **stats.as_dict()})
        return

    def n(count: int, word: str) -> str:
        return f"{count} {word}{'s' if count != 1 else ''}"

    if stats.files_read == 0 and not stats.unreadable_files:
        console.print(f"nothing new: {n(stats.files, what + ' file')} in {root}, all unchanged since the last import",
                      highlight=False, markup=False, soft_wrap=True)
        return
    console.print(f"imported {n(stats.inserted, 'new request')} from {n(stats.files, what + ' file')} in {root}",
                  highlight=False, markup=False, soft_wrap=True)
    read = f"  {stats.files_read} read"
    if stats.files_reread:
        read += f" ({stats.files_reread} again from the start: shrunk or rewritten)"
    if stats.files_unchanged:
        read += f", {stats.files_unchanged} unchanged since the last import"
    console.print(read, highlight=False)
    console.print(f"  {stats.events} unique requests in what was read, {stats.already_present} of them imported before",
                  highlight=False)
    skipped = f", {stats.synthetic} synthetic skipped" if stats.synthetic else ""
    entries = "entry" if stats.duplicates == 1 else "entries"
    console.print(f"  {stats.duplicates} repeated {entries} counted once{skipped}", highlight=False)
    if stats.malformed:
        console.print(f"  [yellow]{n(stats.malformed, 'malformed line')} skipped[/]")
    for item in stats.unreadable_files:
        console.print(f"  [yellow]unreadable: {escape(item)}[/]", highlight=False)


def import_claude_code(
    path: Annotated[
        Path | None,
        typer.Argument(help="A transcript folder or .jsonl file (default: ~/.claude/projects, or $CLAUDE_CONFIG_DIR/projects).",
                       show_default=False),
    ] = None,
    full: FullOption = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    from llmsm.analytics.transcripts_claude import default_projects_dir, import_claude_code as do_import

    root = path.expanduser() if path is not None else default_projects_dir()
    stats = _run(do_import, db, root, full, err_console.is_terminal and not as_json)
    _report(stats, root, as_json, "transcript")


def import_codex(
    path: Annotated[
        Path | None,
        typer.Argument(help="A sessions folder or rollout .jsonl file (default: $CODEX_HOME/sessions, or ~/.codex/sessions).",
                       show_default=False),
    ] = None,
    full: FullOption = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    from llmsm.analytics.transcripts_codex import default_sessions_dir, import_codex as do_import

    root = path.expanduser() if path is not None else default_sessions_dir()
    stats = _run(do_import, db, root, full, err_console.is_terminal and not as_json)
    _report(stats, root, as_json, "rollout")
