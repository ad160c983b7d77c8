"""llmsm's own work per request, measured inside the gateway: each of its hooks, the collector on
the event loop and its background threads, for a small request and for growing conversations.

    .venv/bin/python benchmarks/bench_hooks.py                  # ~4 min
    .venv/bin/python benchmarks/bench_hooks.py --rate 50 --requests 300 --rounds 2

`bench_gateway.py` part b finds llmsm's own work as llmsm's CPU minus lean mitmproxy's, two
processes apart, which a shared machine moves by ±20–50% between rounds. Here the figure is
taken in one process: `llmsm proxy` runs through benchmarks/_hook_probe.py, which times each of
llmsm's addon hooks with the thread's CPU clock, the collector's passes on the event loop, and
the CPU of each thread by name. Bodies are part b's (ten Claude Code sessions at once, each
request one turn more than its session's previous one), sent at the same --rate for every body
(so the per-second work of the background threads weighs the same on each) from CPU 1, with
the proxy on CPU 0. The last column is the 1 MB conversation's figure over the small request's:
llmsm's own work independent of the history would be 1.0x. (What this does not see: mitmproxy's
own code running slower beside llmsm's; part b's llmsm − lean has it.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import bench_gateway as G  # noqa: E402

SHAPES = {
    "267 B": {},
    "100 KiB message": {"pad_kb": 100},
    "~137 KB conversation": {"turns": 60, "turn_kb": 2},
    "~1 MB conversation": {"turns": 300, "turn_kb": 3},
}
# Hooks that cost a few microseconds each are summed in one row.
MINOR_US = 15.0


class ProbedLlmsm(C.Llmsm):
    def __init__(self, upstream_url: str, tag: str, out: Path, cpus: set[int] | None) -> None:
        self.out = out
        os.environ["LLMSM_HOOK_PROBE_OUT"] = str(out)  # the child's environment is bench_env(), made from ours
        super().__init__(upstream_url, tag, cpus, entry=(str(Path(__file__).with_name("_hook_probe.py")),), name="probed")

    def totals(self) -> dict:
        self.out.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not self.out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.05)
        data = json.loads(self.out.read_text())
        self.out.unlink()
        return data


async def one_round(up: C.Server, args, shape: dict, tag: str, cpus) -> dict[str, float]:
    """µs per request of each part, over --requests requests."""
    proxy = ProbedLlmsm(up.url, tag, C.OUT / f"{tag}-probe.json", cpus)
    proxy.start()
    make = G._make_json_request(shape)
    try:
        await C.load(proxy.port, G.LLMSM_PATH, 160, 8, make)  # each session's first body parsed whole
        time.sleep(1.5)
        proxy.totals()  # reset
        _, failures = await C.load(proxy.port, G.LLMSM_PATH, args.requests, 8, make, rate=args.rate)
        time.sleep(1.5)  # the writer's last batch belongs to this load
        data = proxy.totals()
    finally:
        proxy.stop()
    if failures:
        raise SystemExit(f"{failures} requests failed")
    per = 1e6 / args.requests
    parts = {name: s * per for name, s in data["hooks_s"].items()}
    parts["collector (event loop)"] = data["gc_s"] * per
    for name, s in data["threads_s"].items():
        if name not in ("event loop", "other"):
            parts[f"thread {name}"] = s * per
    return parts


async def main_async(args) -> dict:
    proxy_cpus, other_cpus = G.cpu_split()
    if other_cpus:
        os.sched_setaffinity(0, other_cpus)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in SHAPES}
    with C.start_upstream("hooks", other_cpus) as up:
        for rnd in range(args.rounds):
            order = list(SHAPES) if rnd % 2 == 0 else list(reversed(SHAPES))
            for name in order:
                tag = f"hooks{rnd}-" + "".join(ch for ch in name if ch.isalnum())
                runs[name].append(await one_round(up, args, SHAPES[name], tag, proxy_cpus))
                print(f"  round {rnd + 1} {name}: {sum(runs[name][-1].values()):.0f} µs per request", flush=True)
    parts = sorted({p for rs in runs.values() for r in rs for p in r})
    med = {name: {p: statistics.median(r.get(p, 0.0) for r in rs) for p in parts} for name, rs in runs.items()}
    major = [p for p in parts if max(m[p] for m in med.values()) >= MINOR_US]
    minor = [p for p in parts if p not in major]
    rows = []
    first, last = list(SHAPES)[0], list(SHAPES)[-1]

    def row(label: str, values: dict[str, float]) -> list:
        ratio = values[last] / values[first] if values[first] else float("nan")
        return [label, *(f"{values[name]:.0f}" for name in SHAPES), f"{ratio:.2f}x"]

    for p in sorted(major, key=lambda p: -med[last][p]):
        rows.append(row(p, {name: med[name][p] for name in SHAPES}))
    if minor:
        rows.append(row(f"{len(minor)} other hooks", {name: sum(med[name][p] for p in minor) for name in SHAPES}))
    hooks = [p for p in parts if not p.startswith(("thread ", "collector"))]
    totals = {
        "llmsm's hooks": {name: sum(med[name][p] for p in hooks) for name in SHAPES},
        "+ the collector on the event loop": {name: sum(med[name][p] for p in hooks) + med[name]["collector (event loop)"]
                                              for name in SHAPES},
        "+ llmsm's threads (all its own work)": {name: sum(med[name].values()) for name in SHAPES},
    }
    for label, values in totals.items():
        rows.append(row(f"**{label}**", values))
    print(f"\nµs of CPU per request, median of {args.rounds} rounds of {args.requests} requests at {args.rate:g} req/s:")
    print(C.table(["part", *SHAPES, f"{last} / {first}"], rows))
    return {"rate": args.rate, "requests": args.requests, "rounds": args.rounds, "median_us": med, "runs": runs,
            "totals_us": totals}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=300, help="requests per round and body")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--rate", type=float, default=50.0, help="requests per second (the same for every body)")
    args = p.parse_args()
    C.print_machine()
    started = time.monotonic()
    results = asyncio.run(main_async(args))
    results["machine"] = C.machine()
    print(f"finished in {time.monotonic() - started:.0f} s; figures in {C.save_json('bench_hooks.json', results)}")


if __name__ == "__main__":
    main()
