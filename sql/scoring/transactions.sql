-- Risk score for card transactions: rules and the model over the event's rolling features.
-- `transaction_features` is sql/features/transactions.sql, which the job spec names as a view:
-- the features scored here are the ones the feature job writes for training, computed by the
-- same SQL. Rule thresholds live here; each rule's weight lives in the `transaction_rules` rule
-- set, which takes one boolean per rule, in this order. `transaction_model` is the served model
-- (`[[models]]` in the spec): a GBDT and an isolation forest, blended.
WITH signals AS (
    SELECT
        *,
        user_txn_5m >= 6 OR card_txn_5m >= 5 AS velocity_5m,
        -- Small card-not-present probes, repeated on one card.
        card_txn_1h >= 3 AND amount < 5 AND card_not_present AS card_testing,
        -- Faster than an airliner between the user's last two transactions, far apart.
        speed_kmh_from_previous > 900 AND km_from_previous > 500 AS impossible_travel,
        user_txn_24h >= 3 AND amount_vs_user_avg_24h >= 5 AS amount_vs_user_avg,
        user_txn_24h >= 2 AND new_device_24h AS new_device,
        amount >= 2000 AS high_amount,
        merchant_category_risk >= 0.5 AS high_risk_merchant,
        account_age_days < 30 AS new_account,
        -- Blocked by an earlier score (the job's [block] action), read as of this batch.
        blocked.blocked_id IS NOT NULL AS blocked_entity
    FROM transaction_features
    LEFT JOIN (
        SELECT DISTINCT entity_id AS blocked_id FROM blocked_entities WHERE event_type = 'transaction'
    ) AS blocked ON blocked.blocked_id = transaction_features.user_id
),
scored AS (
    SELECT
        *,
        transaction_rules(
            velocity_5m, card_testing, impossible_travel, amount_vs_user_avg, new_device,
            high_amount, foreign_card, night_time, high_risk_merchant, new_account,
            disposable_email, blocked_entity
        ) AS rules,
        transaction_model(
            amount,
            user_txn_1m, user_txn_5m, user_txn_1h, user_txn_24h,
            card_txn_1m, card_txn_5m, card_txn_1h, card_txn_24h,
            user_amount_5m, user_amount_1h, user_amount_24h,
            user_avg_amount_1h, user_avg_amount_24h, user_max_amount_1h, user_max_amount_24h,
            card_amount_1h, card_amount_24h, card_avg_amount_24h, card_max_amount_24h,
            user_distinct_merchants_24h, user_distinct_devices_24h, user_distinct_countries_24h,
            user_distinct_categories_1h,
            amount_vs_user_avg_24h, amount_zscore_24h,
            seconds_since_previous, km_from_previous, speed_kmh_from_previous,
            new_device_24h, new_merchant_24h, new_country_24h, new_category_24h,
            night_time, merchant_category_risk, card_not_present, foreign_card,
            account_age_days, disposable_email
        ) AS model
    FROM signals
),
blended AS (
    SELECT
        *,
        -- The model decides; the rules, which an analyst can read, move its odds: all rules
        -- firing (a rule score of 1) multiply them by e^0.5, about 1.65.
        model['score'] * exp(0.5 * rules['score'])
            / (1 - model['score'] + model['score'] * exp(0.5 * rules['score'])) AS score
    FROM scored
)
SELECT
    event_id,
    'transaction' AS event_type,
    user_id AS entity_id,
    event_time,
    score AS risk_score,
    risk_severity(score) AS severity,
    rules['reasons'] AS reasons,
    model['model_version'] AS model_version,
    -- The audit: each part's score and the features the model weighed most.
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
