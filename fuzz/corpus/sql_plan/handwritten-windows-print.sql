CREATE TABLE bids (auction BIGINT, price DECIMAL(10, 2), bidder STRING, t TIMESTAMP(3),
    WATERMARK FOR t AS t - INTERVAL '1' SECOND) WITH ('connector' = 'datagen');
CREATE TABLE sink (window_start TIMESTAMP(3), auction BIGINT, total DECIMAL(38, 2), rn BIGINT)
    WITH ('connector' = 'print', 'print-identifier' = 'w');
CREATE VIEW windowed AS
SELECT window_start, auction, SUM(price) AS total
FROM TABLE(HOP(TABLE bids, DESCRIPTOR(t), INTERVAL '5' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end, auction;
INSERT INTO sink
SELECT * FROM (
    SELECT window_start, auction, total,
           ROW_NUMBER() OVER (PARTITION BY window_start ORDER BY total DESC) AS rn
    FROM windowed)
WHERE rn <= 3;
