"""analytics/migrations.py, views.sql and store.py against real DuckDB files and processes."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from llmsm.analytics import migrations, store
from llmsm.analytics.events import EVENT_COLUMNS, ExchangeEvent

CHILD = Path(__file__).with_name("helpers_writer_child.py")


def ev(**kw) -> ExchangeEvent:
    kw.setdefault("api", "messages")
    kw.setdefault("provider", "anthropic")
    return ExchangeEvent(**kw)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "llmsm.duckdb"


def start_holder(db: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), "hold", str(db), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


# --------------------------------------------------------------------------------------------
# migrations
# --------------------------------------------------------------------------------------------


def test_connect_creates_schema_and_version_table(db: Path) -> None:
    con = store.connect(db)
    try:
        names = [m.__name__ for m in migrations.MIGRATIONS]
        assert names[:3] == ["m001_events", "m002_runs", "m003_budgets"]
        rows = con.execute("SELECT name, applied_at FROM _llmsm_migrations ORDER BY name").fetchall()
        assert [r[0] for r in rows] == sorted(names)
        assert all(r[1] is not None for r in rows)

        cols = con.execute("SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_name = 'events' ORDER BY ordinal_position").fetchall()
        assert [c[0] for c in cols] == list(EVENT_COLUMNS)
        types = dict(cols)
        assert types["id"] == "VARCHAR"
        assert types["started_at"] == types["ended_at"] == "TIMESTAMP WITH TIME ZONE"
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                     "cache_write_1h_tokens", "reasoning_tokens", "counted_tokens"):
            assert types[name] == "BIGINT", name
        assert types["usage_raw"] == types["ratelimit"] == "JSON"
        assert types["streamed"] == types["long_context"] == "BOOLEAN"
        assert types["ttft_ms"] == types["duration_ms"] == types["cost_usd"] == "DOUBLE"
        pk = con.execute("SELECT constraint_column_names FROM duckdb_constraints() "
                         "WHERE table_name = 'events' AND constraint_type = 'PRIMARY KEY'").fetchall()
        assert pk == [(["id"],)]

        run_cols = [r[0] for r in con.execute("DESCRIBE runs").fetchall()]
        assert run_cols == ["session_id", "label", "command", "cwd", "git_branch", "pid",
                            "started_at", "ended_at", "exit_code", "parent_session"]
        budget_cols = [r[0] for r in con.execute("DESCRIBE budgets").fetchall()]
        assert budget_cols == ["id", "scope", "target", "max_tokens", "max_usd", "warn_at", "created_at"]
        with pytest.raises(duckdb.ConstraintException):
            con.execute("INSERT INTO budgets (id, scope) VALUES ('b1', 'week')")
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        assert {"requests", "sessions"} <= views
    finally:
        con.close()


def test_migrate_is_idempotent_and_applies_only_new(db: Path) -> None:
    store.connect(db).close()
    con = duckdb.connect(str(db))
    try:
        before = con.execute("SELECT name, applied_at FROM _llmsm_migrations ORDER BY name").fetchall()
        assert migrations.migrate(con) == []
        assert migrations.migrate(con) == []
        assert con.execute("SELECT name, applied_at FROM _llmsm_migrations ORDER BY name").fetchall() == before
        assert migrations.pending(con) == []
        assert migrations.is_current(con)

        calls = []

        def m999_test_extra(c):
            calls.append(1)
            c.execute("CREATE TABLE extra_test (x INTEGER)")

        def m998_test_broken(c):
            c.execute("CREATE TABLE broken_test (x INTEGER)")
            raise RuntimeError("boom")

        migrations.MIGRATIONS.append(m999_test_extra)
        try:
            assert not migrations.is_current(con)
            assert migrations.migrate(con) == ["m999_test_extra"]
            assert migrations.migrate(con) == []
            assert calls == [1]
            migrations.MIGRATIONS.append(m998_test_broken)
            with pytest.raises(RuntimeError):
                migrations.migrate(con)
            # rolled back as a whole: no table, not recorded
            assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'broken_test'").fetchone() == (0,)
            assert "m998_test_broken" not in migrations.applied(con)
        finally:
            migrations.MIGRATIONS[:] = [m for m in migrations.MIGRATIONS if not m.__name__.startswith("m99")]
    finally:
        con.close()


def test_views_are_recreated_when_views_sql_changes(db: Path) -> None:
    store.connect(db).close()
    con = duckdb.connect(str(db))
    try:
        con.execute("DROP VIEW sessions")
        con.execute("UPDATE _llmsm_meta SET value = 'stale' WHERE key = 'views_sha256'")
        assert not migrations.is_current(con)
        migrations.migrate(con)
        assert migrations.is_current(con)
        con.execute("SELECT * FROM sessions").fetchall()
        sql = migrations.views_sql()
        assert sql.rstrip().endswith("-- more views below")
    finally:
        con.close()


def _write_first_schema(db: Path) -> None:
    """A database as the first llmsm left it: migration m001 only."""
    db.parent.mkdir(parents=True)
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE _llmsm_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)")
    migrations.m001_events(con)
    con.execute("INSERT INTO _llmsm_migrations VALUES ('m001_events', now())")
    con.close()


def test_read_only_connect_migrates_an_old_database(db: Path) -> None:
    _write_first_schema(db)

    ro = store.connect(db, read_only=True)
    try:
        assert migrations.pending(ro) == []
        assert ro.execute("SELECT count(*) FROM runs").fetchone() == (0,)
        assert ro.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
        with pytest.raises(duckdb.Error):
            ro.execute("CREATE TABLE x (y INTEGER)")
    finally:
        ro.close()


def test_read_attached_migrates_an_old_database_and_leaves_the_file_free(db: Path) -> None:
    """The live screens read through read_attached (ATTACH on the process's instance): a file
    of an older llmsm is migrated on the way, as a read-only connect would, and after the read
    another process can write the file."""
    _write_first_schema(db)

    with store.read_attached(db, migrate=True) as ro:
        assert ro.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
    with store.read_attached(db, migrate=True) as ro:  # current now: read on the attached file
        assert migrations.is_current(ro)
        assert ro.execute("SELECT current_database()").fetchone() != ("memory",)
        with pytest.raises(duckdb.Error):
            ro.execute("CREATE TABLE x (y INTEGER)")
    writer = subprocess.run([sys.executable, "-c", f"import duckdb; duckdb.connect({str(db)!r}).close(); print('ok')"],
                            capture_output=True, text=True, timeout=60)
    assert writer.stdout.strip() == "ok", writer.stderr


# --------------------------------------------------------------------------------------------
# views
# --------------------------------------------------------------------------------------------


def test_requests_and_sessions_views_sum_correctly(db: Path) -> None:
    # times relative to when this test runs: the status is measured against the clock at query
    # time (a moment taken when the module was imported could be minutes old in a full run)
    now = datetime.now(timezone.utc)
    t0 = now - timedelta(minutes=2)
    events = [
        ev(id="a1", session_id="s1", label=None, client="claude-code", client_version="1.0", model="claude-b",
           started_at=t0, ended_at=t0 + timedelta(seconds=3), agent_id="main",
           input_tokens=100, output_tokens=50, cache_read_tokens=1000, cache_write_tokens=10,
           reasoning_tokens=20, cost_usd=0.5, usage_source="reported"),
        ev(id="a2", session_id="s1", label="feature-x", client="claude-code", client_version="1.1", model="claude-a",
           started_at=t0 + timedelta(seconds=10), agent_id="sub-1",
           input_tokens=5, output_tokens=None, cache_read_tokens=None, cache_write_tokens=None,
           cost_usd=0.25, usage_source="estimated"),
        ev(id="a3", session_id="s1", api="other", path="/v1/models", method="GET", model=None,
           started_at=t0 + timedelta(seconds=20), outcome="http_error", status_code=404,
           input_tokens=999_999),  # cannot happen, but must never count
        ev(id="a4", session_id="s1", model="claude-a", started_at=t0 + timedelta(seconds=30),
           outcome="stream_error", input_tokens=1, output_tokens=2, label=None, client="claude-code",
           client_version=None),
        ev(id="b1", session_id="s2", client="codex", model="gpt-5", api="responses", provider="openai",
           started_at=now - timedelta(minutes=30), input_tokens=7, output_tokens=3),
        ev(id="c1", session_id="s3", client="codex", model="gpt-5", api="responses", provider="openai",
           started_at=now - timedelta(hours=3), input_tokens=1),
        ev(id="n1", session_id=None, input_tokens=50, started_at=now),
    ]
    assert store.insert_events(db, events) == len(events)
    store.insert_run(db, session_id="s1", command="claude old", cwd="/old", git_branch="old",
                     pid=1, started_at=t0 - timedelta(hours=1))
    store.insert_run(db, session_id="s1", command="claude", cwd="/repo", git_branch="main",
                     pid=2, started_at=t0 - timedelta(seconds=5), label="run-label")
    assert store.end_run(db, "s1", 0, pid=2) == 1
    assert store.end_run(db, "s1", 0, pid=2) == 0  # no open run of pid 2 left
    con = store.connect(db, read_only=True)
    try:
        assert con.execute("SELECT pid, exit_code, ended_at IS NOT NULL FROM runs ORDER BY pid").fetchall() == [
            (1, None, False), (2, 0, True)]
    finally:
        con.close()

    con = store.open_for_query(db)
    try:
        cols, rows = store.run_query(con, "SELECT id, total_tokens, prompt_tokens FROM requests ORDER BY id")
        assert cols == ["id", "total_tokens", "prompt_tokens"]
        got = dict((r[0], (r[1], r[2])) for r in rows)
        assert got["a1"] == (1160, 1110)
        assert got["a2"] == (5, 5)
        assert got["a3"] == (0, 0)
        assert got["n1"] == (50, 50)
        cols, _ = store.run_query(con, "SELECT * FROM requests LIMIT 0")
        assert cols == list(EVENT_COLUMNS) + ["total_tokens", "prompt_tokens"]

        cols, rows = store.run_query(con, "SELECT * FROM sessions ORDER BY session_id")
        s = [dict(zip(cols, r)) for r in rows]
        assert [x["session_id"] for x in s] == ["s1", "s2", "s3"]
        s1, s2, s3 = s
        assert s1["label"] == "feature-x"
        assert s1["client"] == "claude-code" and s1["client_version"] == "1.1"
        assert s1["first_seen"] == t0
        assert s1["last_seen"] == t0 + timedelta(seconds=30)
        assert s1["status"] == "active"
        assert s1["requests"] == 3  # a3 is api='other'
        assert s1["errors"] == 1  # a4 (stream_error); a3's http_error is an api='other' call
        assert s1["models"] == ["claude-a", "claude-b"]
        assert (s1["input_tokens"], s1["output_tokens"]) == (106, 52)
        assert (s1["cache_read_tokens"], s1["cache_write_tokens"], s1["reasoning_tokens"]) == (1000, 10, 20)
        assert s1["total_tokens"] == 106 + 52 + 1000 + 10
        assert s1["cost_usd"] == pytest.approx(0.75)
        assert s1["agents"] == 2
        assert s1["estimated"] is True
        assert (s1["command"], s1["cwd"], s1["git_branch"]) == ("claude", "/repo", "main")

        assert s2["status"] == "idle" and s2["total_tokens"] == 10 and s2["estimated"] is False
        assert s2["label"] is None and s2["command"] is None and s2["cost_usd"] is None
        assert s3["status"] == "ended"
    finally:
        con.close()


# --------------------------------------------------------------------------------------------
# the read-only query connection
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO events (id, started_at, api, outcome) VALUES ('x', now(), 'other', 'ok')",
        "DELETE FROM events",
        "CREATE TABLE t (x INTEGER)",
        "DROP VIEW sessions",
        "COPY events TO '{out}'",
        "COPY (SELECT 1) TO '{out}' (FORMAT csv)",
        "ATTACH '{other}' AS other",
        "SELECT * FROM read_csv('{csv}')",
        "SELECT * FROM '{csv}'",
        "SELECT * FROM read_text('{csv}')",
        "SET enable_external_access = true",
        "RESET enable_external_access",
        "SET lock_configuration = false",
        "SET threads = 1",
        "INSTALL httpfs",
    ],
)
def test_query_connection_refuses_writes_files_and_settings(db: Path, tmp_path: Path, sql: str) -> None:
    store.insert_events(db, [ev(id="e1", session_id="s")])
    csv = tmp_path / "secret.csv"
    csv.write_text("a,b\n1,2\n")
    out = tmp_path / "out.csv"
    other = tmp_path / "other.duckdb"
    con = store.open_for_query(db)
    try:
        with pytest.raises(store.StoreError) as info:
            store.run_query(con, sql.format(out=out, other=other, csv=csv))
        assert "\n" not in str(info.value) and str(info.value)
        assert not out.exists() and not other.exists()
        # the connection still answers, settings still locked
        assert store.run_query(con, "SELECT count(*) FROM events") == (["count_star()"], [(1,)])
        _, rows = store.run_query(con, "SELECT current_setting('enable_external_access')")
        assert rows == [(False,)]
    finally:
        con.close()


def test_run_query_error_is_one_line(db: Path) -> None:
    store.connect(db).close()
    con = store.open_for_query(db)
    try:
        with pytest.raises(store.StoreError) as info:
            store.run_query(con, "SELEC nonsense FROM")
        assert "\n" not in str(info.value)
        assert "syntax error" in str(info.value).lower()
        assert store.run_query(con, "SELECT 1 AS one, 'x' AS two") == (["one", "two"], [(1, "x")])
    finally:
        con.close()


# --------------------------------------------------------------------------------------------
# opening: busy, corrupt, missing
# --------------------------------------------------------------------------------------------


def test_busy_database_raises_then_opens_after_release(db: Path) -> None:
    store.connect(db).close()
    proc = start_holder(db, 2.0)
    try:
        for read_only in (False, True):
            t = time.monotonic()
            with pytest.raises(store.DatabaseBusy) as info:
                store.connect(db, read_only=read_only, timeout=0.3)
            assert 0.25 <= time.monotonic() - t < 2.0
            msg = str(info.value)
            assert str(db) in msg and f"pid {proc.pid}" in msg and "\n" not in msg
        with pytest.raises(store.DatabaseBusy):
            store.insert_events(db, [ev()], timeout=0.2)
        # a longer timeout rides out the holder: connect retries until the lock is free
        con = store.connect(db, read_only=True, timeout=10)
        con.close()
        assert proc.wait(5) == 0
    finally:
        proc.kill()
        proc.wait()


def test_corrupt_and_missing_databases(tmp_path: Path) -> None:
    bad = tmp_path / "bad.duckdb"
    bad.write_bytes(b"this is not a duckdb file at all" * 200)
    for read_only in (False, True):
        with pytest.raises(store.DatabaseCorrupt) as info:
            store.connect(bad, read_only=read_only)
        assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(store.DatabaseCorrupt):
        store.insert_events(bad, [ev()])
    with pytest.raises(store.DatabaseCorrupt):
        store.open_for_query(bad)

    missing = tmp_path / "nope" / "missing.duckdb"
    with pytest.raises(store.DatabaseMissing):
        store.connect(missing, read_only=True)
    with pytest.raises(store.DatabaseMissing):
        store.open_for_query(missing)
    assert not missing.parent.exists()

    under_file = tmp_path / "plainfile"
    under_file.write_text("x")
    with pytest.raises(store.StoreError):
        store.insert_events(under_file / "db.duckdb", [ev()])


def test_open_db_for_every_command(tmp_path: Path) -> None:
    """The one way commands open the database: a missing file is an error or (missing_ok) None,
    never created by a read; write=True creates it; a failed query leaves as one StoreError line;
    the connection is closed after the block."""
    db = tmp_path / "sub" / "cmd.duckdb"
    with pytest.raises(store.DatabaseMissing, match="no database at"):
        with store.open_db(db):
            pass
    with store.open_db(db, missing_ok=True) as con:
        assert con is None
    assert not db.parent.exists()

    with store.open_db(db, write=True) as con:
        con.execute("INSERT INTO budgets (id, scope, max_usd, created_at) VALUES ('b1', 'day', 1, now())")
    with store.open_db(db, missing_ok=True) as con:
        assert con.execute("SELECT id FROM budgets").fetchall() == [("b1",)]
        with pytest.raises(duckdb.Error):  # read-only and locked down, like `llmsm sql`
            con.execute("DELETE FROM budgets")
        kept = con
    with pytest.raises(duckdb.Error):
        kept.execute("SELECT 1")  # closed
    with pytest.raises(store.StoreError) as info:
        with store.open_db(db) as con:
            con.execute("SELECT no_such_column FROM events")
    assert "no_such_column" in str(info.value) and "\n" not in str(info.value)
    assert not isinstance(info.value.__cause__, store.StoreError)


def test_default_db_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMSM_DB", str(tmp_path / "x.duckdb"))
    assert store.default_db_path() == tmp_path / "x.duckdb"
    monkeypatch.delenv("LLMSM_DB")
    p = store.default_db_path()
    assert p.name == "llmsm.duckdb" and "llmsm" in p.parent.parts[-1]


# --------------------------------------------------------------------------------------------
# inserting
# --------------------------------------------------------------------------------------------


def test_insert_events_is_idempotent_and_round_trips(db: Path) -> None:
    e1 = ev(id="x1", session_id="s", usage_raw={"input_tokens": 3, "nested": {"a": [1, 2]}},
            ratelimit={"anthropic-ratelimit-tokens-remaining": "99"}, streamed=True, long_context=False,
            ttft_ms=12.5, cost_usd=0.001, input_tokens=2**40)
    e2 = ev(id="x2", session_id="s")
    assert store.insert_events(db, [e1, e2, e1]) == 2  # duplicate inside the batch
    assert store.insert_events(db, [e1, e2]) == 0
    e3 = ev(id="x3")
    assert store.insert_events(db, [e2, e3]) == 1
    assert store.insert_events(db, []) == 0

    con = store.connect(db, read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM events").fetchone() == (3,)
        row = con.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE id = 'x1'").fetchone()
        stored = dict(zip(EVENT_COLUMNS, row))
        assert stored["started_at"] == e1.started_at
        assert stored["input_tokens"] == 2**40
        assert stored["streamed"] is True and stored["long_context"] is False
        assert con.execute("SELECT usage_raw->'$.nested.a[1]' FROM events WHERE id = 'x1'").fetchone() == ("2",)
        assert con.execute("SELECT ratelimit->>'anthropic-ratelimit-tokens-remaining' FROM events "
                           "WHERE id = 'x1'").fetchone() == ("99",)
    finally:
        con.close()


def test_changed_only_by_us_follows_this_process_s_writes_and_no_other(db: Path) -> None:
    """What the budget guard skips a read on: every change since a state was our own write."""
    store.insert_events(db, [ev(id="c1")])
    first = store.file_state(db)
    assert store.changed_only_by_us(db, first)  # nothing changed since
    store.insert_events(db, [ev(id="c2")])
    store.insert_events(db, [ev(id="c3")])
    assert store.file_state(db) != first
    assert store.changed_only_by_us(db, first)
    ours = store.file_state(db)
    # another process writes: no earlier state is explained by our writes any more
    other = subprocess.run([sys.executable, "-c", f"import duckdb; c = duckdb.connect({str(db)!r}); "
                            "c.execute(\"CREATE TABLE other_process (x INTEGER)\"); c.close()"],
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr
    assert not store.changed_only_by_us(db, first) and not store.changed_only_by_us(db, ours)
    after_other = store.file_state(db)
    store.insert_events(db, [ev(id="c4")])
    assert store.changed_only_by_us(db, after_other)  # a new chain starts from where it found the file
    assert not store.changed_only_by_us(db, ours)
    # a connection of this process outside the writer's instance is not the writer either
    con = store.connect(db)
    con.execute("DROP TABLE other_process")
    con.close()
    assert not store.changed_only_by_us(db, after_other)
    never_written = db.with_name("none.duckdb")
    assert not store.changed_only_by_us(never_written, store.file_state(never_written))


def test_insert_rejects_out_of_range_values(db: Path) -> None:
    bad = ev(id="big")
    bad.input_tokens = 2**70  # assignment is not validated by pydantic
    with pytest.raises(store.InvalidEvents):
        store.insert_events(db, [ev(id="ok"), bad])
    # nothing of the failed batch was committed, and the store still works
    assert store.insert_events(db, [ev(id="ok")]) == 1


def test_a_database_removed_or_replaced_under_the_writer_gets_its_schema_again(db: Path, tmp_path: Path) -> None:
    # The writer checks the schema only of a file it has not migrated yet (device and inode):
    # removed, or overwritten in place by a file without llmsm's tables, its rows still land.
    assert store.insert_events(db, [ev(id="r1")]) == 1
    db.unlink()
    assert store.insert_events(db, [ev(id="r2")]) == 1
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE unrelated (a INTEGER)")
    con.close()
    inode = db.stat().st_ino
    with open(db, "r+b") as f:  # the same inode, another database's bytes
        f.write(other.read_bytes())
        f.truncate()
    assert db.stat().st_ino == inode
    assert store.insert_events(db, [ev(id="r3")]) == 1
    con = store.connect(db, read_only=True)
    try:
        assert con.execute("SELECT list(id ORDER BY id) FROM events").fetchone() == (["r3"],)
        assert con.execute("SELECT count(*) FROM event_order WHERE id = 'r3'").fetchone() == (1,)
    finally:
        con.close()


def test_many_batches_all_land(db: Path) -> None:
    # Rows per second: benchmarks/bench_store.py, not a timed test.
    events = [
        ev(session_id=f"s{i % 20}", model="claude-sonnet-4", input_tokens=i, output_tokens=10,
           cache_read_tokens=100, usage_raw={"input_tokens": i}, ratelimit={"x": "1"}, duration_ms=1.0)
        for i in range(20_000)
    ]
    store.insert_events(db, events[:1])
    n = sum(store.insert_events(db, events[i:i + 500]) for i in range(1, len(events), 500))
    assert n == len(events) - 1
    assert store.insert_events(db, events[100:600]) == 0  # a resend is harmless


def test_sessions_view_counts_a_response_seen_on_the_wire_and_in_a_transcript_once(tmp_path):
    db = tmp_path / "x.duckdb"
    wire = ExchangeEvent(session_id="s", api="messages", provider="anthropic", message_id="msg_1",
                         input_tokens=10, output_tokens=5, usage_source="reported")
    dup = ExchangeEvent(session_id="s", api="messages", provider="anthropic", message_id="msg_1",
                        input_tokens=9, output_tokens=4, usage_source="transcript")
    older = ExchangeEvent(session_id="s", api="messages", provider="anthropic", message_id="msg_0",
                          input_tokens=3, output_tokens=2, usage_source="transcript")
    store.insert_events(db, [wire, dup, older])
    con = store.open_for_query(db)
    try:
        _, rows = store.run_query(con, "SELECT requests, input_tokens, output_tokens FROM sessions WHERE session_id = 's'")
    finally:
        con.close()
    assert rows == [(2, 13, 7)]


def test_budget_status_totals_each_scope(db: Path) -> None:
    """budget_status against a plain Python sum, per scope: transcript rows and 'other' calls
    never count, a day budget counts today only, a budget nothing matched uses 0."""
    from llmsm.analytics import budgets

    now = datetime.now(timezone.utc)
    local_midnight = now.astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    today = max(now - timedelta(minutes=1), local_midnight + timedelta(seconds=1))
    yesterday = local_midnight - timedelta(hours=2)
    rows = [  # (id, session, label, client, started_at, api, usage_source, tokens, usd)
        ("e1", "s1", "feat", "claude-code", today, "messages", "reported", 100, 0.5),
        ("e2", "s1", None, "claude-code", yesterday, "messages", "reported", 40, 0.25),
        ("e3", "s2", "feat", "codex", today, "responses", "estimated", 7, 0.125),
        ("e4", "s1", "feat", "claude-code", today, "other", "reported", 999, 0.0),
        ("e5", "s1", "feat", "claude-code", today, "messages", "transcript", 5000, 9.0),
        ("e6", "s3", None, "codex", yesterday, "responses", "reported", 3, 0.0625),
    ]
    store.insert_events(db, [
        ev(id=i, session_id=s, label=lab, client=c, started_at=t, api=api, usage_source=src,
           input_tokens=tok - 1, output_tokens=1, cost_usd=usd)
        for i, s, lab, c, t, api, src, tok, usd in rows
    ])
    con = store.connect(db)
    try:
        ids = {
            (scope, target): budgets.set_budget(con, scope, target, max_tokens=10**9)[0].id
            for scope, target in [("session", "s1"), ("label", "feat"), ("client", "codex"), ("day", None),
                                  ("session", "nobody")]
        }
        got = {r["id"]: (r["used_tokens"], r["used_usd"]) for r in budgets.status(con)}
    finally:
        con.close()

    def expect(match) -> tuple[int, float]:
        hit = [r for r in rows if match(r) and r[6] != "transcript"]
        return sum(r[7] for r in hit if r[5] != "other"), sum(r[8] for r in hit)

    assert got[ids[("session", "s1")]] == expect(lambda r: r[1] == "s1") == (140, 0.75)
    assert got[ids[("label", "feat")]] == expect(lambda r: r[2] == "feat") == (107, 0.625)
    assert got[ids[("client", "codex")]] == expect(lambda r: r[3] == "codex") == (10, 0.1875)
    assert got[ids[("day", None)]] == expect(lambda r: r[4] == today) == (107, 0.625)
    assert got[ids[("session", "nobody")]] == (0, 0.0)
