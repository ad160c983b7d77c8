-- llmsm views: what users query with `llmsm sql` (and what the CLI reads).
--
-- Applied by analytics/migrations.py:migrate() after the migrations, whenever this file changes
-- (its sha256 is kept in _llmsm_meta). Every statement must be CREATE OR REPLACE VIEW, so the
-- whole file can run again on any database. Views may use views defined above them.
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
-- sessions: one row per session_id (NULL session_id excluded), joined with its latest run
--   status: 'active' if last seen within 5 minutes, 'idle' within 1 hour, else 'ended'
--   requests and errors count API calls only (api <> 'other': preflights and the like are not)
-- ============================================================================================
CREATE OR REPLACE VIEW sessions AS
WITH per_session AS (
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
        coalesce(bool_or(usage_source = 'estimated'), false) AS estimated
    FROM events
    WHERE session_id IS NOT NULL
    GROUP BY session_id
),
latest_run AS (
    SELECT session_id, label, command, cwd, git_branch
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
    r.git_branch
FROM per_session AS s
LEFT JOIN latest_run AS r USING (session_id);


-- more views below
