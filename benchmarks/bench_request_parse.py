"""The gateway's request-side work on a growing conversation, in process (no network, no other
process): what llmsm does per request before it forwards it, against parsing every body from
scratch as llmsm did before (addons/providers/incremental.py), in the same run.

    .venv/bin/python benchmarks/bench_request_parse.py            # ~137 KB and ~1 MB conversations
    .venv/bin/python benchmarks/bench_request_parse.py --requests 600
    .venv/bin/python benchmarks/bench_request_parse.py --cold     # caches evicted before each request

Bodies are bench_gateway.py part b's: ten Claude Code sessions at once, each request one turn
more than its session's previous one, the cache marker on the newest message. Measured with
process CPU time, per request, median of --rounds rounds:

- incremental: the gateway's `requestheaders` and `request` hooks and the digest keeper's `request`
  hook on a real mitmproxy flow (what runs on the event loop before the request goes upstream);
- from scratch: the same hooks with the reuse left out (each body parsed whole and checksummed,
  the gateway's path for bodies it does not keep), the baseline.

Every incremental request's RequestInfo fields, digest and request hash are checked against the
from-scratch ones.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import bench_gateway as G  # noqa: E402
from mitmproxy import http  # noqa: E402
from mitmproxy.test import tflow  # noqa: E402

from llmsm.addons.digest import DIGEST_META, DigestKeeper  # noqa: E402
from llmsm.addons.gateway import LLMGateway  # noqa: E402
from llmsm.addons.hooks import META  # noqa: E402


class _NoReuse:
    """Stands in for RequestBodies: never reuses, never keeps (the from-scratch baseline)."""

    def reuse(self, *args):
        return None

    def parse(self, *args):
        return None

    def release(self, kept):
        pass


_EVICT = bytearray(64 << 20)


def _evict_caches() -> None:
    _EVICT[::64] = bytes(len(_EVICT) // 64)  # a write to every cache line


def _run(gw: LLMGateway, keeper: DigestKeeper, reqs: list, n: int, cold: bool = False) -> tuple[float, list]:
    seen = []
    spent = 0.0
    for i in range(n):
        flow = tflow.tflow(req=reqs[i % len(reqs)].copy())
        if cold:
            _evict_caches()
        t0 = time.process_time()
        gw.requestheaders(flow)
        pending = gw.request(flow)
        if pending is not None:
            asyncio.run(pending)
        keeper.request(flow)
        spent += time.process_time() - t0
        ex = flow.metadata[META]
        info = ex.request
        seen.append((ex.request_hash, info.model, info.message_count, info.tool_errors, info.cache_ttl,
                     info.body_session_id, len(info.items or ()), flow.metadata[DIGEST_META][1]))
        gw.bodies.release(ex.kept_body)  # what the gateway does once the exchange's event is made
    return spent * 1000 / n, seen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=400, help="requests per round and shape")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cold", action="store_true", help="evict the CPU caches before each request (not timed)")
    args = p.parse_args()
    C.print_machine()
    rows = []
    for turns, turn_kb in ((60, 2), (300, 3)):
        shape = {"turns": turns, "turn_kb": turn_kb}
        raw = [G._conversation_body(i, shape) for i in range(100)]
        reqs = [http.Request.make("POST", "https://api.anthropic.com/v1/messages", raw[i],
                                  C.request_headers(f"j{i}", session=f"bench-session-{i % 10}")) for i in range(100)]
        inc_ms, full_ms = [], []
        for _ in range(args.rounds):
            gw, keeper = LLMGateway(), DigestKeeper()
            _run(gw, keeper, reqs, 100)  # warm-up: each session's first body is parsed whole
            ms, inc = _run(gw, keeper, reqs, args.requests, args.cold)
            inc_ms.append(ms)
            base, base_keeper = LLMGateway(), DigestKeeper()
            base.bodies = _NoReuse()  # type: ignore[assignment]
            _run(base, base_keeper, reqs, 100)
            ms, full = _run(base, base_keeper, reqs, args.requests, args.cold)
            full_ms.append(ms)
            assert inc == full, "the incremental path differs from parsing from scratch"
        size = statistics.mean(len(r) for r in raw)
        a, b = statistics.median(inc_ms), statistics.median(full_ms)
        rows.append([f"{turns} turns, {size / 1000:.0f} KB", f"{b:.3f}", f"{a:.3f}", f"{a / b:.2f}x",
                     f"{gw.bodies.reused} / {gw.bodies.parsed}"])
    print(C.table(["conversation", "from scratch ms/req", "incremental ms/req", "ratio", "reused / parsed whole (last round)"], rows))
    print("every incremental request's fields, digest and hash equal the from-scratch ones")


if __name__ == "__main__":
    main()
