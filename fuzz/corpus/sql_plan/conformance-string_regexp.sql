-- Scalar CASE, LIKE, string and regexp functions on URLs (including NULL urls and users).
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

SELECT user_id, ts,
       CASE WHEN url IS NULL THEN 'none'
            WHEN url LIKE 'https://%' THEN 'secure'
            ELSE 'plain' END AS kind,
       UPPER(REGEXP_EXTRACT(url, '^(https?)://', 1)) AS scheme,
       REGEXP_EXTRACT(url, '://([^/:]+)', 1) AS host,
       REGEXP_REPLACE(url, '[0-9]+', '#') AS masked,
       REGEXP(url, 'product/[0-9]{4}') AS is_product,
       SUBSTRING(url FROM 9 FOR 4) AS sub,
       CHAR_LENGTH(url) AS len,
       POSITION('?' IN url) AS qpos,
       SPLIT_INDEX(url, '?', 1) AS query,
       LOWER(SPLIT_INDEX(url, '/', 3)) AS first_dir,
       CONCAT('u', CAST(user_id AS STRING)) AS user_tag,
       CONCAT_WS('|', CAST(user_id AS STRING), REPLACE(url, 'https://', '')) AS joined,
       COALESCE(CAST(user_id AS STRING), 'anon') AS who,
       LPAD(CAST(MOD(user_id, 100) AS STRING), 3, '0') AS padded,
       TRIM(TRAILING '/' FROM url) AS trimmed
FROM clicks;
