-- Transactions and spend per user in ten-minute windows sliding by five minutes, as Spark writes
-- it: the benchmark of streaming aggregation (BENCHMARKS.md, "Windowed aggregation").
SELECT user_id, window.start AS window_start, window.end AS window_end,
  COUNT(*) AS transactions, SUM(amount) AS spend, MAX(amount) AS largest,
  AVG(amount) AS average, MIN(amount) AS smallest
FROM transactions
GROUP BY user_id, window(event_time, '10 minutes', '5 minutes')
