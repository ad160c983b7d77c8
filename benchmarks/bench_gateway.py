"""Gateway overhead: llmsm proxy against bare mitmproxy and a direct connection, same run.

    .venv/bin/python benchmarks/bench_gateway.py            # parts a, b, c, d (about 7 minutes)
    .venv/bin/python benchmarks/bench_gateway.py --parts a --runs 10

a. latency: time to the first SSE event and total time of a ~1 s stream (20 events 50 ms apart),
   median and p95 over --runs runs, direct / bare mitmproxy / llmsm, interleaved run by run;
   once on a new connection per stream and once on a kept-alive connection.
   Target: llmsm's first event at most 5 ms after direct (median).
b. throughput: requests per second and proxy CPU per request (utime+stime from /proc) for a
   small non-streamed POST /v1/messages, 8 keep-alive clients, --requests per round, three
   proxies alternating (A B C C B A ...) with a fresh proxy and database per round: bare
   mitmproxy as mitmdump loads it (the baseline of the target), lean mitmproxy (only the
   mitmproxy addons llmsm loads: what llmsm's own hooks cost on the same mitmproxy) and
   llmsm. The proxy is pinned to CPU 0, the client and upstream to CPU 1 (2+ CPUs).
   Bodies: a short message, one of --big-body-kb KiB, and two conversations as Claude Code sends
   them (--turns / --long-turns: ~137 KB and ~1 MB), ten sessions at once, each request one
   turn more than its session's previous one, the cache marker on the newest message.
   Target: llmsm's CPU per request at most 1.15x bare mitmproxy (median of rounds); llmsm's own
   work (llmsm minus lean) the same at 137 KB and at 1 MB. With --rate R every proxy gets R
   requests per second on every body (below what the slowest answers), so llmsm's fixed work
   per second weighs the same on each and what is left of the difference is the body's own.
c. memory: peak RSS of the proxy with --streams concurrent slow streams against idle; every
   stream compared byte for byte with the same stream fetched directly; no row lost.
d. load (issue 7): --load-sessions concurrent streaming sessions, --load-requests streams each
   (one keep-alive connection per session), bare mitmproxy, lean mitmproxy, then llmsm: client
   errors, streams byte-identical to what the upstream sent, rows lost, the proxy's peak memory
   and CPU.

The upstream (benchmarks/_common.py) and the client run in processes separate from the proxy.
Figures also go to benchmarks/out/bench_gateway.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

LLMSM_PATH = "/anthropic/v1/messages"
PLAIN_PATH = "/v1/messages"


def cpu_split() -> tuple[set[int] | None, set[int] | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


# -------------------------------------------------------------------------------------------
# a. latency
# -------------------------------------------------------------------------------------------


async def part_a(args, up: C.Server) -> dict:
    print(f"\n== a. first SSE event and total time: {args.events} events {args.gap * 1000:.0f} ms apart, {args.runs} runs per target ==")
    bare = C.start_bare(up.url, "a")
    gw = C.start_llmsm(up.url, "a")
    targets = [("direct", up.port, PLAIN_PATH), ("bare mitmproxy", bare.port, PLAIN_PATH), ("llmsm", gw.port, LLMSM_PATH)]
    sent_llmsm = 0
    mismatches = 0
    results: dict = {}
    try:
        # warm-up: imports, first connections, the CA
        for name, port, path in targets:
            for i in range(5):
                await C.one_request(port, path, C.request_headers(f"w{i}", events=args.events, gap=0), C.request_body(f"w{i}", stream=True))
                sent_llmsm += name == "llmsm"
        for mode in ("new connection", "keep-alive"):
            conns = {name: C.Conn(port) for name, port, _ in targets}
            if mode == "keep-alive":
                for name, port, path in targets:  # open and use once
                    await conns[name].request(path, C.request_headers("k", events=5, gap=0), C.request_body("k", stream=True))
                    sent_llmsm += name == "llmsm"
            first: dict[str, list[float]] = {n: [] for n, _, _ in targets}
            total: dict[str, list[float]] = {n: [] for n, _, _ in targets}
            for run in range(args.runs):
                sid = f"{mode[0]}{run}"
                order = targets[run % 3 :] + targets[: run % 3]  # rotate who goes first
                bodies = {}
                for name, port, path in order:
                    h, b = C.request_headers(sid, events=args.events, gap=args.gap), C.request_body(sid, stream=True)
                    if mode == "keep-alive":
                        r = await conns[name].request(path, h, b)
                    else:
                        r = await C.one_request(port, path, h, b)
                    sent_llmsm += name == "llmsm"
                    first[name].append(r.first_event_ms)
                    total[name].append(r.total_ms)
                    bodies[name] = r.body
                if len(set(bodies.values())) != 1 or bodies["direct"] != C.expected_stream(sid, args.events):
                    mismatches += 1
            for c in conns.values():
                await c.close()
            rows = []
            d_first, d_total = C.median(first["direct"]), C.median(total["direct"])
            for name, _, _ in targets:
                f, t = first[name], total[name]
                rows.append([name, C.median(f), C.p95(f), C.median(f) - d_first, C.median(t), C.p95(t), C.median(t) - d_total])
                results.setdefault(mode, {})[name] = {
                    "first_median_ms": C.median(f), "first_p95_ms": C.p95(f), "total_median_ms": C.median(t), "total_p95_ms": C.p95(t),
                }
            print(f"\n{mode}:")
            print(C.table(["target", "first event median ms", "p95 ms", "Δ median vs direct", "total median ms", "p95 ms", "Δ total vs direct"], rows))
    finally:
        gw.stop()
        bare.stop()
    summary = C.row_summary(gw.db)
    lost = sent_llmsm - summary["rows"]
    results["rows"] = dict(summary, sent=sent_llmsm)
    results["stream_mismatches"] = mismatches
    delta = {m: results[m]["llmsm"]["first_median_ms"] - results[m]["direct"]["first_median_ms"] for m in ("new connection", "keep-alive")}
    results["target_first_event_delta_ms"] = delta
    ok = all(v <= 5.0 for v in delta.values())
    results["target_met"] = ok
    print(f"\nllmsm rows: {summary['rows']} of {sent_llmsm} sent (lost {lost}), usage parsed in {summary['usage_ok']}; "
          f"streams differing between targets: {mismatches}")
    print("target: llmsm first event <= 5 ms after direct (median): "
          + ", ".join(f"{m} {v:+.2f} ms" for m, v in delta.items()) + f" -> {C.verdict(ok)}")
    return results


# -------------------------------------------------------------------------------------------
# b. throughput and CPU per request
# -------------------------------------------------------------------------------------------


# A conversation shape: CONVERSATIONS sessions at once, each request one turn more than its
# session's previous one, over GROWTH turns around the shape's turn count (then it starts again).
CONVERSATIONS, GROWTH = 10, 10


def _conversation_body(i: int, shape: dict) -> bytes:
    session, step = i % CONVERSATIONS, (i // CONVERSATIONS) % GROWTH
    turns = shape["turns"] - GROWTH // 2 + step
    return C.request_body(f"conv{session}", stream=False, turns=turns, turn_kb=shape["turn_kb"], cache_last=True)


def _make_json_request(shape: dict):
    # 100 distinct requests, built once, so the client spends its time sending, not building.
    # A conversation grows turn by turn, as an assistant sends it (Claude Code: the whole history
    # on every turn, the cache marker moved to the newest message).
    reqs = [(C.request_headers(f"j{i}", session=f"bench-session-{i % 10}"),
             _conversation_body(i, shape) if "turns" in shape else C.request_body(f"j{i}", stream=False, **shape))
            for i in range(100)]

    def make(i: int):
        return reqs[i % 100]

    return make


async def _one_round(kind: str, up: C.Server, args, proxy_cpus, shape: dict, n: int, rnd: int) -> dict:
    tag = f"b{rnd}-" + "-".join(f"{k}{v}" for k, v in shape.items())
    proxy = C.start_llmsm(up.url, tag, proxy_cpus) if kind == "llmsm" else C.start_bare(up.url, tag, proxy_cpus, kind)
    path = LLMSM_PATH if kind == "llmsm" else PLAIN_PATH
    make = _make_json_request(shape)
    try:
        warm = max(100, args.concurrency * 20)
        await C.load(proxy.port, path, warm, args.concurrency, make)
        time.sleep(1.5)  # let llmsm's writer flush the warm-up rows
        threads0 = C.thread_cpu_seconds(proxy.pid)
        cpu0 = C.cpu_seconds(proxy.pid)
        secs, failures = await C.load(proxy.port, path, n, args.concurrency, make, rate=args.rate)
        cpu1 = C.cpu_seconds(proxy.pid)
        time.sleep(1.5)  # the writer's last batch (it flushes every 1 s) belongs to this load
        cpu2 = C.cpu_seconds(proxy.pid)
        threads2 = C.thread_cpu_seconds(proxy.pid)
    finally:
        proxy.stop()
    main_s = threads2.get(proxy.pid, 0.0) - threads0.get(proxy.pid, 0.0)
    other_s = sum(v - threads0.get(t, 0.0) for t, v in threads2.items() if t != proxy.pid)
    out = {
        "rps": n / secs, "cpu_ms_per_req": (cpu2 - cpu0) * 1000 / n, "cpu_ms_per_req_during_load": (cpu1 - cpu0) * 1000 / n,
        "main_thread_ms_per_req": main_s * 1000 / n, "other_threads_ms_per_req": other_s * 1000 / n,
        "failures": failures, "sent": warm + n,
    }
    if kind == "llmsm":
        s = C.row_summary(proxy.db)  # type: ignore[attr-defined]
        out["rows"] = s["rows"]
        out["usage_ok"] = s["usage_ok"]
    return out


async def part_b(args, up: C.Server, proxy_cpus) -> dict:
    results: dict = {}
    shapes: list[tuple[str, dict, int]] = [("one short message", {}, args.requests)]
    if args.big_body_kb:
        shapes.append((f"one {args.big_body_kb} KiB message", {"pad_kb": args.big_body_kb}, max(200, args.requests // 4)))
    for turns, turn_kb, share in ((args.turns, args.turn_kb, 4), (args.long_turns, args.long_turn_kb, 8)):
        if turns:
            shapes.append((f"a conversation growing turn by turn around {turns} turns, {turn_kb} KiB tool results",
                           {"turns": turns, "turn_kb": turn_kb}, max(200, args.requests // share)))
    for name, shape, n in shapes:
        size = len(_conversation_body(0, shape) if "turns" in shape else C.request_body("j0", stream=False, **shape))
        print(f"\n== b. non-streamed POST /v1/messages, request body {size} B ({name}), response {len(C.json_message('j0'))} B: "
              f"{n} requests x {args.rounds} rounds, {args.concurrency} keep-alive clients"
              + (f", paced at {args.rate:g} req/s" if args.rate else "")
              + (f", proxy pinned to CPU {sorted(proxy_cpus)}" if proxy_cpus else "") + " ==")
        kinds = {**C.BARE_VARIANTS, "llmsm": "llmsm"}
        runs: dict[str, list[dict]] = {name: [] for name in kinds.values()}
        for rnd in range(args.rounds):
            order = list(kinds) if rnd % 2 == 0 else list(reversed(kinds))
            for kind in order:
                r = await _one_round(kind, up, args, proxy_cpus, shape, n, rnd)
                runs[kinds[kind]].append(r)
                extra = f", rows {r['rows']}/{r['sent']}" if "rows" in r else ""
                print(f"  round {rnd + 1} {kinds[kind]:15s} {r['rps']:7.0f} req/s  {r['cpu_ms_per_req']:.3f} ms CPU/req "
                      f"(event-loop thread {r['main_thread_ms_per_req']:.3f}, other threads {r['other_threads_ms_per_req']:.3f}), "
                      f"failures {r['failures']}{extra}")
        metrics = ("rps", "cpu_ms_per_req", "cpu_ms_per_req_during_load", "main_thread_ms_per_req", "other_threads_ms_per_req")
        med = {k: {m: C.median([r[m] for r in v]) for m in metrics} for k, v in runs.items()}
        llmsm, bare, lean = med["llmsm"], med["bare mitmproxy"], med["lean mitmproxy"]
        ratio = llmsm["cpu_ms_per_req"] / bare["cpu_ms_per_req"]
        ratio_load = llmsm["cpu_ms_per_req_during_load"] / bare["cpu_ms_per_req_during_load"]
        rps_ratio = llmsm["rps"] / bare["rps"]
        lean_ratio = llmsm["cpu_ms_per_req"] / lean["cpu_ms_per_req"]
        own_ms = llmsm["cpu_ms_per_req"] - lean["cpu_ms_per_req"]
        lost = sum(r["sent"] - r["rows"] for r in runs["llmsm"])
        print(C.table(
            ["proxy", "req/s (median)", "CPU ms/req (median)", "event-loop thread", "other threads (llmsm: writer)"],
            [[k, v["rps"], f"{v['cpu_ms_per_req']:.3f}", f"{v['main_thread_ms_per_req']:.3f}", f"{v['other_threads_ms_per_req']:.3f}"]
             for k, v in med.items()],
        ))
        print(f"llmsm / bare: CPU per request {ratio:.2f}x (during load only {ratio_load:.2f}x), req/s {rps_ratio:.2f}x; "
              f"llmsm rows lost {lost}")
        print(f"llmsm / lean (the same mitmproxy addons without llmsm's): CPU per request {lean_ratio:.2f}x; "
              f"llmsm's own work {own_ms:.3f} ms per request")
        key = f"body_{size}B"
        results[key] = {"median": med, "runs": runs, "cpu_ratio": ratio, "cpu_ratio_during_load": ratio_load, "rps_ratio": rps_ratio,
                        "cpu_ratio_vs_lean": lean_ratio, "llmsm_own_ms_per_req": own_ms, "rows_lost": lost}
        if not shape:
            results["target_cpu_ratio"] = ratio
            results["target_met"] = ratio <= 1.15
            print(f"target: llmsm CPU per request <= 1.15x bare mitmproxy -> {ratio:.2f}x {C.verdict(ratio <= 1.15)}")
    return results


# -------------------------------------------------------------------------------------------
# c. memory per concurrent stream
# -------------------------------------------------------------------------------------------


async def part_c(args, up: C.Server) -> dict:
    n, ev, gap = args.streams, args.slow_events, args.slow_gap
    print(f"\n== c. memory: {n} concurrent streams of {ev} events {gap * 1000:.0f} ms apart ==")
    # the reference: every stream fetched directly, concurrently
    direct = await asyncio.gather(*(
        C.one_request(up.port, PLAIN_PATH, C.request_headers(f"c{i}", events=ev, gap=gap), C.request_body(f"c{i}", stream=True))
        for i in range(n)
    ))
    results: dict = {}
    rows = []
    for kind in ("bare mitmproxy", "llmsm"):
        proxy = C.start_llmsm(up.url, "c") if kind == "llmsm" else C.start_bare(up.url, "c")
        path = LLMSM_PATH if kind == "llmsm" else PLAIN_PATH
        sent = 0
        try:
            for i in range(10):  # warm-up, one at a time
                await C.one_request(proxy.port, path, C.request_headers(f"w{i}", events=ev, gap=0), C.request_body(f"w{i}", stream=True))
                sent += 1
            time.sleep(1.0)
            idle = C.status_kb(proxy.pid)
            with C.RssSampler(proxy.pid) as sampler:
                got = await asyncio.gather(*(
                    C.one_request(proxy.port, path, C.request_headers(f"c{i}", events=ev, gap=gap), C.request_body(f"c{i}", stream=True))
                    for i in range(n)
                ))
                sent += n
            hwm = C.status_kb(proxy.pid, "VmHWM")
            after = C.status_kb(proxy.pid)
        finally:
            proxy.stop()
        identical = sum(1 for g, d in zip(got, direct) if g.status == 200 and g.body == d.body)
        per_stream = (sampler.peak_kb - idle) / n
        r = {"idle_kb": idle, "peak_kb": sampler.peak_kb, "vmhwm_kb": hwm, "after_kb": after, "per_stream_kb": per_stream,
             "identical": identical, "streams": n, "samples": sampler.samples}
        if kind == "llmsm":
            s = C.row_summary(proxy.db)  # type: ignore[attr-defined]
            r.update(rows=s["rows"], sent=sent, usage_ok=s["usage_ok"])
        results[kind] = r
        rows.append([kind, idle / 1024, sampler.peak_kb / 1024, hwm / 1024, per_stream, f"{identical}/{n}"])
    print(C.table(["proxy", "idle RSS MiB", "peak RSS MiB (sampled)", "VmHWM MiB", "KiB per stream", "byte-identical to direct"], rows))
    g = results["llmsm"]
    extra = g["per_stream_kb"] - results["bare mitmproxy"]["per_stream_kb"]
    print(f"llmsm rows: {g['rows']} of {g['sent']} sent (lost {g['sent'] - g['rows']}), usage parsed in {g['usage_ok']}; "
          f"llmsm adds {extra:+.0f} KiB per concurrent stream over bare mitmproxy")
    results["llmsm_extra_kb_per_stream"] = extra
    return results


async def part_d(args, up: C.Server) -> dict:
    sessions, per, ev, gap = args.load_sessions, args.load_requests, args.load_events, args.load_gap
    total = sessions * per
    print(f"\n== d. load: {sessions} concurrent streaming sessions x {per} streams of {ev} events {gap * 1000:.0f} ms apart ==")
    results: dict = {}
    rows = []
    for variant, kind in [*C.BARE_VARIANTS.items(), ("llmsm", "llmsm")]:
        proxy = C.start_llmsm(up.url, "d") if kind == "llmsm" else C.start_bare(up.url, "d", variant=variant)
        path = LLMSM_PATH if kind == "llmsm" else PLAIN_PATH
        errors: list[str] = []
        differ = 0

        async def session(k: int) -> None:
            nonlocal differ
            conn = C.Conn(proxy.port)
            try:
                for j in range(per):
                    sid = f"d{k}-{j}"
                    try:
                        r = await asyncio.wait_for(conn.request(
                            path, C.request_headers(sid, events=ev, gap=gap, session=f"load-{k}"), C.request_body(sid, stream=True)
                        ), 60)
                    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
                        errors.append(f"{sid}: {exc!r}")
                        await conn.close()
                        continue
                    if r.status != 200:
                        errors.append(f"{sid}: HTTP {r.status}")
                    elif r.body != C.expected_stream(sid, ev):
                        differ += 1
            finally:
                await conn.close()

        try:
            await C.one_request(proxy.port, path, C.request_headers("dw", events=ev, gap=0), C.request_body("dw", stream=True))
            time.sleep(1.0)
            idle = C.status_kb(proxy.pid)
            cpu0 = C.cpu_seconds(proxy.pid)
            t0 = time.perf_counter()
            with C.RssSampler(proxy.pid, interval=0.02) as sampler:
                await asyncio.gather(*(session(k) for k in range(sessions)))
            wall = time.perf_counter() - t0
            time.sleep(1.0)  # llmsm's writer: its last batch belongs to this load
            cpu = C.cpu_seconds(proxy.pid) - cpu0
            hwm = C.status_kb(proxy.pid, "VmHWM")
        finally:
            proxy.stop()
        r = {"requests": total, "wall_s": wall, "client_errors": len(errors), "errors_sample": errors[:5],
             "not_identical": differ, "idle_kb": idle, "peak_kb": sampler.peak_kb, "vmhwm_kb": hwm,
             "cpu_s": cpu, "cpu_ms_per_request": cpu * 1000 / total, "cpu_pct_of_one_core": 100 * cpu / wall}
        lost = "-"
        if kind == "llmsm":
            s = C.row_summary(proxy.db)  # type: ignore[attr-defined]
            r.update(rows=s["rows"], sent=total + 1, usage_ok=s["usage_ok"])
            lost = str(r["sent"] - r["rows"])
        results[kind] = r
        rows.append([kind, f"{wall:.1f}", len(errors), f"{total - len(errors) - differ}/{total}", lost,
                     f"{idle / 1024:.0f}", f"{max(sampler.peak_kb, hwm) / 1024:.0f}", f"{cpu:.1f}",
                     f"{r['cpu_ms_per_request']:.2f}", f"{r['cpu_pct_of_one_core']:.0f}%"])
    print(C.table(["proxy", "wall s", "client errors", "byte-identical", "rows lost", "idle RSS MiB",
                   "peak RSS MiB", "CPU s", "CPU ms/stream", "CPU (of one core)"], rows))
    g = results["llmsm"]
    ok = g["client_errors"] == 0 and g["not_identical"] == 0 and g["rows"] == g["sent"]
    results["ok"] = ok
    per_stream = {k: results[k]["cpu_ms_per_request"] for k in ("bare mitmproxy", "lean mitmproxy", "llmsm")}
    print(f"CPU per stream: llmsm / bare {per_stream['llmsm'] / per_stream['bare mitmproxy']:.2f}x, "
          f"llmsm / lean {per_stream['llmsm'] / per_stream['lean mitmproxy']:.2f}x "
          f"(llmsm's own work {per_stream['llmsm'] - per_stream['lean mitmproxy']:.2f} ms per stream)")
    print(f"load: no client error, every stream byte-identical, no row lost -> {C.verdict(ok)}")
    return results


async def main_async(args) -> dict:
    out: dict = {"args": vars(args)}
    if "a" in args.parts:
        with C.start_upstream("a") as up:
            out["a"] = await part_a(args, up)
    if "b" in args.parts:
        proxy_cpus, other_cpus = cpu_split() if args.pin else (None, None)
        mine = os.sched_getaffinity(0)
        if other_cpus:
            os.sched_setaffinity(0, other_cpus)  # the client (this process) and the upstream keep off the proxy's CPU
        try:
            with C.start_upstream("b", other_cpus) as up:
                out["b"] = await part_b(args, up, proxy_cpus)
        finally:
            os.sched_setaffinity(0, mine)
    if "c" in args.parts:
        with C.start_upstream("c") as up:
            out["c"] = await part_c(args, up)
    if "d" in args.parts:
        with C.start_upstream("d") as up:
            out["d"] = await part_d(args, up)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="abcd", help="which parts to run (default: abcd)")
    p.add_argument("--runs", type=int, default=30, help="a: streams per target and connection mode")
    p.add_argument("--events", type=int, default=20, help="a: events per stream")
    p.add_argument("--gap", type=float, default=0.05, help="a: seconds between events")
    p.add_argument("--requests", type=int, default=2000, help="b: requests per round")
    p.add_argument("--rounds", type=int, default=4, help="b: rounds per proxy (alternating)")
    p.add_argument("--concurrency", type=int, default=8, help="b: keep-alive client connections")
    p.add_argument("--rate", type=float, default=0.0,
                   help="b: requests per second at most, the same for every proxy and body (default 0: as fast as "
                        "each proxy answers); paced, llmsm's fixed work per second (the writer's commit, the status "
                        "pass) weighs the same on every body")
    p.add_argument("--big-body-kb", type=int, default=100, help="b: also measure with a request padded to this many KiB (0: skip)")
    p.add_argument("--turns", type=int, default=60, help="b: also measure a conversation of this many turns, as Claude Code sends (0: skip)")
    p.add_argument("--turn-kb", type=int, default=2, help="b: KiB of tool result per turn of that conversation")
    p.add_argument("--long-turns", type=int, default=300, help="b: and of this many turns (0: skip)")
    p.add_argument("--long-turn-kb", type=int, default=3, help="b: KiB of tool result per turn of the long one (~1 MB)")
    p.add_argument("--streams", type=int, default=50, help="c: concurrent streams")
    p.add_argument("--slow-events", type=int, default=20, help="c: events per stream")
    p.add_argument("--slow-gap", type=float, default=0.1, help="c: seconds between events")
    p.add_argument("--load-sessions", type=int, default=50, help="d: concurrent streaming sessions")
    p.add_argument("--load-requests", type=int, default=20, help="d: streams per session, one after another")
    p.add_argument("--load-events", type=int, default=20, help="d: events per stream")
    p.add_argument("--load-gap", type=float, default=0.01, help="d: seconds between events")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="b: do not pin the proxy and the load to separate CPUs")
    args = p.parse_args()
    args.runs = max(1, min(args.runs, 1000))
    args.requests = max(100, min(args.requests, 100_000))
    args.streams = max(1, min(args.streams, 500))
    C.print_machine()
    t0 = time.monotonic()
    out = asyncio.run(main_async(args))
    path = C.save_json(f"bench_gateway-rate{args.rate:g}.json" if args.rate else "bench_gateway.json", out)
    print(f"\nfinished in {time.monotonic() - t0:.0f} s; figures in {path}")


if __name__ == "__main__":
    main()
