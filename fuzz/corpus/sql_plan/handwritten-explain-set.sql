SET 'parallelism.default' = '2';
SET 'pipeline.max-parallelism' = '128';
CREATE TEMPORARY TABLE clicks (
    user_id BIGINT,
    url STRING,
    ts TIMESTAMP(3),
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH ('connector' = 'datagen', 'rows-per-second' = '10');
CREATE TABLE out (user_id BIGINT, n BIGINT, last_url STRING) WITH ('connector' = 'blackhole');
EXPLAIN INSERT INTO out
SELECT user_id, COUNT(*), MAX(url) FROM clicks
WHERE url LIKE 'https://%' AND user_id IN (1, 2, 3)
GROUP BY user_id, TUMBLE(ts, INTERVAL '1' MINUTE);
RESET 'parallelism.default';
INSERT INTO out
SELECT user_id, COUNT(DISTINCT url) AS n, CAST(NULL AS STRING) FROM clicks GROUP BY user_id;
