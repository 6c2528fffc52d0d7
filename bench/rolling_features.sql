-- Four rolling features per transaction, the longest looking back one hour: the benchmark of
-- rolling-window state (BENCHMARKS.md, "Rolling features" and "Memory").
SELECT event_id, user_id, event_time, amount,
  COUNT(*) OVER (PARTITION BY user_id ORDER BY event_time
    RANGE BETWEEN INTERVAL '5' MINUTE PRECEDING AND CURRENT ROW) AS user_txn_5m,
  SUM(amount) OVER (PARTITION BY user_id ORDER BY event_time
    RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) AS user_amount_1h,
  AVG(amount) OVER (PARTITION BY user_id ORDER BY event_time
    RANGE BETWEEN INTERVAL '10' MINUTE PRECEDING AND CURRENT ROW) AS user_avg_10m,
  MAX(amount) OVER (PARTITION BY card_id ORDER BY event_time
    RANGE BETWEEN INTERVAL '2' MINUTE PRECEDING AND CURRENT ROW) AS card_max_2m
FROM transactions
