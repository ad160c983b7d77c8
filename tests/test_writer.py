"""addons/writer.py: EventWriter with real DuckDB files, real child processes and SIGKILL."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmsm.addons.writer import EventWriter
from llmsm.analytics import store
from llmsm.analytics.events import ExchangeEvent

CHILD = Path(__file__).with_name("helpers_writer_child.py")
LOGGER = "llmsm.writer.test"


def ev(i: int, prefix: str = "e") -> ExchangeEvent:
    return ExchangeEvent(id=f"{prefix}{i}", session_id="s", api="messages", input_tokens=i, output_tokens=1)


def db_ids(db: Path) -> list[str]:
    con = store.connect(db, read_only=True, timeout=5)
    try:
        return [r[0] for r in con.execute("SELECT id FROM events").fetchall()]
    finally:
        con.close()


def journal_lines(spool: Path) -> int:
    return sum(len([x for x in p.read_bytes().splitlines() if x.strip()]) for p in spool.glob("*.jsonl"))


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "llmsm.duckdb"


def test_events_are_visible_within_two_seconds_and_journal_is_cleaned(db: Path) -> None:
    w = EventWriter(db, logger=logging.getLogger(LOGGER))
    w.start()
    try:
        spool = Path(str(db) + ".spool")
        assert spool.is_dir() and (spool.stat().st_mode & 0o777) == 0o700
        t = time.monotonic()
        for i in range(50):
            w.put(ev(i))
        assert journal_lines(spool) >= 1  # journaled before it reached the database
        seen: list[str] = []
        while time.monotonic() - t < 2.0:
            try:
                seen = db_ids(db)
            except store.StoreError:
                seen = []
            if len(seen) == 50:
                break
            time.sleep(0.05)
        assert sorted(seen) == sorted(f"e{i}" for i in range(50)), f"only {len(seen)} visible after 2 s"
        deadline = time.monotonic() + 2
        while list(spool.glob("*.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert journal_lines(spool) == 0  # committed segments are deleted
        assert w.stats()["written"] == 50 and w.stats()["pending"] == 0
    finally:
        w.close()
    assert list(Path(str(db) + ".spool").glob("*.jsonl")) == []


def test_database_held_by_another_process_loses_nothing(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    store.connect(db).close()
    w = EventWriter(db, logger=logging.getLogger(LOGGER), flush_interval=0.1)
    w.start()
    holder = subprocess.Popen([sys.executable, str(CHILD), "hold", str(db), "5"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        n = 0
        t = time.monotonic()
        while holder.poll() is None:  # traffic keeps coming while the file is held
            t_put = time.perf_counter()
            for _ in range(25):
                w.put(ev(n))
                n += 1
            assert time.perf_counter() - t_put < 0.1  # put() never waits for the database
            time.sleep(0.05)
        assert time.monotonic() - t > 4
        st = w.stats()
        assert st["failures"] >= 1 and "held by another process" in (st["last_error"] or "")
        assert w.flush(timeout=5), w.stats()
        assert sorted(db_ids(db)) == sorted(f"e{i}" for i in range(n))
        assert w.stats()["written"] == n
        warnings = records(caplog, logging.WARNING)
        assert len(warnings) == 1 and "held by another process" in warnings[0].getMessage()
        assert any("writable again" in r.getMessage() for r in records(caplog, logging.INFO))
    finally:
        holder.kill()
        holder.wait()
        w.close()


def test_sigkill_after_put_then_start_recovers_each_event_once(db: Path) -> None:
    n = 400
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "writer", str(db), str(n), "k"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        assert len(db_ids(db)) == n // 2  # the first half is committed, the second only journaled

        # A writer started while the child lives must leave the child's segment alone.
        other = EventWriter(db, logger=logging.getLogger(LOGGER))
        other.start()
        other.close()
        assert len(db_ids(db)) == n // 2

        os.kill(child.pid, signal.SIGKILL)
        child.wait(5)
    finally:
        child.kill()
        child.wait()
    spool = Path(str(db) + ".spool")
    assert journal_lines(spool) == n - n // 2

    w = EventWriter(db, logger=logging.getLogger(LOGGER))
    w.start()  # adopts the orphaned segment and recovers it before returning
    try:
        ids = db_ids(db)
        assert len(ids) == n and sorted(ids) == sorted(f"k{i}" for i in range(n))
        assert w.stats()["pending"] == 0
    finally:
        w.close()
    assert list(spool.glob("*.jsonl")) == []

    w2 = EventWriter(db, logger=logging.getLogger(LOGGER))
    w2.start()
    w2.close()
    assert len(db_ids(db)) == n


def test_corrupt_database_keeps_traffic_and_warns_once(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    db.write_bytes(b"definitely not duckdb" * 500)
    w = EventWriter(db, logger=logging.getLogger(LOGGER), flush_interval=0.05, retry_max_delay=0.1)
    w.start()
    for i in range(100):
        w.put(ev(i))  # must not raise
    time.sleep(0.6)
    st = w.stats()
    assert st["pending"] == 100 and st["written"] == 0 and st["failures"] >= 2
    assert "not a usable DuckDB database" in st["last_error"]
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1 and str(db) in warnings[0].getMessage()
    w.close(timeout=0.3)
    spool = Path(str(db) + ".spool")
    assert journal_lines(spool) == 100  # kept for the next start

    db.unlink()  # the user moved the broken file away
    w2 = EventWriter(db, logger=logging.getLogger(LOGGER))
    w2.start()
    w2.close()
    assert sorted(db_ids(db)) == sorted(f"e{i}" for i in range(100))
    assert list(spool.glob("*.jsonl")) == []


def test_unwritable_database_and_spool_never_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    db = blocker / "llmsm.duckdb"  # neither the database nor the default spool can be created
    w = EventWriter(db, logger=logging.getLogger(LOGGER), flush_interval=0.05, retry_max_delay=0.1)
    w.start()
    for i in range(20):
        w.put(ev(i))
    time.sleep(0.4)
    st = w.stats()
    assert st["pending"] == 20 and st["journal"] is None and st["failures"] >= 1
    warnings = [r.getMessage() for r in records(caplog, logging.WARNING)]
    assert len(warnings) == 2, warnings  # one for the journal, one for the database
    assert any("journal" in m for m in warnings) and any("cannot write to the database" in m for m in warnings)
    w.close(timeout=0.2)
    assert w.stats()["dropped"] == 20  # neither stored nor journaled: reported as lost


def test_memory_bound_spills_to_journal_and_replays(db: Path) -> None:
    db.write_bytes(b"broken" * 1000)
    w = EventWriter(db, logger=logging.getLogger(LOGGER), flush_interval=0.05, retry_max_delay=0.1,
                    max_pending=10, batch_size=7)
    w.start()
    try:
        for i in range(60):
            w.put(ev(i))
        assert len(w._queue) == 10  # the rest lives only in the journal
        assert w.stats()["pending"] == 60
        spool = Path(str(db) + ".spool")
        assert journal_lines(spool) == 60
        db.unlink()  # the database becomes writable
        assert w.flush(timeout=5), w.stats()
        assert sorted(db_ids(db)) == sorted(f"e{i}" for i in range(60))
        assert w.stats()["written"] == 60
    finally:
        w.close()
    assert list(Path(str(db) + ".spool").glob("*.jsonl")) == []


def test_rejected_event_is_dropped_alone(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    w = EventWriter(db, logger=logging.getLogger(LOGGER), flush_interval=0.05)
    w.start()
    try:
        bad = ev(999)
        bad.input_tokens = 2**70  # does not fit BIGINT
        for i in range(5):
            w.put(ev(i))
        w.put(bad)
        for i in range(5, 10):
            w.put(ev(i))
        assert w.flush(timeout=5)
        assert sorted(db_ids(db)) == sorted(f"e{i}" for i in range(10))
        assert w.stats()["dropped"] == 1
        assert any("e999" in r.getMessage() for r in records(caplog, logging.ERROR))
    finally:
        w.close()


def test_journal_line_reads_back_as_the_same_event_also_where_orjson_refuses() -> None:
    from datetime import datetime, timezone

    from llmsm.addons.writer import journal_line

    full = ExchangeEvent(
        started_at=datetime(2026, 12, 4, 23, 0, 0, tzinfo=timezone.utc),  # no microseconds
        ended_at=datetime(2026, 12, 4, 23, 0, 1, 733660, tzinfo=timezone.utc),
        session_id="s", session_source="claude_code_header", client="claude-code", provider="anthropic",
        api="messages", method="POST", path="/v1/messages", status_code=200, streamed=True,
        input_tokens=12, output_tokens=3, cache_read_tokens=0, usage_source="reported",
        usage_raw={"input_tokens": 12, "server_tool_use": {"web_search_requests": 1}, "tiers": [1.5, None, "x"]},
        cost_usd=0.000123456789, ttft_ms=812.125, duration_ms=1733.66, ratelimit={"retry-after": "3"},
        digest={"files": ["a.py"], "nested": {"n": 1}}, long_context=None, error_message="naïve ünïcode ✓",
    )
    huge = full.model_copy(update={"id": "huge", "usage_raw": {"input_tokens": 2**70}})
    for event in (full, huge, ExchangeEvent()):
        line = journal_line(event)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert ExchangeEvent.model_validate_json(line) == event
    assert b"1180591620717411303424" in journal_line(huge)  # through pydantic, not lost
