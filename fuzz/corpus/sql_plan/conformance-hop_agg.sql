-- HOP window (30 s size, 10 s slide) totals over clicks, with FILTER, COUNT DISTINCT and a DOUBLE average.
CREATE TABLE clicks (
    user_id BIGINT,
    url     STRING,
    ts      TIMESTAMP(3),
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
    'connector' = 'filesystem',
    'path' = '/data/shop-a/clicks.jsonl',
    'format' = 'json',
    'json.timestamp-format.standard' = 'SQL'
);

SELECT window_start, window_end,
       COUNT(*) AS clicks,
       COUNT(DISTINCT user_id) AS users,
       COUNT(*) FILTER (WHERE url LIKE '%/product/%') AS product_clicks,
       SUM(user_id) AS sum_user,
       AVG(CAST(user_id AS DOUBLE)) AS avg_user
FROM TABLE(HOP(TABLE clicks, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '30' SECOND))
GROUP BY window_start, window_end;
