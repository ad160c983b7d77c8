"""`llmsm export` (read back by DuckDB, equal to the source rows) and `llmsm prune` (boundaries)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from llmsm.analytics.events import ExchangeEvent
from llmsm.analytics.store import insert_events
from tests.conftest import REPO
from tests.test_reports import make_events


def llmsm(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmsm.cli.main", *args], capture_output=True,
                          env=env, timeout=60, cwd=REPO)


def one_error_line(p: subprocess.CompletedProcess, message: str) -> None:
    err = p.stderr.decode()
    assert p.returncode != 0 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    db = tmp_path_factory.mktemp("export") / "e.duckdb"
    events = make_events(seed=3, n=250)
    # values that stress each format: JSON columns, quotes, commas, newlines, unicode, booleans
    events.append(ExchangeEvent(
        started_at=datetime(2026, 11, 2, 12, 0, 0, 123456, tzinfo=timezone.utc), api="messages", provider="anthropic",
        model="claude-sonnet-4-5", error_message='he said "no", then\nleft — ünïcode', label="a,b;c",
        usage_raw={"input_tokens": 5, "nested": {"x": [1, 2, None]}, "s": "q\"uote"},
        ratelimit={"anthropic-ratelimit-tokens-remaining": "12"}, streamed=True, long_context=False,
        input_tokens=5, output_tokens=7, ttft_ms=12.5, cost_usd=0.1 + 0.2,
    ))
    insert_events(db, events)
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        cur = con.execute("SELECT * FROM requests ORDER BY started_at, id")
        columns = [(d[0], str(d[1])) for d in cur.description]
        rows = cur.fetchall()
        types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE requests)").fetchall())
    finally:
        con.close()
    return db, columns, rows, types


def read_back(path: Path, fmt: str, types: dict[str, str]) -> tuple[list[str], list[tuple]]:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        cols = ", ".join(f"'{k}': '{v}'" for k, v in types.items())
        src = {
            "parquet": f"read_parquet('{path}')",
            "csv": f"read_csv('{path}', header = true, columns = {{{cols}}})",
            "jsonl": f"read_json('{path}', format = 'newline_delimited', columns = {{{cols}}})",
        }[fmt]
        cur = con.execute(f"SELECT * FROM {src}")
        return [d[0] for d in cur.description], cur.fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_export_reads_back_equal(source, tmp_path, fmt):
    db, columns, rows, types = source
    out = tmp_path / f"out.{fmt}"
    p = llmsm("export", "--format", fmt, "--output", str(out), "--db", str(db))
    assert p.returncode == 0, p.stderr
    assert f"wrote {len(rows)} request rows" in p.stderr.decode()
    names, back = read_back(out, fmt, types)
    assert names == [c for c, _ in columns]  # every column of the requests view, in order
    assert len(back) == len(rows)
    json_cols = {i for i, (c, _) in enumerate(columns) if types[c] == "JSON"}
    for got, want in zip(back, rows):
        for i, (g, w) in enumerate(zip(got, want)):
            if i in json_cols and g is not None and w is not None:
                assert json.loads(g) == json.loads(w), columns[i][0]
            else:
                assert g == w, (columns[i][0], g, w)
    if fmt == "parquet":
        described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{out}')").fetchall()
        assert {r[0]: r[1] for r in described} == types  # types survive, not just values


def test_export_stdout_and_period(source, tmp_path):
    db, columns, rows, _ = source
    p = llmsm("export", "--format", "jsonl", "--since", "2026-11-01T00:00:00+00:00", "--until", "2026-11-03T00:00:00Z",
              "--db", str(db))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    lo, hi = datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 11, 3, tzinfo=timezone.utc)
    ts_idx = [c for c, _ in columns].index("started_at")
    want = [r for r in rows if lo <= r[ts_idx] < hi]
    assert len(lines) == len(want) > 0
    ids = [json.loads(line)["id"] for line in lines]
    assert ids == [r[0] for r in want]
    p = llmsm("export", "--format", "csv", "--db", str(db))
    assert p.returncode == 0
    header = p.stdout.decode().split("\n", 1)[0]
    assert header.split(",") == [c for c, _ in columns]


def test_export_bad_inputs(source, tmp_path):
    db = source[0]
    one_error_line(llmsm("export", "--format", "parquet", "--db", str(db)), "give --output")
    one_error_line(llmsm("export", "--format", "csv", "--output", str(tmp_path / "no" / "dir.csv"), "--db", str(db)),
                   "does not exist")
    one_error_line(llmsm("export", "--since", "soon", "--db", str(db)), "--since 'soon': not a time")
    one_error_line(llmsm("export", "--db", str(tmp_path / "missing.duckdb")), "no database at")
    assert not list(tmp_path.glob(".*.tmp"))


# --------------------------------------------------------------------------------------------
# prune
# --------------------------------------------------------------------------------------------


def _ids(db: Path) -> set[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT id FROM events").fetchall()}
    finally:
        con.close()


def test_prune_boundaries_and_dry_run(tmp_path):
    db = tmp_path / "p.duckdb"
    cutoff = datetime(2026, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
    tick = timedelta(microseconds=1)
    events = {
        "before": ExchangeEvent(id="before", started_at=cutoff - tick, api="messages"),
        "at": ExchangeEvent(id="at", started_at=cutoff, api="messages"),
        "after": ExchangeEvent(id="after", started_at=cutoff + tick, api="messages"),
        "old": ExchangeEvent(id="old", started_at=cutoff - timedelta(days=400), api="messages"),
    }
    insert_events(db, list(events.values()))
    arg = cutoff.isoformat()

    p = llmsm("prune", "--older-than", arg, "--dry-run", "--db", str(db))
    assert p.returncode == 0, p.stderr
    assert b"would delete 2 events older than 2026-06-01 12:00:00 UTC (2 would remain)" in p.stdout
    assert _ids(db) == set(events)  # nothing changed

    p = llmsm("prune", "--older-than", arg, "--db", str(db))
    assert p.returncode == 0, p.stderr
    assert b"deleted 2 events" in p.stdout
    assert _ids(db) == {"at", "after"}  # exactly at the cutoff is kept

    p = llmsm("prune", "--older-than", arg, "--db", str(db))
    assert b"deleted 0 events" in p.stdout


def test_prune_relative_age(tmp_path):
    db = tmp_path / "rel.duckdb"
    now = datetime.now(timezone.utc)
    insert_events(db, [
        ExchangeEvent(id="d91", started_at=now - timedelta(days=91), api="messages"),
        ExchangeEvent(id="d89", started_at=now - timedelta(days=89), api="messages"),
        ExchangeEvent(id="new", started_at=now, api="other"),
    ])
    p = llmsm("prune", "--older-than", "90d", "--db", str(db))
    assert p.returncode == 0, p.stderr
    assert _ids(db) == {"d89", "new"}
    assert b"database file:" in p.stdout


@pytest.mark.parametrize("args, message", [
    ((), "give --older-than"),
    (("--older-than", "banana"), "--older-than 'banana': not a time"),
    (("--older-than", "0d"), "not in the past"),
    (("--older-than", "now"), "not in the past"),
    (("--older-than", "+1d"), "not in the past"),
    (("--older-than", "2999-01-01"), "not in the past"),
])
def test_prune_bad_inputs(tmp_path, args, message):
    db = tmp_path / "b.duckdb"
    insert_events(db, [ExchangeEvent(id="x", api="messages")])
    one_error_line(llmsm("prune", *args, "--db", str(db)), message)
    assert _ids(db) == {"x"}


def test_prune_missing_database(tmp_path):
    one_error_line(llmsm("prune", "--older-than", "90d", "--dry-run", "--db", str(tmp_path / "none.duckdb")), "no database at")
    assert not (tmp_path / "none.duckdb").exists()


def test_prune_compacts_the_file_and_keeps_schema_and_rows(tmp_path):
    from datetime import datetime, timedelta, timezone

    from llmsm.analytics import retention, store
    from llmsm.analytics.events import ExchangeEvent

    db = tmp_path / "big.duckdb"
    old = datetime.now(timezone.utc) - timedelta(days=200)
    events = [ExchangeEvent(session_id=f"s{i % 50}", api="messages", provider="anthropic", started_at=old + timedelta(seconds=i),
                            input_tokens=i, output_tokens=1, usage_source="reported", error_message="x" * 200)
              for i in range(60_000)]
    keep = [ExchangeEvent(session_id="new", api="messages", provider="anthropic", input_tokens=7, output_tokens=1,
                          usage_source="reported")]
    store.insert_events(db, events + keep, timeout=30)
    before = db.stat().st_size
    result = retention.prune(db, datetime.now(timezone.utc) - timedelta(days=90))
    assert result.matched == 60_000 and result.remaining == 1
    assert db.stat().st_size < before / 2
    con = store.open_for_query(db)
    try:
        _, rows = store.run_query(con, "SELECT session_id, input_tokens FROM sessions")
        assert rows == [("new", 7)]
    finally:
        con.close()
    store.insert_events(db, [ExchangeEvent(session_id="after", api="messages")])  # still writable, schema intact
