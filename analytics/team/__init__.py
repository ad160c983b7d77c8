"""The team side: every developer's gateway ships its events to a shared PostgreSQL (and to an
OpenTelemetry collector), and `llmsm team ...` reads them back. docs/team.md.

- `schema.py`: the team database's numbered migrations, its partitions and its rollup.
- `ship.py`: the shipper: reads the local database in its stored order (`event_order`) from a
  durable position (`ship_positions`) and hands batches to a sink (PostgreSQL, OTLP).
- `otlp.py`: the OTLP sink (one span per exchange, GenAI semantic conventions).
- `reports.py`: team reports and sessions, the team budgets' totals.

Nothing here imports mitmproxy or typer; psycopg and OpenTelemetry are imported on first use.
"""
