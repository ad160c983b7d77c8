"""The shipper addon: starts the background shipping of the recorder's database to a team
PostgreSQL (`llmsm_team_db`) and/or an OTLP collector (`llmsm_otlp_endpoint`, or the standard
OTEL_EXPORTER_OTLP_* variables), and the team budgets' refresh (through the budget guard).

It has no request hooks: mitmproxy never calls it per request. Each target is a
`ShipLoop` thread (analytics/team/ship.py) reading the local database from its durable
position; nothing here touches the event loop or the writer.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

from mitmproxy import ctx

if TYPE_CHECKING:
    from llmsm.addons.budget_guard import BudgetGuard
    from llmsm.addons.recorder import Recorder

log = logging.getLogger("llmsm.ship")


def otlp_configured(endpoint: str) -> bool:
    return bool(endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


class Shipper:
    def __init__(self, recorder: Recorder, guard: BudgetGuard | None = None) -> None:
        self.recorder = recorder
        self.guard = guard
        self.loops: list = []

    def load(self, loader) -> None:
        loader.add_option("llmsm_team_db", str, "", "PostgreSQL URL of the team database to ship every event to.")
        loader.add_option("llmsm_developer", str, "", "Who this gateway's events belong to in the team database (default user@host).")
        loader.add_option("llmsm_team_share_content", bool, False, "Also ship session digests (content) to the team database.")
        loader.add_option("llmsm_otlp_endpoint", str, "", "OTLP/HTTP endpoint to export one span per exchange to.")

    def running(self) -> None:
        from llmsm.analytics.team.ship import Identity, ShipLoop, default_developer

        db = self.recorder.db_path
        if db is None:
            return
        identity = Identity(
            developer=ctx.options.llmsm_developer or default_developer(),
            host=socket.gethostname(),
            share_content=ctx.options.llmsm_team_share_content,
        )
        if ctx.options.llmsm_team_db:
            from llmsm.analytics.team.pg import PostgresSink

            sink = PostgresSink(ctx.options.llmsm_team_db, identity)
            on_batch = self.guard.team_projects_seen if self.guard is not None else None
            self.loops.append(ShipLoop(db, sink, share_content=identity.share_content, on_batch=on_batch))
            if self.guard is not None:
                self.guard.start_team(ctx.options.llmsm_team_db, identity.developer)
        if otlp_configured(ctx.options.llmsm_otlp_endpoint):
            from llmsm.analytics.team.otlp import OtlpSink

            sink = OtlpSink(ctx.options.llmsm_otlp_endpoint or None, identity)
            self.loops.append(ShipLoop(db, sink, share_content=False))
        for loop in self.loops:
            loop.start()
            log.info("shipping %s to %s (developer %s)", db, loop.sink.target, identity.developer)

    def done(self) -> None:
        for loop in self.loops:
            loop.stop()
        self.loops.clear()
