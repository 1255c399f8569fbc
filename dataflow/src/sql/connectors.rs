//! The connectors a table may name and the options each accepts, so a typo in `WITH (…)` is
//! an error at `CREATE TABLE` that lists what is valid, not a surprise at run time.

use arrow::datatypes::Schema;

use super::parser::TableDef;

/// Option names per connector. A trailing `*` accepts any suffix (`fields.*` in datagen).
pub fn connector_options(connector: &str) -> Option<&'static [&'static str]> {
    Some(match connector {
        "filesystem" => &[
            "connector",
            "path",
            "format",
            "json.ignore-parse-errors",
            "json.fail-on-missing-field",
            "json.timestamp-format.standard",
            "json.map-null-key.mode",
            "json.encode.decimal-as-plain-number",
            "csv.field-delimiter",
            "csv.quote-character",
            "csv.disable-quote-character",
            "csv.ignore-parse-errors",
            "csv.allow-comments",
            "csv.null-literal",
            "source.monitor-interval",
            "sink.rolling-policy.file-size",
            "sink.rolling-policy.rollover-interval",
            "sink.rolling-policy.check-interval",
        ],
        "nexmark" => &[
            "connector",
            "events.num",
            "stop-at",
            "first-event.rate",
            "next-event.rate",
            "rate.shape",
            "rate.period",
            "rate.limited",
            "max-emit-speed",
            "keep-alive",
            "person.proportion",
            "auction.proportion",
            "bid.proportion",
            "person.avg-size",
            "auction.avg-size",
            "bid.avg-size",
            "bid.hot-ratio.auctions",
            "bid.hot-ratio.bidders",
            "auction.hot-ratio.sellers",
            "seed",
            "base-time",
        ],
        "datagen" => {
            &["connector", "rows-per-second", "number-of-rows", "scan.parallelism", "seed", "base-time", "fields.*"]
        }
        "print" => &["connector", "print-identifier", "standard-error", "sink.parallelism"],
        "blackhole" => &["connector"],
        _ => return None,
    })
}

/// Whether a source table with these options ends: a file read once, a generator with a row
/// or event count. Everything else runs until cancelled.
pub fn is_bounded(options: &std::collections::BTreeMap<String, String>) -> bool {
    let set = |key: &str| options.get(key).map(|v| v.trim()).filter(|v| !v.is_empty() && *v != "0").is_some();
    match options.get("connector").map(String::as_str) {
        Some("filesystem") => !set("source.monitor-interval"),
        Some("nexmark") => set("events.num"),
        Some("datagen") => set("number-of-rows"),
        _ => false,
    }
}

pub const CONNECTORS: &[&str] = &["blackhole", "datagen", "filesystem", "nexmark", "print"];
/// `debezium-json` is written only (a filesystem sink of an updating query, as in Flink).
pub const FORMATS: &[&str] = &["csv", "debezium-json", "json", "raw"];

/// Checks a table's connector, format and option names.
pub fn validate_table(def: &TableDef, _schema: &Schema) -> Result<(), String> {
    let Some(connector) = def.options.get("connector") else {
        return Err(format!("table '{}' has no 'connector' option; connectors: {}", def.name, CONNECTORS.join(", ")));
    };
    let Some(valid) = connector_options(connector) else {
        return Err(format!(
            "unknown connector '{connector}' in table '{}'; connectors: {}",
            def.name,
            CONNECTORS.join(", ")
        ));
    };
    for key in def.options.keys() {
        let ok = valid.iter().any(|v| match v.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => v == key,
        });
        if !ok {
            return Err(format!(
                "unknown option '{key}' for connector '{connector}' in table '{}'; valid options: {}",
                def.name,
                valid.join(", ")
            ));
        }
    }
    if connector == "filesystem" {
        if !def.options.contains_key("path") {
            return Err(format!("table '{}': the filesystem connector needs a 'path'", def.name));
        }
        match def.options.get("format") {
            Some(f) if FORMATS.contains(&f.as_str()) => {}
            Some(f) => {
                return Err(format!("unknown format '{f}' in table '{}'; formats: {}", def.name, FORMATS.join(", ")));
            }
            None => {
                return Err(format!(
                    "table '{}': the filesystem connector needs a 'format' ({})",
                    def.name,
                    FORMATS.join(", ")
                ));
            }
        }
    }
    Ok(())
}
