"""One dashboard frame over 1M requests and 1,000 sessions; and the status line.

    .venv/bin/python benchmarks/bench_dashboard.py [--requests N] [--sessions S] [--repeat R] [--rebuild]

Builds benchmarks/out/db/dashboard-N-S.duckdb once (DuckDB SQL, `INSERT INTO events SELECT ...
FROM range(N)`, rows in time order like the gateway writes them): S sessions of N/S requests,
30 s apart; 20 sessions are live (their last request within the last 7 minutes), the others
ended one after another over the previous ~30 days. Each turn adds 4k tokens to the prompt
(almost all of it read from cache) and the prompt drops back every 40 turns (a compaction);
1 % are 529s, 5 % preflights (api 'other'), 10 % subagent turns. `--rebuild` makes a new one.

Then times (median of R runs, after one warm-up):
- a frame as `llmsm watch` draws it: open read-only, the two queries, close, health for every
  session, render to a recording console at 200 columns;
- the same with `--all` (every one of the 1,000 sessions): a full frame (the first one), and a
  refresh one second later (only the sessions seen in the last 10 minutes are read again);
- the status line: in-process work (import duckdb, one query, quick check) and the wall time of
  `llmsm statusline` as a subprocess (Python start-up and CLI import included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
sys.path.insert(0, str(REPO / "benchmarks"))


def build_db(path: Path, n: int, sessions: int, now: datetime) -> None:
    from llmsm.analytics.store import connect

    for p in (path, Path(str(path) + ".wal")):
        p.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    per = n // sessions
    con = connect(path)
    try:
        con.execute("SET preserve_insertion_order = true")
        # session s: requests k = 0..per-1, 30 s apart, ending at end_s
        con.execute(
            f"""
            INSERT INTO events (id, started_at, ended_at, session_id, session_source, label, agent_id, client,
                client_version, provider, api, method, path, model, requested_model, streamed, status_code, outcome,
                error_type, error_message, stop_reason, input_tokens, output_tokens, cache_read_tokens,
                cache_write_tokens, usage_source, usage_raw, cost_usd, ttft_ms, duration_ms, request_bytes,
                response_bytes, message_count, tool_errors, request_hash, cache_ttl)
            WITH g AS (
                SELECT i, i % {sessions} AS s, i // {sessions} AS k FROM range({per * sessions}) t(i)
            ), t AS (
                SELECT *,
                    CASE WHEN s < 20 THEN $now - to_seconds(s * 20 + 5)
                         ELSE $now - INTERVAL 70 MINUTE - to_seconds((s - 20) * 2640) END
                        - to_seconds(({per} - 1 - k) * 30) AS ts,
                    hash(i) % 100 AS r,
                    CASE s % 4 WHEN 0 THEN 'claude-opus-4-5' WHEN 1 THEN 'claude-sonnet-4-5'
                               WHEN 2 THEN 'claude-haiku-4-5' ELSE 'claude-sonnet-4-6' END AS m,
                    15000 + (k % 40) * 4000 AS prompt
                FROM g
            )
            SELECT
                'ev-' || i, ts, ts + to_seconds(8 + r / 10),
                's-' || lpad(s::VARCHAR, 4, '0') || '-' || md5(s::VARCHAR)[:20], 'header',
                CASE WHEN s % 3 = 0 THEN 'task-' || s END,
                CASE WHEN r BETWEEN 10 AND 19 THEN 'agent-' || (k % 3) END,
                'claude-code', '2.0.31', 'anthropic',
                CASE WHEN r >= 95 THEN 'other' ELSE 'messages' END, 'POST', '/v1/messages',
                CASE WHEN r < 95 THEN m END, m, true,
                CASE WHEN r = 0 THEN 529 WHEN r >= 95 THEN 204 ELSE 200 END,
                CASE WHEN r = 0 THEN 'http_error' ELSE 'ok' END,
                CASE WHEN r = 0 THEN 'overloaded_error' END,
                CASE WHEN r = 0 THEN 'Overloaded' END,
                CASE WHEN r BETWEEN 1 AND 94 THEN 'tool_use' END,
                CASE WHEN r BETWEEN 1 AND 94 THEN 8 END,
                CASE WHEN r BETWEEN 1 AND 94 THEN 200 + (i % 700) END,
                CASE WHEN r BETWEEN 1 AND 94 THEN prompt - 1508 END,
                CASE WHEN r BETWEEN 1 AND 94 THEN 1500 END,
                CASE WHEN r BETWEEN 1 AND 94 THEN 'reported' ELSE 'none' END,
                CASE WHEN r BETWEEN 1 AND 94 THEN
                    '{{"input_tokens":8,"cache_creation_input_tokens":1500,"cache_read_input_tokens":' || (prompt - 1508)
                    || ',"output_tokens":' || (200 + (i % 700)) || ',"service_tier":"standard"}}' END,
                CASE WHEN r BETWEEN 1 AND 94 THEN (8 * 3 + (prompt - 1508) * 0.3 + 1500 * 3.75 + (200 + (i % 700)) * 15) / 1e6 END,
                CASE WHEN r BETWEEN 1 AND 94 THEN 700 + (k % 40) * 30 + r END,
                CASE WHEN r < 95 THEN 8000 + r * 100 ELSE 120 END,
                prompt * 4, 3000, 20 + k % 40,
                CASE WHEN r = 50 THEN 1 ELSE 0 END,
                md5(i::VARCHAR), '5m'
            FROM t ORDER BY ts
            """,
            {"now": now},
        )
        con.execute(
            f"INSERT INTO runs (session_id, label, command, cwd, git_branch, pid, started_at, ended_at, exit_code) "
            f"SELECT 's-' || lpad(s::VARCHAR, 4, '0') || '-' || md5(s::VARCHAR)[:20], 'task-' || s, "
            f"'claude', '/home/dev/project-' || s, 'main', 1000 + s, $now - INTERVAL 40 DAY, NULL, NULL "
            f"FROM range({sessions}) t(s) WHERE s % 3 = 0",
            {"now": now},
        )
        con.execute("CHECKPOINT")
    finally:
        con.close()


def median_ms(fn, repeat: int) -> tuple[float, list[float]]:
    fn()  # warm-up: caches (prices, context windows), the OS page cache
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--sessions", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--rebuild", action="store_true", help="rebuild the database even if it exists")
    args = ap.parse_args()

    from rich.console import Console

    from _common import print_machine
    from llmsm.analytics import dashboard
    from llmsm.analytics.store import connect
    from llmsm.cli.dashboard import render_frame

    db = OUT / "db" / f"dashboard-{args.requests}-{args.sessions}.duckdb"
    stamp = Path(str(db) + ".built-at")
    now = datetime.now(timezone.utc)
    if args.rebuild or not db.exists() or not stamp.exists():
        t0 = time.perf_counter()
        build_db(db, args.requests, args.sessions, now)
        stamp.write_text(now.isoformat())
        print(f"built {db.name}: {args.requests:,} requests, {args.sessions:,} sessions in {time.perf_counter() - t0:.1f} s")
    # evaluate as of the build time, so a reused database shows the same frame
    at = datetime.fromisoformat(stamp.read_text().strip())
    con = connect(db, read_only=True)
    n_rows, n_sessions = con.execute("SELECT count(*), count(DISTINCT session_id) FROM events").fetchone()
    con.close()
    print_machine()
    print(f"database: {db.relative_to(REPO)} ({db.stat().st_size / 1e6:.0f} MB), {n_rows:,} events, {n_sessions:,} sessions")

    sink = open(os.devnull, "w")

    def render(f) -> None:
        console = Console(record=True, width=200, height=60, file=sink, color_system="truecolor")
        console.print(render_frame(f, width=200, height=60))
        console.export_text()

    def frame(window, previous=None, at=at):
        f = dashboard.read_frame(db, at=at, window_minutes=window, timeout=5, previous=previous)
        render(f)
        return f

    full_all = dashboard.read_frame(db, at=at, window_minutes=None, timeout=5)
    cases = (
        ("frame: sessions of the last 60 min (`llmsm watch`)", lambda: frame(60.0)),
        ("frame: all sessions, first frame (`watch --all`)", lambda: frame(None)),
        ("frame: all sessions, refresh 1 s later (`watch --all`)",
         lambda: frame(None, previous=full_all, at=at + timedelta(seconds=1))),
    )
    results = []
    for name, fn in cases:
        f = fn()
        med, times = median_ms(fn, args.repeat)
        q = statistics.median([fn().query_ms for _ in range(3)])
        results.append((name, len(f.sessions), med, min(times), max(times), q, f.health_ms))

    print()
    print("| frame (query + health + render at 200 columns) | sessions | median ms | min | max | db held ms | health ms |")
    print("|---|---|---|---|---|---|---|")
    for name, n, med, lo, hi, q, h in results:
        print(f"| {name} | {n} | {med:.1f} | {lo:.1f} | {hi:.1f} | {q:.1f} | {h:.1f} |")

    # the status line: in-process work in a fresh interpreter (as of the build time, so the
    # sessions are live), and the whole command as a user's status bar runs it
    code = (
        "import time; t0 = time.perf_counter()\n"
        "import duckdb; t1 = time.perf_counter()\n"
        "from llmsm.analytics.statusline import statusline\n"
        "from llmsm.cli.format import format_statusline\n"
        "from datetime import datetime\n"
        f"s = statusline({str(db)!r}, now=datetime.fromisoformat({at.isoformat()!r}))\n"
        "line = format_statusline(s); t2 = time.perf_counter()\n"
        "print(f'{(t1 - t0) * 1000:.2f} {(t2 - t1) * 1000:.2f} {line}')"
    )
    imp, work, wall_cli, wall_fast = [], [], [], []
    line_at = line_cli = line_fast = ""
    for i in range(args.repeat + 1):
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
        a, w, line_at = p.stdout.strip().split(" ", 2)
        t0 = time.perf_counter()
        q = subprocess.run([sys.executable, "-m", "llmsm.cli.main", "statusline", "--db", str(db)],
                           capture_output=True, text=True, cwd=REPO)
        t1 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "llmsm.cli.statusline", "--db", str(db)],
                           capture_output=True, text=True, cwd=REPO)
        t2 = time.perf_counter()
        line_cli, line_fast = q.stdout.strip(), r.stdout.strip()
        if i:  # the first round warms the page cache and the context-window cache file
            imp.append(float(a))
            work.append(float(w))
            wall_cli.append((t1 - t0) * 1000)
            wall_fast.append((t2 - t1) * 1000)
    print()
    print("| status line | median ms | min | max |")
    print("|---|---|---|---|")
    for name, xs in (
        ("`import duckdb` (in a fresh interpreter)", imp),
        ("work after it: connect, one query, quick check, format", work),
        ("`llmsm statusline` wall (interpreter + CLI start-up included)", wall_cli),
        ("`python -m llmsm.cli.statusline` wall (no CLI framework)", wall_fast),
    ):
        print(f"| {name} | {statistics.median(xs):.1f} | {min(xs):.1f} | {max(xs):.1f} |")
    print(f"\nstatus line as of the build: {line_at}")
    print(f"status line now:             {line_cli}")
    assert line_cli == line_fast, (line_cli, line_fast)
    verdict = "MET" if results[0][2] < 100 else "NOT MET"
    print(f"\ntarget: one frame < 100 ms -> {verdict} ({results[0][2]:.1f} ms)")


if __name__ == "__main__":
    main()
