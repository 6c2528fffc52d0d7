-- Risk score for IoT telemetry, first version: rules over each reading's own fields.
-- Thresholds live here; weights live in the `telemetry_rules` rule set (one boolean per rule, in
-- order). Drift, flatlines and correlation breaks need a device's history: they come with the windowed feature SQL.
WITH signals AS (
    SELECT
        event_id,
        device_id,
        event_time,
        reading > normal_max AS reading_above_range,
        reading < normal_min AS reading_below_range,
        reading > normal_max + (normal_max - normal_min)
            OR reading < normal_min - (normal_max - normal_min) AS reading_far_out_of_range,
        maintenance_due < CAST(event_time AS DATE) AS maintenance_overdue,
        battery_pct < 15 AS low_battery,
        error_code IS NOT NULL AS device_error
    FROM telemetry
),
scored AS (
    SELECT
        *,
        telemetry_rules(
            reading_above_range, reading_below_range, reading_far_out_of_range,
            maintenance_overdue, low_battery, device_error
        ) AS rules
    FROM signals
)
SELECT
    event_id,
    'telemetry' AS event_type,
    device_id AS entity_id,
    event_time,
    rules['score'] AS risk_score,
    risk_severity(rules['score']) AS severity,
    rules['reasons'] AS reasons,
    'rules-v1' AS model_version
FROM scored
