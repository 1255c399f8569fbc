//! Planning scripts as a user writes them: what plans, what is refused, and where and how an
//! error says so. Every script is planned in this process, as the server plans submissions: a
//! script must plan or fail with an error, never abort the process.

use crate::config::JobConfig;
use crate::plan::{OperatorSpec, Partitioning, StreamPlan};
use crate::sql::{PlannedScript, SqlError, plan_script};

const TABLES: &str = "CREATE TABLE orders (id INT, amount INT, note STRING, price DECIMAL(10, 2), ts TIMESTAMP(3),
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'orders.json', 'format' = 'json');
CREATE TABLE limits (name STRING, lim INT) WITH ('connector' = 'filesystem', 'path' = 'limits.json', 'format' = 'json');
";

fn plan(sql: &str) -> Result<PlannedScript, SqlError> {
    plan_script(sql, JobConfig::default())
}

fn planned(sql: &str) -> StreamPlan {
    match plan(sql) {
        Ok(p) => p.plan.expect("the script has a query"),
        Err(e) => panic!("{sql}\nfailed to plan: {e}"),
    }
}

fn error(sql: &str) -> SqlError {
    match plan(sql) {
        Ok(_) => panic!("{sql}\nplanned, but should fail"),
        Err(e) => e,
    }
}

/// The line (1-based) of the tables above plus `line` lines of the query.
fn line_after_tables(line: u64) -> u64 {
    TABLES.lines().count() as u64 + line
}

#[test]
fn joins_without_an_equality_key_run_on_one_subtask() {
    for query in [
        "SELECT o.id, l.name FROM orders o CROSS JOIN limits l",
        "SELECT o.id, l.name FROM orders o, limits l",
        "SELECT o.id, l.name FROM orders o JOIN limits l ON TRUE",
        "SELECT o.id, l.name FROM orders o JOIN limits l ON o.amount > l.lim",
        "SELECT o.id, l.name FROM orders o LEFT JOIN limits l ON o.amount = l.lim OR o.id = 2",
        "SELECT o.id, l.name FROM orders o FULL JOIN limits l ON o.amount > l.lim",
    ] {
        let sql = format!("SET 'parallelism.default' = '4';\n{TABLES}{query};");
        let plan = planned(&sql);
        let join = plan.nodes.iter().find(|n| matches!(n.op, OperatorSpec::Join { .. })).expect("a join");
        let OperatorSpec::Join { left_keys, right_keys, .. } = &join.op else { unreachable!() };
        assert!(left_keys.is_empty() && right_keys.is_empty(), "{query}");
        assert_eq!(join.parallelism, 1, "{query}");
        assert!(join.inputs.iter().all(|i| i.partitioning == Partitioning::Global), "{query}");
    }
}

/// `n` copies of `item` joined by `separator`.
fn repeat(item: impl Fn(usize) -> String, n: usize, separator: &str) -> String {
    (0..n).map(item).collect::<Vec<_>>().join(separator)
}

#[test]
fn long_expressions_plan() {
    let ors = repeat(|i| format!("id = {i}"), 5_000, " OR ");
    planned(&format!("{TABLES}SELECT id FROM orders WHERE {ors};"));
    let ands = repeat(|i| format!("id <> {i}"), 5_000, " AND ");
    planned(&format!("{TABLES}SELECT id FROM orders WHERE {ands};"));
    let concat = repeat(|_| "note".to_string(), 5_000, " || ");
    planned(&format!("{TABLES}SELECT {concat} AS s FROM orders;"));
    let unions = repeat(|i| format!("SELECT id, {i} AS branch FROM orders"), 2_000, " UNION ALL ");
    let plan = planned(&format!("{TABLES}{unions};"));
    let union = plan.nodes.iter().find(|n| matches!(n.op, OperatorSpec::Union)).expect("a union");
    assert_eq!(union.inputs.len(), 2_000, "one union of every branch");
}

#[test]
fn a_long_chain_of_views_plans() {
    // 5,000 chained views once overflowed the stack; planning time is measured by
    // `weir explain` on such a script (docs/benchmarks.md), not here.
    let mut sql = format!("{TABLES}CREATE VIEW v0 AS SELECT * FROM orders;\n");
    for i in 1..5_000 {
        sql.push_str(&format!("CREATE VIEW v{i} AS SELECT * FROM v{};\n", i - 1));
    }
    sql.push_str("SELECT id, amount FROM v4999;");
    let plan = planned(&sql);
    assert!(!plan.nodes.is_empty());
}

#[test]
fn nesting_beyond_the_limit_is_refused_where_it_happens() {
    // `+` is not rebalanced (it is not associative for overflow and decimals): 5,000 terms nest
    // 5,000 levels deep.
    let sum = repeat(|_| "amount".to_string(), 5_000, " + ");
    let e = error(&format!("{TABLES}SELECT id,\n  {sum} AS total FROM orders;"));
    assert_eq!(
        e.message,
        "this expression nests more than 200 levels deep; split it into simpler expressions or views"
    );
    assert_eq!((e.line, e.column), (line_after_tables(2), 3));
}

