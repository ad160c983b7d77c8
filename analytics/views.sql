-- llmsm views: what users query with `llmsm sql` (and what the CLI reads).
--
-- Applied by analytics/migrations.py:migrate() after the migrations, whenever this file changes
-- (its sha256 is kept in _llmsm_meta). Every statement must be CREATE OR REPLACE VIEW (or MACRO),
-- so the whole file can run again on any database. Views may use views and macros defined above
-- them.
--
-- Token rules (see analytics/events.py, Usage):
--   * input_tokens is the uncached input; the whole prompt is input + cache_read + cache_write.
--   * total_tokens = input + output + cache_read + cache_write (NULL counts as 0);
--     reasoning_tokens is a part of output_tokens and is never added again.
--   * rows with api = 'other' never count towards tokens (they carry none).
--   * counted_tokens (count_tokens answers) is a count, not consumption: never summed as usage.


-- ============================================================================================
-- requests: one row per exchange, every events column plus derived token totals
-- ============================================================================================
CREATE OR REPLACE VIEW requests AS
SELECT
    e.*,
    CASE WHEN e.api = 'other' THEN 0 ELSE
        coalesce(e.input_tokens, 0) + coalesce(e.output_tokens, 0)
        + coalesce(e.cache_read_tokens, 0) + coalesce(e.cache_write_tokens, 0)
    END::BIGINT AS total_tokens,
    CASE WHEN e.api = 'other' THEN 0 ELSE
        coalesce(e.input_tokens, 0) + coalesce(e.cache_read_tokens, 0) + coalesce(e.cache_write_tokens, 0)
    END::BIGINT AS prompt_tokens
FROM events AS e;


-- ============================================================================================
-- The wire wins: THE home of the rule that an imported row (usage_source = 'transcript', from
-- `llmsm import ...`) is left out when the gateway recorded the same response, so nothing is
-- counted twice and history from before llmsm ran still counts. counted_events (every report,
-- `llmsm cost`, the daily view) and the sessions view both apply it through this macro.
--
-- imported_seen_on_wire(since, until): the ids of the imported rows started in [since, until)
--   (NULL or left out: unbounded) whose response a wire row also has: the same message_id
--   (Claude Code transcripts keep the response id). The wire and a transcript time the same
--   response within minutes, so only wire rows within a day of the range are looked at: every
--   scan is bounded by the range (fast reports over the last days of a big table).
--   Codex rollouts carry no response id (`llmsm import codex`), so a Codex transcript row is the
--   same response as a wire row of the Responses API with the same uncached input, cache read and
--   output tokens (a rollout's last_token_usage is the response's own usage, converted as the
--   gateway converts it: equal for the same response, practically never for two) that started
--   at most 3600 s before it (a response streams a while before Codex writes its token_count,
--   the row's time) and 300 s after it (a busy machine's clocks). The session is not compared:
--   a label (x-llmsm-session, /s/NAME/, llmsm run) replaces the thread id on the wire, and a
--   thread the gateway saw only in part keeps its other responses counted from the rollout.
--   (transcripts_codex.CODEX_WIRE_BEFORE_S / CODEX_WIRE_AFTER_S name the two bounds.)
--   Another way of recognising the same response is one more SELECT here, UNION ALL.
-- ============================================================================================
CREATE OR REPLACE MACRO imported_seen_on_wire(since := NULL, until := NULL) AS TABLE
WITH imported AS (
    SELECT id, message_id FROM events
    WHERE usage_source = 'transcript'
      AND started_at >= coalesce(since, '-infinity'::TIMESTAMPTZ)
      AND started_at < coalesce(until, 'infinity'::TIMESTAMPTZ)
)
SELECT id FROM imported WHERE message_id IN (
    SELECT message_id FROM events
    WHERE usage_source IS DISTINCT FROM 'transcript'
      AND started_at >= coalesce(since, '-infinity'::TIMESTAMPTZ) - INTERVAL 1 DAY
      AND started_at < coalesce(until, 'infinity'::TIMESTAMPTZ) + INTERVAL 1 DAY
      -- (IS NOT NULL: an id-less row matches nothing; it also makes DuckDB hash the imported
      -- side, so that with nothing imported the wire rows are not even read)
      AND message_id IN (SELECT message_id FROM imported WHERE message_id IS NOT NULL)
)
UNION ALL
SELECT t.id FROM events AS t
WHERE t.usage_source = 'transcript' AND t.client = 'codex'
  AND t.started_at >= coalesce(since, '-infinity'::TIMESTAMPTZ)
  AND t.started_at < coalesce(until, 'infinity'::TIMESTAMPTZ)
  AND EXISTS (
      SELECT 1 FROM events AS w
      WHERE w.usage_source IN ('reported', 'estimated') AND w.provider = 'openai' AND w.api = 'responses'
        AND w.started_at >= coalesce(since, '-infinity'::TIMESTAMPTZ) - INTERVAL 3600 SECOND
        AND w.started_at < coalesce(until, 'infinity'::TIMESTAMPTZ) + INTERVAL 300 SECOND
        AND w.input_tokens = t.input_tokens
        AND w.cache_read_tokens = t.cache_read_tokens
        AND w.output_tokens = t.output_tokens
        AND w.started_at >= t.started_at - INTERVAL 3600 SECOND
        AND w.started_at <= t.started_at + INTERVAL 300 SECOND
  );


