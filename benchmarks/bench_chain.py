"""llmsm's whole addon chain in one process, without sockets: CPU per exchange against the same
mitmproxy flow handling without llmsm, in the same run.

    .venv/bin/python benchmarks/bench_chain.py                     # ~2 min
    .venv/bin/python benchmarks/bench_chain.py --rounds 5 --exchanges 4000

`bench_gateway.py` part b takes llmsm's own work as the difference of two proxies, each its own
process with its own sockets, client and upstream, which these shared 2-core machines move by up
to 40% between rounds. Here each measurement is a child process pinned to one CPU (as part b pins
the proxy) that builds mitmproxy flows in memory and sends each one through mitmproxy's addon
manager exactly as the proxy server does (`requestheaders`, `request`, `responseheaders`,
`response`, each followed by mitmproxy's `update`), with a small JSON answer:

- baseline: the same flows through an addon manager without llmsm (mitmproxy's own cost of
  making flows and dispatching hooks, which both sides pay);
- llmsm: the same with `Llmsm()`, the entry `llmsm proxy` adds to mitmproxy's chain, with a fresh
  database: every hook, the recorder's journal and writer thread, the status and budget threads.

Bodies are part b's: a short message, a 100 KiB message, and the conversations growing turn by
turn around 60 (~137 KB) and 300 turns (~1 MB), ten sessions at once. CPU is the child's
utime+stime over --exchanges exchanges and 1.5 s after (the writer's last commit), the event
loop's thread alone beside it. llmsm's rows are counted afterwards: every exchange must be there.
Baseline and llmsm alternate round by round; the figures are medians of --rounds rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import bench_gateway as G  # noqa: E402
from bench_hooks import SHAPES  # noqa: E402  (part b's bodies, as bench_hooks.py names them)

WARM_UP = 300


async def _child(kind: str, shape: dict, n: int, db: Path) -> dict:
    from mitmproxy import http
    from mitmproxy.hooks import DoneHook, RunningHook
    from mitmproxy.proxy.layers.http import (
        HttpRequestHeadersHook, HttpRequestHook, HttpResponseHeadersHook, HttpResponseHook,
    )
    from mitmproxy.proxy.mode_specs import ProxyMode
    from mitmproxy.test import taddons, tflow

    from llmsm.addons.server import Llmsm

    make = G._make_json_request(shape)
    answer = C.json_message("chain")
    mode = ProxyMode.parse("reverse:http://127.0.0.1:9")
    addons = [Llmsm()] if kind == "llmsm" else []
    with taddons.context(*addons) as tctx:
        if addons:
            tctx.options.update(llmsm_db=str(db), llmsm_upstream=["anthropic=http://127.0.0.1:9"])
        manager = tctx.master.addons
        await manager.trigger_event(RunningHook())

        async def exchange(i: int) -> None:
            headers, body = make(i)
            flow = tflow.tflow(req=http.Request.make("POST", "http://127.0.0.1:8787" + G.LLMSM_PATH, body, headers))
            flow.client_conn.proxy_mode = mode  # as a client of `llmsm proxy`'s reverse listener
            await manager.handle_lifecycle(HttpRequestHeadersHook(flow))
            await manager.handle_lifecycle(HttpRequestHook(flow))
            flow.response = http.Response.make(200, answer, {"content-type": "application/json"})
            await manager.handle_lifecycle(HttpResponseHeadersHook(flow))
            await manager.handle_lifecycle(HttpResponseHook(flow))

        for i in range(WARM_UP):
            await exchange(i)
        await asyncio.sleep(1.5)  # the warm-up's rows committed
        loop0, cpu0 = time.thread_time(), C.cpu_seconds(os.getpid())
        for i in range(n):
            await exchange(WARM_UP + i)
            if i % 50 == 49:
                await asyncio.sleep(0)  # a turn of the loop for the callbacks it has, as between requests
        loop_s = time.thread_time() - loop0
        await asyncio.sleep(1.5)  # the writer's last commit belongs to these exchanges
        cpu_s = C.cpu_seconds(os.getpid()) - cpu0
        await manager.trigger_event(DoneHook())
    return {"us": cpu_s * 1e6 / n, "loop_us": loop_s * 1e6 / n, "sent": WARM_UP + n}


def _measure(kind: str, shape: dict, n: int, cpus: set[int] | None) -> dict:
    with tempfile.TemporaryDirectory(dir=C.OUT) as tmp:
        db = Path(tmp) / "chain.duckdb"
        cmd = [C.PY, __file__, "--child", kind, json.dumps(shape), str(n), str(db), json.dumps(sorted(cpus or ()))]
        out = subprocess.run(cmd, capture_output=True, text=True, env=C.bench_env(), timeout=600)
        if out.returncode != 0:
            raise SystemExit(f"{kind} {shape}: the child failed:\n{out.stderr[-2000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if kind == "llmsm":
            result["rows"] = C.row_summary(db)["rows"]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exchanges", type=int, default=3000, help="exchanges per measurement")
    p.add_argument("--rounds", type=int, default=3, help="rounds per body (baseline and llmsm alternating)")
    p.add_argument("--child", nargs=5, metavar=("KIND", "SHAPE", "N", "DB", "CPUS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, shape, n, db, cpus = args.child
        C.pin(os.getpid(), set(json.loads(cpus)))  # before any thread starts: llmsm's threads inherit it
        print(json.dumps(asyncio.run(_child(kind, json.loads(shape), int(n), Path(db)))))
        return
    C.print_machine()
    C.OUT.mkdir(parents=True, exist_ok=True)
    cpus, _ = G.cpu_split()  # part b's proxy CPU (none on a single CPU)
    rows, saved, small_own = [], {}, None
    for name, shape in SHAPES.items():
        runs: dict[str, list[dict]] = {"baseline": [], "llmsm": []}
        for rnd in range(args.rounds):
            for kind in ("baseline", "llmsm") if rnd % 2 == 0 else ("llmsm", "baseline"):
                r = _measure(kind, shape, args.exchanges, cpus)
                runs[kind].append(r)
                print(f"  round {rnd + 1} {name:21s} {kind:8s} {r['us']:6.0f} µs per exchange"
                      + (f" (event loop {r['loop_us']:.0f}), rows {r['rows']}/{r['sent']}" if kind == "llmsm" else ""),
                      flush=True)
        base = statistics.median(r["us"] for r in runs["baseline"])
        llmsm = statistics.median(r["us"] for r in runs["llmsm"])
        loop = statistics.median(r["loop_us"] for r in runs["llmsm"]) - statistics.median(r["loop_us"] for r in runs["baseline"])
        own = llmsm - base
        small_own = own if small_own is None else small_own
        lost = sum(r["sent"] - r["rows"] for r in runs["llmsm"])
        rows.append([name, f"{base:.0f}", f"{llmsm:.0f}", f"{own:.0f} ({loop:.0f} + {own - loop:.0f})",
                     f"{own / small_own:.2f}x", lost])
        saved[name] = {"baseline_us": base, "llmsm_us": llmsm, "own_us": own, "own_event_loop_us": loop,
                       "rows_lost": lost, "runs": runs}
    print(f"\nµs of CPU per exchange, median of {args.rounds} rounds of {args.exchanges}"
          + (f", pinned to CPU {sorted(cpus)}" if cpus else "") + ":")
    print(C.table(["request body", "baseline", "llmsm", "llmsm's own work (event loop + threads)",
                   "own work / small request's", "rows lost"], rows))
    path = C.save_json("bench_chain.json", saved)
    print(f"figures in {path}")


if __name__ == "__main__":
    main()
