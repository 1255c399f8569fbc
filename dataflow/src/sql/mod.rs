//! Flink SQL → physical stream plan: parsing (sqlparser, Flink dialect), name resolution and
//! typing (DataFusion), and translation into streaming operators. Pure: no I/O.

pub mod catalog;
pub mod connectors;
pub mod context;
pub mod dialect;
pub mod functions;
pub mod hints;
pub mod limits;
pub mod nodes;
pub mod parser;
pub mod planner;
#[cfg(test)]
mod planning_tests;
pub mod rewrite;
pub mod translate;
pub mod types;
pub mod typing;

use std::fmt;

use datafusion_common::DataFusionError;
use sqlparser::tokenizer::Location;

pub use planner::{PlannedScript, plan_script};

/// A SQL error: where in the script, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl SqlError {
    pub fn new(line: u64, column: u64, message: impl Into<String>) -> Self {
        SqlError { line, column, message: message.into() }
    }

    pub fn at(location: Location, message: impl Into<String>) -> Self {
        SqlError::new(location.line, location.column, message)
    }

    /// A planning error from DataFusion, placed at its own span when it has one and at the
    /// statement otherwise.
    pub fn from_datafusion(statement: Location, error: DataFusionError) -> Self {
        let (line, column) = error
            .diagnostic()
            .and_then(|d| d.span)
            .map(|s| (s.start.line, s.start.column))
            .filter(|(line, _)| *line > 0)
            .unwrap_or((statement.line, statement.column));
        SqlError::new(line, column, clean_datafusion_message(&error))
    }
}

/// DataFusion's message without its category prefix, with SQL type names, starting lowercase.
fn clean_datafusion_message(error: &DataFusionError) -> String {
    let text = error.find_root().to_string();
    let mut text = text.as_str();
    for prefix in ["Error during planning: ", "This feature is not implemented: ", "Schema error: ", "SQL error: "] {
        if let Some(rest) = text.strip_prefix(prefix) {
            text = rest;
        }
    }
    let text = types::with_sql_literals(&types::with_sql_type_names(text));
    let mut chars = text.chars();
    match chars.next() {
        // An acronym (`IN`, `SUM`) keeps its case.
        Some(first) if !chars.next().is_some_and(|second| second.is_uppercase()) => {
            first.to_lowercase().collect::<String>() + &text[first.len_utf8()..]
        }
        _ => text,
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for SqlError {}
