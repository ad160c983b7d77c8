"""`llmsm handoff` on a 1,000-request session with a digest on every request.

    .venv/bin/python benchmarks/bench_handoff.py [--requests N] [--runs R] [--rebuild]

Builds benchmarks/out/db/handoff-N.duckdb once through `store.insert_events` (the gateway's own
write path): one Claude Code session of N requests, 30 s apart, each with a digest delta built by
`DigestDelta` the way the gateway will build them (a user ask every 4th request, 3 files, 2
commands, a todo list every 10th, the assistant's text; ~2 KB of JSON per request), 1 % 529s, plus
50 other sessions of 20 requests. Then times, as a user runs them (a subprocess, wall time with
`time.perf_counter`, median of R rounds after one warm-up; each round runs every command in turn):

- `llmsm sessions` on the same database: the baseline (interpreter, CLI start-up, one query);
- `llmsm handoff ID` (Markdown, the default 2000-token budget), and with `--json`;

and in-process, to show where the time goes: `load_digest` (the merge), `load_handoff` (every
query and the transcript look-up), building the tokenizer (once per process), `compose_brief`
with the tokenizer built, and `scrub` over 10 KB of prose and of code.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
sys.path.insert(0, str(REPO / "benchmarks"))

SID = "6b3f0c1e-5d2a-4f7e-9a81-2c4d6e8f0a1b"
MODEL = "claude-sonnet-4-5"
TARGET_MS = 300.0


def build_db(path: Path, n: int) -> None:
    from llmsm.analytics.digest import DigestDelta
    from llmsm.analytics.events import ExchangeEvent
    from llmsm.analytics.store import insert_events

    for p in (path, Path(str(path) + ".wal")):
        p.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = datetime.now(timezone.utc) - timedelta(seconds=30 * n)
    events = []
    for i in range(n):
        delta = DigestDelta.from_items(
            project={"cwd": "/home/dev/shop", "git": True, "branch": "feature/checkout"} if i % 50 == 0 else None,
            goal="Rework the checkout flow so that a failed payment never loses the cart" if i == 0 else None,
            asks=[f"Step {i}: now make the retry path keep the basket, and add a test for coupon codes. " * 3] if i % 4 == 0 else (),
            files=[(f"src/checkout/step_{i % 70}.py", "edit" if i % 3 == 0 else "read"), (f"tests/test_step_{i % 40}.py", "read"),
                   ("src/checkout/cart.py", "read")],
            commands=[(f"pytest -q tests/test_step_{i % 40}.py -k retry", i % 7 == 0), (f"git diff --stat src/checkout/step_{i % 70}.py", False)],
            todos=[(f"todo {j} of round {i // 10}", ("completed", "in_progress", "pending")[min(j, 2)]) for j in range(6)] if i % 10 == 0 else None,
            text="I updated the retry path: the basket is now persisted before the payment call, and the coupon "
                 "test covers expired and stacked codes. Next I will run the whole suite. " * 4,
        )
        failed = i % 100 == 99
        events.append(ExchangeEvent(
            id=f"bench-{i:06d}", session_id=SID, session_source="claude_code_header", started_at=t0 + timedelta(seconds=30 * i),
            client="claude-code", client_version="2.0.46", provider="anthropic", api="messages", method="POST",
            path="/v1/messages", model=MODEL, requested_model=MODEL, streamed=True, status_code=529 if failed else 200,
            outcome="http_error" if failed else "ok", error_type="overloaded_error" if failed else None,
            error_message="Overloaded" if failed else None, input_tokens=None if failed else 8,
            output_tokens=None if failed else 400, cache_read_tokens=None if failed else 20_000 + (i % 40) * 4000,
            cache_write_tokens=None if failed else 1500, usage_source="none" if failed else "reported",
            cost_usd=None if failed else 0.02, digest=None if failed else delta.to_json(),
        ))
    for s in range(50):
        for k in range(20):
            events.append(ExchangeEvent(id=f"other-{s}-{k}", session_id=f"other-{s:03d}", started_at=t0 + timedelta(minutes=s, seconds=k),
                                        client="claude-code", provider="anthropic", api="messages", model=MODEL,
                                        input_tokens=10, output_tokens=10, usage_source="reported"))
    insert_events(path, events)


def wall_ms(commands: list[list[str]], runs: int) -> list[tuple[float, list[float], str]]:
    """(median, times, stdout) per command; the commands run in turn each round, so that load
    from elsewhere on the machine falls on all of them alike."""
    cmds = [[sys.executable, "-m", "llmsm.cli.main", *args] for args in commands]
    outputs = []
    for cmd in cmds:  # warm-up: page cache, context-window cache
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if out.returncode != 0:
            sys.exit(f"{' '.join(cmd[3:])} failed: {out.stderr.strip()}")
        outputs.append(out.stdout)
    times: list[list[float]] = [[] for _ in cmds]
    for _ in range(runs):
        for i, cmd in enumerate(cmds):
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True)
            times[i].append((time.perf_counter() - t0) * 1000)
    return [(statistics.median(t), t, o) for t, o in zip(times, outputs)]


def in_process_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rebuild", action="store_true", help="rebuild the database even if it exists")
    args = ap.parse_args()

    from _common import print_machine, table

    db = OUT / "db" / f"handoff-{args.requests}.duckdb"
    if args.rebuild or not db.exists():
        t0 = time.perf_counter()
        build_db(db, args.requests)
        print(f"built {db.name}: {args.requests:,} requests with digests in {time.perf_counter() - t0:.1f} s")
    print_machine()

    from llmsm.analytics import handoff as ho
    from llmsm.analytics.digest import load_digest
    from llmsm.analytics.scrub import scrub
    from llmsm.analytics.store import open_for_query

    con = open_for_query(db)
    try:
        digest_bytes, rows = con.execute(
            "SELECT sum(length(digest::VARCHAR)), count(digest) FROM events WHERE session_id = ?", [SID]).fetchone()
        print(f"database: {db.relative_to(REPO)} ({db.stat().st_size / 1e6:.1f} MB); session {SID[:8]}: "
              f"{rows} digests, {digest_bytes / 1e6:.2f} MB of digest JSON")
        digest_ms = in_process_ms(lambda: load_digest(con, SID), args.runs)
        handoff_ms = in_process_ms(lambda: ho.load_handoff(con, SID), args.runs)
        h = ho.load_handoff(con, SID)
    finally:
        con.close()
    code = ("import time; from llmsm.analytics.tokens import encoding_for_model; t = time.perf_counter(); "
            f"encoding_for_model({MODEL!r}); print((time.perf_counter() - t) * 1000)")
    encoder_ms = statistics.median(
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout)
        for _ in range(3))
    compose_ms = in_process_ms(lambda: ho.compose_brief(h), args.runs)
    prose = ("The session reads src/app.py, runs pytest -q and asks for the bearer of the task-sk-learning branch; "
             "nothing here is a key. ") * 100
    code_text = (REPO / "analytics" / "store.py").read_text()
    scrub_prose = in_process_ms(lambda: scrub(prose[:10_240]), 50)
    scrub_code = in_process_ms(lambda: scrub(code_text[:10_240]), 50)

    (base_med, base_times, _), (md_med, md_times, brief), (js_med, js_times, _) = wall_ms(
        [["sessions", "--db", str(db)], ["handoff", SID, "--db", str(db)], ["handoff", SID, "--json", "--db", str(db)]],
        args.runs)

    print()
    print(table(["command (subprocess, wall)", "median ms", "min", "max", "vs sessions"], [
        ["`llmsm sessions` (baseline)", base_med, min(base_times), max(base_times), 1.0],
        ["`llmsm handoff ID`", md_med, min(md_times), max(md_times), md_med / base_med],
        ["`llmsm handoff ID --json`", js_med, min(js_times), max(js_times), js_med / base_med],
    ]))
    print()
    print(table(["in process", "median ms"], [
        [f"load_digest ({rows} deltas merged)", digest_ms],
        ["load_handoff (all queries, transcript look-up)", handoff_ms],
        [f"tokenizer for {MODEL} built (once per process, fresh interpreter)", encoder_ms],
        ["compose_brief (2000 tokens, tokenizer built)", compose_ms],
        ["scrub, 10 KB of prose", scrub_prose],
        ["scrub, 10 KB of code", scrub_code],
    ]))
    print(f"\nbrief: {ho.count_tokens(brief, MODEL)} tokens, {len(brief)} characters")
    print(f"target: `llmsm handoff` < {TARGET_MS:.0f} ms -> {'MET' if md_med < TARGET_MS else 'NOT MET'} "
          f"({md_med:.0f} ms; `llmsm sessions` {base_med:.0f} ms in the same run)")


if __name__ == "__main__":
    main()
