"""`llmsm mcp` (the MCP server: cli/mcp_server.py) and `llmsm mcp install claude|codex|gemini`.

`install` adds llmsm to an assistant's own MCP configuration, user scope, or with `--print`
prints exactly what to add. The command configured is the absolute path of this `llmsm`, so
the assistant finds it whatever its PATH. Each client the way it is meant to be configured:

- Claude Code: its own command, `claude mcp add --scope user llmsm -- LLMSM mcp` (Claude Code
  keeps much more than servers in ~/.claude.json and rewrites it while it runs, so llmsm does
  not edit that file; it only reads it to see whether the entry is there already). Without
  `claude` on PATH, the command is printed.
- Codex: `[mcp_servers.llmsm]` in $CODEX_HOME/config.toml (default ~/.codex), edited with
  tomlkit: the user's other tables, keys and comments stay as they were.
- Gemini CLI: `mcpServers.llmsm` in ~/.gemini/settings.json; the other settings stay.

Idempotent: when the entry already says the same, nothing is written (or run).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from llmsm.cli.common import DbOption, JsonOption, console, err_console, fail, print_json, resolve_db

CLIENTS = ("claude", "codex", "gemini")
SERVER = "llmsm"

mcp_app = typer.Typer(
    no_args_is_help=False,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def register(app: typer.Typer) -> None:
    app.add_typer(mcp_app, name="mcp")


@mcp_app.callback(invoke_without_command=True)
def mcp(ctx: typer.Context, db: DbOption = None) -> None:
    """Serve llmsm to the assistants over MCP (stdio): what other sessions are doing and whether they edit the same files (sessions), a session's handoff brief (session_brief), search over past sessions and notes (search), and notes per project (remember, recall).

    An assistant starts it itself: set it up with `llmsm mcp install claude|codex|gemini`. The database is opened read-only for each tool call and closed after (remember writes a note), so the gateway keeps writing. Notes go by default to the project the server was started in (its working directory; a git repository's root when inside one).
    """
    if ctx.invoked_subcommand is not None:
        return
    from llmsm.cli.mcp_server import serve

    serve(resolve_db(db).absolute())


# --------------------------------------------------------------------------------------------
# install
# --------------------------------------------------------------------------------------------


def llmsm_command() -> list[str]:
    """The absolute command that runs this llmsm: its console script (the one running, else the
    one beside this interpreter, else the one on PATH), else this interpreter with `-m`."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "llmsm":
        found = argv0 if os.sep in argv0 else shutil.which(argv0)
        if found and os.path.isfile(found):
            return [os.path.abspath(found)]
    beside = Path(sys.executable).parent / "llmsm"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside.absolute())]
    on_path = shutil.which("llmsm")
    if on_path:
        return [os.path.abspath(on_path)]
    return [os.path.abspath(sys.executable), "-m", "llmsm.cli.entry"]


def _server_args(db: Path | None) -> tuple[str, list[str]]:
    cmd = llmsm_command()
    args = [*cmd[1:], "mcp"]
    if db is not None:
        args += ["--db", str(db.expanduser().absolute())]
    return cmd[0], args


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.llmsm-{os.getpid()}.tmp")
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- Claude Code ------------------------------------------------------------------------------


def claude_config_path() -> Path:
    """Claude Code's global configuration (user-scope MCP servers are its `mcpServers`)."""
    env = (os.environ.get("CLAUDE_CONFIG_DIR") or "").strip()
    return Path(env).expanduser() / ".claude.json" if env else Path.home() / ".claude.json"


def _claude_entry() -> dict[str, Any] | None:
    try:
        data = json.loads(claude_config_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    entry = servers.get(SERVER) if isinstance(servers, dict) else None
    return entry if isinstance(entry, dict) else None


def _install_claude(command: str, args: list[str], print_only: bool) -> dict[str, Any]:
    add = ["claude", "mcp", "add", "--scope", "user", SERVER, "--", command, *args]
    out: dict[str, Any] = {"client": "claude", "path": str(claude_config_path()), "command": command, "args": args,
                           "run": shlex.join(add), "changed": False}
    claude = shutil.which("claude")
    if print_only or claude is None:
        out["printed"] = True
        out["reason"] = None if print_only else "claude is not on PATH"
        return out
    entry = _claude_entry()
    if entry is not None and entry.get("command") == command and list(entry.get("args") or []) == args:
        return out
    if entry is not None:
        _run([claude, "mcp", "remove", "--scope", "user", SERVER])
    _run([claude, *add[1:]])
    out["changed"] = True
    return out


def _run(cmd: list[str]) -> None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        fail(f"cannot run {shlex.join(cmd)}: {exc}")
    if p.returncode != 0:
        why = (p.stderr or p.stdout).strip().splitlines()
        fail(f"{shlex.join(cmd)} failed (exit {p.returncode}){': ' + why[0] if why else ''}")


# --- Codex ------------------------------------------------------------------------------------


def codex_config_path() -> Path:
    from llmsm.analytics.handoff import codex_home  # CODEX_HOME's rule has one home

    return codex_home() / "config.toml"


def _codex_snippet(command: str, args: list[str]) -> str:
    import tomlkit

    doc = tomlkit.document()
    servers = tomlkit.table(is_super_table=True)
    entry = tomlkit.table()
    entry["command"] = command
    entry["args"] = args
    servers[SERVER] = entry
    doc["mcp_servers"] = servers
    return tomlkit.dumps(doc)


def _install_codex(command: str, args: list[str], print_only: bool) -> dict[str, Any]:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    path = codex_config_path()
    out: dict[str, Any] = {"client": "codex", "path": str(path), "command": command, "args": args, "changed": False,
                           "snippet": _codex_snippet(command, args)}
    if print_only:
        out["printed"] = True
        return out
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        doc = tomlkit.parse(text)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}")
    except TOMLKitError as exc:
        fail(f"{path} is not valid TOML ({str(exc).splitlines()[0]}); fix it, or add this by hand:\n{out['snippet']}")
    servers = doc.get("mcp_servers")
    if servers is None:
        servers = tomlkit.table(is_super_table=True)
        doc["mcp_servers"] = servers
    elif not isinstance(servers, dict):
        fail(f"mcp_servers in {path} is not a table; add this by hand:\n{out['snippet']}")
    entry = servers.get(SERVER)
    if isinstance(entry, dict) and entry.get("command") == command and list(entry.get("args") or []) == args:
        return out
    if not isinstance(entry, dict):
        entry = tomlkit.table()
        servers[SERVER] = entry
    entry["command"] = command  # the entry's other keys (env, timeouts) stay
    entry["args"] = args
    _atomic_write(path, tomlkit.dumps(doc))
    out["changed"] = True
    return out


