"""The store: EventWriter throughput against DuckDB's raw appender, and query times at scale.

    .venv/bin/python benchmarks/bench_store.py              # 100k events; queries at 1M rows
    .venv/bin/python benchmarks/bench_store.py --big        # queries at 10M rows as well (~2 GB disk)

1. Writer: --events synthetic ExchangeEvents are put() into an EventWriter as fast as the loop
   goes (a burst; beyond its max_pending of 20,000 the writer keeps events in the journal only and
   reads them back), then we wait until all are committed and a read-only reader counts them.
   The same run with max_pending above N (everything queued in memory) shows the journal path's
   cost. Baseline, same run, same events: the writer's own rows (store._row) + con.appender('events') into a
   fresh database, one transaction.
2. Queries: a database made by llmsm.analytics.store.connect (migrations and views), filled with
   `INSERT INTO events SELECT ... FROM range(N)` (~200 requests per session, 5 models, 30 days),
   then timed through a read-only connection opened like `llmsm sql` opens it (open_for_query):
   the `sessions` view against a plain GROUP BY session_id over `events` (the baseline), a
   GROUP BY model over the `requests` view against the same over `events`, and the same over
   `counted_events` (the counting rule) against `requests` without 'other' calls. Median of --repeat.
Figures also go to benchmarks/out/bench_store.json.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def synthetic_events(n: int):
    from llmsm.analytics.events import ExchangeEvent

    rng = random.Random(42)
    models = ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5", "gpt-5", "gemini-2.5-pro"]
    t0 = datetime.now(timezone.utc) - timedelta(hours=1)
    out = []
    for i in range(n):
        start = t0 + timedelta(milliseconds=30 * i)
        inp, outp = rng.randint(1, 3000), rng.randint(1, 2000)
        out.append(ExchangeEvent(
            started_at=start, ended_at=start + timedelta(seconds=rng.uniform(0.5, 30)),
            session_id=f"bench-{i // 200}", session_source="claude_code_header", client="claude-code", client_version="2.0.0",
            account="key:0123456789ab", provider="anthropic", api="messages", method="POST", path="/v1/messages",
            upstream="https://api.anthropic.com", requested_model=models[i % 5], model=models[i % 5], streamed=True,
            status_code=200, outcome="ok", stop_reason="end_turn", request_id=f"req_{i}", message_id=f"msg_{i}",
            input_tokens=inp, output_tokens=outp, cache_read_tokens=rng.randint(0, 100_000), cache_write_tokens=rng.randint(0, 5000),
            usage_source="reported",
            usage_raw={"input_tokens": inp, "output_tokens": outp, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 100},
            cost_usd=rng.uniform(0, 0.2), ttft_ms=rng.uniform(200, 3000), duration_ms=rng.uniform(500, 30000),
            request_bytes=rng.randint(1000, 300_000), response_bytes=rng.randint(500, 50_000), message_count=rng.randint(1, 200),
            tool_errors=0, request_hash=f"{i:016x}", retry_count=0, cache_ttl="5m",
            ratelimit={"anthropic-ratelimit-tokens-limit": "400000", "anthropic-ratelimit-tokens-remaining": "399000"},
        ))
    return out


def count_rows(db: Path) -> int:
    from llmsm.analytics.store import open_for_query

    con = open_for_query(db, timeout=30)
    try:
        return con.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        con.close()


def bench_writer(events, *, max_pending: int | None, label: str) -> dict:
    from llmsm.addons.writer import EventWriter

    db = C.fresh_db("store-writer")
    kwargs = {} if max_pending is None else {"max_pending": max_pending}
    w = EventWriter(db, **kwargs)
    w.start()
    try:
        t0 = time.perf_counter()
        for ev in events:
            w.put(ev)
        t_put = time.perf_counter()
        flushed = w.flush(timeout=600)
        t_flush = time.perf_counter()
        stats = w.stats()
    finally:
        w.close()
    n = count_rows(db)
    t_vis = time.perf_counter()
    total = t_vis - t0
    print(f"  EventWriter ({label}): put {(t_put - t0) * 1e6 / len(events):.1f} us/event on the caller, "
          f"all committed after {t_flush - t0:.2f} s, {n} visible to a reader after {total:.2f} s "
          f"-> {n / total:,.0f} rows/s (flushed={flushed}, dropped={stats['dropped']})")
    return {"label": label, "put_us_per_event": (t_put - t0) * 1e6 / len(events), "committed_s": t_flush - t0,
            "visible_s": total, "rows": n, "rows_per_s": n / total, "dropped": stats["dropped"]}


def bench_appender(events) -> dict:
    from llmsm.analytics import store

    db = C.fresh_db("store-appender")
    store.connect(db).close()  # schema and views, not timed
    t0 = time.perf_counter()
    con = store.connect(db)
    rows = [store._row(ev) for ev in events]  # the rows the writer inserts
    t_rows = time.perf_counter()
    con.execute("BEGIN TRANSACTION")
    app = con.appender("events")
    app.append_rows(rows)
    app.flush()
    del app
    con.execute("COMMIT")
    con.close()
    t_done = time.perf_counter()
    n = count_rows(db)
    t_vis = time.perf_counter()
    total = t_vis - t0
    print(f"  raw appender baseline: rows {t_rows - t0:.2f} s + append/commit {t_done - t_rows:.2f} s, "
          f"{n} visible after {total:.2f} s -> {n / total:,.0f} rows/s "
          f"(appender alone {n / (t_done - t_rows):,.0f} rows/s)")
    return {"visible_s": total, "rows": n, "rows_per_s": n / total, "to_row_s": t_rows - t0, "append_s": t_done - t_rows}


# -------------------------------------------------------------------------------------------
# Query times
# -------------------------------------------------------------------------------------------

FILL_SQL = """
INSERT INTO events (id, started_at, ended_at, session_id, session_source, client, client_version, account,
    provider, api, method, path, upstream, requested_model, model, streamed, status_code, outcome, stop_reason,
    input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, usage_source, usage_raw, cost_usd,
    ttft_ms, duration_ms, request_bytes, response_bytes, message_count, request_hash)
