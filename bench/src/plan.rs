//! `weir bench plan`: how long planning takes for the deep or long scripts a user may paste (a
//! chain of views, thousands of `OR` terms, `UNION ALL` branches or `||` terms). Each script is
//! planned in this process, as the server plans a submission; the figure is the median of
//! `--runs`, with the process's peak RSS at the end.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use clap::Args;
use weir_dataflow::config::JobConfig;
use weir_dataflow::sql::plan_script;

#[derive(Args)]
pub struct PlanArgs {
    /// Views in the chain, and terms or branches in the long expressions.
    #[arg(long, default_value_t = 2_000)]
    size: usize,
    /// Plannings of each script; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

const TABLE: &str = "CREATE TABLE orders (id BIGINT, amount DOUBLE, note STRING) \
    WITH ('connector' = 'filesystem', 'path' = 'orders.json', 'format' = 'json');\n";

/// The scripts, by name, with `n` views, terms or branches.
fn scripts(n: usize) -> Vec<(&'static str, String)> {
    let mut views = format!("{TABLE}CREATE VIEW v0 AS SELECT * FROM orders;\n");
    for i in 1..n {
        views.push_str(&format!("CREATE VIEW v{i} AS SELECT * FROM v{};\n", i - 1));
    }
    views.push_str(&format!("SELECT id, amount FROM v{};", n.saturating_sub(1)));
    let or = (0..n).map(|i| format!("id = {i}")).collect::<Vec<_>>().join(" OR ");
    let union = (0..n).map(|i| format!("SELECT id + {i} AS id FROM orders")).collect::<Vec<_>>().join("\nUNION ALL ");
    let concat = (0..n).map(|i| format!("'{i}'")).collect::<Vec<_>>().join(" || ");
    vec![
        ("chained views", views),
        ("OR terms", format!("{TABLE}SELECT id FROM orders WHERE {or};")),
        ("UNION ALL branches", format!("{TABLE}{union};")),
        ("|| terms", format!("{TABLE}SELECT note || {concat} FROM orders;")),
    ]
}

pub fn run(args: PlanArgs) -> Result<()> {
    let runs = args.runs.max(1);
    println!("planning scripts of {} views, terms or branches; median of {runs} runs", args.size);
    for (name, sql) in scripts(args.size.max(1)) {
        let mut times: Vec<Duration> = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            plan_script(&sql, JobConfig::default()).map_err(|e| anyhow!("{name}: {e}"))?;
            times.push(started.elapsed());
        }
        times.sort();
        println!(
            "{name:>20}: {:>9.1} ms (min {:.1}, max {:.1})",
            ms(times[runs / 2]),
            ms(times[0]),
            ms(times[runs - 1])
        );
    }
    if let Some(kib) = crate::peak_rss_kib(std::process::id()) {
        println!("peak RSS: {:.0} MiB", kib as f64 / 1024.0);
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
