-- Risk score for IoT telemetry: rules and the model over the reading's rolling features.
-- `telemetry_features` is sql/features/telemetry.sql, which the job spec names as a view, so the
-- features scored here are the ones the feature job writes for training. Rule thresholds live
-- here; each rule's weight lives in the `telemetry_rules` rule set (one boolean per rule, in
-- order). `telemetry_model` is the served model (`[[models]]` in the spec).
WITH signals AS (
    SELECT
        *,
        above_range_widths > 0 AS reading_above_range,
        below_range_widths > 0 AS reading_below_range,
        above_range_widths > 1 OR below_range_widths > 1 AS reading_far_out_of_range,
        abs(reading_zscore_10m) >= 4 AS reading_spike,
        -- The reading has not moved for five minutes or more.
        flatline_seconds >= 300 AS sensor_flatline,
        reading_load_divergence_10m >= 3 AS sensor_correlation_break,
        battery_pct < 15 AS low_battery,
        -- Blocked by an earlier score (the job's [block] action), read as of this batch.
        blocked.blocked_id IS NOT NULL AS blocked_entity
    FROM telemetry_features
    LEFT JOIN (
        SELECT DISTINCT entity_id AS blocked_id FROM blocked_entities WHERE event_type = 'telemetry'
    ) AS blocked ON blocked.blocked_id = telemetry_features.device_id
),
scored AS (
    SELECT
        *,
        telemetry_rules(
            reading_above_range, reading_below_range, reading_far_out_of_range, reading_spike,
            sensor_flatline, sensor_correlation_break, maintenance_overdue, low_battery,
            has_error_code, blocked_entity
        ) AS rules,
        telemetry_model(
            reading,
            reading_mean_1m, reading_stddev_1m, reading_min_1m, reading_max_1m,
            reading_mean_10m, reading_stddev_10m, reading_min_10m, reading_max_10m,
            reading_zscore_10m, reading_change_per_second, flatline_seconds,
            out_of_normal_range, reading_load_divergence_10m, ambient_zscore_10m,
            site_readings_10m, battery_pct, signal_dbm, has_error_code,
            above_range_widths, below_range_widths, maintenance_overdue
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
    'telemetry' AS event_type,
    device_id AS entity_id,
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
