-- Weir's bundled demo as a managed job: the query of examples/nexmark.sql written to a
-- filesystem sink (one JSON object per window) instead of the terminal. Submit it to
-- `weir standalone` with `weir job submit examples/nexmark-job.sql`; the rows appear under
-- ./nexmark-output (relative to where `weir standalone` runs) as checkpoints complete.
SET 'execution.checkpointing.interval' = '5 s';

CREATE TABLE nexmark (
    event_type INT,
    person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR,
               state VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR>,
    auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT,
                `dateTime` TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR>,
    bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
            `dateTime` TIMESTAMP(3), extra VARCHAR>,
    `dateTime` AS
        CASE
            WHEN event_type = 0 THEN person.`dateTime`
            WHEN event_type = 1 THEN auction.`dateTime`
            ELSE bid.`dateTime`
        END,
    WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND
) WITH (
    'connector' = 'nexmark',
    'events.num' = '2000000',
    'first-event.rate' = '10000'
);

CREATE VIEW bid AS
SELECT bid.auction, bid.bidder, bid.price, bid.channel, bid.url, `dateTime`, bid.extra
FROM nexmark WHERE event_type = 2;

CREATE TABLE bid_windows (
    window_start TIMESTAMP(3),
    window_end TIMESTAMP(3),
    bids BIGINT,
    bidders BIGINT,
    min_price BIGINT,
    max_price BIGINT,
    avg_price BIGINT
) WITH (
    'connector' = 'filesystem',
    'path' = 'nexmark-output',
    'format' = 'json'
);

INSERT INTO bid_windows
-- Bids, distinct bidders and prices per 10-second window.
SELECT window_start, window_end,
       COUNT(*) AS bids,
       COUNT(DISTINCT bidder) AS bidders,
       MIN(price) AS min_price,
       MAX(price) AS max_price,
       AVG(price) AS avg_price
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
GROUP BY window_start, window_end;
