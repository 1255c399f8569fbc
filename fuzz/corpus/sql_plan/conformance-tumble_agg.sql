-- 1-minute TUMBLE window aggregation per user over out-of-order clicks; late clicks whose window has already fired are dropped.
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

SELECT user_id, window_start, window_end, window_time,
       COUNT(*) AS clicks, COUNT(url) AS with_url, COUNT(DISTINCT url) AS distinct_urls,
       MIN(ts) AS first_ts, MAX(ts) AS last_ts
FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
GROUP BY user_id, window_start, window_end, window_time;
