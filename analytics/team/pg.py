"""The PostgreSQL sink and connection: `connect` (migrated), `PostgresSink.send` (one batch in
one statement: insert what is new, roll up what was inserted)."""

from __future__ import annotations

import hashlib
import json
import operator
from datetime import date
from typing import Any

from llmsm.analytics.team import schema
from llmsm.analytics.team.ship import Identity, redact_url


class TeamDbError(Exception):
    """The team database cannot be reached or used (one line)."""


def connect(url: str, *, connect_timeout: float = 5.0, migrate: bool = True) -> Any:
    """A psycopg connection to the team database, its schema brought up to date (`migrate`;
    the readers, `llmsm team report|sessions`, do not migrate: a read-only role can run them,
    and they load neither DuckDB nor the local schema; they call `check_schema`)."""
    import psycopg

    try:
        con = psycopg.connect(url, connect_timeout=max(1, int(connect_timeout)), autocommit=True)
        con.prepare_threshold = None  # no server-side prepared statements: any pgbouncer in transaction mode
    except psycopg.Error as exc:
        raise TeamDbError(f"cannot reach the team database {redact_url(url)}: {_one_line(exc)}") from exc
    except Exception as exc:  # a malformed URL
        raise TeamDbError(f"bad team database URL {redact_url(url)}: {_one_line(exc)}") from exc
    if migrate:
        try:
            schema.migrate(con)
        except psycopg.Error as exc:
            con.close()
            raise TeamDbError(f"cannot prepare the team database {redact_url(url)}: {_one_line(exc)}") from exc
    return con


def check_schema(con: Any, url: str) -> None:
    """TeamDbError unless the team tables exist (a reader's connection, made without migrating)."""
    row = con.execute("SELECT to_regclass('usage_hourly') IS NOT NULL AND to_regclass('events') IS NOT NULL").fetchone()
    if not row[0]:
        raise TeamDbError(f"the team database {redact_url(url)} has no llmsm tables yet: ship to it first "
                          "(a gateway with --team-db, or llmsm team push)")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


_SUM_SQL = {
    "requests": "count(*)",
    "errors": "count(*) FILTER (WHERE outcome <> 'ok')",
    "estimated_requests": "count(*) FILTER (WHERE usage_source = 'estimated')",
    "transcript_requests": "count(*) FILTER (WHERE usage_source = 'transcript')",
    "input_tokens": "coalesce(sum(input_tokens), 0)",
    "output_tokens": "coalesce(sum(output_tokens), 0)",
    "cache_write_tokens": "coalesce(sum(cache_write_tokens), 0)",
    "cache_read_tokens": "coalesce(sum(cache_read_tokens), 0)",
    "reasoning_tokens": "coalesce(sum(reasoning_tokens), 0)",
    "unpriced_requests": "count(*) FILTER (WHERE cost_usd IS NULL AND (input_tokens > 0 OR output_tokens > 0 "
    "OR cache_read_tokens > 0 OR cache_write_tokens > 0))",
}


def rollup_insert_sql(source: str) -> str:
    """INSERT ... SELECT the rows of `source` (a relation with the events' columns) into
    `events`, ignoring those stored already, and add the new counted ones to usage_hourly, in
    one statement; it returns how many rows were new."""
    cols = [name for name, _ in schema.local_columns()] + ["developer", "host", "project", "counted"]
    col_list = ", ".join(cols)
    keys = ", ".join(schema.ROLLUP_KEYS)
    key_select = "date_trunc('hour', started_at), developer, host, project, provider, model, client"
    sums = ", ".join(f"{_SUM_SQL[n]} AS {n}" for n in schema.ROLLUP_SUMS)
    sum_names = ", ".join(schema.ROLLUP_SUMS)
    updates = ", ".join(f"{n} = usage_hourly.{n} + excluded.{n}" for n in schema.ROLLUP_SUMS)
    return f"""
WITH new AS (
    INSERT INTO events ({col_list}) SELECT {col_list} FROM {source}
    ON CONFLICT (id, started_at) DO NOTHING
    RETURNING started_at, developer, host, project, provider, model, client, outcome, usage_source, counted,
              input_tokens, output_tokens, cache_write_tokens, cache_read_tokens, reasoning_tokens, cost_usd
), rolled AS (
    INSERT INTO usage_hourly ({keys}, {sum_names}, cost_usd)
    SELECT {key_select}, {sums}, sum(cost_usd) FROM new WHERE counted
    GROUP BY {key_select} ORDER BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT ON CONSTRAINT usage_hourly_key DO UPDATE SET {updates},
        cost_usd = CASE WHEN usage_hourly.cost_usd IS NULL AND excluded.cost_usd IS NULL THEN NULL
                        ELSE coalesce(usage_hourly.cost_usd, 0) + coalesce(excluded.cost_usd, 0) END
    RETURNING 1
)
SELECT count(*) FROM new"""


class PostgresSink:
    """Ships batches into the team database (schema.py); reconnects after any failure."""

    def __init__(self, url: str, identity: Identity, *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.identity = identity
        self.target = redact_url(url)
        self.connect_timeout = connect_timeout
        self._con: Any = None
        self._months: set[date] = set()
        self._cols = [name for name, _ in schema.local_columns()] + ["developer", "host", "project", "counted"]
        self._json = {name for name, t in schema.local_columns() if t == "jsonb"}
        self._stage = "_llmsm_stage_" + hashlib.sha1(",".join(self._cols).encode()).hexdigest()[:10]

    def _connection(self) -> Any:
        if self._con is None or self._con.closed:
            self._con = connect(self.url, connect_timeout=self.connect_timeout)
            with self._con.cursor() as cur:
                self._months = set(schema.partitions(cur))
        return self._con

    def send(self, rows: list[dict[str, Any]]) -> int:
        try:
            return self._send(rows)
        except BaseException:
            self.close()  # a broken connection: a fresh one next time
            raise

    def _send(self, rows: list[dict[str, Any]]) -> int:
        con = self._connection()
        ident = self.identity
        months = {schema.month_start(r["started_at"].astimezone(_UTC)) for r in rows}
        with con.transaction():
            cur = con.cursor()
            schema.ensure_partitions(cur, months, self._months)
            # Named by its columns: behind pgbouncer a server session (and its temp table) may have
            # served an llmsm with other columns before.
            stage = self._stage
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
            local = self._cols[:-4]
            pick = operator.itemgetter(*local)
            as_json = [i for i, name in enumerate(local) if name in self._json]
            with cur.copy(f"COPY {stage} ({', '.join(self._cols)}) FROM STDIN") as copy:
                for r in rows:
                    values = list(pick(r))
                    for i in as_json:
                        v = values[i]
                        if v is not None and not isinstance(v, str):
                            values[i] = json.dumps(v)
                    values += (ident.developer, ident.host, r.get("project"), bool(r.get("counted", True)))
                    copy.write_row(values)
            cur.execute(rollup_insert_sql(stage))
            return int(cur.fetchone()[0])

    def close(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            except Exception:
                pass
        self._con = None
        self._months = set()


from datetime import timezone as _tz  # noqa: E402

_UTC = _tz.utc
