SET 'execution.checkpointing.interval' = '18446744073709552 s';
CREATE TABLE t (a BIGINT) WITH ('connector' = 'datagen');
CREATE TABLE s (a BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO s SELECT a FROM t;