-- ============================================================================================
-- counted_events(since, until): the rows that usage adds up, started in [since, until) (NULL
--   or left out: unbounded), with every column of `requests`: API calls only (rows with
--   api = 'other', preflights and unknown paths, carry no usage), and an imported row only when
--   the wire did not record its response (imported_seen_on_wire above).
-- ============================================================================================
CREATE OR REPLACE MACRO counted_events(since := NULL, until := NULL) AS TABLE
SELECT * FROM requests
WHERE api <> 'other' AND usage_source IS DISTINCT FROM 'transcript'
  AND started_at >= coalesce(since, '-infinity'::TIMESTAMPTZ)
  AND started_at < coalesce(until, 'infinity'::TIMESTAMPTZ)
UNION ALL
SELECT * FROM requests
WHERE api <> 'other' AND usage_source = 'transcript'
  AND started_at >= coalesce(since, '-infinity'::TIMESTAMPTZ)
  AND started_at < coalesce(until, 'infinity'::TIMESTAMPTZ)
  AND id NOT IN (SELECT id FROM imported_seen_on_wire(since, until));


-- ============================================================================================
-- sessions: one row per session_id (NULL session_id excluded), joined with its latest run
--   status: 'active' if last seen within 5 minutes, 'idle' within 1 hour, else 'ended'
--   requests, errors and tokens count what counted_events counts (API calls, the wire winning
--   over imported transcripts); first_seen, last_seen, label and client take other calls too
-- ============================================================================================
CREATE OR REPLACE VIEW sessions AS
WITH session_rows AS (
    -- each response once: an imported row the gateway also recorded is left out (the wire
    -- wins, as in counted_events); 'other' calls stay, as activity (first_seen, last_seen...)
    SELECT * FROM requests
    WHERE session_id IS NOT NULL
      AND NOT (usage_source = 'transcript' AND id IN (SELECT id FROM imported_seen_on_wire()))
),
per_session AS (
    SELECT
        session_id,
        arg_max(label, started_at) FILTER (WHERE label IS NOT NULL) AS label,
        coalesce(arg_max(client, started_at) FILTER (WHERE client IS NOT NULL AND client <> 'unknown'),
                 'unknown') AS client,
        arg_max(client_version, started_at) FILTER (WHERE client_version IS NOT NULL) AS client_version,
        min(started_at) AS first_seen,
        max(coalesce(ended_at, started_at)) AS last_seen,
        count(*) FILTER (WHERE api <> 'other') AS requests,
        count(*) FILTER (WHERE outcome <> 'ok' AND api <> 'other') AS errors,
        coalesce(list_sort(list(DISTINCT model) FILTER (WHERE model IS NOT NULL)), []::VARCHAR[]) AS models,
        coalesce(sum(input_tokens) FILTER (WHERE api <> 'other'), 0)::BIGINT AS input_tokens,
        coalesce(sum(output_tokens) FILTER (WHERE api <> 'other'), 0)::BIGINT AS output_tokens,
        coalesce(sum(cache_read_tokens) FILTER (WHERE api <> 'other'), 0)::BIGINT AS cache_read_tokens,
        coalesce(sum(cache_write_tokens) FILTER (WHERE api <> 'other'), 0)::BIGINT AS cache_write_tokens,
        coalesce(sum(reasoning_tokens) FILTER (WHERE api <> 'other'), 0)::BIGINT AS reasoning_tokens,
        sum(cost_usd) AS cost_usd,
        count(DISTINCT agent_id) AS agents,
        coalesce(bool_or(usage_source = 'estimated'), false) AS estimated,
        -- the working directory the session's requests showed last (events.digest)
        arg_max(digest->>'$.project.cwd', started_at) FILTER (WHERE digest->>'$.project.cwd' IS NOT NULL) AS project
    FROM session_rows
    GROUP BY session_id
),
latest_run AS (
    SELECT session_id, label, command, cwd, git_branch, parent_session
    FROM runs
    QUALIFY row_number() OVER (PARTITION BY session_id ORDER BY started_at DESC) = 1
)
SELECT
    s.session_id,
    coalesce(s.label, r.label) AS label,
    s.client,
    s.client_version,
    s.first_seen,
    s.last_seen,
    CASE
        WHEN s.last_seen >= now() - INTERVAL 5 MINUTE THEN 'active'
        WHEN s.last_seen >= now() - INTERVAL 1 HOUR THEN 'idle'
        ELSE 'ended'
    END AS status,
    s.requests,
    s.errors,
    s.models,
    s.input_tokens,
    s.output_tokens,
    s.cache_read_tokens,
    s.cache_write_tokens,
    s.reasoning_tokens,
    (s.input_tokens + s.output_tokens + s.cache_read_tokens + s.cache_write_tokens)::BIGINT AS total_tokens,
    s.cost_usd,
    s.agents,
    s.estimated,
    r.command,
    r.cwd,
    r.git_branch,
    coalesce(s.project, r.cwd) AS project,
    r.parent_session
