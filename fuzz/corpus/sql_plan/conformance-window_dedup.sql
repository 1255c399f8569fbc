-- Window deduplication: the first click (by event time) of each user in each 1-minute TUMBLE window.
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

SELECT user_id, url, ts, window_start, window_end
FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end, user_id ORDER BY ts ASC) AS rn
    FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
)
WHERE rn = 1;
