-- Nexmark query 7: highest bid. The bids at the highest price of each 10-second window. The
-- benchmark's text joins each window's maximum back to the stream of bids; a streaming
-- aggregation reads the stream once here (as in Spark), so each bid is a group of its window,
-- kept until the window closes, and a window function over the window's groups finds the
-- highest price. (Two bids alike in every column would be one group: the generator makes none.)
SELECT auction, bidder, price, date_time, extra
FROM (
    SELECT auction, bidder, price, date_time, extra,
        MAX(price) OVER (PARTITION BY window_start) AS highest
    FROM (
        SELECT window.start AS window_start, auction, bidder, price, date_time, extra
        FROM bid
        GROUP BY window(date_time, '10 seconds'), auction, bidder, price, date_time, extra
    )
)
WHERE price = highest
