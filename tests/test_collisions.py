"""File conflicts: two sessions active in the same project that edited the same file each get the
health reason `file_conflict`, naming the other session and the file, in every view (health,
show, watch, the status line) and in the MCP `sessions` tool's data. Events with digest deltas
(DIGEST-CONTRACT) are written through the store's own insert path into real DuckDB files."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from llmsm.analytics import dashboard
from llmsm.analytics.awareness import active_sessions
from llmsm.analytics.collisions import find_conflicts
from llmsm.analytics.digest import DigestDelta
from llmsm.analytics.events import ExchangeEvent
from llmsm.analytics.store import insert_events, open_for_query
from tests.conftest import REPO, isolated_env, run_cli

UTC = timezone.utc
A = "aaaaaaaa-1111-4c3b-9d2e-000000000001"
B = "bbbbbbbb-2222-4c3b-9d2e-000000000002"
C = "cccccccc-3333-4c3b-9d2e-000000000003"


def turn(sid: str, i: int, at: datetime, *, project: Path | None = None, files=(), label: str | None = None) -> ExchangeEvent:
    delta = DigestDelta.from_items(project={"cwd": str(project), "git": True, "branch": "main"} if project else None,
                                   files=files).to_json()
    return ExchangeEvent(
        id=f"{sid[:8]}-{i:04d}", session_id=sid, started_at=at, ended_at=at + timedelta(seconds=5), label=label,
        client="claude-code", client_version="2.1.197", provider="anthropic", api="messages", method="POST",
        path="/v1/messages", model="claude-sonnet-4-5", requested_model="claude-sonnet-4-5", status_code=200, outcome="ok",
        input_tokens=10, output_tokens=100, cache_read_tokens=20_000, cache_write_tokens=100, usage_source="reported",
        cost_usd=0.01, digest=delta,
    )


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "shop"
    (root / ".git").mkdir(parents=True)
    (root / "src").mkdir()
    return root


def write(tmp_path: Path, events: list[ExchangeEvent]) -> Path:
    db = tmp_path / "llmsm.duckdb"
    assert insert_events(db, events) == len(events)
    return db


def same_file(repo: Path, now: datetime) -> list[ExchangeEvent]:
    """A (labelled) edits src/cart.py by its absolute path, as Claude Code names files; B writes it
    by a path relative to its working directory, as Codex's apply_patch does; C edits another file."""
    return [
        turn(A, 0, now - timedelta(minutes=30), project=repo, files=[("README.md", "read")], label="checkout"),
        turn(A, 1, now - timedelta(minutes=4), files=[(str(repo / "src" / "cart.py"), "edit")], label="checkout"),
        turn(B, 0, now - timedelta(minutes=20), project=repo / "src", files=[("cart.py", "read")]),
        turn(B, 1, now - timedelta(minutes=2), files=[("cart.py", "write"), ("../tests/test_cart.py", "edit")]),
        turn(C, 0, now - timedelta(minutes=3), project=repo, files=[("src/pay.py", "edit")]),
    ]


def frame(db: Path, at: datetime, **kw) -> dashboard.Frame:
    con = open_for_query(db)
    try:
        return dashboard.load_frame(con, at=at, **kw)
    finally:
        con.close()


def reasons(row: dashboard.SessionRow) -> list[str]:
    return [r.factor for r in row.health.reasons]


def conflicted(f: dashboard.Frame) -> set[str]:
    return {s.session_id for s in f.sessions if "file_conflict" in reasons(s)}


def test_two_sessions_editing_one_file_both_get_the_reason(tmp_path, repo):
    now = datetime.now(UTC)
    db = write(tmp_path, same_file(repo, now))
    rows = {s.session_id: s for s in frame(db, now).sessions}

    a, b, c = rows[A], rows[B], rows[C]
    assert reasons(a) == ["file_conflict"] and reasons(b) == ["file_conflict"]
    assert reasons(c) == []  # another file of the same project
    assert a.status == b.status == "degraded" and c.status == "healthy"
    msg_a, msg_b = a.health.reasons[0].message, b.health.reasons[0].message
    assert msg_a == f"src/cart.py was also edited by session {B}"
    assert msg_b == f"src/cart.py was also edited by session checkout ({A})"
    assert a.health.reasons[0].severity == "warn"
    [conflict] = b.health.conflicts
    assert conflict["file"] == str(repo / "src" / "cart.py") and conflict["other_session"] == A
    assert conflict["other_label"] == "checkout"

    # the MCP sessions tool's data carries the same reason, from the same frame
    con = open_for_query(db)
    try:
        seen = {s["session_id"]: s for s in active_sessions(con, at=now)}
    finally:
        con.close()
    assert seen[A]["top_reason"]["factor"] == "file_conflict" and seen[A]["conflicts"][0]["other_session"] == B
    assert seen[C]["top_reason"] is None and seen[C]["conflicts"] == []


