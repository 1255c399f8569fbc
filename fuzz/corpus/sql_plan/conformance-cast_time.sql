-- CAST between numeric/string/decimal types, DECIMAL arithmetic and rounding, and timestamp functions (DATE_FORMAT, EXTRACT, FLOOR/CEIL, TIMESTAMPADD/DIFF, CAST to DATE).
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

SELECT order_id, status,
       CAST(amount AS DOUBLE) * 1.5 AS amount_d,
       CAST(amount AS INT) AS amount_i,
       CAST(amount AS STRING) AS amount_s,
       CAST(amount AS DECIMAL(8, 1)) AS amount_1,
       ROUND(amount, 0) AS amount_r,
       amount / 3 AS third,
       amount * 1.1 AS plus10,
       CAST(order_id AS STRING) || '-' || COALESCE(status, 'NA') AS label,
       TRY_CAST(coupon AS INT) AS coupon_num,
       CAST(ts AS DATE) AS d,
       DATE_FORMAT(ts, 'yyyy/MM/dd HH:mm') AS minute_s,
       EXTRACT(HOUR FROM ts) AS h,
       EXTRACT(SECOND FROM ts) AS s,
       FLOOR(ts TO MINUTE) AS ts_floor,
       CEIL(ts TO HOUR) AS ts_ceil,
       TIMESTAMPADD(MINUTE, 90, ts) AS ts_plus,
       TIMESTAMPDIFF(SECOND, TIMESTAMP '2024-03-10 10:00:00', ts) AS since_10,
       ts + INTERVAL '1' DAY AS next_day,
       DAYOFWEEK(ts) AS dow,
       UNIX_TIMESTAMP(DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm:ss')) AS epoch_s
FROM orders
WHERE MOD(order_id, 4) = 0;
