"""`llmsm run`: run a command with its AI traffic routed through the gateway, as one labelled session.

This module must start fast: it never imports mitmproxy. The gateway it may start is a separate,
detached `llmsm proxy` process that keeps running after the command ends (the next run reuses it).
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import typer
from rich.markup import escape

from llmsm import __version__
from llmsm.cli.common import DbOption, err_console, fail, resolve_db

START_TIMEOUT = 15.0  # seconds to wait for a newly started gateway to listen
PROBE_TIMEOUT = 1.0  # seconds for the "is this a gateway?" request
LABEL_MAX = 200  # the gateway keeps at most 200 characters of a label
LABEL_HEADER = "x-llmsm-session"  # the gateway's label header (addons/sessions.py; not imported: that module is not light)
# opencode's built-in providers and the gateway route each one's base URL goes to (the AI SDK's
# base URLs end in the API version).
OPENCODE_ROUTES = {"anthropic": "anthropic/v1", "openai": "openai/v1", "google": "gemini/v1beta"}
# Copilot CLI's COPILOT_PROVIDER_TYPE -> the gateway route (name, base URL path).
COPILOT_ROUTES = {"openai": ("openai", "openai/v1"), "anthropic": ("anthropic", "anthropic")}
LOG_TAIL_LINES = 15
STORE_TIMEOUT = 3.0  # seconds to wait for a database another process holds, then warn and go on

# Signals passed on to the child. SIGINT, SIGQUIT and SIGWINCH also come from the terminal, which
# sends them to the whole foreground process group: the child (in llmsm's group) got those already.
FORWARDED = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGWINCH", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)
FROM_TERMINAL = tuple(getattr(signal, n) for n in ("SIGINT", "SIGQUIT", "SIGWINCH") if hasattr(signal, n))


def register(app: typer.Typer) -> None:
    app.command(
        "run",
        help="Run COMMAND with its AI API traffic routed through llmsm and recorded as one session "
        "(label, command, directory, git branch). Uses the gateway already running for the database, or "
        "starts one in the background that keeps running for the next run. Exits with COMMAND's exit code. "
        "COMMAND runs without a shell; everything after -- is passed to it verbatim.",
        options_metavar="[OPTIONS] -- COMMAND [ARGS]...",
        context_settings={
            "allow_extra_args": True,
            "ignore_unknown_options": True,
            # Everything from COMMAND on belongs to COMMAND, even words that look like our options.
            "allow_interspersed_args": False,
        },
        no_args_is_help=True,
    )(run)


def run(
    ctx: typer.Context,
    session: Annotated[
        str | None,
        typer.Option("--session", "-s", help="Session label (default: COMMAND's name and 6 random hex digits).", metavar="NAME"),
    ] = None,
    tls: Annotated[
        bool,
        typer.Option("--tls", help="Route by HTTPS_PROXY with llmsm's CA trusted, instead of by base URLs "
                     "(for clients that ignore base URLs, e.g. Gemini CLI with a Google login)."),
    ] = False,
    db: DbOption = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option("--upstream", "-u", metavar="NAME=URL",
                     help="Point a route elsewhere (anthropic, openai, gemini). Repeatable. Only applies when "
                     "this run starts the gateway; a gateway already running keeps its routes."),
    ] = None,
    parent: Annotated[
        str | None,
        typer.Option("--parent", metavar="SESSION", help="The session this one continues (an id, a unique prefix "
                     "of one, or a label): recorded as the run's parent_session (see llmsm handoff)."),
    ] = None,
) -> None:
    argv = list(ctx.args)
    if not argv:
        fail("no command given: llmsm run [OPTIONS] -- COMMAND [ARGS...]", 2)
    if argv[0].startswith("-") and argv[0] != "-":
        fail(f"unknown option {argv[0]!r} for llmsm run (put the command after --: llmsm run [OPTIONS] -- COMMAND)", 2)
    if parent is not None:
        parent = _resolve_parent(parent, db)
    raise typer.Exit(launch(argv, session=session, tls=tls, db=db, upstreams=list(upstream or []), parent=parent))


def launch(
    argv: list[str], *, session: str | None = None, tls: bool = False, db: Path | None = None,
    upstreams: list[str] | None = None, parent: str | None = None, cwd: str | None = None, shown: str | None = None,
) -> int:
    """Run argv as `llmsm run` does and return its exit code: `parent` is recorded as the run's
    parent session (a full session id), `cwd` is the directory it runs in (default: this one),
    `shown` the command as recorded (default: argv, quoted)."""
    label = _label(session, argv[0])
    upstreams = list(upstreams or [])
    for u in upstreams:
        if "=" not in u:
            fail(f"--upstream needs NAME=URL, got {u!r}", 2)
    executable = _check_command(argv[0])  # before any gateway is started for nothing
    ca_env = _ca_env_function() if tls else None

    db_path = resolve_db(db).absolute()
    try:
        state, started = _gateway(db_path, upstreams)
    except KeyboardInterrupt:  # Ctrl-C while a gateway starts: it goes on starting, for the next run
        raise typer.Exit(130) from None
    if tls and not state.get("proxy_port"):
        fail(
            f"the running gateway (pid {state['pid']}) has no proxy port for --tls: stop it, or start it "
            "yourself with `llmsm proxy --proxy-port 0`"
        )
    host = _client_host(str(state["host"]))
    env = _child_env(label, host, state, ca_env)

    if err_console.is_terminal:
        how = "started" if started else "running"
        where = f"http://{host}:{state['port']}" + (f", proxy :{state['proxy_port']}" if tls else "")
        err_console.print(f"[dim]llmsm: session {escape(label)} via gateway {where} (pid {state['pid']}, {how})[/]")

    return _run_child(argv, executable, env, db_path, label, cwd=cwd, parent=parent, shown=shown)


def _resolve_parent(ref: str, db: Path | None) -> str:
    """The full id of the session `ref` names, or one clear error (as `llmsm show` resolves it)."""
    from llmsm.analytics.store import StoreError, open_db
    from llmsm.cli.dashboard import resolve_session

    try:
        with open_db(resolve_db(db)) as con:
            return resolve_session(con, ref, None)
    except StoreError as exc:
        fail(str(exc))


# --------------------------------------------------------------------------------------------
# The label and the command
# --------------------------------------------------------------------------------------------


def _label(session: str | None, command: str) -> str:
    if session is not None:
        label = session.strip()
        if not label:
            fail("--session must not be empty", 2)
        if len(label) > LABEL_MAX:
            fail(f"--session is too long ({len(label)} characters; at most {LABEL_MAX})", 2)
        if any(ord(c) < 32 or ord(c) == 127 for c in label):
            fail("--session must not contain control characters", 2)
        return label
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.basename(command.rstrip("/"))).strip("-.")[:40] or "run"
    return f"{base}-{secrets.token_hex(3)}"


def _check_command(command: str) -> str:
    """The executable COMMAND names, or one clear error: 127 when missing, 126 when not runnable."""
    if os.sep in command or (os.altsep and os.altsep in command):
        path = Path(command)
        if not path.exists():
            fail(f"{command}: no such file", 127)
        if path.is_dir():
            fail(f"{command}: is a directory", 126)
        if not os.access(path, os.X_OK):
            fail(f"{command}: permission denied (not executable)", 126)
        return command
    found = shutil.which(command)
    if found is None:
        fail(f"{command}: command not found", 127)
    return found


def _ca_env_function():
    try:
        from llmsm.cli.certs import ca_env
    except ImportError:
        fail("--tls needs llmsm's CA support (llmsm.cli.certs.ca_env), which this installation lacks")
    return ca_env


# --------------------------------------------------------------------------------------------
# Finding or starting the gateway
# --------------------------------------------------------------------------------------------


def _state_file(db_path: Path) -> Path:
    from llmsm.addons.server import state_file_for  # the server module imports mitmproxy lazily only

    return state_file_for(db_path)


def _client_host(host: str) -> str:
    """The address a client on this machine uses to reach a gateway listening on `host`."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _probe(host: str, port: Any) -> dict | None:
    """GET / on the gateway: its JSON answer, or None when nothing (or not llmsm) answers there."""
    if not isinstance(port, int) or not 0 < port < 65536:
        return None
    import urllib.error  # here: every other command would pay for http.client and ssl
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via the user's proxy
    request = urllib.request.Request(f"http://{_client_host(host)}:{port}/", headers={"User-Agent": f"llmsm-run/{__version__}"})
    try:
        with opener.open(request, timeout=PROBE_TIMEOUT) as resp:
            body = json.loads(resp.read(65536))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    if isinstance(body, dict) and body.get("llmsm") == "gateway":
        return body
    return None


