-- Non-windowed GROUP BY order status (NULL status is its own group) with DECIMAL SUM/MIN/MAX/AVG and COUNT DISTINCT users.
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

SELECT status, COUNT(*) AS cnt, COUNT(DISTINCT user_id) AS users,
       SUM(amount) AS total, MIN(amount) AS min_amount, MAX(amount) AS max_amount,
       AVG(amount) AS avg_amount
FROM orders
GROUP BY status;
