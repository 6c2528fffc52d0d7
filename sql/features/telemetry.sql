-- Rolling features of IoT sensor readings, one row per event, computed over the stream. Every
-- window is a RANGE frame over event_time per device, so the engine keeps each device's history
-- for the longest lookback (1 hour) and evaluates the windows incrementally; an event is written
-- once the job's watermark has passed it, and its features equal this SQL run over the whole
-- input. "Previous" features end their frame one millisecond before the event.
WITH windows AS (
    SELECT
        *,
        AVG(reading) OVER device_1m AS reading_mean_1m,
        STDDEV(reading) OVER device_1m AS reading_stddev_1m,
        MIN(reading) OVER device_1m AS reading_min_1m,
        MAX(reading) OVER device_1m AS reading_max_1m,
        COUNT(*) OVER device_1m AS readings_1m,
        AVG(reading) OVER device_10m AS reading_mean_10m,
        STDDEV(reading) OVER device_10m AS reading_stddev_10m,
        MIN(reading) OVER device_10m AS reading_min_10m,
        MAX(reading) OVER device_10m AS reading_max_10m,
        COUNT(*) OVER device_10m AS readings_10m,
        MIN(event_time) OVER device_10m AS first_time_10m,
        MIN(reading) OVER device_1h AS reading_min_1h,
        MAX(reading) OVER device_1h AS reading_max_1h,
        COUNT(*) OVER device_1h AS readings_1h,
        MIN(event_time) OVER device_1h AS first_time_1h,
        MIN(event_time) OVER device_1m AS first_time_1m,
        -- The device's other sensors over the same ten minutes.
        AVG(load_pct) OVER device_10m AS load_mean_10m,
        STDDEV(load_pct) OVER device_10m AS load_stddev_10m,
        AVG(ambient_temp_c) OVER device_10m AS ambient_mean_10m,
        STDDEV(ambient_temp_c) OVER device_10m AS ambient_stddev_10m,
        -- How closely the reading follows the load: over ten minutes, and over the hour for
        -- what the device normally does.
        CORR(reading, load_pct) OVER device_10m AS reading_load_corr_10m,
        CORR(reading, load_pct) OVER device_1h AS reading_load_corr_1h,
        -- The device's previous reading within ten minutes.
        LAST_VALUE(reading) OVER device_before_10m AS previous_reading,
        MAX(event_time) OVER device_before_10m AS previous_time,
        -- Devices of a site misbehaving together.
        COUNT(*) OVER (PARTITION BY site_id ORDER BY event_time
            RANGE BETWEEN INTERVAL '10' MINUTE PRECEDING AND CURRENT ROW) AS site_readings_10m
    FROM telemetry
    WINDOW
        device_1m AS (PARTITION BY device_id ORDER BY event_time RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW),
        device_10m AS (PARTITION BY device_id ORDER BY event_time RANGE BETWEEN INTERVAL '10' MINUTE PRECEDING AND CURRENT ROW),
        device_1h AS (PARTITION BY device_id ORDER BY event_time RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW),
        device_before_10m AS (PARTITION BY device_id ORDER BY event_time
            RANGE BETWEEN INTERVAL '10' MINUTE PRECEDING AND INTERVAL '1' MILLISECOND PRECEDING)
)
SELECT
    event_id,
    device_id,
    site_id,
    event_time,
    reading,
    reading_mean_1m, reading_stddev_1m, reading_min_1m, reading_max_1m,
    reading_mean_10m, reading_stddev_10m, reading_min_10m, reading_max_10m,
    (reading - reading_mean_10m) / NULLIF(reading_stddev_10m, 0) AS reading_zscore_10m,
    -- Timestamps cast to integers are microseconds since the epoch.
    (reading - previous_reading)
        / NULLIF((CAST(event_time AS BIGINT) - CAST(previous_time AS BIGINT)) / 1000000.0, 0)
        AS reading_change_per_second,
    -- Flatline: how long the reading has not moved, to the resolution of the windows (up to an
    -- hour): the longest window in which every reading is the same.
    CASE
        WHEN readings_1h > 1 AND reading_min_1h = reading_max_1h
            THEN (CAST(event_time AS BIGINT) - CAST(first_time_1h AS BIGINT)) / 1000000.0
        WHEN readings_10m > 1 AND reading_min_10m = reading_max_10m
            THEN (CAST(event_time AS BIGINT) - CAST(first_time_10m AS BIGINT)) / 1000000.0
        WHEN readings_1m > 1 AND reading_min_1m = reading_max_1m
            THEN (CAST(event_time AS BIGINT) - CAST(first_time_1m AS BIGINT)) / 1000000.0
        ELSE 0.0
    END AS flatline_seconds,
    reading < normal_min OR reading > normal_max AS out_of_normal_range,
    -- Sensors of one device move together (the reading with the load, within the ambient
    -- temperature's swing); how far apart their standardised values are says the link broke.
    abs(
        (reading - reading_mean_10m) / NULLIF(reading_stddev_10m, 0)
        - (load_pct - load_mean_10m) / NULLIF(load_stddev_10m, 0)
    ) AS reading_load_divergence_10m,
    reading_load_corr_10m,
    reading_load_corr_1h,
    -- A break: the reading stopped following the load it followed over the hour.
    reading_load_corr_1h - reading_load_corr_10m AS reading_load_corr_drop,
    (ambient_temp_c - ambient_mean_10m) / NULLIF(ambient_stddev_10m, 0) AS ambient_zscore_10m,
    site_readings_10m,
    battery_pct,
    signal_dbm,
    error_code IS NOT NULL AS has_error_code,
    -- How far outside its normal band the reading is, in band widths (negative: inside).
    (reading - normal_max) / NULLIF(normal_max - normal_min, 0) AS above_range_widths,
    (normal_min - reading) / NULLIF(normal_max - normal_min, 0) AS below_range_widths,
    maintenance_due < CAST(event_time AS DATE) AS maintenance_overdue,
    -- Where the event was read (the spec's query.metadata): lineage for the training rows.
    source_topic,
    source_partition,
    source_offset
FROM windows
