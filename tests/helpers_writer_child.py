"""Child processes for tests/test_writer.py and tests/test_store.py (run with the venv's python).

    python helpers_writer_child.py hold <db> <seconds>
        Open <db> read-write (DuckDB locks it for every other process), print "held", sleep
        <seconds>, close, print "released".

    python helpers_writer_child.py writer <db> <n> <id-prefix>
        Start an EventWriter, put() n//2 events and flush them to the database, put() the other
        half (not flushed: the thread waits an hour between flushes), print "ready" and sleep
        until killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def hold(db: str, seconds: float) -> None:
    import duckdb

    con = duckdb.connect(db)
    con.execute("CREATE TABLE IF NOT EXISTS _held (x INTEGER)")
    print("held", flush=True)
    time.sleep(seconds)
    con.close()
    print("released", flush=True)


def writer(db: str, n: int, prefix: str) -> None:
    from llmsm.addons.writer import EventWriter
    from llmsm.analytics.events import ExchangeEvent

    w = EventWriter(Path(db), flush_interval=3600, batch_size=1_000_000)
    w.start()
    half = n // 2
    for i in range(half):
        w.put(ExchangeEvent(id=f"{prefix}{i}", session_id="child", api="messages", input_tokens=i))
    if not w.flush(10):
        print("flush failed", w.stats(), flush=True)
        sys.exit(1)
    for i in range(half, n):
        w.put(ExchangeEvent(id=f"{prefix}{i}", session_id="child", api="messages", input_tokens=i))
    print("ready", flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "hold":
        hold(sys.argv[2], float(sys.argv[3]))
    elif mode == "writer":
        writer(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {mode}")