SELECT
    md5(i::VARCHAR) AS id,
    TIMESTAMPTZ '{start}' + to_microseconds((i::DOUBLE * {span_us} / {n})::BIGINT) AS started_at,
    TIMESTAMPTZ '{start}' + to_microseconds((i::DOUBLE * {span_us} / {n})::BIGINT) + INTERVAL 5 SECOND AS ended_at,
    'sess-' || ((hash(i // 20) % {sessions}))::VARCHAR AS session_id,
    'claude_code_header', 'claude-code', '2.0.0', 'key:' || (i % 7)::VARCHAR,
    CASE WHEN i % 5 = 4 THEN 'openai' ELSE 'anthropic' END AS provider,
    CASE WHEN i % 50 = 0 THEN 'other' WHEN i % 5 = 4 THEN 'responses' ELSE 'messages' END AS api,
    'POST', '/v1/messages', 'https://api.anthropic.com',
    ['claude-sonnet-4-5', 'claude-opus-4-1', 'claude-haiku-4-5', 'gpt-5', 'gemini-2.5-pro'][1 + i % 5] AS requested_model,
    ['claude-sonnet-4-5', 'claude-opus-4-1', 'claude-haiku-4-5', 'gpt-5', 'gemini-2.5-pro'][1 + i % 5] AS model,
    true, CASE WHEN i % 97 = 0 THEN 529 ELSE 200 END,
    CASE WHEN i % 97 = 0 THEN 'http_error' ELSE 'ok' END, 'end_turn',
    (hash(i) % 3000)::BIGINT, (hash(i + 1) % 2000)::BIGINT, (hash(i + 2) % 100000)::BIGINT, (hash(i + 3) % 5000)::BIGINT,
    'reported', '{{"input_tokens":21,"output_tokens":42}}', (hash(i + 4) % 20000) / 100000.0,
    (hash(i + 5) % 3000)::DOUBLE, (hash(i + 6) % 30000)::DOUBLE, (hash(i + 7) % 300000)::BIGINT, (hash(i + 8) % 50000)::BIGINT,
    (1 + hash(i + 9) % 200)::INTEGER, printf('%016x', i)
FROM range({n}) AS t(i)
"""

QUERIES = [
    ("sessions view: SELECT * FROM sessions", "SELECT * FROM sessions",
     "baseline: GROUP BY session_id over events",
     "SELECT session_id, count(*), min(started_at), max(started_at), sum(input_tokens), sum(output_tokens), "
     "sum(cache_read_tokens), sum(cache_write_tokens), sum(cost_usd) FROM events WHERE session_id IS NOT NULL GROUP BY session_id"),
    ("requests: GROUP BY model", "SELECT model, count(*), sum(total_tokens), sum(cost_usd) FROM requests GROUP BY model",
     "baseline: the same over events",
     "SELECT model, count(*), sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0) + coalesce(cache_read_tokens, 0) "
     "+ coalesce(cache_write_tokens, 0)), sum(cost_usd) FROM events GROUP BY model"),
    ("requests: last 24 h by hour", "SELECT date_trunc('hour', started_at) AS h, count(*), sum(total_tokens) FROM requests "
     "WHERE started_at >= (SELECT max(started_at) FROM events) - INTERVAL 1 DAY GROUP BY h ORDER BY h",
     "baseline: the same over events",
     "SELECT date_trunc('hour', started_at) AS h, count(*), sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0)) FROM events "
     "WHERE started_at >= (SELECT max(started_at) FROM events) - INTERVAL 1 DAY GROUP BY h ORDER BY h"),
    # The counting rule (counted_events: API calls, the wire winning over imported transcripts)
    # on a database with nothing imported, as most are: it should cost next to nothing there.
    ("counted_events(): GROUP BY model", "SELECT model, count(*), sum(total_tokens), sum(cost_usd) FROM counted_events() GROUP BY model",
     "baseline: requests WHERE api <> 'other'",
     "SELECT model, count(*), sum(total_tokens), sum(cost_usd) FROM requests WHERE api <> 'other' GROUP BY model"),
    ("counted_events(last day): GROUP BY model",
     "SELECT model, count(*), sum(total_tokens) FROM counted_events(TIMESTAMPTZ '2026-01-30 00:00:00+00') GROUP BY model",
     "baseline: the same day of requests",
     "SELECT model, count(*), sum(total_tokens) FROM requests WHERE api <> 'other' "
     "AND started_at >= TIMESTAMPTZ '2026-01-30 00:00:00+00' GROUP BY model"),
    # What the gateway's budget guard reads about once a second while traffic flows and budgets
    # are set (BUDGETS below: a day, a session, a label and a client budget).
    ("budget_status (4 budgets)", "SELECT * FROM budget_status",
     "baseline: one pass summing tokens and cost over events",
     "SELECT sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0) + coalesce(cache_read_tokens, 0) "
     "+ coalesce(cache_write_tokens, 0)), sum(cost_usd) FROM events"),
]

BUDGETS = """
INSERT INTO budgets (id, scope, target, max_tokens, max_usd, warn_at, created_at) VALUES
    ('bench-day', 'day', NULL, NULL, 100, 0.8, now()),
    ('bench-session', 'session', 'sess-3', NULL, 5, 0.8, now()),
    ('bench-label', 'label', 'release', 1000000, NULL, 0.8, now()),
    ('bench-client', 'client', 'claude-code', NULL, 1000, 0.8, now())
"""


def timed(con, sql: str, repeat: int) -> tuple[float, int]:
    con.execute(sql).fetchall()  # warm
    times = []
    rows = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = len(con.execute(sql).fetchall())
        times.append((time.perf_counter() - t0) * 1000)
    return C.median(times), rows


def bench_queries(n: int, repeat: int, keep: bool = False) -> dict:
    from llmsm.analytics import store

    db = C.fresh_db(f"store-q{n}")
    con = store.connect(db)
    start = "2026-01-01 00:00:00+00"
    t0 = time.perf_counter()
    con.execute(FILL_SQL.format(n=n, start=start, span_us=30 * 86400 * 10**6, sessions=max(1, n // 200)))
    con.execute(BUDGETS)
    con.execute("CHECKPOINT")
    con.close()
    fill_s = time.perf_counter() - t0
    size_mb = db.stat().st_size / 2**20
    t0 = time.perf_counter()
    q = store.open_for_query(db)
    open_ms = (time.perf_counter() - t0) * 1000
    print(f"\n{n:,} rows: generated in {fill_s:.1f} s, file {size_mb:.0f} MiB, read-only open {open_ms:.1f} ms")
    out = {"rows": n, "fill_s": fill_s, "file_mib": size_mb, "open_ms": open_ms, "queries": []}
    table_rows = []
    try:
        for name, sql, base_name, base_sql in QUERIES:
            ms, nrows = timed(q, sql, repeat)
            base_ms, _ = timed(q, base_sql, repeat)
            table_rows.append([name, nrows, ms, base_ms, f"{ms / base_ms:.2f}x"])
            out["queries"].append({"query": name, "result_rows": nrows, "median_ms": ms, "baseline": base_name, "baseline_ms": base_ms})
    finally:
        q.close()
        if not keep:
            for f in (db, Path(str(db) + ".wal")):
                f.unlink(missing_ok=True)
    print(C.table(["query", "result rows", "median ms", "baseline ms", "ratio"], table_rows))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=100_000, help="events for the writer benchmark")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows for the query benchmark")
    p.add_argument("--big", action="store_true", help="also time the queries at 10,000,000 rows")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per query (median)")
    p.add_argument("--skip-writer", action="store_true", help="only the query benchmark")
    p.add_argument("--keep", action="store_true", help="keep the generated query databases in benchmarks/out/db/")
    args = p.parse_args()
    args.events = max(1000, min(args.events, 2_000_000))
    C.print_machine()
    out: dict = {"args": vars(args)}
    if not args.skip_writer:
        print(f"\n== writer: {args.events:,} synthetic events ==")
        t0 = time.perf_counter()
        events = synthetic_events(args.events)
        print(f"  (building the events: {(time.perf_counter() - t0):.1f} s, not counted)")
        base = bench_appender(events)
        burst = bench_writer(events, max_pending=None, label="default max_pending=20000" + (": the burst beyond it goes via the journal" if len(events) > 20000 else ""))
        mem = bench_writer(events, max_pending=args.events + 1, label=f"max_pending={args.events + 1}: all queued in memory")
        print(C.table(
            ["path", "rows/s", "ratio to appender"],
            [["raw DuckDB appender (baseline)", base["rows_per_s"], "1.00x"],
             ["EventWriter, default settings", burst["rows_per_s"], f"{burst['rows_per_s'] / base['rows_per_s']:.2f}x"],
             ["EventWriter, all in memory", mem["rows_per_s"], f"{mem['rows_per_s'] / base['rows_per_s']:.2f}x"]],
        ))
        out["writer"] = {"appender": base, "default": burst, "in_memory": mem}
    sizes = [args.rows] + ([10_000_000] if args.big and args.rows != 10_000_000 else [])
    out["queries"] = [bench_queries(n, args.repeat, args.keep) for n in sizes]
    path = C.save_json("bench_store.json", out)
    print(f"\nfigures in {path}")


if __name__ == "__main__":
    main()
