"""Benchmark: `llmsm sessions` and `llmsm report daily` over 1M (and 10M) events, and the
transcript import rate.

    .venv/bin/python benchmarks/bench_reports.py            # 1M events (with and without transcript rows) + transcript import
    .venv/bin/python benchmarks/bench_reports.py --10m      # also 10M events (~1 GB, slow to generate)
    .venv/bin/python benchmarks/bench_reports.py --no-import --repeat 3   # the quickest: queries only

Databases and transcripts are generated under benchmarks/out/ (gitignored) with DuckDB SQL
(INSERT ... SELECT FROM range()), kept between runs (--regenerate to rebuild). Times are whole
process wall times of the real command (`python -m llmsm.cli.main ...`), start-up included,
output discarded; each command runs --repeat times after one warm-up run, and the median and best
are shown. Target: 1M rows under 0.5 s.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
TARGET_1M = 0.5

sys.path.insert(0, str(REPO))


def generate_events(path: Path, n: int, transcripts: bool = True) -> float:
    """n synthetic events over one year, in time order: sessions of ~250 requests, 4 clients and
    models, 2 % preflights (api 'other'), 2.5 % errors, 1 % estimated, 2 % transcript rows (half of
    them repeating a wire message, to exercise the de-duplication). `transcripts=False`: those 2 %
    are wire rows too, as in a database where nothing was ever imported (the common case)."""
    import duckdb

    from llmsm.analytics.store import connect

    for p in (path, Path(str(path) + ".wal")):
        p.unlink(missing_ok=True)
    t = time.perf_counter()
    con = connect(path)
    try:
        step_us = 365 * 86400 * 1_000_000 // n
        con.execute(f"""
        INSERT INTO events (id, started_at, ended_at, session_id, session_source, client, client_version, provider, api,
            method, path, requested_model, model, streamed, status_code, outcome, request_id, message_id,
            input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, usage_source,
            cost_usd, duration_ms)
        SELECT printf('%032x', i), ts, ts + INTERVAL 3 SECOND, 'sess-' || (i // 250), 'claude_code_header',
            ['claude-code', 'codex', 'gemini-cli', 'unknown'][1 + (i // 250) % 4], '1.0.' || (i % 7),
            ['anthropic', 'openai', 'gemini', 'anthropic'][1 + (i // 250) % 4],
            CASE WHEN i % 50 = 0 THEN 'other'
                 ELSE ['messages', 'responses', 'generate_content', 'messages'][1 + (i // 250) % 4] END,
            'POST', '/v1/messages', m, m, true, CASE WHEN i % 40 = 1 THEN 529 ELSE 200 END,
            CASE WHEN i % 40 = 1 THEN 'http_error' ELSE 'ok' END,
            'req_' || i,
            CASE WHEN i % 100 = 7 THEN 'msg_' || (i - 1) ELSE 'msg_' || i END,
            (i * 7) % 3000, (i * 13) % 2000, (i * 31) % 90000, (i * 17) % 5000,
            CASE WHEN (i // 250) % 4 = 0 THEN NULL ELSE (i * 3) % 500 END,
            CASE WHEN i % 100 = 3 THEN 'estimated' WHEN i % 100 IN (7, 8) THEN {"'transcript'" if transcripts else "'reported'"}
                 ELSE 'reported' END,
            CASE WHEN i % 9 = 0 THEN NULL ELSE ((i * 7) % 1000) / 10000.0 END, 1500
        FROM (
            SELECT i, TIMESTAMPTZ '2025-11-25 00:00:00+00' + to_microseconds(i * {step_us}) AS ts,
                   ['claude-sonnet-4-5', 'gpt-5', 'gemini-2.5-pro', 'claude-opus-4-1'][1 + (i // 250) % 4] AS m
            FROM range({n}) AS t(i)
        )
        """)
        con.execute("CHECKPOINT")
    except duckdb.Error:
        con.close()
        raise
    con.close()
    return time.perf_counter() - t


def generate_transcripts(root: Path, sessions: int, messages: int, blocks: int = 3) -> int:
    """A ~/.claude/projects-like folder: `sessions` files of `messages` API responses, each
    written as `blocks` lines, with a user turn (a 2 KB tool result) before each. Returns the
    number of unique (message id, request id) pairs."""
    if root.exists():
        shutil.rmtree(root)
    rnd = random.Random(1)
    filler = "x" * 2000
    t0 = datetime(2026, 6, 1, tzinfo=timezone.utc)
    for s in range(sessions):
        sid = f"{s:08x}-0000-4000-8000-{s:012x}"
        d = root / f"-home-user-project-{s % 10}"
        d.mkdir(parents=True, exist_ok=True)
        lines = []
        for m in range(messages):
            ts = (t0 + timedelta(minutes=s * 600 + m)).isoformat().replace("+00:00", "Z")
            lines.append(json.dumps({
                "parentUuid": None, "isSidechain": False, "userType": "external", "cwd": "/home/user/project",
                "sessionId": sid, "version": "2.0.46", "gitBranch": "main", "type": "user",
                "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{m}", "content": filler}]},
                "uuid": f"u-{s}-{m}", "timestamp": ts,
            }))
            usage = {"input_tokens": rnd.randint(1, 50), "cache_creation_input_tokens": rnd.randint(0, 3000),
                     "cache_read_input_tokens": rnd.randint(0, 90000), "output_tokens": rnd.randint(1, 2000),
                     "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                     "service_tier": "standard"}
            for b in range(blocks):
                lines.append(json.dumps({
                    "parentUuid": None, "isSidechain": False, "userType": "external", "cwd": "/home/user/project",
                    "sessionId": sid, "version": "2.0.46", "gitBranch": "main",
                    "message": {"model": "claude-sonnet-4-5-20250929", "id": f"msg_{s}_{m}", "type": "message",
                                "role": "assistant", "content": [{"type": "text", "text": "ok " * 40}],
                                "stop_reason": "tool_use", "stop_sequence": None, "usage": usage},
                    "requestId": f"req_{s}_{m}", "type": "assistant", "uuid": f"a-{s}-{m}-{b}", "timestamp": ts,
                }))
        (d / f"{sid}.jsonl").write_text("\n".join(lines) + "\n")
    return sessions * messages


def run_cli(args: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "llmsm.cli.main", *args], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, env=env, cwd=REPO)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"llmsm {' '.join(args)} failed: {p.stderr.decode(errors='replace')}")
    return dt


def time_cli(args: list[str], env: dict[str, str], repeat: int) -> tuple[float, float]:
    run_cli(args, env)  # warm-up: page cache, bytecode
    times = [run_cli(args, env) for _ in range(repeat)]
    return statistics.median(times), min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--10m", dest="ten", action="store_true", help="also benchmark 10M events")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per command (median and best shown)")
    ap.add_argument("--regenerate", action="store_true", help="rebuild the databases and transcripts")
    ap.add_argument("--no-import", action="store_true", help="skip the transcript import (queries only)")
    ap.add_argument("--transcript-sessions", type=int, default=200)
    ap.add_argument("--transcript-messages", type=int, default=250)
    args = ap.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    # an installed package has its bytecode compiled; do the same for the source tree
    for sub in ("llmsm", "analytics", "cli", "addons"):
        compileall.compile_dir(str(REPO / sub), quiet=1)
    env = dict(os.environ, NO_COLOR="1", COLUMNS="120")
    env.pop("LLMSM_DB", None)

    results: list[tuple[str, str, float, float, str]] = []
    results.append(("llmsm --version (start-up)", "-", *time_cli(["--version"], env, args.repeat), ""))

    sizes = [1_000_000] + ([10_000_000] if args.ten else [])
    dbs = [(n, transcripts) for n in sizes for transcripts in (True, False)]
    for n, transcripts in dbs:
        label = f"{n // 1_000_000}M" + ("" if transcripts else " wire")
        db = OUT / f"bench-{n // 1_000_000}M{'' if transcripts else '-wire'}.duckdb"
        if args.regenerate or not db.exists():
            print(f"generating {label} events ...", file=sys.stderr, flush=True)
            secs = generate_events(db, n, transcripts)
            print(f"  {secs:.1f} s, {db.stat().st_size / 1e6:.0f} MB", file=sys.stderr, flush=True)
        target = f"< {TARGET_1M} s" if n == 1_000_000 else ""
        for name, cmd in (
            ("llmsm sessions", ["sessions", "--db", str(db)]),
            ("llmsm report daily", ["report", "daily", "--db", str(db)]),
            ("llmsm report daily --json", ["report", "daily", "--json", "--db", str(db)]),
            ("llmsm report models --since 30d", ["report", "models", "--since", "30d", "--db", str(db)]),
            ("llmsm cost", ["cost", "--db", str(db)]),
            ("llmsm cost --by day --since 30d", ["cost", "--by", "day", "--since", "30d", "--db", str(db)]),
        ):
            med, best = time_cli(cmd, env, args.repeat)
            results.append((name, label, med, best, target))

    if args.no_import:
        print_results(results, args.repeat)
        return
    # transcript import
    troot = OUT / "transcripts"
    marker = troot / ".shape"
    shape = f"{args.transcript_sessions}x{args.transcript_messages}"
    if args.regenerate or not marker.exists() or marker.read_text() != shape:
        print("generating transcripts ...", file=sys.stderr, flush=True)
        generate_transcripts(troot, args.transcript_sessions, args.transcript_messages)
        marker.write_text(shape)
    unique = args.transcript_sessions * args.transcript_messages
    lines = unique * 4
    size_mb = sum(p.stat().st_size for p in troot.rglob("*.jsonl")) / 1e6
    idb = OUT / "bench-import.duckdb"
    for p in (idb, Path(str(idb) + ".wal")):
        p.unlink(missing_ok=True)
    first = run_cli(["import", "claude-code", str(troot), "--db", str(idb)], env)
    again = run_cli(["import", "claude-code", str(troot), "--db", str(idb)], env)

    print_results(results, args.repeat)
    print(f"transcript import: {unique:,} unique requests ({lines:,} lines, {size_mb:.0f} MB, "
          f"{args.transcript_sessions} files): {first:.2f} s -> {unique / first:,.0f} requests/s, "
          f"{size_mb / first:.0f} MB/s; re-import (nothing new): {again:.2f} s")


def print_results(results: list[tuple[str, str, float, float, str]], repeat: int) -> None:
    print()
    print(f"llmsm report benchmarks — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"duckdb {__import__('duckdb').__version__}")
    print(f"whole-process wall time, median (best) of {repeat} runs after a warm-up; load average "
          f"{os.getloadavg()[0]:.2f}")
    print()
    w = max(len(r[0]) for r in results) + 2
    print(f"{'command':<{w}}{'rows':>8}{'median s':>10}{'best s':>9}  target")
    for name, rows, med, best, target in results:
        verdict = ""
        if target:
            verdict = f"{target}  {'OK' if med < TARGET_1M else 'MISSED'}"
        print(f"{name:<{w}}{rows:>8}{med:>10.3f}{best:>9.3f}  {verdict}")
    print()


if __name__ == "__main__":
    main()
