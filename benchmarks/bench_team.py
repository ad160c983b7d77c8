"""Team shipping and team reports at scale, against a real PostgreSQL (tests/conftest_team.py's
server), with baselines measured in the same run:

1. N shippers (default 50: one process each, a ShipLoop over a local DuckDB file of E events,
   default 10,000; shippers, not whole gateways) ship to one team database at once; every event
   must be there exactly once (rows, distinct ids, and both rollups' request counts). The clock
   starts when every shipper has started and imported (a gateway's start-up is not shipping)
   and stops when the last one is done. Prints the rate.
2. `llmsm team report daily --json` over R team rows (default 10M over a year: 50 developers,
   each on one project and model; made with generate_series, and the hourly rollup filled from
   them as the shipper would, the daily one by its trigger), measured as a whole process
   (python start-up, imports, connection, query, JSON), in UTC and in two local zones (Paris:
   one hour a day corrected; New York: five), against `llmsm --version` and `psql -c 'select 1'`
   as whole processes.

    python benchmarks/bench_team.py [--gateways 50] [--events 10000] [--batch 5000] [--rows 10000000]
                                    [--skip-ship] [--skip-report] [--runs 5] [--team-db URL] [--compare-with REV]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _make_db(path: Path, n: int, developer: str) -> None:
    from llmsm.analytics import store
    from llmsm.analytics.events import ExchangeEvent

    t0 = datetime.now(timezone.utc) - timedelta(days=20)
    evs = [ExchangeEvent(api="messages", provider="anthropic", model="claude-sonnet-4-6", session_id=f"{developer}-{i % 40}",
                         started_at=t0 + timedelta(seconds=i * 150), input_tokens=100, output_tokens=20,
                         cache_read_tokens=1000, cost_usd=0.001, usage_source="reported") for i in range(n)]
    for i in range(0, n, 5000):
        store.insert_events(path, evs[i:i + 5000])


_ready = None
_go = None


def _init(ready, go) -> None:
    global _ready, _go
    import llmsm.analytics.store  # noqa: F401  (what a running gateway has loaded already)
    import llmsm.analytics.team.pg  # noqa: F401
    import psycopg  # noqa: F401

    _ready, _go = ready, go
    with ready.get_lock():
        ready.value += 1


def _ship(args: tuple[str, str, str, int]) -> tuple[int, float, float]:
    from llmsm.analytics.team.pg import PostgresSink
    from llmsm.analytics.team.ship import Identity, ShipLoop

    db, url, developer, batch = args
    loop = ShipLoop(Path(db), PostgresSink(url, Identity(developer, "bench")), batch_size=batch, db_timeout=5)
    _go.wait()
    t = time.monotonic()
    loop.catch_up()
    loop.sink.close()
    return loop.shipped, t, time.monotonic()


def bench_ship(pg, a) -> None:
    import psycopg

    from llmsm.analytics.team.pg import connect

    url = pg.create_db()
    connect(url).close()  # migrate once
    tmp = Path(tempfile.mkdtemp(prefix="llmsm-bench-team-"))
    t = time.perf_counter()
    with mp.get_context("spawn").Pool(2) as pool:
        pool.starmap(_make_db, [(tmp / f"g{i}.duckdb", a.events, f"dev{i}") for i in range(a.gateways)])
    print(f"made {a.gateways} local databases x {a.events} events in {time.perf_counter() - t:.1f} s", flush=True)
    ctx = mp.get_context("spawn")
    ready, go = ctx.Value("i", 0), ctx.Event()
    jobs = [(str(tmp / f"g{i}.duckdb"), url, f"dev{i}", a.batch) for i in range(a.gateways)]
    with ctx.Pool(a.gateways, initializer=_init, initargs=(ready, go)) as pool:
        pending = pool.map_async(_ship, jobs, chunksize=1)
        while ready.value < a.gateways:
            time.sleep(0.05)
        t = time.monotonic()
        go.set()
        results = pending.get()
    wall = max(r[2] for r in results) - t
    total = a.gateways * a.events
    with psycopg.connect(url) as con:
        n, distinct = con.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone()
        hourly = con.execute("SELECT sum(requests) FROM usage_hourly").fetchone()[0]
        daily = con.execute("SELECT sum(requests) FROM usage_daily").fetchone()[0]
    ok = n == distinct == total == sum(r[0] for r in results) == hourly == daily
    per = sorted(r[2] - r[1] for r in results)
    print(f"shipped {total:,} events from {a.gateways} shippers (batches of {a.batch}) in {wall:.1f} s: "
          f"{total / wall:,.0f} events/s; one shipper took {per[0]:.1f}-{per[-1]:.1f} s "
          f"(team rows {n}, distinct {distinct}, rollup requests hourly {hourly} daily {daily}) -> "
          f"{'EXACTLY ONCE' if ok else 'MISMATCH'}", flush=True)
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()


def fill(pg, rows: int) -> str:
    from llmsm.analytics.team import schema
    from llmsm.analytics.team.pg import connect

    url = pg.create_db()
    con = connect(url)
    t = time.perf_counter()
    with con.transaction():
        cur = con.cursor()
        start = datetime.now(timezone.utc) - timedelta(days=365)
        months = set()
        m = schema.month_start(start)
        while m <= datetime.now(timezone.utc).date():
            months.add(m)
            m = schema.next_month(m)
        schema.ensure_partitions(cur, months, set())
        step = 365 * 86400 / rows
        cur.execute(
            """INSERT INTO events (id, started_at, developer, host, project, api, provider, model, client, outcome,
                                   usage_source, input_tokens, output_tokens, cache_read_tokens, cost_usd)
               SELECT 'g' || i, %s::timestamptz + (i * %s) * interval '1 second', 'dev' || (i %% 50), 'h', 'p' || ((i %% 50) %% 7),
                      'messages', 'anthropic', 'm' || ((i %% 50) %% 3), 'claude-code', 'ok', 'reported', 100, 20, 1000, 0.001
               FROM generate_series(1, %s) AS i""",
            [start, step, rows],
        )
        cur.execute("""INSERT INTO usage_hourly (hour, developer, host, project, provider, model, client, requests,
                           input_tokens, output_tokens, cache_read_tokens, cost_usd)
                       SELECT date_trunc('hour', started_at), developer, host, project, provider, model, client, count(*),
                              sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cost_usd)
                       FROM events GROUP BY 1, 2, 3, 4, 5, 6, 7""")
    hourly = con.execute("SELECT count(*) FROM usage_hourly").fetchone()[0]
    daily = con.execute("SELECT count(*) FROM usage_daily").fetchone()[0]
    con.execute("VACUUM ANALYZE usage_hourly")
    con.execute("VACUUM ANALYZE usage_daily")
    print(f"generated {rows:,} team rows ({hourly:,} hourly rollup rows, {daily:,} daily) in {time.perf_counter() - t:.1f} s",
          flush=True)
    con.close()
    return url


def _whole(argv: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one whole process; its output is read in full."""
    with tempfile.TemporaryFile() as out:
        t = time.perf_counter()
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(p.pid, 0)
        el = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        err = p.stderr.read().decode(errors="replace")
        p.stderr.close()
        if p.returncode != 0:
            raise SystemExit(f"{argv} failed: {err[-2000:]}")
    return el, usage.ru_utime + usage.ru_stime


