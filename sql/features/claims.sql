-- Rolling features of insurance claims, one row per event, computed over the stream. Every
-- window is a RANGE frame over event_time, so the engine keeps each key's history for the longest
-- lookback (365 days) and evaluates the windows incrementally; an event is written once the job's
-- watermark has passed it, and its features equal this SQL run over the whole input.
-- "Previous" features end their frame one millisecond before the event.
WITH windows AS (
    SELECT
        *,
        -- Claim frequency per policy and per claimant.
        COUNT(*) OVER policy_90d AS policy_claims_90d,
        COUNT(*) OVER policy_365d AS policy_claims_365d,
        SUM(claim_amount) OVER policy_365d AS policy_amount_365d,
        COUNT(*) OVER user_90d AS user_claims_90d,
        COUNT(*) OVER user_365d AS user_claims_365d,
        SUM(claim_amount) OVER user_365d AS user_amount_365d,
        -- The policy's previous claim within a year.
        MAX(event_time) OVER policy_before_365d AS previous_policy_claim_time,
        -- What claims of this type cost over the last year.
        AVG(claim_amount) OVER type_365d AS type_avg_amount_365d,
        STDDEV(claim_amount) OVER type_365d AS type_stddev_amount_365d,
        -- Providers and adjusters that suddenly handle many claims.
        COUNT(*) OVER provider_30d AS provider_claims_30d,
        SUM(claim_amount) OVER provider_30d AS provider_amount_30d,
        COUNT(*) OVER adjuster_30d AS adjuster_claims_30d,
        -- Clusters: claims for incidents in the same city on the same day, reported so far.
        COUNT(*) OVER (PARTITION BY city, incident_date ORDER BY event_time
            RANGE BETWEEN INTERVAL '30' DAY PRECEDING AND CURRENT ROW) AS same_place_day_claims
    FROM claims
    WINDOW
        policy_90d AS (PARTITION BY policy_id ORDER BY event_time RANGE BETWEEN INTERVAL '90' DAY PRECEDING AND CURRENT ROW),
        policy_365d AS (PARTITION BY policy_id ORDER BY event_time RANGE BETWEEN INTERVAL '365' DAY PRECEDING AND CURRENT ROW),
        policy_before_365d AS (PARTITION BY policy_id ORDER BY event_time
            RANGE BETWEEN INTERVAL '365' DAY PRECEDING AND INTERVAL '1' MILLISECOND PRECEDING),
        user_90d AS (PARTITION BY user_id ORDER BY event_time RANGE BETWEEN INTERVAL '90' DAY PRECEDING AND CURRENT ROW),
        user_365d AS (PARTITION BY user_id ORDER BY event_time RANGE BETWEEN INTERVAL '365' DAY PRECEDING AND CURRENT ROW),
        type_365d AS (PARTITION BY claim_type ORDER BY event_time RANGE BETWEEN INTERVAL '365' DAY PRECEDING AND CURRENT ROW),
        provider_30d AS (PARTITION BY provider_id ORDER BY event_time RANGE BETWEEN INTERVAL '30' DAY PRECEDING AND CURRENT ROW),
        adjuster_30d AS (PARTITION BY adjuster_id ORDER BY event_time RANGE BETWEEN INTERVAL '30' DAY PRECEDING AND CURRENT ROW)
)
SELECT
    event_id,
    claim_id,
    policy_id,
    user_id,
    event_time,
    claim_amount,
    policy_claims_90d, policy_claims_365d, policy_amount_365d,
    user_claims_90d, user_claims_365d, user_amount_365d,
    -- Timestamps cast to integers are microseconds since the epoch; dates cast to integers are
    -- days since the epoch.
    (CAST(event_time AS BIGINT) - CAST(previous_policy_claim_time AS BIGINT)) / 86400000000.0
        AS days_since_previous_policy_claim,
    type_avg_amount_365d,
    claim_amount / NULLIF(type_avg_amount_365d, 0) AS amount_vs_type_avg_365d,
    (claim_amount - type_avg_amount_365d) / NULLIF(type_stddev_amount_365d, 0) AS amount_zscore_type_365d,
    claim_amount / NULLIF(coverage_limit, 0) AS amount_vs_coverage,
    claim_amount / NULLIF(policy_premium, 0) AS amount_vs_premium,
    CAST(incident_date AS INT) - CAST(policy_start_date AS INT) AS days_since_policy_start,
    CAST(incident_date AS INT) - CAST(policy_start_date AS INT) < 30 AS early_claim,
    CAST(report_date AS INT) - CAST(incident_date AS INT) AS report_delay_days,
    provider_claims_30d, provider_amount_30d, adjuster_claims_30d,
    same_place_day_claims,
    NOT coalesce(police_report, false) AND coalesce(injury_involved, false) AS injury_without_police_report,
    -- The claim's own facts.
    prior_claims,
    witnesses,
    claim_type = 'auto' AND incident_type IN ('collision', 'theft') AND NOT coalesce(police_report, false)
        AS auto_loss_without_police_report,
    -- Where the event was read (the spec's query.metadata): lineage for the training rows.
    source_topic,
    source_partition,
    source_offset
FROM windows
