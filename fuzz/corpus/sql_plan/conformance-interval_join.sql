-- Interval join: order events with a payment of the same order within 5 minutes after the order event (payments read from CSV).
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

SELECT o.order_id, o.status, o.amount, p.pay_id, p.pay_method, p.amount AS paid,
       o.ts AS order_ts, p.ts AS pay_ts, TIMESTAMPDIFF(SECOND, o.ts, p.ts) AS delay_s
FROM orders o, payments p
WHERE o.order_id = p.order_id
  AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '5' MINUTE;
