-- Risk score for card transactions, first version: rules over each event's own fields.
-- Thresholds live here; each rule's weight lives in the `transaction_rules` rule set, which takes
-- one boolean per rule, in this order. Rolling features (velocity, travel speed) come with the
-- windowed feature SQL, which needs the engine to keep per-key history.
WITH signals AS (
    SELECT
        event_id,
        user_id,
        event_time,
        amount >= 2000 AS high_amount,
        amount < 5 AND payment_method = 'card_not_present' AS micro_amount_card_not_present,
        card_country <> country AS foreign_card,
        -- Local solar hour from the longitude: night is midnight to 5 am where the card is used.
        (CAST(date_part('hour', event_time) AS INT) + CAST(round(longitude / 15) AS INT) + 48) % 24 < 5
            AS night_time,
        merchant_category IN ('electronics', 'jewelry', 'money_transfer', 'gambling', 'direct_marketing')
            AS high_risk_merchant,
        account_age_days < 30 AS new_account,
        email_domain IN ('mailinator.com', 'tempmail.io', 'guerrillamail.com') AS disposable_email
    FROM transactions
),
scored AS (
    SELECT
        *,
        transaction_rules(
            high_amount, micro_amount_card_not_present, foreign_card, night_time,
            high_risk_merchant, new_account, disposable_email
        ) AS rules
    FROM signals
)
SELECT
    event_id,
    'transaction' AS event_type,
    user_id AS entity_id,
    event_time,
    rules['score'] AS risk_score,
    risk_severity(rules['score']) AS severity,
    rules['reasons'] AS reasons,
    'rules-v1' AS model_version
FROM scored