def _running_gateway(db_path: Path) -> tuple[dict, dict] | None:
    """The state and GET / answer of a live gateway recording into db_path, else None."""
    try:
        state = json.loads(_state_file(db_path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not _pid_alive(state.get("pid")):
        return None
    info = _probe(str(state.get("host") or "127.0.0.1"), state.get("port"))
    return (state, info) if info is not None else None


def _gateway(db_path: Path, upstreams: list[str]) -> tuple[dict, bool]:
    """(state, started): the gateway for db_path, started in the background when none runs."""
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create the database folder {db_path.parent}: {exc.strerror or exc}")
    # One lock per database, so that runs started together share one new gateway.
    lock_path = db_path.with_name(db_path.name + ".gateway.lock")
    try:
        lock = open(lock_path, "a")
    except OSError:
        lock = None  # an unwritable folder: the gateway will say so below
    try:
        if lock is not None:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        found = _running_gateway(db_path)
        if found is not None:
            state, info = found
            _warn_unused_upstreams(upstreams, info, state)
            return state, False
        return _start_gateway(db_path, upstreams), True
    finally:
        if lock is not None:
            lock.close()  # releases the flock


def _warn_unused_upstreams(upstreams: list[str], info: dict, state: dict) -> None:
    if not upstreams:
        return
    routes = info.get("routes") if isinstance(info.get("routes"), dict) else {}
    differs = []
    for item in upstreams:
        name, _, url = item.partition("=")
        current = routes.get(name.strip().lower())
        if not isinstance(current, str) or current.rstrip("/") != url.strip().rstrip("/"):
            differs.append(item)
    if differs:
        _warn(
            f"--upstream {', '.join(differs)} ignored: reusing the gateway already running (pid {state.get('pid')}) "
            "with its own routes; stop it to start one with these"
        )


def _start_gateway(db_path: Path, upstreams: list[str]) -> dict:
    state_file = _state_file(db_path)
    log_path = db_path.with_name(db_path.name + ".gateway.log")
    try:
        state_file.unlink()  # stale: its gateway did not answer
    except OSError:
        pass
    cmd = [sys.executable, "-m", "llmsm.cli.main", "proxy", "--port", "0", "--proxy-port", "0", "--db", str(db_path)]
    for u in upstreams:
        cmd += ["--upstream", u]
    try:
        log = open(log_path, "ab")
    except OSError as exc:
        fail(f"cannot write the gateway log {log_path}: {exc.strerror or exc}")
    with log:
        offset = log.tell()
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} llmsm run starts: {shlex.join(cmd)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            fail(f"cannot start the gateway ({sys.executable}): {exc.strerror or exc}")
    _keep.append(proc)  # never reaped here: the gateway outlives this run

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        code = proc.poll()
        if code is not None:
            fail(f"the gateway could not start (exit {code}); its log {log_path} ends with:\n{_tail(log_path, offset)}")
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            state = None
        if isinstance(state, dict) and state.get("pid") == proc.pid and _probe(str(state.get("host")), state.get("port")):
            return state
        if time.monotonic() > deadline:
            proc.terminate()
            fail(
                f"the gateway did not start within {START_TIMEOUT:.0f} s (stopped it); "
                f"its log {log_path} ends with:\n{_tail(log_path, offset)}"
            )
        time.sleep(0.05)


_keep: list[subprocess.Popen] = []


def _tail(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return "  (log unreadable)"
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("--- ")]
    return "\n".join("  " + ln for ln in lines[-LOG_TAIL_LINES:]) or "  (nothing logged)"


# --------------------------------------------------------------------------------------------
# The child's environment
# --------------------------------------------------------------------------------------------


def _child_env(label: str, host: str, state: dict, ca_env) -> dict[str, str]:
    env = dict(os.environ)
    env["LLMSM_SESSION"] = label
    quoted = quote(label, safe="")
    if ca_env is None:
        base = f"http://{host}:{state['port']}/s/{quoted}"
        env["ANTHROPIC_BASE_URL"] = f"{base}/anthropic"
        env["OPENAI_BASE_URL"] = f"{base}/openai/v1"
        env["GOOGLE_GEMINI_BASE_URL"] = f"{base}/gemini"
        env.update(_opencode_env(env.get("OPENCODE_CONFIG_CONTENT"), base, label))
        env.update(_copilot_env(env, base, label, host, state))
        return env
    proxy = f"http://{quoted}@{host}:{state['proxy_port']}"
    env["HTTPS_PROXY"] = env["https_proxy"] = proxy
    existing = [h.strip() for h in (env.get("NO_PROXY") or env.get("no_proxy") or "").split(",") if h.strip()]
    env["NO_PROXY"] = env["no_proxy"] = ",".join(dict.fromkeys(existing + ["localhost", "127.0.0.1", "::1"]))
    try:
        extra = ca_env()
    except Exception as exc:  # noqa: BLE001 - any failure to prepare the CA is one clear line
        fail(f"cannot prepare llmsm's CA for --tls: {exc}")
    env.update({str(k): str(v) for k, v in extra.items()})
    return env


def _header_safe(label: str) -> bool:
    """A label that can travel as an HTTP header value as it is (else only the path carries it)."""
    return label.isascii() and label.isprintable()


def _opencode_env(current: str | None, base: str, label: str) -> dict[str, str]:
    """opencode's built-in providers through the gateway, labelled: OPENCODE_CONFIG_CONTENT is
    merged over its config files, so a provider's own settings there stay; a config already in
    the variable is kept, with these options added."""
    try:
        config = json.loads(current) if current else {}
    except ValueError:
        config = None
    providers = config.setdefault("provider", {}) if isinstance(config, dict) else None
    if not isinstance(providers, dict):
        _warn("OPENCODE_CONFIG_CONTENT is not a JSON object with a provider object: left as it is "
              "(opencode's traffic is then not routed through llmsm)")
        return {}
    for name, route in OPENCODE_ROUTES.items():
        entry = providers.setdefault(name, {})
        options = entry.setdefault("options", {}) if isinstance(entry, dict) else None
        if not isinstance(options, dict):
            continue
        options["baseURL"] = f"{base}/{route}"
        headers = options.setdefault("headers", {})
        if isinstance(headers, dict) and _header_safe(label):
            headers[LABEL_HEADER] = label
    return {"OPENCODE_CONFIG_CONTENT": json.dumps(config)}


def _copilot_env(env: dict[str, str], base: str, label: str, host: str, state: dict) -> dict[str, str]:
    """Copilot CLI with its own key (COPILOT_PROVIDER_BASE_URL set; without it Copilot uses the
    GitHub login, which llmsm leaves alone): its provider through the gateway, labelled in
    COPILOT_PROVIDER_HEADERS too unless that holds headers of the user's. Only when the provider
    is where the gateway's route goes: the key must never reach another host."""
    url = (env.get("COPILOT_PROVIDER_BASE_URL") or "").strip()
    kind = (env.get("COPILOT_PROVIDER_TYPE") or "openai").strip().lower()
    if not url or kind not in COPILOT_ROUTES:
        return {}
    route, path = COPILOT_ROUTES[kind]
    upstream = ((_probe(str(state.get("host") or host), state.get("port")) or {}).get("routes") or {}).get(route)
    if not isinstance(upstream, str) or _origin(url) != _origin(upstream):
        _warn(
            f"COPILOT_PROVIDER_BASE_URL={url} is not the gateway's {route} upstream ({upstream}): left as it is, so "
            f"Copilot's traffic is not recorded; start the gateway with --upstream {route}={url} to record it"
        )
        return {}
    out = {"COPILOT_PROVIDER_BASE_URL": f"{base}/{path}"}
    if not env.get("COPILOT_PROVIDER_HEADERS") and _header_safe(label):
        out["COPILOT_PROVIDER_HEADERS"] = f"{LABEL_HEADER}: {label}"
    return out


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url.strip())
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        port = None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


# --------------------------------------------------------------------------------------------
# Running the child
# --------------------------------------------------------------------------------------------


def _warn(message: str) -> None:
    if err_console.is_terminal:
        err_console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)
    else:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _git_branch(cwd: str) -> str | None:
    """The branch checked out in cwd (a short commit when detached), None outside a repository."""
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    for args in (["git", "symbolic-ref", "--short", "-q", "HEAD"], ["git", "rev-parse", "--short", "HEAD"]):
        try:
            p = subprocess.run(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=3)
        except (OSError, subprocess.SubprocessError, ValueError):
            return None
        if p.returncode == 0 and p.stdout.strip():
            return p.stdout.strip()
        if "not a git repository" in p.stderr.lower():
            return None
    return None


