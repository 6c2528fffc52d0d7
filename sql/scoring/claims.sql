-- Risk score for insurance claims: rules and the model over the claim's rolling features.
-- `claim_features` is sql/features/claims.sql, which the job spec names as a view, so the
-- features scored here are the ones the feature job writes for training. Rule thresholds live
-- here; each rule's weight lives in the `claim_rules` rule set (one boolean per rule, in order).
-- `claim_model` is the served model (`[[models]]` in the spec).
WITH signals AS (
    SELECT
        *,
        amount_vs_coverage >= 0.8 AS amount_near_coverage_limit,
        prior_claims >= 3 OR policy_claims_365d >= 3 AS many_prior_claims,
        amount_vs_type_avg_365d >= 3 AS amount_vs_type_avg,
        -- Several claims for incidents in one city on one day: a staged ring.
        same_place_day_claims >= 3 AS claim_cluster,
        report_delay_days > 30 AS late_report,
        claim_amount > 20000 AND witnesses = 0 AS no_witnesses_large_claim,
        -- Blocked by an earlier score (the job's [block] action), read as of this batch.
        blocked.blocked_id IS NOT NULL AS blocked_entity
    FROM claim_features
    LEFT JOIN (
        SELECT DISTINCT entity_id AS blocked_id FROM blocked_entities WHERE event_type = 'claim'
    ) AS blocked ON blocked.blocked_id = claim_features.policy_id
),
scored AS (
    SELECT
        *,
        claim_rules(
            early_claim, amount_near_coverage_limit, many_prior_claims, amount_vs_type_avg,
            claim_cluster, late_report, auto_loss_without_police_report, no_witnesses_large_claim, blocked_entity
        ) AS rules,
        claim_model(
            claim_amount,
            policy_claims_90d, policy_claims_365d, policy_amount_365d,
            user_claims_90d, user_claims_365d, user_amount_365d,
            days_since_previous_policy_claim,
            type_avg_amount_365d, amount_vs_type_avg_365d, amount_zscore_type_365d,
            amount_vs_coverage, amount_vs_premium,
            days_since_policy_start, early_claim, report_delay_days,
            provider_claims_30d, provider_amount_30d, adjuster_claims_30d,
            same_place_day_claims, injury_without_police_report,
            prior_claims, witnesses, auto_loss_without_police_report
        ) AS model
    FROM signals
),
blended AS (
    SELECT
        *,
        -- As for transactions: the rules multiply the model's odds by up to e^0.5.
        model['score'] * exp(0.5 * rules['score'])
            / (1 - model['score'] + model['score'] * exp(0.5 * rules['score'])) AS score
    FROM scored
)
SELECT
    event_id,
    'claim' AS event_type,
    policy_id AS entity_id,
    event_time,
    score AS risk_score,
    risk_severity(score) AS severity,
    rules['reasons'] AS reasons,
    model['model_version'] AS model_version,
    rules['score'] AS rules_score,
    model['score'] AS model_score,
    model['gbdt'] AS gbdt_score,
    model['anomaly'] AS anomaly_score,
    model['top_features'] AS top_features,
    -- The Kafka record the event was read from.
    source_topic,
    source_partition,
    source_offset
FROM blended
