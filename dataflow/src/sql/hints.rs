//! Flink's `STATE_TTL` query hint: `SELECT /*+ STATE_TTL('o' = '1d', 'l' = '12 h') */ …` sets
//! the state TTL of the query's regular joins and group aggregations whose inputs are named so
//! (a table, a view, or an alias), over `table.exec.state.ttl`.
//!
//! As in Flink: within one hint the last value of a name wins, across hints the first; a value
//! of `0` turns the TTL off for that input; a name no join or aggregation of the query reads is
//! an error. Other hints (`BROADCAST`, `LOOKUP`, …) are accepted and have no effect here. Names
//! match case-insensitively. Unlike Flink, a hint in the query reaches joins and aggregations
//! of the views it reads when their inputs carry the hinted name, and a hint inside a view's
//! own query is not kept.

use std::cell::Cell;
use std::ops::ControlFlow;
use std::time::Duration;

use sqlparser::ast::{self, Visit, Visitor};

use crate::config::parse_duration;

/// The `STATE_TTL` hints of one query, in the order written.
#[derive(Debug, Default)]
pub struct StateTtlHints {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    name: String,
    ttl: Duration,
    used: Cell<bool>,
}

impl StateTtlHints {
    /// The hints of every `SELECT` of `query`, subqueries included.
    pub fn of(query: &ast::Query) -> Result<StateTtlHints, String> {
        struct Collect(Vec<String>);
        impl Visitor for Collect {
            type Break = ();
            fn pre_visit_query(&mut self, query: &ast::Query) -> ControlFlow<()> {
                if let ast::SetExpr::Select(select) = query.body.as_ref() {
                    self.0
                        .extend(select.optimizer_hints.iter().filter(|h| h.prefix.is_empty()).map(|h| h.text.clone()));
                }
                ControlFlow::Continue(())
            }
        }
        let mut texts = Collect(Vec::new());
        let _ = query.visit(&mut texts);
        let mut entries: Vec<Entry> = Vec::new();
        for text in texts.0 {
            for (name, options) in parse_hints(&text)? {
                if !name.eq_ignore_ascii_case("STATE_TTL") {
                    continue;
                }
                if options.is_empty() {
                    return Err("Invalid STATE_TTL hint, expecting at least one key-value options specified".into());
                }
                let first_of_hint = entries.len();
                for (key, value) in options {
                    let ttl = parse_duration(&value)
                        .map_err(|e| format!("the STATE_TTL hint's value for '{key}' is not a duration: {e}"))?;
                    // Within one hint, the last value of a name wins.
                    match entries[first_of_hint..].iter_mut().find(|e| e.name.eq_ignore_ascii_case(&key)) {
                        Some(entry) => entry.ttl = ttl,
                        None => entries.push(Entry { name: key, ttl, used: Cell::new(false) }),
                    }
                }
            }
        }
        Ok(StateTtlHints { entries })
    }

    /// The TTL hinted for an input known by any of `names`: `Some(None)` when the hint turns it
    /// off, `None` when no hint names it. The first hint naming it wins.
    pub fn for_input(&self, names: &[String]) -> Option<Option<Duration>> {
        let entry = self.entries.iter().find(|e| names.iter().any(|n| n.eq_ignore_ascii_case(&e.name)))?;
        // Later hints' values for the same name lost to this one, but their name matched.
        for same in self.entries.iter().filter(|e| e.name.eq_ignore_ascii_case(&entry.name)) {
            same.used.set(true);
        }
        Some((!entry.ttl.is_zero()).then_some(entry.ttl))
    }

    /// A hinted name no join or aggregation read, as Flink refuses it.
    pub fn check_all_used(&self) -> Result<(), String> {
        match self.entries.iter().find(|e| !e.used.get()) {
            Some(e) => Err(format!(
                "The options of following hints cannot match the name of input tables or views: `{}` in `STATE_TTL` \
                 (a STATE_TTL hint names an input of a regular join or group aggregation of its query)",
                e.name
            )),
            None => Ok(()),
        }
    }
}

