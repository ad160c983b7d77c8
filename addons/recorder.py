"""The recorder: writes every finished exchange into the database, as mitmproxy's `save` addon
writes flows to a file.

It owns the `llmsm_db` option and the `EventWriter` (addons/writer.py): made in `configure` for
the database the option names (default: LLMSM_DB or the user data dir), started in `running`,
closed (flushed) in `done`. Each finished `ExchangeEvent` is the one the gateway left in
`flow.metadata[EVENT_META]` during the same hook (addons/hooks.py), so the recorder runs after
the gateway; `put()` only journals and queues it, the database is written from the writer's
thread.
"""

from __future__ import annotations

from pathlib import Path

from mitmproxy import ctx, exceptions, http

from llmsm.addons.hooks import EVENT_META, guarded
from llmsm.addons.writer import DEFAULT_FLUSH_INTERVAL, EventWriter


class Recorder:
    def __init__(self) -> None:
        self.writer: EventWriter | None = None
        self._running = False

    @property
    def db_path(self) -> Path | None:
        """The database events go to (None before the option is configured)."""
        return self.writer.db_path if self.writer is not None else None

    def load(self, loader) -> None:
        loader.add_option(
            "llmsm_db", str, "", "Path of llmsm's DuckDB database (default: LLMSM_DB or the user data dir)."
        )
        loader.add_option(
            "llmsm_flush_interval", float, DEFAULT_FLUSH_INTERVAL,
            "Seconds between the writer's commits: how soon a finished exchange can be queried.",
        )

    def configure(self, updated) -> None:
        if "llmsm_flush_interval" in updated:
            if ctx.options.llmsm_flush_interval <= 0:
                raise exceptions.OptionsError("llmsm_flush_interval must be a positive number of seconds")
            if self.writer is not None:
                self.writer.flush_interval = ctx.options.llmsm_flush_interval
        if "llmsm_db" not in updated:
            return
        from llmsm.analytics.store import default_db_path

        db = Path(ctx.options.llmsm_db).expanduser() if ctx.options.llmsm_db else default_db_path()
        if self.writer is not None and self.writer.db_path == db:
            return
        if self.writer is not None:  # another database from now on: this one gets what it has
            self.writer.close()
        self.writer = EventWriter(db, flush_interval=ctx.options.llmsm_flush_interval)
        if self._running:
            self.writer.start()

    def running(self) -> None:
        self._running = True
        if self.writer is not None:
            self.writer.start()

    def done(self) -> None:
        self._running = False
        if self.writer is not None:
            self.writer.close()

    def put(self, event) -> None:
        """Write one finished event; also for events finished outside a hook (the gateway's
        `late_event`: a side call held until its turn came)."""
        if self.writer is not None:
            self.writer.put(event)

    @guarded
    def _write(self, flow: http.HTTPFlow) -> None:
        event = flow.metadata.get(EVENT_META)
        if event is not None:
            self.put(event)

    # Every hook in which the gateway can finish an event.
    response = error = websocket_message = websocket_end = _write