#[test]
fn default_max_parallelism_follows_the_parallelism() {
    let sql = format!("SET 'parallelism.default' = '200';\n{TABLES}SELECT id FROM orders GROUP BY id;");
    assert_eq!(planned(&sql).max_parallelism, 512);
    let sql = format!("{TABLES}SELECT id FROM orders GROUP BY id;");
    assert_eq!(planned(&sql).max_parallelism, 128);
    let sql = format!("SET 'pipeline.max-parallelism' = '1000';\n{TABLES}SELECT id FROM orders GROUP BY id;");
    assert_eq!(planned(&sql).max_parallelism, 1000);
}

#[test]
fn a_parallelism_above_the_max_parallelism_is_refused() {
    let sql = format!(
        "{TABLES}SET 'parallelism.default' = '200';\nSET 'pipeline.max-parallelism' = '150';\nSELECT id FROM orders;"
    );
    let e = error(&sql);
    assert_eq!(
        e.to_string(),
        format!(
            "{}:1: the parallelism 200 is above the max parallelism 150; lower 'parallelism.default' or raise \
             'pipeline.max-parallelism' (at most 32768)",
            line_after_tables(2)
        )
    );
    let mut config = JobConfig::default();
    config.set("parallelism.default", "40000").unwrap();
    let e = plan_script(&format!("{TABLES}SELECT id FROM orders;"), config).err().expect("refused");
    assert_eq!(
        e.to_string(),
        "1:1: the parallelism 40000 is above 32768, the most Flink allows; lower 'parallelism.default'"
    );
}

const SINK: &str = "CREATE TABLE out (id BIGINT, total INT) WITH ('connector' = 'print');\n";

#[test]
fn sink_columns_take_implicit_casts_only() {
    // INT into BIGINT widens, as in Flink.
    planned(&format!("{TABLES}{SINK}INSERT INTO out SELECT id, amount FROM orders;"));
    let e = error(&format!("{TABLES}{SINK}INSERT INTO out\nSELECT id,\n       note FROM orders;"));
    assert_eq!(
        e.message,
        "incompatible types for sink column 'total' at position 1 of table 'out': the query gives STRING but \
         the column is INT; convert the value with CAST(… AS INT)"
    );
    assert_eq!((e.line, e.column), (line_after_tables(4), 8));
    let e = error(&format!("{TABLES}{SINK}INSERT INTO out SELECT id, price FROM orders;"));
    assert!(e.message.contains("the query gives DECIMAL(10, 2) but the column is INT"), "{e}");
}

#[test]
fn an_unknown_column_is_reported_where_it_is_named() {
    let e = error(&format!("{TABLES}SELECT id,\n    nope FROM orders;"));
    assert_eq!((e.line, e.column), (line_after_tables(2), 5), "{e}");
    assert!(e.message.contains("nope"), "{e}");
}

#[test]
fn a_trailing_comma_in_the_select_list_is_reported_at_the_from() {
    // Flink: "Encountered "FROM" at line 6, column 1".
    let e = error(&format!("{TABLES}SELECT id, amount,\nFROM orders;"));
    assert_eq!(
        e.to_string(),
        format!(
            "{}:1: expected an expression, found: FROM; remove the comma after the last column of the SELECT list",
            line_after_tables(2)
        )
    );
}

#[test]
fn messages_name_sql_types() {
    let e = error(&format!("{TABLES}SELECT CAST(id AS BIGINT) + note FROM orders;"));
    assert!(e.message.contains("BIGINT + STRING"), "{e}");
    assert!(!e.message.contains("Int64") && !e.message.contains("Utf8"), "{e}");
}

#[test]
fn explain_reads_as_sql() {
    let p = plan(&format!("{TABLES}EXPLAIN SELECT id FROM orders WHERE ts > ts - INTERVAL '10' MINUTE;")).unwrap();
    let explain = &p.explains[0];
    assert!(explain.contains("INTERVAL '5' SECOND") && explain.contains("INTERVAL '10' MINUTE"), "{explain}");
    assert!(!explain.contains("IntervalMonthDayNano"), "{explain}");
}

#[test]
fn subqueries_in_expressions_are_refused_in_sql_terms() {
    let e = error(&format!("{TABLES}SELECT id FROM orders WHERE id IN (SELECT lim FROM limits);"));
    assert!(!e.message.contains("InSubquery"), "{e}");
}