def _daily_sql() -> str:
    """The daily report's statement (UTC: no hour moved), for psql: the server's share alone."""
    from llmsm.analytics.team.reports import _report_sql

    sql, _ = _report_sql("daily", None)
    return (sql.replace("%(lo_day)s", "'0001-01-01'").replace("%(hi_day)s", "'9999-12-31'")
            .replace("%(moved_out)s", "'{}'::timestamptz[]").replace("%(moved_in)s", "'{}'::timestamptz[]")
            .replace("%(tz)s", "'UTC'"))


def bench_report(pg, a) -> None:
    url = a.team_db or fill(pg, a.rows)
    llmsm = str(Path(sys.executable).parent / "llmsm")
    psql = str(pg.bin / "psql")
    series: dict[str, list[tuple[float, float]]] = {}
    cases = [
        ("llmsm --version", [llmsm, "--version"], None),
        ("psql -c 'select 1'", [psql, url, "-c", "select 1"], None),
        ("psql: the daily report's query (UTC)", [psql, url, "-o", "/dev/null", "-c", _daily_sql()], None),
        ("team report daily --utc --json", [llmsm, "team", "report", "daily", "--utc", "--json", "--team-db", url], None),
        ("team report daily --json (TZ=Europe/Paris)", [llmsm, "team", "report", "daily", "--json", "--team-db", url],
         {"TZ": "Europe/Paris"}),
        ("team report daily --json (TZ=America/New_York)", [llmsm, "team", "report", "daily", "--json", "--team-db", url],
         {"TZ": "America/New_York"}),
        ("team report developers --json", [llmsm, "team", "report", "developers", "--json", "--team-db", url], None),
    ]
    if a.compare_with:  # the same command of an older llmsm (its tree from git), in the same runs
        old = Path(tempfile.mkdtemp(prefix="llmsm-bench-old-"))
        (old / "tree").mkdir()
        subprocess.run(f"git -C {ROOT} archive {a.compare_with} | tar -x -C {old / 'tree'}", shell=True, check=True)
        (old / "llmsm").symlink_to(old / "tree" / "llmsm")  # pyproject's package-dir, by hand
        for sub in ("addons", "analytics", "cli"):
            (old / "tree" / "llmsm" / sub).symlink_to(old / "tree" / sub)
        code = "import sys; sys.argv[0] = 'llmsm'; from llmsm.cli.entry import main; main()"
        cases.append((f"team report daily --utc --json, llmsm {a.compare_with}",
                      [sys.executable, "-P", "-c", code, "team", "report", "daily", "--utc", "--json", "--team-db", url],
                      {"PYTHONPATH": str(old)}))
    for _, argv, env in cases:  # warm the caches once
        _whole(argv, env)
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    for _ in range(a.runs):  # interleaved, so that the machine's load falls on all alike
        for name, argv, env in cases:
            series.setdefault(name, []).append(_whole(argv, env))
    if a.compare_with:
        import shutil

        shutil.rmtree(old, ignore_errors=True)
    base = statistics.median(w for w, _ in series["llmsm --version"])
    print(f"whole processes over {a.rows:,} team rows, {a.runs} runs each; load average after: {os.getloadavg()[0]:.2f}")
    print(f"  {'':50s} {'wall: median / best / worst':>28s}   {'x --version':>11s}   client CPU (median)")
    for name, ts in series.items():
        walls = [w for w, _ in ts]
        med = statistics.median(walls)
        verdict = "" if "team report" not in name else ("  under 1 s" if med < 1 else "  OVER 1 s")
        print(f"  {name:50s} {med:6.3f} / {min(walls):6.3f} / {max(walls):6.3f} s   {med / base:9.1f}x   "
              f"{statistics.median(c for _, c in ts):6.3f} s{verdict}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateways", type=int, default=50)
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=5000, help="events per shipped batch (llmsm team push: 5000)")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--skip-ship", action="store_true")
    ap.add_argument("--skip-report", action="store_true")
    ap.add_argument("--compare-with", metavar="REV", help="also time an older llmsm's team report daily (git revision)")
    ap.add_argument("--team-db", help="report over this (already filled) team database instead of generating one")
    a = ap.parse_args()

    from tests.conftest_team import Postgres

    pg = Postgres()
    pg.init()
    pg.start()
    try:
        if not a.skip_ship:
            bench_ship(pg, a)
        if not a.skip_report:
            bench_report(pg, a)
    finally:
        pg.stop("immediate")
        import shutil

        shutil.rmtree(pg.root, ignore_errors=True)


if __name__ == "__main__":
    main()
