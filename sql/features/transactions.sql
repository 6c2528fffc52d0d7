-- Rolling features of card transactions, one row per event, computed over the stream.
-- Every window is a RANGE frame over event_time, so the engine keeps each key's history for the
-- longest lookback (24 hours) and evaluates the windows incrementally; an event is written once
-- the job's watermark has passed it, and its features equal this SQL run over the whole input.
-- "Previous" features end their frame one millisecond before the event, so an event is never its
-- own previous one.
WITH windows AS (
    SELECT
        *,
        -- Velocity per user and per card.
        COUNT(*) OVER user_1m AS user_txn_1m,
        COUNT(*) OVER user_5m AS user_txn_5m,
        COUNT(*) OVER user_1h AS user_txn_1h,
        COUNT(*) OVER user_24h AS user_txn_24h,
        COUNT(*) OVER card_1m AS card_txn_1m,
        COUNT(*) OVER card_5m AS card_txn_5m,
        COUNT(*) OVER card_1h AS card_txn_1h,
        COUNT(*) OVER card_24h AS card_txn_24h,
        -- Spend per user and per card.
        SUM(amount) OVER user_5m AS user_amount_5m,
        SUM(amount) OVER user_1h AS user_amount_1h,
        SUM(amount) OVER user_24h AS user_amount_24h,
        AVG(amount) OVER user_1h AS user_avg_amount_1h,
        AVG(amount) OVER user_24h AS user_avg_amount_24h,
        MAX(amount) OVER user_1h AS user_max_amount_1h,
        MAX(amount) OVER user_24h AS user_max_amount_24h,
        STDDEV(amount) OVER user_24h AS user_stddev_amount_24h,
        SUM(amount) OVER card_1h AS card_amount_1h,
        SUM(amount) OVER card_24h AS card_amount_24h,
        AVG(amount) OVER card_24h AS card_avg_amount_24h,
        MAX(amount) OVER card_24h AS card_max_amount_24h,
        -- The user's previous transaction within a day: when and where.
        MAX(event_time) OVER user_before_24h AS previous_time,
        LAST_VALUE(latitude) OVER user_before_24h AS previous_latitude,
        LAST_VALUE(longitude) OVER user_before_24h AS previous_longitude,
        -- How many merchants, devices and countries the user used in the last day.
        COUNT(DISTINCT merchant_id) OVER user_24h AS user_distinct_merchants_24h,
        COUNT(DISTINCT device_id) OVER user_24h AS user_distinct_devices_24h,
        COUNT(DISTINCT country) OVER user_24h AS user_distinct_countries_24h,
        -- Customers keep to a few kinds of shop; a run of purchases across many categories is
        -- not a busy customer but somebody emptying the card, and tells them apart even before
        -- the job has seen a day of either.
        COUNT(DISTINCT merchant_category) OVER user_1h AS user_distinct_categories_1h,
        -- Has the user used this device, merchant, country, kind of shop in the last day?
        COUNT(*) OVER (PARTITION BY user_id, device_id ORDER BY event_time
            RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND INTERVAL '1' MILLISECOND PRECEDING) AS device_uses_24h,
        COUNT(*) OVER (PARTITION BY user_id, merchant_id ORDER BY event_time
            RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND INTERVAL '1' MILLISECOND PRECEDING) AS merchant_uses_24h,
        COUNT(*) OVER (PARTITION BY user_id, country ORDER BY event_time
            RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND INTERVAL '1' MILLISECOND PRECEDING) AS country_uses_24h,
        COUNT(*) OVER (PARTITION BY user_id, merchant_category ORDER BY event_time
            RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND INTERVAL '1' MILLISECOND PRECEDING) AS category_uses_24h
    FROM transactions
    WINDOW
        user_1m AS (PARTITION BY user_id ORDER BY event_time RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW),
        user_5m AS (PARTITION BY user_id ORDER BY event_time RANGE BETWEEN INTERVAL '5' MINUTE PRECEDING AND CURRENT ROW),
        user_1h AS (PARTITION BY user_id ORDER BY event_time RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW),
        user_24h AS (PARTITION BY user_id ORDER BY event_time RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND CURRENT ROW),
        user_before_24h AS (PARTITION BY user_id ORDER BY event_time
            RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND INTERVAL '1' MILLISECOND PRECEDING),
        card_1m AS (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW),
        card_5m AS (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '5' MINUTE PRECEDING AND CURRENT ROW),
        card_1h AS (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW),
        card_24h AS (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND CURRENT ROW)
),
travel AS (
    SELECT
        *,
        -- Timestamps cast to integers are microseconds since the epoch. (date_part('epoch', ...)
        -- fails to plan with Spark's function library registered.)
        (CAST(event_time AS BIGINT) - CAST(previous_time AS BIGINT)) / 1000000.0 AS seconds_since_previous,
        haversine_km(previous_latitude, previous_longitude, latitude, longitude) AS km_from_previous
    FROM windows
)
SELECT
    event_id,
    user_id,
    card_id,
    event_time,
    amount,
    user_txn_1m, user_txn_5m, user_txn_1h, user_txn_24h,
    card_txn_1m, card_txn_5m, card_txn_1h, card_txn_24h,
    user_amount_5m, user_amount_1h, user_amount_24h,
    user_avg_amount_1h, user_avg_amount_24h, user_max_amount_1h, user_max_amount_24h,
    card_amount_1h, card_amount_24h, card_avg_amount_24h, card_max_amount_24h,
    user_distinct_merchants_24h, user_distinct_devices_24h, user_distinct_countries_24h,
    user_distinct_categories_1h,
    amount / NULLIF(user_avg_amount_24h, 0) AS amount_vs_user_avg_24h,
    (amount - user_avg_amount_24h) / NULLIF(user_stddev_amount_24h, 0) AS amount_zscore_24h,
    seconds_since_previous,
    km_from_previous,
    km_from_previous / NULLIF(seconds_since_previous / 3600.0, 0) AS speed_kmh_from_previous,
    device_uses_24h = 0 AS new_device_24h,
    merchant_uses_24h = 0 AS new_merchant_24h,
    country_uses_24h = 0 AS new_country_24h,
    category_uses_24h = 0 AS new_category_24h,
    -- Local solar hour from the longitude: night is midnight to 5 am where the card is used.
    (CAST(date_part('hour', event_time) AS INT) + CAST(round(longitude / 15) AS INT) + 48) % 24 < 5
        AS night_time,
    CASE
        WHEN merchant_category IN ('gambling', 'money_transfer', 'jewelry') THEN 0.8
        WHEN merchant_category IN ('electronics', 'direct_marketing') THEN 0.5
        WHEN merchant_category IN ('travel', 'online_retail') THEN 0.3
        ELSE 0.1
    END AS merchant_category_risk,
    -- The event's own signals.
    payment_method = 'card_not_present' AS card_not_present,
    card_country <> country AS foreign_card,
    account_age_days,
    email_domain IN ('mailinator.com', 'tempmail.io', 'guerrillamail.com') AS disposable_email,
    -- Where the event was read (the spec's query.metadata): lineage for the training rows.
    source_topic,
    source_partition,
    source_offset
FROM travel
