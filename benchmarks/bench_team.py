"""Team shipping at scale, against a real PostgreSQL (tests/conftest_team.py's server):

1. N shippers (default 50: one process each, a ShipLoop over a local DuckDB file of E events,
   default 10,000; shippers, not whole gateways) ship to one team database at once; every event
   must be there exactly once. Prints the rate.
2. `llmsm team report daily` over R team rows (default 10M over a year: 50 developers, each on one project and model; made with generate_series, the
   hourly rollup filled from them as the shipper would) must answer in under 1 s.

    python benchmarks/bench_team.py [--gateways 50] [--events 10000] [--rows 10000000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _make_db(path: Path, n: int, developer: str) -> None:
    from llmsm.analytics import store
    from llmsm.analytics.events import ExchangeEvent

    t0 = datetime.now(timezone.utc) - timedelta(days=20)
    evs = [ExchangeEvent(api="messages", provider="anthropic", model="claude-sonnet-4-6", session_id=f"{developer}-{i % 40}",
                         started_at=t0 + timedelta(seconds=i * 150), input_tokens=100, output_tokens=20,
                         cache_read_tokens=1000, cost_usd=0.001, usage_source="reported") for i in range(n)]
    for i in range(0, n, 5000):
        store.insert_events(path, evs[i:i + 5000])


def _ship(args: tuple[str, str, str]) -> tuple[int, float]:
    from llmsm.analytics.team.pg import PostgresSink
    from llmsm.analytics.team.ship import Identity, ShipLoop

    db, url, developer = args
    loop = ShipLoop(Path(db), PostgresSink(url, Identity(developer, "bench")), batch_size=2000, db_timeout=5)
    t = time.perf_counter()
    loop.catch_up()
    return loop.shipped, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateways", type=int, default=50)
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=10_000_000)
    a = ap.parse_args()

    import psycopg

    from tests.conftest_team import Postgres

    pg = Postgres()
    pg.init()
    pg.start()
    try:
        url = pg.create_db()
        from llmsm.analytics.team.pg import connect

        connect(url).close()  # migrate once
        tmp = Path(tempfile.mkdtemp(prefix="llmsm-bench-team-"))
        jobs = []
        t = time.perf_counter()
        with mp.get_context("spawn").Pool(2) as pool:
            pool.starmap(_make_db, [(tmp / f"g{i}.duckdb", a.events, f"dev{i}") for i in range(a.gateways)])
        print(f"made {a.gateways} local databases x {a.events} events in {time.perf_counter() - t:.1f} s")
        jobs = [(str(tmp / f"g{i}.duckdb"), url, f"dev{i}") for i in range(a.gateways)]
        t = time.perf_counter()
        with mp.get_context("spawn").Pool(a.gateways) as pool:
            results = pool.map(_ship, jobs)
        wall = time.perf_counter() - t
        total = a.gateways * a.events
        with psycopg.connect(url) as con:
            n, distinct = con.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone()
            rolled = con.execute("SELECT sum(requests) FROM usage_hourly").fetchone()[0]
        ok = n == distinct == total == sum(r[0] for r in results) == rolled
        print(f"shipped {total} events from {a.gateways} shippers in {wall:.1f} s: {total / wall:,.0f} events/s "
              f"(team rows {n}, distinct {distinct}, rollup requests {rolled}) -> {'EXACTLY ONCE' if ok else 'MISMATCH'}")

        url2 = pg.create_db()
        con = connect(url2)
        t = time.perf_counter()
        with con.transaction():
            cur = con.cursor()
            from llmsm.analytics.team import schema

            start = datetime.now(timezone.utc) - timedelta(days=365)
            months = set()
            m = schema.month_start(start)
            while m <= datetime.now(timezone.utc).date():
                months.add(m)
                m = schema.next_month(m)
            schema.ensure_partitions(cur, months, set())
            step = 365 * 86400 / a.rows
            cur.execute(
                """INSERT INTO events (id, started_at, developer, host, project, api, provider, model, client, outcome,
                                       usage_source, input_tokens, output_tokens, cache_read_tokens, cost_usd)
                   SELECT 'g' || i, %s::timestamptz + (i * %s) * interval '1 second', 'dev' || (i %% 50), 'h', 'p' || ((i %% 50) %% 7),
                          'messages', 'anthropic', 'm' || ((i %% 50) %% 3), 'claude-code', 'ok', 'reported', 100, 20, 1000, 0.001
                   FROM generate_series(1, %s) AS i""",
                [start, step, a.rows],
            )
            cur.execute("""INSERT INTO usage_hourly (hour, developer, host, project, provider, model, client, requests,
                               input_tokens, output_tokens, cache_read_tokens, cost_usd)
                           SELECT date_trunc('hour', started_at), developer, host, project, provider, model, client, count(*),
                                  sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cost_usd)
                           FROM events GROUP BY 1, 2, 3, 4, 5, 6, 7""")
        rollup_rows = con.execute("SELECT count(*) FROM usage_hourly").fetchone()[0]
        con.execute("ANALYZE usage_hourly")
        print(f"generated {a.rows} team rows ({rollup_rows} rollup rows) in {time.perf_counter() - t:.1f} s")
        con.close()
        from tests.conftest import run_cli

        times = []
        for _ in range(3):
            t = time.perf_counter()
            p = run_cli("team", "report", "daily", "--utc", "--json", "--team-db", url2)
            times.append(time.perf_counter() - t)
            assert p.returncode == 0, p.stderr
        print(f"llmsm team report daily over {a.rows} rows: best {min(times):.3f} s, worst {max(times):.3f} s "
              f"({'under' if max(times) < 1 else 'OVER'} 1 s)")
    finally:
        pg.stop("immediate")


if __name__ == "__main__":
    main()