/// A hint's name and its options (`'key' = 'value'`, or a bare argument with an empty value).
type Hint = (String, Vec<(String, String)>);

/// Parses the text of one hint comment: `NAME('k' = 'v', …), NAME(arg, …), NAME`.
fn parse_hints(text: &str) -> Result<Vec<Hint>, String> {
    let malformed = || format!("malformed query hint `/*+{text}*/`");
    let mut hints = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if end == 0 {
            return Err(malformed());
        }
        let name = rest[..end].to_string();
        rest = rest[end..].trim_start();
        let mut options = Vec::new();
        if let Some(inner) = rest.strip_prefix('(') {
            let close = closing_paren(inner).ok_or_else(malformed)?;
            for option in split_top_level(&inner[..close]) {
                let option = option.trim();
                if option.is_empty() {
                    continue;
                }
                // `'key' = 'value'` (STATE_TTL, LOOKUP) or a bare argument (BROADCAST(t)).
                match option.split_once('=') {
                    Some((key, value)) => options.push((unquote(key), unquote(value))),
                    None => options.push((unquote(option), String::new())),
                }
            }
            rest = inner[close + 1..].trim_start();
        }
        hints.push((name, options));
        rest = match rest.strip_prefix(',') {
            Some(after) => after.trim_start(),
            None if rest.is_empty() => rest,
            None => return Err(malformed()),
        };
    }
    Ok(hints)
}

/// Where the parenthesis closing an opened one is in `text`, outside quotes.
fn closing_paren(text: &str) -> Option<usize> {
    let (mut depth, mut quoted) = (0usize, false);
    for (i, c) in text.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth == 0 => return Some(i),
            ')' if !quoted => depth -= 1,
            _ => {}
        }
    }
    None
}

/// `text` split at commas outside quotes.
fn split_top_level(text: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in text.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A hint option's key or value without its quotes (`''` inside stands for one quote).
fn unquote(text: &str) -> String {
    let text = text.trim();
    match text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        Some(inner) => inner.replace("''", "'"),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(sql: &str) -> Result<StateTtlHints, String> {
        let statements = sqlparser::parser::Parser::parse_sql(&super::super::dialect::FlinkDialect, sql).unwrap();
        let ast::Statement::Query(query) = &statements[0] else { panic!("a query") };
        StateTtlHints::of(query)
    }

    fn ttl(hints: &StateTtlHints, name: &str) -> Option<Option<Duration>> {
        hints.for_input(&[name.to_string()])
    }

    #[test]
    fn the_first_hint_wins_across_hints_and_the_last_value_within_one() {
        let day = Duration::from_secs(86_400);
        let h = hints(
            "SELECT /*+ STATE_TTL('v1' = '1d', 'v2' = '4d', 'v2' = '2d'), BROADCAST(v1), STATE_TTL('v2' = '8d', 'v3' = '0') */ 1",
        )
        .unwrap();
        assert_eq!(ttl(&h, "V1"), Some(Some(day)));
        assert_eq!(ttl(&h, "v2"), Some(Some(2 * day)));
        assert_eq!(ttl(&h, "v3"), Some(None), "0 turns the TTL off");
        assert_eq!(ttl(&h, "v4"), None);
        h.check_all_used().unwrap();
    }

    #[test]
    fn hints_of_subqueries_count_and_unused_or_malformed_ones_are_errors() {
        let h = hints("SELECT a FROM (SELECT /*+ STATE_TTL('t' = '1 h') */ a FROM t GROUP BY a) s").unwrap();
        let error = h.check_all_used().unwrap_err();
        assert!(error.contains("`t` in `STATE_TTL`"), "{error}");
        assert!(hints("SELECT /*+ STATE_TTL() */ 1").unwrap_err().contains("at least one"));
        assert!(hints("SELECT /*+ STATE_TTL('t' = 'soon') */ 1").unwrap_err().contains("not a duration"));
        assert!(hints("SELECT /*+ STATE_TTL('t' = '1d' */ 1").unwrap_err().contains("malformed"));
        assert!(hints("SELECT /* not a hint */ 1").unwrap().entries.is_empty());
    }
}
