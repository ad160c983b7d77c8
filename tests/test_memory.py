"""Notes per project and search over past sessions (analytics/memory.py), and `llmsm memory
add|list|search|rm` on the same notes, on real DuckDB files; session digests written through the
store's insert path (DIGEST-CONTRACT)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from llmsm.analytics import memory
from llmsm.analytics.digest import DigestDelta
from llmsm.analytics.events import ExchangeEvent
from llmsm.analytics.store import connect, insert_events, insert_run
from tests.conftest import isolated_env, run_cli

UTC = timezone.utc
PLANTED = "sk-ant-api03-PLANTEDplanted0123456789PLANTEDplanted0123456789-XYZ"


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "src" / "shop"
    (root / ".git").mkdir(parents=True)
    (root / "pkg" / "deep").mkdir(parents=True)
    return root


def test_project_root_is_the_git_root(tmp_path, repo, monkeypatch):
    assert memory.project_root(repo / "pkg" / "deep") == str(repo)
    assert memory.project_root(repo) == str(repo)
    (tmp_path / "worktree").mkdir()
    (tmp_path / "worktree" / ".git").write_text("gitdir: /elsewhere\n")  # a worktree's .git is a file
    assert memory.project_root(tmp_path / "worktree") == str(tmp_path / "worktree")
    plain = tmp_path / "plain"
    plain.mkdir()
    assert memory.project_root(plain) == str(plain)
    assert memory.project_root("/no/such/dir/../place") == "/no/such/place"
    monkeypatch.chdir(repo / "pkg")
    assert memory.project_root("deep") == str(repo)
    assert memory.resolve_project(None) == str(repo)
    assert memory.resolve_project("shop") == "shop"  # a bare name
    assert memory.project_matches("shop", str(repo)) and not memory.project_matches("sho", str(repo))
    assert memory.project_matches(str(repo.parent), str(repo)) and not memory.project_matches(str(repo), str(repo.parent))


def test_notes_add_list_remove(tmp_path, repo, monkeypatch):
    db = tmp_path / "llmsm.duckdb"
    monkeypatch.chdir(repo / "pkg")
    first = memory.add_note(db, f"  The CSV fixtures need LF endings; the key {PLANTED} is a test key  ")
    assert first["project"] == str(repo) and first["note"].startswith("The CSV fixtures")
    assert PLANTED not in first["note"] and "[REDACTED]" in first["note"]  # scrubbed before it is stored
    other = tmp_path / "other"
    other.mkdir()
    second = memory.add_note(db, "run make setup before the tests", project=str(other), source="tui")
    third = memory.add_note(db, "the csv importer lives in pkg/deep", project="shop")  # the one known project named shop
    assert third["project"] == str(repo)

    con = connect(db, read_only=True)
    try:
        stored = con.execute("SELECT note FROM notes").fetchall()
    finally:
        con.close()
    assert all(PLANTED not in n for (n,) in stored)

    assert [n["id"] for n in memory.list_notes(db)] == [third["id"], first["id"]]  # newest first, this project
    assert [n["id"] for n in memory.list_notes(db, project="shop", query="CSV lf")] == [first["id"]]
    assert [n["id"] for n in memory.list_notes(db, all_projects=True)] == [third["id"], second["id"], first["id"]]
    assert memory.list_notes(db, project=str(other))[0]["source"] == "tui"
    assert memory.list_notes(tmp_path / "none.duckdb") == []

    gone = memory.remove_note(db, second["id"][:6])
    assert gone["id"] == second["id"]
    assert memory.list_notes(db, project=str(other)) == []
    with pytest.raises(memory.NoteError, match="no note"):
        memory.remove_note(db, second["id"])
    with pytest.raises(memory.NoteError, match="at least its first 4"):
        memory.remove_note(db, "ab")
    with pytest.raises(memory.NoteError, match="needs some text"):
        memory.add_note(db, "   ")


def delta(**items) -> dict | None:
    return DigestDelta.from_items(**items).to_json()


def ev(sid: str, i: int, at: datetime, digest: dict | None, **kw) -> ExchangeEvent:
    return ExchangeEvent(id=f"{sid}-{i:03d}", session_id=sid, started_at=at, api="messages", outcome="ok",
                         client="claude-code", provider="anthropic", model="claude-sonnet-4-5", digest=digest, **kw)


@pytest.fixture
def history(tmp_path, repo) -> Path:
    """Three past sessions: one in `repo` a week ago, one in another project an hour ago, one whose
    project only its `llmsm run` tells, yesterday."""
    db = tmp_path / "history.duckdb"
    now = datetime.now(UTC)
    week, hour, day = now - timedelta(days=8), now - timedelta(hours=1), now - timedelta(days=1, hours=2)
    insert_events(db, [
        ev("old", 0, week, delta(project={"cwd": str(repo / "pkg"), "git": True, "branch": "main"},
                                 goal="Find why the CSV importer drops the last row", asks=["Find why the CSV importer drops the last row"])),
        ev("old", 1, week + timedelta(minutes=1), delta(commands=[("pytest -q tests/test_csv.py", True)],
                                                        files=[("pkg/deep/csv_reader.py", "read")])),
        ev("old", 2, week + timedelta(minutes=2), delta(text="Found it: the reader stops at the last newline; "
                                                             f"fixed with a final flush. Key {PLANTED} was unused.")),
        ev("web", 0, hour, delta(project={"cwd": "/elsewhere/web", "git": True}, asks=["make the csv export faster"]),
           label="web-work"),
        ev("ran", 0, day, delta(files=[("importer/csv_reader.py", "edit")])),
        ev("plain", 0, hour, None),  # no digest: never a result
    ])
    insert_run(db, session_id="ran", command="codex", cwd="/srv/importer", started_at=day - timedelta(seconds=5))
    memory.add_note(db, "CSV: the importer expects LF endings", project=str(repo))
    return db


def test_search_sessions_and_notes(history, repo):
    results = memory.search(history, "csv")
    assert [r["kind"] for r in results] == ["note", "session", "session", "session"]
    assert [r["session_id"] for r in results[1:]] == ["web", "ran", "old"]  # newest first, one per session
    web, ran, old = results[1:]
    assert web["label"] == "web-work" and web["field"] == "ask" and web["snippet"] == "make the csv export faster"
    assert web["project"] == "/elsewhere/web"
    assert ran["project"] == "/srv/importer" and ran["field"] == "file"  # the project from its llmsm run
    assert old["project"] == str(repo) and old["hits"] == 2 and old["field"] == "file"  # its text says no "csv"
    assert old["snippet"] == "pkg/deep/csv_reader.py"

    # every word must match; a word only found in the JSON keys ("path", "action") matches nothing
    assert [r["session_id"] for r in memory.search(history, "reader LAST")] == ["old"]
    assert memory.search(history, "action") == []
    hit = memory.search(history, "flush")[0]
    assert "final flush" in hit["snippet"] and PLANTED not in hit["snippet"]

    # by project: a path or a bare name
    assert {r["session_id"] for r in memory.search(history, "csv", project=str(repo)) if r["kind"] == "session"} == {"old"}
    assert [r["kind"] for r in memory.search(history, "csv", project="shop")] == ["note", "session"]
    assert [r["session_id"] for r in memory.search(history, "csv", project="web")] == ["web"]
    assert len(memory.search(history, "csv", limit=2)) == 2


def test_search_within_a_time_budget_and_before(history, repo, monkeypatch):
    """search_within: a small history is read in one go, whatever the budget; a larger one (here:
    SEARCH_SMALL lowered) with no time left gets one window (the last hour), and the answer says
    from when on it searched; `before` goes on from there and finds the older sessions."""
    now = datetime.now(UTC)
    assert memory.search_within(history, "csv", at=now, budget_s=0.0)["searched_from"] is None
    monkeypatch.setattr(memory, "SEARCH_SMALL", 0)
    first = memory.search_within(history, "csv", at=now, budget_s=0.0)
    assert first["searched_from"] is not None and first["searched_from"] < now
    assert [r["session_id"] for r in first["results"] if r["kind"] == "session"] == []  # "web" is just over an hour old
    rest = memory.search_within(history, "csv", at=now, before=first["searched_from"])
    assert rest["searched_from"] is None  # all the rest was read
    assert [r["session_id"] for r in rest["results"] if r["kind"] == "session"] == ["web", "ran", "old"]
    older = memory.search_within(history, "csv", at=now, before=now - timedelta(days=2))
    assert [r["session_id"] for r in older["results"]] == ["old"]  # nor the note, kept just now
    assert memory.search_within(history, "csv", at=now)["results"] == memory.search(history, "csv", at=now)

    with pytest.raises(memory.NoteError):
        memory.search(history, "   ")
    assert memory.search(history.parent / "none.duckdb", "csv") == []


def test_memory_cli(tmp_path, repo):
    env = {**isolated_env(tmp_path), "COLUMNS": "250"}
    db = str(tmp_path / "cli.duckdb")

    def llmsm(*args: str):
        p = run_cli(*args, "--db", db, env=env)
        assert "Traceback" not in p.stderr, p.stderr
        return p

    p = llmsm("memory", "add", f"deploys need VPN; token {PLANTED}", "--project", str(repo / "pkg"), "--json")
    assert p.returncode == 0, p.stderr
    note = json.loads(p.stdout)
    assert note["project"] == str(repo) and PLANTED not in p.stdout and note["source"] == "cli"
    p = llmsm("memory", "add", "second", "-p", str(repo))
    assert p.returncode == 0 and p.stdout.startswith("kept note ")

    p = llmsm("memory", "list", "--project", "shop", "--json")
    assert [n["note"] for n in json.loads(p.stdout)] == ["second", "deploys need VPN; token [REDACTED]"]
    p = llmsm("memory", "list", "--all")
    assert p.returncode == 0 and "deploys need VPN" in p.stdout and str(repo) in p.stdout
    p = llmsm("memory", "search", "vpn", "--json")
    [found] = json.loads(p.stdout)
    assert found["kind"] == "note" and found["note_id"] == note["id"]

    p = llmsm("memory", "rm", note["id"][:5], "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["id"] == note["id"]
    for args, message in ((("memory", "rm", note["id"]), "no note"), (("memory", "add", " "), "needs some text"),
                          (("memory", "search", " "), "give a word"), (("memory", "list", "--all", "-p", "x"), "do not go together")):
        p = llmsm(*args)
        assert p.returncode != 0 and p.stderr.startswith("error: ") and message in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
