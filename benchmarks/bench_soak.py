"""Soak: --requests streaming requests through one `llmsm proxy`, RSS sampled every --every.

    .venv/bin/python benchmarks/bench_soak.py                       # 1,000 streams each, ~1 min
    .venv/bin/python benchmarks/bench_soak.py --sessions conversation

Streams (Anthropic SSE, --events events --gap s apart) go out in batches of --every over
--concurrency keep-alive connections; after each batch, once the proxy is quiet, its VmRSS is
read from /proc. Every stream is checked byte for byte against what the upstream sent, and at
the end every request must have its row in the database.

--sessions header (default): requests carry Claude Code's session header (20 sessions), so the
gateway should keep no state per request; any growth is a leak. --sessions conversation: no
session header, 20 conversations that grow turn by turn, attributed by conversation continuity;
the gateway then remembers one history hash per request by design (an LRU bounded at 200,000
heads, about 200 bytes each), so a small growth is expected there.

RSS is read once the proxy is quiet (the lowest of 25 readings over 0.5 s, after --settle s), so a
DuckDB batch in flight does not count. The same soak runs first through bare mitmproxy (skip it
with --no-baseline), whose own allocator warm-up is subtracted.
Target: no growth, i.e. the least-squares slope of llmsm's RSS over the samples after the first
200 requests, minus bare mitmproxy's, below 512 bytes per request (without the baseline: llmsm's
slope below 1 KiB per request).
Figures also go to benchmarks/out/bench_soak_<sessions>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

PATH = "/anthropic/v1/messages"
SESSIONS = 20


def make_request(i: int, args) -> tuple[dict, bytes]:
    sid = f"s{i}"
    if args.sessions == "header":
        return (C.request_headers(sid, events=args.events, gap=args.gap, session=f"soak-{i % SESSIONS}"),
                C.request_body(sid, stream=True))
    conv, turn = i % SESSIONS, i // SESSIONS + 1
    return (C.request_headers(sid, events=args.events, gap=args.gap),
            C.request_body(f"conv{conv}", stream=True, turns=turn))


async def batch(port: int, start: int, count: int, args, path: str = PATH) -> int:
    """Send requests start..start+count-1; returns how many came back byte-identical."""
    todo = iter(range(start, start + count))
    good = 0

    async def worker() -> None:
        nonlocal good
        conn = C.Conn(port)
        try:
            for i in todo:
                h, b = make_request(i, args)
                try:
                    r = await asyncio.wait_for(conn.request(path, h, b), 30)
                    good += r.status == 200 and r.body == C.expected_stream(f"s{i}", args.events)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                    await conn.close()
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return good


async def quiet_rss(pid: int, settle: float) -> int:
    """VmRSS once the proxy is quiet: the lowest of readings over 0.5 s after `settle` s.

    The minimum drops transient buffers (a DuckDB batch in flight) and keeps what is retained.
    """
    await asyncio.sleep(settle)
    low = C.status_kb(pid)
    for _ in range(25):
        await asyncio.sleep(0.02)
        low = min(low, C.status_kb(pid))
    return low


def slope_per_request(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of RSS (KiB) over requests, in KiB per request."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


async def soak(args, kind: str) -> dict:
    print(f"\n== {kind} ==")
    up = C.start_upstream("soak")
    if kind == "llmsm":
        gw: C.Server = C.start_llmsm(up.url, "soak")
        path = PATH
    else:
        gw, path = C.start_bare(up.url, "soak"), "/v1/messages"
    series: list[tuple[int, int, float]] = []  # (requests done, VmRSS KiB, proxy CPU s)
    identical = 0
    warm = 20
    t_start = time.monotonic()
    try:
        await batch(gw.port, -warm, warm, args, path)  # warm-up (negative ids)
        rss = await quiet_rss(gw.pid, args.settle)
        series.append((0, rss, C.cpu_seconds(gw.pid)))
        print(f"{'requests':>8} {'VmRSS MiB':>10} {'Δ since 0 KiB':>14} {'CPU ms/stream':>14}")
        print(f"{0:8d} {series[0][1] / 1024:10.1f} {0:14d} {'':>14}")
        done = 0
        while done < args.requests and time.monotonic() - t_start < args.max_seconds:
            n = min(args.every, args.requests - done)
            identical += await batch(gw.port, done, n, args, path)
            done += n
            rss = await quiet_rss(gw.pid, args.settle)
            cpu = C.cpu_seconds(gw.pid)
            series.append((done, rss, cpu))
            print(f"{done:8d} {rss / 1024:10.1f} {rss - series[0][1]:14d} {(cpu - series[-2][2]) * 1000 / n:14.2f}", flush=True)
        hwm = C.status_kb(gw.pid, "VmHWM")
    finally:
        gw.stop()
        up.stop()
    done = series[-1][0]
    sent = done + warm
    skip = 200 if done >= 600 else done // 5  # the first samples are the allocator's warm-up
    tail = [(x, y) for x, y, _ in series if x >= skip]
    slope = slope_per_request(tail)
    growth_ok = slope < 1.0 and len(tail) >= 3
    if len(tail) < 3:
        print(f"only {len(tail)} samples after request {skip}: too few to judge growth (send more requests or lower --every)")
    print(f"VmHWM {hwm / 1024:.1f} MiB; RSS slope after request {skip}: {slope * 1024:+.0f} bytes per request "
          f"({slope * 1000 / 1024:+.2f} MiB per 1,000 streams); last - first sample after {skip}: {tail[-1][1] - tail[0][1]:+d} KiB")
    print(f"streams byte-identical: {identical}/{done}")
    if kind != "llmsm":
        return {"series": [{"requests": x, "rss_kb": y, "cpu_s": c} for x, y, c in series], "vmhwm_kb": hwm,
                "slope_bytes_per_request": slope * 1024, "identical": identical, "requests": done,
                "seconds": time.monotonic() - t_start}
    rows = C.row_summary(gw.db)  # type: ignore[attr-defined]
    print(f"rows {rows['rows']} of {sent} sent (lost {sent - rows['rows']}), outcome ok {rows['ok']}, usage parsed {rows['usage_ok']}")
    return {"series": [{"requests": x, "rss_kb": y, "cpu_s": c} for x, y, c in series], "vmhwm_kb": hwm,
            "slope_bytes_per_request": slope * 1024, "identical": identical, "requests": done, "rows": rows, "sent": sent,
            "target_met": growth_ok, "enough_samples": len(tail) >= 3, "seconds": time.monotonic() - t_start}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--every", type=int, default=100, help="sample RSS after every N requests")
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--events", type=int, default=20, help="events per stream")
    p.add_argument("--gap", type=float, default=0.005, help="seconds between events")
    p.add_argument("--sessions", choices=("header", "conversation"), default="header")
    p.add_argument("--settle", type=float, default=1.5, help="seconds of quiet before each sample (the writer flushes every 1 s)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the same soak through bare mitmproxy")
    p.add_argument("--max-seconds", type=float, default=300, help="stop sending after this long")
    args = p.parse_args()
    args.requests = max(args.every, min(args.requests, 100_000))
    C.print_machine()
    print(f"soak: {args.requests} streams of {args.events} events {args.gap * 1000:.0f} ms apart, {args.concurrency} connections, "
          f"sessions by {args.sessions}")
    out: dict = {"args": vars(args)}
    if args.baseline:
        out["bare"] = asyncio.run(soak(args, "bare mitmproxy"))
    out["llmsm"] = g = asyncio.run(soak(args, "llmsm"))
    line = f"llmsm RSS slope {g['slope_bytes_per_request']:+.0f} B/request"
    if args.baseline:
        excess = g["slope_bytes_per_request"] - out["bare"]["slope_bytes_per_request"]
        line += f", bare mitmproxy {out['bare']['slope_bytes_per_request']:+.0f} B/request: llmsm's own {excess:+.0f} B/request"
        out["excess_bytes_per_request"] = excess
        g["target_met"] = excess < 512 and g["enough_samples"]
        rule = "llmsm's slope minus bare mitmproxy's < 512 B/request"
    else:
        rule = "slope < 1 KiB/request"
    print(f"\n{line}")
    print(f"target: no memory growth per stream in llmsm ({rule}) -> {C.verdict(g['target_met'])}")
    out["seconds"] = g["seconds"] + (out["bare"]["seconds"] if args.baseline else 0)
    path = C.save_json(f"bench_soak_{args.sessions}.json", out)
    print(f"figures in {path} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
