-- Benchmark (bench/model_scoring.toml): every transaction scored by the registry model `bench`
-- over six per-event features, with its top contributing features where the score is at least
-- 0.3 (the default explainFrom).
SELECT
    event_id,
    user_id AS entity_id,
    event_time,
    m['score'] AS risk_score,
    m['top_features'] AS top_features,
    m['model_version'] AS model_version
FROM (
    SELECT
        *,
        bench_model(
            amount, account_age_days, latitude, longitude,
            card_country <> country, payment_method = 'card_not_present'
        ) AS m
    FROM transactions
)