#[test]
fn the_state_ttl_goes_to_regular_joins_and_group_aggregations_and_shows_in_explain() {
    let script = |query: &str| format!("SET 'table.exec.state.ttl' = '90 min';\n{TABLES}{query};");
    let p = plan(&script("EXPLAIN SELECT o.id, COUNT(*) FROM orders o JOIN limits l ON o.note = l.name GROUP BY o.id"))
        .unwrap();
    let explain = &p.explains[0];
    assert!(explain.contains("leftStateTtl=[90 min], rightStateTtl=[90 min]"), "{explain}");
    assert!(explain.contains("stateTtl=[90 min]"), "{explain}");

    let plan = planned(&script("SELECT o.id, COUNT(*) FROM orders o JOIN limits l ON o.note = l.name GROUP BY o.id"));
    let ttl = Some(std::time::Duration::from_secs(90 * 60));
    for node in &plan.nodes {
        match &node.op {
            OperatorSpec::Join { state_ttl, .. } => assert_eq!(*state_ttl, [ttl, ttl]),
            OperatorSpec::GroupAggregate { state_ttl, .. } => assert_eq!(*state_ttl, ttl),
            _ => {}
        }
    }
    // An interval join drops rows by the watermark: no TTL.
    let interval = planned(&script(
        "SELECT a.id FROM orders a JOIN orders b ON a.id = b.id AND a.ts BETWEEN b.ts - INTERVAL '1' MINUTE AND b.ts",
    ));
    let join = interval.nodes.iter().find(|n| matches!(n.op, OperatorSpec::Join { .. })).expect("a join");
    let OperatorSpec::Join { state_ttl, interval, .. } = &join.op else { unreachable!() };
    assert!(interval.is_some() && *state_ttl == [None, None]);
    // `0` turns it off, as in Flink; a malformed value names the option.
    let off =
        planned(&format!("SET 'table.exec.state.ttl' = '0';\n{TABLES}SELECT id, COUNT(*) FROM orders GROUP BY id;"));
    assert!(off.nodes.iter().all(|n| !matches!(n.op, OperatorSpec::GroupAggregate { state_ttl: Some(_), .. })));
    let e = error(&format!("SET 'table.exec.state.ttl' = 'soon';\n{TABLES}SELECT 1;"));
    assert!(e.message.contains("table.exec.state.ttl"), "{e}");
}

#[test]
fn state_ttl_hints_set_the_ttl_of_the_inputs_they_name() {
    let day = Some(std::time::Duration::from_secs(86_400));
    // Flink's join-with-state-ttl-hint program: the first hint wins for v2.
    let sql = format!(
        "{TABLES}EXPLAIN SELECT /*+ STATE_TTL('v1' = '1d', 'v2' = '4d'), STATE_TTL('v2' = '8d') */ v1.id, v2.name
         FROM (SELECT id, MIN(amount) AS amount FROM orders GROUP BY id) v1
         JOIN (SELECT name, MIN(lim) AS lim FROM limits GROUP BY name) v2 ON v1.amount = v2.lim;"
    );
    let explain = &plan(&sql).unwrap().explains[0];
    assert!(explain.contains("leftStateTtl=[1 d], rightStateTtl=[4 d]"), "{explain}");
    let plan = planned(&sql.replace("EXPLAIN ", ""));
    let join = plan.nodes.iter().find(|n| matches!(n.op, OperatorSpec::Join { .. })).expect("a join");
    let OperatorSpec::Join { state_ttl, .. } = &join.op else { unreachable!() };
    assert_eq!(*state_ttl, [day, day.map(|d| d * 4)]);
    // The aggregations read `orders` and `limits`, which the hint does not name.
    assert!(plan.nodes.iter().all(|n| !matches!(n.op, OperatorSpec::GroupAggregate { state_ttl: Some(_), .. })));

    // A hint on a group aggregation, over the configured TTL; `0` turns one side's off.
    let sql = format!(
        "SET 'table.exec.state.ttl' = '1 h';\n{TABLES}SELECT /*+ STATE_TTL('orders' = '2d') */ id, COUNT(*) FROM orders GROUP BY id;"
    );
    let agg = planned(&sql).nodes.into_iter().find(|n| matches!(n.op, OperatorSpec::GroupAggregate { .. })).unwrap();
    assert!(matches!(agg.op, OperatorSpec::GroupAggregate { state_ttl, .. } if state_ttl == day.map(|d| d * 2)));
    let sql = format!(
        "SET 'table.exec.state.ttl' = '1 h';\n{TABLES}SELECT /*+ STATE_TTL('l' = '0') */ o.id FROM orders o JOIN limits l ON o.note = l.name;"
    );
    let join = planned(&sql).nodes.into_iter().find(|n| matches!(n.op, OperatorSpec::Join { .. })).unwrap();
    let hour = Some(std::time::Duration::from_secs(3600));
    assert!(matches!(join.op, OperatorSpec::Join { state_ttl, .. } if state_ttl == [hour, None]));

    // A name no join or aggregation of the query reads is refused, as in Flink.
    let e = error(&format!("{TABLES}SELECT /*+ STATE_TTL('nobody' = '1d') */ id, COUNT(*) FROM orders GROUP BY id;"));
    assert!(e.message.contains("`nobody` in `STATE_TTL`"), "{e}");
}