FROM per_session AS s
LEFT JOIN latest_run AS r USING (session_id);


-- ============================================================================================
-- budget_status: every budget (`llmsm budget set`) with what it has used so far
--   used_tokens counts every token kind (input + output + cache read + cache write) of API calls;
--   used_usd sums cost_usd (unpriced requests add nothing: `llmsm cost` lists them).
--   session/label/client budgets count all time; the day budget counts today (local date).
--   Imported transcript rows (usage_source = 'transcript') never count: budgets are about
--   what passes the gateway.
--   pct = the larger of used/max_tokens and used/max_usd, in percent (may pass 100);
--   state: 'exceeded' (pct >= 100: the gateway answers new requests with a 429, 402 for Codex),
--          'warn' (pct >= warn_at * 100), else 'ok'.
--   The gateway keeps the same numbers in memory (analytics/budgets.py, BudgetBook).
-- ============================================================================================
CREATE OR REPLACE VIEW budget_status AS
-- NOT MATERIALIZED: each use below reads only the rows it needs (a materialized copy of every
-- event cost ~5x the whole query).
WITH charged AS NOT MATERIALIZED (
    SELECT
        session_id,
        label,
        client,
        started_at,
        CASE WHEN api = 'other' THEN 0 ELSE
            coalesce(input_tokens, 0) + coalesce(output_tokens, 0)
            + coalesce(cache_read_tokens, 0) + coalesce(cache_write_tokens, 0)
        END AS tokens,
        coalesce(cost_usd, 0) AS usd
    FROM events
    WHERE usage_source IS DISTINCT FROM 'transcript'  -- what passed the gateway, not imports
),
-- Only the events some budget is about, totalled per target before they meet the budgets:
-- one pass over the events whatever the number of budgets.
used_by_target AS (
    SELECT 'session' AS scope, session_id AS target, sum(tokens) AS tokens, sum(usd) AS usd FROM charged
        WHERE session_id IN (SELECT target FROM budgets WHERE scope = 'session') GROUP BY session_id
    UNION ALL
    SELECT 'label', label, sum(tokens), sum(usd) FROM charged
        WHERE label IN (SELECT target FROM budgets WHERE scope = 'label') GROUP BY label
    UNION ALL
    SELECT 'client', client, sum(tokens), sum(usd) FROM charged
        WHERE client IN (SELECT target FROM budgets WHERE scope = 'client') GROUP BY client
    UNION ALL
    SELECT 'day', '', sum(tokens), sum(usd) FROM charged
        WHERE started_at >= CAST(current_date AS TIMESTAMPTZ)
        AND started_at < CAST(current_date + 1 AS TIMESTAMPTZ)
        AND EXISTS (SELECT 1 FROM budgets WHERE scope = 'day')
),
used AS (
    SELECT b.id, u.tokens::BIGINT AS used_tokens, u.usd::DOUBLE AS used_usd
    FROM budgets AS b
    JOIN used_by_target AS u ON u.scope = b.scope AND u.target = coalesce(b.target, '')
),
shares AS (
    SELECT
        b.id, b.scope, b.target, b.max_tokens, b.max_usd, coalesce(b.warn_at, 0.8) AS warn_at, b.created_at,
        coalesce(u.used_tokens, 0)::BIGINT AS used_tokens,
        coalesce(u.used_usd, 0)::DOUBLE AS used_usd,
        CASE WHEN b.max_tokens > 0 THEN 100.0 * coalesce(u.used_tokens, 0) / b.max_tokens
             WHEN b.max_tokens IS NOT NULL THEN 'inf'::DOUBLE END AS tokens_pct,
        CASE WHEN b.max_usd > 0 THEN 100.0 * coalesce(u.used_usd, 0) / b.max_usd
             WHEN b.max_usd IS NOT NULL THEN 'inf'::DOUBLE END AS usd_pct
    FROM budgets AS b
    LEFT JOIN used AS u USING (id)
)
SELECT
    *,
    greatest(tokens_pct, usd_pct) AS pct,
    CASE
        WHEN greatest(tokens_pct, usd_pct) >= 100 THEN 'exceeded'
        WHEN greatest(tokens_pct, usd_pct) >= 100 * warn_at THEN 'warn'
        ELSE 'ok'
    END AS state
