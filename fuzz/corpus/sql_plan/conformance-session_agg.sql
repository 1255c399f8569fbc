-- SESSION window TVF (20 s gap) partitioned by user over out-of-order clicks.
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

SELECT user_id, window_start, window_end,
       COUNT(*) AS clicks, MIN(ts) AS first_ts, MAX(ts) AS last_ts
FROM TABLE(SESSION(TABLE clicks PARTITION BY user_id, DESCRIPTOR(ts), INTERVAL '20' SECOND))
GROUP BY user_id, window_start, window_end;
