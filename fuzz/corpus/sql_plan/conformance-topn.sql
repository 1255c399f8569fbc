-- Non-windowed Top-N: the 3 largest 'NEW' order events per user (ROW_NUMBER, tie broken by order_id); updating result.
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

SELECT user_id, rn, order_id, amount
FROM (
    SELECT user_id, order_id, amount,
           ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY amount DESC, order_id ASC) AS rn
    FROM orders
    WHERE status = 'NEW'
)
WHERE rn <= 3;