FROM shares;


-- ============================================================================================
-- quota: the latest state of each provider quota window, per account (events.account: a key
--   fingerprint or account id, never the key) and window, from the rate-limit headers kept in
--   events.ratelimit. A window's state comes from the newest response that carried it.
--   source 'anthropic-unified': subscription windows (anthropic-ratelimit-unified-5h-*, -7d-*,
--          -7d_opus-*...): window '5h', '7d', ...; utilization 0..1 (or a percent: > 1.5 or '%')
--          -> used_pct; reset (epoch seconds); status; a window without its own reset/status
--          takes the overall unified-reset/-status when the representative claim names it
--          (or names none).
--   source 'anthropic': API rate limits anthropic-ratelimit-{requests,tokens,input-tokens,
--          output-tokens}-{limit,remaining,reset} (reset: RFC 3339).
--   source 'openai': x-ratelimit-{limit,remaining,reset}-{requests,tokens} (reset: a duration
--          such as "6m0s", "1s", "20ms", from the response time).
--   source 'codex': x-codex-[family-]{primary,secondary}-{used-percent,window-minutes,reset-at,
--          reset-after-seconds}; the window is named by its minutes (300 -> '5h', 10080 -> '7d'),
--          not by primary/secondary.
--   used_pct: 0..100 (limit - remaining over limit for API limits); resets_at: TIMESTAMPTZ.
--   analytics/quota.py parses the same headers the same way (parse_headers) for tests/tools.
-- ============================================================================================
CREATE OR REPLACE VIEW quota AS
WITH shapes AS (
    -- the newest response per account, provider and set of header names: the newest response
    -- carrying a window is always one of these, so only they need unpacking (fast on big tables)
    SELECT arg_max(id, started_at) AS id
    FROM events
    WHERE ratelimit IS NOT NULL
    GROUP BY account, provider, list_sort(json_keys(ratelimit))
),
headers AS (
    SELECT e.id, e.account, e.provider, e.started_at AS observed_at, lower(h.key) AS k, trim(h.value) AS v
    FROM events AS e
    SEMI JOIN shapes AS s ON s.id = e.id,
    unnest(map_entries(CAST(e.ratelimit AS MAP(VARCHAR, VARCHAR)))) AS t(h)
),
classified AS (
    SELECT
        *,
        CASE
            WHEN regexp_matches(k, '^anthropic-ratelimit-unified-[0-9][a-z0-9_]*-(utilization|reset|status)$')
                THEN 'anthropic-unified'
            WHEN regexp_matches(k, '^anthropic-ratelimit-(requests|tokens|input-tokens|output-tokens)-(limit|remaining|reset)$')
                THEN 'anthropic'
            WHEN regexp_matches(k, '^x-ratelimit-(limit|remaining|reset)-(requests|tokens)$')
                THEN 'openai'
            WHEN regexp_matches(k, '^x-codex-(?:[a-z0-9_-]+?-)?(primary|secondary)-(used-percent|window-minutes|reset-at|reset-after-seconds)$')
                THEN 'codex'
        END AS source
    FROM headers
),
fields AS (
    SELECT
        *,
        CASE source
            WHEN 'anthropic-unified' THEN regexp_extract(k, '^anthropic-ratelimit-unified-([0-9][a-z0-9_]*)-', 1)
            WHEN 'anthropic' THEN regexp_extract(k, '^anthropic-ratelimit-(requests|tokens|input-tokens|output-tokens)-', 1)
            WHEN 'openai' THEN regexp_extract(k, '-(requests|tokens)$', 1)
            WHEN 'codex' THEN regexp_extract(k, '^x-codex-((?:[a-z0-9_-]+?-)?(?:primary|secondary))-', 1)
        END AS slot,
        CASE source
            WHEN 'openai' THEN regexp_extract(k, '^x-ratelimit-(limit|remaining|reset)-', 1)
            WHEN 'codex' THEN regexp_extract(k, '-(used-percent|window-minutes|reset-at|reset-after-seconds)$', 1)
            ELSE regexp_extract(k, '-([a-z]+)$', 1)
        END AS field,
        -- the value read as a number, a point in time (epoch s or ms, or ISO 8601), a duration (s)
        TRY_CAST(replace(v, '%', '') AS DOUBLE) AS num,
        CASE
            WHEN regexp_matches(v, '^[0-9]+(\.[0-9]+)?$')
                THEN to_timestamp(CASE WHEN v::DOUBLE > 1e12 THEN v::DOUBLE / 1000 ELSE v::DOUBLE END)
            ELSE TRY_CAST(v AS TIMESTAMPTZ)
        END AS ts,
        CASE
            WHEN regexp_matches(v, '^[0-9]+(\.[0-9]+)?$') THEN v::DOUBLE
            WHEN regexp_matches(v, '^([0-9]+(\.[0-9]+)?(ms|d|h|m|s))+$') THEN
                coalesce(TRY_CAST(NULLIF(regexp_extract(v, '([0-9.]+)d', 1), '') AS DOUBLE), 0) * 86400
                + coalesce(TRY_CAST(NULLIF(regexp_extract(v, '([0-9.]+)h', 1), '') AS DOUBLE), 0) * 3600
                + coalesce(TRY_CAST(NULLIF(regexp_extract(v, '([0-9.]+)m(?:[^s]|$)', 1), '') AS DOUBLE), 0) * 60
                + coalesce(TRY_CAST(NULLIF(regexp_extract(v, '([0-9.]+)s', 1), '') AS DOUBLE), 0)
                + coalesce(TRY_CAST(NULLIF(regexp_extract(v, '([0-9.]+)ms', 1), '') AS DOUBLE), 0) / 1000
        END AS secs
    FROM classified
    WHERE source IS NOT NULL
),
latest AS (
    -- the newest response that carried this window
    SELECT account, provider, source, slot, arg_max(id, observed_at) AS id, max(observed_at) AS observed_at
    FROM fields
    GROUP BY account, provider, source, slot
),
per_window AS (
    SELECT
        l.account, l.provider, l.source, l.slot, l.id, l.observed_at,
        max(f.v) FILTER (WHERE f.field = 'utilization') AS utilization_raw,
        max(f.num) FILTER (WHERE f.field = 'utilization') AS utilization,
        max(f.num) FILTER (WHERE f.field = 'used-percent') AS used_percent,
        CAST(max(f.num) FILTER (WHERE f.field = 'window-minutes') AS BIGINT) AS window_minutes,
        max(f.num) FILTER (WHERE f.field = 'limit') AS limit_value,
        max(f.num) FILTER (WHERE f.field = 'remaining') AS remaining,
        max(f.v) FILTER (WHERE f.field = 'status') AS status,
        max(f.ts) FILTER (WHERE f.field IN ('reset', 'reset-at') AND l.source IN ('anthropic-unified', 'anthropic', 'codex')) AS reset_ts,
        max(f.secs) FILTER (WHERE (f.field = 'reset' AND l.source = 'openai') OR f.field = 'reset-after-seconds') AS reset_secs
    FROM latest AS l
    JOIN fields AS f ON f.id = l.id AND f.source = l.source AND f.slot = l.slot
    GROUP BY ALL
),
unified_overall AS (
    SELECT
        id,
        max(v) FILTER (WHERE k = 'anthropic-ratelimit-unified-status') AS status,
        max(CASE WHEN regexp_matches(v, '^[0-9]+(\.[0-9]+)?$')
                 THEN to_timestamp(CASE WHEN v::DOUBLE > 1e12 THEN v::DOUBLE / 1000 ELSE v::DOUBLE END)
                 ELSE TRY_CAST(v AS TIMESTAMPTZ) END)
            FILTER (WHERE k = 'anthropic-ratelimit-unified-reset') AS reset_ts,
        max(replace(replace(v, 'five_hour', '5h'), 'seven_day', '7d'))
            FILTER (WHERE k = 'anthropic-ratelimit-unified-representative-claim') AS claim
    FROM headers
    WHERE k IN ('anthropic-ratelimit-unified-status', 'anthropic-ratelimit-unified-reset',
                'anthropic-ratelimit-unified-representative-claim')
    GROUP BY id
),
windows AS (
    SELECT
        p.*,
        p.source = 'anthropic-unified' AND (o.claim IS NULL OR o.claim = p.slot) AS takes_overall,
        o.status AS overall_status,
        o.reset_ts AS overall_reset
    FROM per_window AS p
    LEFT JOIN unified_overall AS o ON o.id = p.id AND p.source = 'anthropic-unified'
)
SELECT
    account,
    provider,
    source,
    CASE
        WHEN source = 'codex' AND window_minutes > 0 THEN
            coalesce(NULLIF(regexp_extract(slot, '^(.*)-(primary|secondary)$', 1), '') || ' ', '')
            || CASE
                WHEN window_minutes % 1440 = 0 THEN CAST(window_minutes // 1440 AS VARCHAR) || 'd'
                WHEN window_minutes % 60 = 0 THEN CAST(window_minutes // 60 AS VARCHAR) || 'h'
                ELSE CAST(window_minutes AS VARCHAR) || 'm'
            END
        ELSE slot
    END AS window_name,
    window_minutes,
    CASE source
        WHEN 'anthropic-unified' THEN
            CASE WHEN utilization_raw LIKE '%\%%' ESCAPE '\' OR utilization > 1.5 THEN utilization
                 ELSE utilization * 100 END
        WHEN 'codex' THEN used_percent
        ELSE CASE WHEN limit_value > 0 AND remaining IS NOT NULL
                  THEN 100.0 * (limit_value - remaining) / limit_value END
    END AS used_pct,
    CAST(limit_value AS BIGINT) AS limit_value,
    CAST(remaining AS BIGINT) AS remaining,
    coalesce(
        reset_ts,
        CASE WHEN reset_secs IS NOT NULL THEN observed_at + to_microseconds(CAST(reset_secs * 1e6 AS BIGINT)) END,
        CASE WHEN takes_overall THEN overall_reset END
    ) AS resets_at,
    coalesce(status, CASE WHEN takes_overall THEN overall_status END) AS status,
    observed_at,
    id AS event_id
FROM windows;


-- ============================================================================================
-- daily: one row per UTC day, provider, model and client: what reports add up
--   day is the UTC date of started_at (`llmsm report daily` uses the local zone instead).
--   The rows of counted_events (API calls; an imported transcript row only when the wire did not
--   see the same response). Estimated rows count and are also counted in estimated_requests.
--   cost_usd is NULL when no request of the group is priced; unpriced_requests counts requests
--   with tokens but no price.
-- ============================================================================================
CREATE OR REPLACE VIEW daily AS
SELECT
    timezone('UTC', started_at)::DATE AS day,
    provider,
    model,
    client,
    count(*) AS requests,
    count(*) FILTER (WHERE outcome <> 'ok') AS errors,
    count(*) FILTER (WHERE usage_source = 'estimated') AS estimated_requests,
    count(*) FILTER (WHERE usage_source = 'transcript') AS transcript_requests,
    coalesce(sum(input_tokens), 0)::BIGINT AS input_tokens,
    coalesce(sum(output_tokens), 0)::BIGINT AS output_tokens,
    coalesce(sum(cache_write_tokens), 0)::BIGINT AS cache_write_tokens,
    coalesce(sum(cache_read_tokens), 0)::BIGINT AS cache_read_tokens,
    coalesce(sum(reasoning_tokens), 0)::BIGINT AS reasoning_tokens,
    (coalesce(sum(input_tokens), 0) + coalesce(sum(output_tokens), 0)
     + coalesce(sum(cache_write_tokens), 0) + coalesce(sum(cache_read_tokens), 0))::BIGINT AS total_tokens,
    sum(cost_usd) AS cost_usd,
    count(*) FILTER (WHERE cost_usd IS NULL AND (input_tokens > 0 OR output_tokens > 0
        OR cache_read_tokens > 0 OR cache_write_tokens > 0)) AS unpriced_requests
FROM counted_events()
GROUP BY ALL;


-- more views below
