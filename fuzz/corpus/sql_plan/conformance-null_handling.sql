-- NULL semantics: COALESCE, NULLIF, IS [NOT] DISTINCT FROM, three-valued logic, TRIM/INITCAP on NULL-able strings, over users LEFT JOIN order counts; updating result.
CREATE TABLE orders (
    order_id BIGINT,
    user_id  BIGINT,
    amount   DECIMAL(10, 2),
    status   STRING,
    coupon   STRING,
    ts       TIMESTAMP(3),
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
    'connector' = 'filesystem',
    'path' = '/data/shop-a/orders.jsonl',
    'format' = 'json',
    'json.timestamp-format.standard' = 'SQL'
);

CREATE TABLE users (
    user_id     BIGINT,
    name        STRING,
    country     STRING,
    tier        STRING,
    signup_date DATE
) WITH (
    'connector' = 'filesystem',
    'path' = '/data/shop-a/users.jsonl',
    'format' = 'json'
);

SELECT u.user_id,
       COALESCE(u.country, '??') AS country,
       u.country IS NULL AS no_country,
       u.tier IS DISTINCT FROM 'gold' AS not_gold,
       CASE WHEN u.tier = 'gold' OR u.country = 'DE' THEN 'A'
            WHEN NOT (u.tier = 'silver') THEN 'B'
            ELSE 'C' END AS bucket,
       INITCAP(u.name) AS name_cap,
       UPPER(u.name) AS name_upper,
       o.cnt, o.with_coupon, o.blank_coupons, o.null_status
FROM users u
LEFT JOIN (
    SELECT user_id,
           COUNT(*) AS cnt,
           COUNT(NULLIF(TRIM(coupon), '')) AS with_coupon,
           SUM(CASE WHEN coupon = '' THEN 1 ELSE 0 END) AS blank_coupons,
           SUM(CASE WHEN status IS NULL THEN 1 ELSE 0 END) AS null_status
    FROM orders
    GROUP BY user_id
) o ON u.user_id = o.user_id;
