-- Nexmark query 5: hot items. Bids per auction in 10-second windows sliding by 2 seconds, and
-- in each window the auctions with the most. The benchmark's text joins the counts to their
-- maximum per window, a second aggregation; a streaming query aggregates once here (as in
-- Spark), so the maximum is a window function over the window's counts, which gives the same
-- rows: a window's counts are all final when it is emitted.
SELECT auction, num, window_start, window_end
FROM (
    SELECT auction, num, window_start, window_end,
        MAX(num) OVER (PARTITION BY window_start) AS most
    FROM (
        SELECT auction, COUNT(*) AS num, window.start AS window_start, window.end AS window_end
        FROM bid
        GROUP BY auction, window(date_time, '10 seconds', '2 seconds')
    )
)
WHERE num = most
