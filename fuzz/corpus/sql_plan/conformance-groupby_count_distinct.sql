-- Non-windowed GROUP BY per user with COUNT DISTINCT (urls and hosts), NULL counting and min/max time; updating result.
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

SELECT user_id,
       COUNT(*) AS clicks,
       COUNT(DISTINCT url) AS distinct_urls,
       COUNT(DISTINCT REGEXP_EXTRACT(url, '://([^/:]+)', 1)) AS distinct_hosts,
       SUM(CASE WHEN url IS NULL THEN 1 ELSE 0 END) AS null_urls,
       MIN(ts) AS first_ts, MAX(ts) AS last_ts
FROM clicks
GROUP BY user_id;
