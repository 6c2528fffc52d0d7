-- Risk score for insurance claims, first version: rules over each claim's own fields.
-- Thresholds live here; weights live in the `claim_rules` rule set (one boolean per rule, in order).
WITH signals AS (
    SELECT
        event_id,
        policy_id,
        event_time,
        CAST(incident_date AS INT) - CAST(policy_start_date AS INT) < 45 AS early_claim,
        claim_amount >= 0.8 * coverage_limit AS amount_near_coverage_limit,
        prior_claims >= 3 AS many_prior_claims,
        CAST(report_date AS INT) - CAST(incident_date AS INT) > 30 AS late_report,
        claim_type = 'auto' AND incident_type IN ('collision', 'theft') AND NOT police_report
            AS no_police_report,
        claim_amount > 20000 AND witnesses = 0 AS no_witnesses_large_claim
    FROM claims
),
scored AS (
    SELECT
        *,
        claim_rules(
            early_claim, amount_near_coverage_limit, many_prior_claims, late_report,
            no_police_report, no_witnesses_large_claim
        ) AS rules
    FROM signals
)
SELECT
    event_id,
    'claim' AS event_type,
    policy_id AS entity_id,
    event_time,
    rules['score'] AS risk_score,
    risk_severity(rules['score']) AS severity,
    rules['reasons'] AS reasons,
    'rules-v1' AS model_version
FROM scored
