"""Schemathesis hooks for Weir's API (loaded through SCHEMATHESIS_HOOKS by tests/standalone.rs).

`sql` has the format `flink-sql`: a script that plans. No schema can say that, so positive
tests draw it from real scripts here, and the jobs they submit run (briefly, or slowly enough
for savepoints, rescales and cancels to meet a running job).
"""

from hypothesis import strategies as st

import schemathesis

# A bounded job: ten rows, then FINISHED.
BOUNDED = """CREATE TABLE g (id BIGINT, k INT) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE out (id BIGINT, k INT) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT id, k FROM g WHERE k > 0;"""

# A running job that checkpoints: a few rows a second, forever.
CHECKPOINTED = """SET 'execution.checkpointing.interval' = '1 s';
CREATE TABLE g (id BIGINT, k INT) WITH ('connector' = 'datagen', 'rows-per-second' = '5');
CREATE TABLE out (k INT, n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT k, COUNT(*) FROM g GROUP BY k;"""

# A script's own parallelism, which the request's pins over.
PARALLEL = "SET 'parallelism.default' = '2';\n" + BOUNDED

schemathesis.openapi.format("flink-sql", st.sampled_from([BOUNDED, CHECKPOINTED, PARALLEL]))
