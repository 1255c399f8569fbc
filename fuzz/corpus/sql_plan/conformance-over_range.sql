-- OVER aggregation per user ordered by event time, RANGE BETWEEN INTERVAL '10' MINUTE PRECEDING AND CURRENT ROW, DECIMAL sum/max.
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

SELECT user_id, order_id, status, ts,
       COUNT(*) OVER w AS cnt_10m,
       SUM(amount) OVER w AS sum_10m,
       MAX(amount) OVER w AS max_10m
FROM orders
WINDOW w AS (PARTITION BY user_id ORDER BY ts RANGE BETWEEN INTERVAL '10' MINUTE PRECEDING AND CURRENT ROW);
