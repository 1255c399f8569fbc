-- Regular inner join of order events with users (no event time on users); rows with a NULL country are filtered.
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

SELECT o.order_id, o.status, o.amount, u.name, u.country, u.tier, o.ts
FROM orders o
JOIN users u ON o.user_id = u.user_id
WHERE u.country IS NOT NULL;
