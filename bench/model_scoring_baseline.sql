-- The baseline of bench/model_scoring.sql: the same rows and columns with no model, so the
-- difference in throughput is the model's cost.
SELECT
    event_id,
    user_id AS entity_id,
    event_time,
    amount / 10000.0 AS risk_score,
    CAST(NULL AS VARCHAR) AS model_version
FROM transactions
