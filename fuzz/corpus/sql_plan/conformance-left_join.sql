-- Regular LEFT join of 'NEW' (or NULL-status) order events with payments: NULL-padded rows are retracted when a matching payment arrives.
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

CREATE TABLE payments (
    pay_id   BIGINT,
    order_id BIGINT,
    pay_method STRING,
    amount   DECIMAL(10, 2),
    ts       TIMESTAMP(3),
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
    'connector' = 'filesystem',
    'path' = '/data/shop-a/payments.csv',
    'format' = 'csv'
);

SELECT o.order_id, o.status, o.amount, p.pay_id, p.pay_method, p.amount AS paid
FROM orders o
LEFT JOIN payments p ON o.order_id = p.order_id
WHERE o.status = 'NEW' OR o.status IS NULL;