def test_edits_of_different_files_give_no_conflict(tmp_path, repo):
    now = datetime.now(UTC)
    db = write(tmp_path, [
        turn(A, 0, now - timedelta(minutes=3), project=repo, files=[("src/cart.py", "edit")]),
        turn(B, 0, now - timedelta(minutes=2), project=repo, files=[("src/pay.py", "edit"), ("src/cart.py", "read")]),
        turn(C, 0, now - timedelta(minutes=1), project=repo, files=[("src/cart.py", "read")]),
    ])
    assert all(reasons(s) == [] for s in frame(db, now).sessions)
    con = open_for_query(db)
    try:
        assert find_conflicts(con, now) == {}
    finally:
        con.close()


def test_a_session_that_stopped_before_the_window_does_not_collide(tmp_path, repo):
    now = datetime.now(UTC)
    db = write(tmp_path, [
        turn(A, 0, now - timedelta(minutes=40), project=repo, files=[("src/cart.py", "edit")]),
        turn(B, 0, now - timedelta(minutes=1), project=repo, files=[("src/cart.py", "edit")]),
    ])
    assert conflicted(frame(db, now)) == set()
    # as of a moment when both were at work, they did collide (--at reproduces it)
    then = now - timedelta(minutes=35)
    db2 = write(tmp_path / "then", [turn(A, 0, then - timedelta(minutes=5), project=repo, files=[("src/cart.py", "edit")]),
                                    turn(B, 0, then - timedelta(minutes=1), project=repo, files=[("src/cart.py", "edit")])])
    assert conflicted(frame(db2, then)) == {A, B}


def test_relative_paths_without_a_directory_are_left_out(tmp_path):
    now = datetime.now(UTC)
    db = write(tmp_path, [turn(A, 0, now - timedelta(minutes=2), files=[("src/cart.py", "edit")]),
                          turn(B, 0, now - timedelta(minutes=1), files=[("src/cart.py", "edit")])])
    assert conflicted(frame(db, now)) == set()


def test_every_view_shows_it(tmp_path, repo):
    now = datetime.now(UTC)
    db = write(tmp_path, same_file(repo, now))
    env = isolated_env(tmp_path)

    p = run_cli("health", "--json", "--db", str(db), env=env)
    assert p.returncode == 0, p.stderr
    by_id = {h["session_id"]: h for h in json.loads(p.stdout)}
    assert by_id[A]["reasons"][0]["factor"] == "file_conflict" and by_id[A]["conflicts"][0]["path"] == "src/cart.py"

    p = run_cli("show", B, "--db", str(db), env={**env, "COLUMNS": "160"})
    assert p.returncode == 0, p.stderr
    assert f"src/cart.py was also edited by session checkout ({A})" in p.stdout

    p = run_cli("watch", "--once", "--db", str(db), env={**env, "COLUMNS": "100"})
    assert p.returncode == 0, p.stderr
    assert "conflict: cart.py with checkout" in p.stdout  # the why column's few words (B's row)

    p = run_cli("watch", "--once", "--json", "--db", str(db), env=env)
    rows = {s["session_id"]: s for s in json.loads(p.stdout)["sessions"]}
    assert rows[B]["health"]["reasons"][0]["factor"] == "file_conflict"

    # the status line: the same reason, in its own few words, without heavy imports
    code = ("import sys, json; from llmsm.cli.statusline import main; main(sys.argv[1:]); "
            "heavy = ('pydantic', 'genai_prices', 'typer', 'rich', 'llmsm.analytics.store', 'llmsm.analytics.health'); "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy)))")
    runs = [subprocess.run([sys.executable, "-c", code, "--db", str(db)], capture_output=True, text=True, env=env,
                           cwd=REPO, timeout=60) for _ in range(2)]
    line, loaded = runs[1].stdout.splitlines()
    assert runs[1].returncode == 0 and runs[1].stderr == "", runs[1].stderr
    assert "degraded (conflict: cart.py with " in line, line
    assert json.loads(loaded) == []


def test_the_status_line_with_one_session_active_shows_no_conflict(tmp_path, repo):
    """B edited the same file 50 minutes ago: only A is active, nothing collides."""
    now = datetime.now(UTC)
    db = write(tmp_path, [turn(A, 0, now - timedelta(minutes=1), project=repo, files=[("src/cart.py", "edit")]),
                          turn(B, 0, now - timedelta(minutes=50), project=repo, files=[("src/cart.py", "edit")])])
    p = run_cli("statusline", "--db", str(db), env=isolated_env(tmp_path))
    assert p.stdout.startswith("llmsm 1 active · all healthy"), p.stdout


def test_the_per_session_line_shows_it(tmp_path, repo):
    """The gateway's snapshot of B (what `llmsm statusline` shows for B's Claude Code session),
    given the conflicts the snapshot thread reads, says what the global line says."""
    from llmsm.analytics.collisions import find_conflicts
    from llmsm.analytics.session_status import SessionState, snapshot
    from llmsm.analytics.store import open_db
    from llmsm.cli.format import format_session_line

    now = datetime.now(UTC)
    events = same_file(repo, now)
    db = write(tmp_path, events)
    with open_db(db) as con:
        conflicts = find_conflicts(con, now)
    state = SessionState(B)
    state.seeded = True
    for e in events:
        if e.session_id == B:
            state.add(e)
    line = format_session_line(snapshot(state, now, conflicts=conflicts.get(B)))
    assert "degraded (conflict: cart.py with checkout)" in line, line
    assert "conflict" not in format_session_line(snapshot(state, now))