# --- Gemini CLI -------------------------------------------------------------------------------


def gemini_settings_path() -> Path:
    return Path.home() / ".gemini" / "settings.json"


def _install_gemini(command: str, args: list[str], print_only: bool) -> dict[str, Any]:
    path = gemini_settings_path()
    want = {"command": command, "args": args}
    out: dict[str, Any] = {"client": "gemini", "path": str(path), "command": command, "args": args, "changed": False,
                           "snippet": json.dumps({"mcpServers": {SERVER: want}}, indent=2)}
    if print_only:
        out["printed"] = True
        return out
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}")
    try:
        settings = json.loads(text) if text.strip() else {}
    except ValueError:
        fail(f"{path} is not plain JSON (comments?), so llmsm leaves it alone; add this under mcpServers by hand:\n"
             f"{out['snippet']}")
    if not isinstance(settings, dict):
        fail(f"{path} does not hold a JSON object; add this by hand:\n{out['snippet']}")
    servers = settings.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        fail(f"mcpServers in {path} is not an object; add this by hand:\n{out['snippet']}")
    entry = servers.get(SERVER)
    if isinstance(entry, dict) and entry.get("command") == command and list(entry.get("args") or []) == args:
        return out
    servers[SERVER] = {**entry, **want} if isinstance(entry, dict) else want  # its other keys (timeout, trust) stay
    _atomic_write(path, json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    out["changed"] = True
    return out


INSTALLERS = {"claude": _install_claude, "codex": _install_codex, "gemini": _install_gemini}
NAMES = {"claude": "Claude Code", "codex": "Codex", "gemini": "Gemini CLI"}


@mcp_app.command("install")
def install(
    client: Annotated[str, typer.Argument(help="claude, codex or gemini.", show_default=False)],
    print_only: Annotated[bool, typer.Option("--print", help="Print what to add instead of adding it.")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add llmsm's MCP server to an assistant's configuration (user scope), or --print what to add.

    claude: runs `claude mcp add --scope user llmsm -- LLMSM mcp` (printed when claude is not on PATH). codex: [mcp_servers.llmsm] in $CODEX_HOME/config.toml (default ~/.codex), comments and other entries kept. gemini: mcpServers.llmsm in ~/.gemini/settings.json. LLMSM is the absolute path of this llmsm; with --db (or LLMSM_DB) the server is given that database. Running it again changes nothing.
    """
    name = client.strip().lower()
    if name not in INSTALLERS:
        fail(f"unknown client {client!r}: one of {', '.join(CLIENTS)}", 2)
    db_path = resolve_db(db) if db is not None else None
    command, args = _server_args(db_path)
    out = INSTALLERS[name](command, args, print_only)
    if as_json:
        print_json(out)
        return
    _say(name, out)


def _say(name: str, out: dict[str, Any]) -> None:
    who = NAMES[name]
    if out.get("printed"):
        if out.get("reason"):
            err_console.print(f"{out['reason']}: run this where it is, to add llmsm to {who}:", style="dim", highlight=False)
        if name == "claude":
            sys.stdout.write(out["run"] + "\n")
        else:
            sys.stdout.write(f"# {out['path']}\n{out['snippet'].rstrip()}\n")
        return
    shown = shlex.join([out["command"], *out["args"]])
    if out["changed"]:
        console.print(f"llmsm added to {who} ({out['path']}): {shown}", highlight=False, soft_wrap=True)
    else:
        console.print(f"llmsm is already in {who}'s configuration ({out['path']}): {shown}", highlight=False, soft_wrap=True)
