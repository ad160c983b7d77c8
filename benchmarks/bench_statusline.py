"""`llmsm statusline` for one Claude Code session, whole process, on a 1M-request database.

    .venv/bin/python benchmarks/bench_statusline.py [--requests N] [--sessions S] [--runs R] [--rebuild]

Claude Code runs its status-line command after every turn, with the session's JSON on standard
input. Uses bench_dashboard.py's database (benchmarks/out/db/dashboard-N-S.duckdb, built once:
1M requests, 1,000 sessions, 20 of them live). Then writes the snapshot the gateway would keep
for one live session (addons/status_snapshot.py's code: SessionState seeded from the database,
plus a quota window with two responses), and times in turn, R times each after a warm-up:

- A: `llmsm statusline` (the console script) with Claude Code's JSON on stdin: the per-session line;
- B: `python -c pass` (the same interpreter): the floor every Python command pays;
- C: `llmsm statusline` with empty stdin: the global line (opens the database).

Each is a whole process (start to exit, wall clock). Prints the medians, A - B and A / B taken
pair by pair (A, B, C, A, B, C, ...), so the machine's drift moves both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
sys.path.insert(0, str(REPO / "benchmarks"))


def write_snapshot_for(db: Path, session_id: str, at: datetime) -> Path:
    from llmsm.analytics.quota_share import ShareTracker
    from llmsm.analytics.session_status import SessionState, seed, snapshot
    from llmsm.analytics.status_files import file_name, snapshot_dir, write_snapshot
    from llmsm.analytics.store import connect

    state = SessionState(session_id)
    con = connect(db, read_only=True)
    try:
        seed([state], con, at)
    finally:
        con.close()
    reset = str(int((at + timedelta(hours=2)).timestamp()))
    tracker = ShareTracker()
    for k, util in enumerate(("0.40", "0.46")):
        t = at - timedelta(seconds=60 - 30 * k)
        tracker.add(session_id if k else "other", {"anthropic-ratelimit-unified-5h-utilization": util,
                                                   "anthropic-ratelimit-unified-reset": reset}, t, t, t + timedelta(seconds=5))
    directory = snapshot_dir(db)
    write_snapshot(directory, snapshot(state, at, quota=tracker.shares(at)))
    return Path(directory) / file_name(session_id)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--sessions", type=int, default=1_000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    from bench_dashboard import build_db

    db = OUT / "db" / f"dashboard-{args.requests}-{args.sessions}.duckdb"
    stamp = Path(str(db) + ".built-at")
    if args.rebuild or not db.exists() or not stamp.exists():
        now = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        build_db(db, args.requests, args.sessions, now)
        stamp.write_text(now.isoformat())
        print(f"built {db.name}: {args.requests:,} requests, {args.sessions:,} sessions in {time.perf_counter() - t0:.1f} s")
    at = datetime.now(timezone.utc)
    import hashlib

    sid = "s-0000-" + hashlib.md5(b"0").hexdigest()[:20]  # a live session of bench_dashboard's database
    snap = write_snapshot_for(db, sid, at)
    stdin = json.dumps({"session_id": sid, "cwd": "/home/u/shop", "model": {"id": "claude-sonnet-4-5", "display_name": "Sonnet"},
                        "workspace": {"current_dir": "/home/u/shop", "project_dir": "/home/u/shop"}, "version": "2.1.14",
                        "transcript_path": f"/home/u/.claude/projects/shop/{sid}.jsonl", "cost": {"total_cost_usd": 1.0}})
    exe = str(Path(sys.executable).with_name("llmsm"))
    env = {**__import__("os").environ, "LLMSM_DB": str(db), "NO_COLOR": "1"}
    commands = {
        "A per-session line": ([exe, "statusline"], stdin),
        "B python -c pass": ([sys.executable, "-c", "pass"], ""),
        "C global line": ([exe, "statusline"], ""),
    }
    times: dict[str, list[float]] = {k: [] for k in commands}
    lines: dict[str, str] = {}
    for i in range(args.runs + 1):
        for name, (cmd, text) in commands.items():
            t0 = time.perf_counter()
            p = subprocess.run(cmd, input=text, capture_output=True, text=True, env=env, cwd=REPO)
            dt = (time.perf_counter() - t0) * 1000
            if i:
                times[name].append(dt)
            lines[name] = p.stdout.strip()
    print(f"database: {db.name}; snapshot: {snap.stat().st_size} bytes; {args.runs} runs each, whole process, wall ms")
    for name, ts in times.items():
        print(f"  {name:20} median {statistics.median(ts):7.1f}  min {min(ts):7.1f}  max {max(ts):7.1f}")
    a, b = times["A per-session line"], times["B python -c pass"]
    print(f"  A - B (median of pairs) {statistics.median(x - y for x, y in zip(a, b)):.1f} ms; "
          f"A / B {statistics.median(x / y for x, y in zip(a, b)):.2f}")
    print("  A prints:", lines["A per-session line"])
    print("  C prints:", lines["C global line"])


if __name__ == "__main__":
    main()
