-- OVER aggregation per user ordered by event time, ROWS BETWEEN 2 PRECEDING AND CURRENT ROW (late clicks are dropped by the OVER operator).
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

SELECT user_id, ts, url,
       COUNT(url) OVER w AS urls_last3,
       COUNT(*) OVER w AS rows_last3,
       MIN(ts) OVER w AS min_ts_last3
FROM clicks
WINDOW w AS (PARTITION BY user_id ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW);