def _terminal_delivers_to(pgrp: int) -> bool:
    """True when the terminal's foreground process group is `pgrp`: its signals reach the child too."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == pgrp
        except OSError:
            continue
    return False


def _run_child(argv: list[str], executable: str, env: dict[str, str], db_path: Path, label: str,
               *, cwd: str | None = None, parent: str | None = None, shown: str | None = None) -> int:
    proc: subprocess.Popen | None = None
    pending: list[int] = []

    def forward(signum: int, *, from_before: bool = False) -> None:
        if proc is None or proc.returncode is not None:
            return
        if not from_before and signum in FROM_TERMINAL and _terminal_delivers_to(os.getpgrp()):
            return  # the terminal sent it to our whole process group, the child included
        try:
            proc.send_signal(signum)
        except (ProcessLookupError, OSError):
            pass

    def on_signal(signum: int, _frame) -> None:
        if proc is None:
            pending.append(signum)
        else:
            forward(signum)

    # Python-level handlers (not SIG_IGN): exec resets them to the default in the child.
    previous = {}
    for sig in FORWARDED:
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except (OSError, ValueError):
            pass
    try:
        if cwd is None:
            try:
                cwd = os.getcwd()
            except OSError:  # the directory was removed under us
                cwd = None
        try:
            proc = subprocess.Popen(argv, executable=executable, env=env, cwd=cwd)  # a list: never a shell
        except FileNotFoundError:
            fail(f"{argv[0]}: command not found", 127)
        except PermissionError:
            fail(f"{argv[0]}: permission denied", 126)
        except OSError as exc:
            fail(f"{argv[0]}: cannot run it: {exc.strerror or exc}", 126 if exc.errno == errno.ENOEXEC else 127)
        for sig in pending:  # arrived before the child existed: it cannot have had the terminal's copy
            forward(sig, from_before=True)

        recorded = _record_start(db_path, label, argv, cwd, proc.pid, parent, shown)
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            try:
                signal.signal(sig, handler)
            except (OSError, ValueError, TypeError):
                pass
    exit_code = 128 - code if code < 0 else code
    if recorded:
        from llmsm.analytics.store import StoreError, end_run

        try:
            end_run(db_path, label, exit_code, pid=proc.pid, timeout=STORE_TIMEOUT)
        except StoreError as exc:
            _warn(f"the end of the run was not recorded: {exc}")
        except Exception as exc:  # noqa: BLE001 - recording never changes COMMAND's exit code
            _warn(f"the end of the run was not recorded: {type(exc).__name__}: {exc}")
    return exit_code


def _record_start(db_path: Path, label: str, argv: list[str], cwd: str | None, pid: int, parent: str | None = None,
                  shown: str | None = None) -> bool:
    from llmsm.analytics.store import StoreError, insert_run

    try:
        insert_run(
            db_path, session_id=label, label=label, command=shown or shlex.join(argv), cwd=cwd,
            git_branch=_git_branch(cwd) if cwd else None, pid=pid, timeout=STORE_TIMEOUT,
        )
    except StoreError as exc:
        _warn(f"the run was not recorded (the command runs anyway): {exc}")
        return False
    except Exception as exc:  # noqa: BLE001 - the child is running: never leave it unattended
        _warn(f"the run was not recorded (the command runs anyway): {type(exc).__name__}: {exc}")
        return False
    if parent is not None:
        from llmsm.analytics.handoff import record_parent

        try:
            record_parent(db_path, label, parent, pid=pid, timeout=STORE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - the run is recorded; only its lineage is missing
            _warn(f"the parent session was not recorded: {exc}")
    return True
